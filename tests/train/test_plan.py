"""Planning a run (vla.train.plan, vla.train.config): fresh, --init and --resume each give the
expected plan without training a step, writing anything, or touching the checkpoint they read."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from vla.config import load_preset
from vla.model.interop.checkpoint import Checkpoint
from vla.spec import SpecError
from vla.train.config import UNCAPPED_STEPS, train_config
from vla.train.plan import plan_fresh, plan_from_init, plan_resume
from vla.train.trainer import train

from train.conftest import write_preset


def tree(path) -> dict:
    """Every file under `path` -> sha256: to see that planning changed nothing."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ck_a(tmp_path_factory, two_stores):
    """A 2-step checkpoint trained on armA alone: what --init and --resume start from."""
    root = tmp_path_factory.mktemp("plan")
    preset = load_preset(write_preset(root / "p.toml"))
    return train(preset, two_stores[:1], root / "ck", steps=2, progress=False)


def test_fresh_plan_takes_geometry_from_the_preset_and_the_rest_from_the_data(tmp_path, two_stores):
    preset = load_preset(write_preset(tmp_path / "p.toml"), {"model": {"cameras": 1}})
    before, stores = tree(tmp_path), {p: tree(p) for p in two_stores}
    plan = plan_fresh(preset, train_config(preset), two_stores, [3.0, 1.0], progress=False)
    assert (plan.start, plan.state, plan.init, plan.source) == (0, None, None, {})
    assert plan.model.embodiments == {"armA": (4, 3), "armB": (6, 5)} and set(plan.embodiments) == {"armA", "armB"}
    assert plan.model.cameras == 2  # the preset's 1 slot grown to armA's 2 cameras
    assert plan.model.horizon == 6 and plan.norm_mode == "zscore" and plan.train.steps == 6
    assert set(plan.stats) == {"armA", "armB"} and plan.text_vocab == plan.text.vocab_size
    assert plan.data == tuple(two_stores) and plan.weights == [3.0, 1.0] and len(plan.dataset) > 0
    cfg = plan.checkpoint_config(params=123)
    assert (cfg.step, cfg.params, cfg.data, cfg.weights, cfg.source) == (0, 123, two_stores, [3.0, 1.0], {})
    assert cfg.train["steps"] == 6 and cfg.preset["name"] == "p" and cfg.model is plan.model
    assert plan.transforms() is not None
    assert tree(tmp_path) == before and {p: tree(p) for p in two_stores} == stores  # nothing written


def test_init_plan_takes_the_checkpoint_and_fills_in_new_robots_from_the_data(tmp_path, two_stores, ck_a):
    preset = load_preset(write_preset(tmp_path / "p.toml"), {"train": {"steps": 9}})
    ck, before = Checkpoint(ck_a), tree(ck_a)
    plan = plan_from_init(preset, train_config(preset), ck_a, two_stores, progress=False)
    assert plan.init.path == ck_a and plan.source == {"init": str(ck_a)}
    assert (plan.start, plan.state, plan.train.steps) == (0, None, 9)
    assert plan.model.embodiments == {"armA": (4, 3), "armB": (6, 5)}  # the data's robots; armB gets new heads
    assert plan.model.horizon == ck.resolved.model.horizon and plan.norm_mode == ck.resolved.norm_mode
    assert set(plan.stats) == {"armA", "armB"}
    np.testing.assert_array_equal(plan.stats["armA"]["action"].mean, ck.stats()["armA"]["action"].mean)
    assert plan.text_vocab == ck.resolved.text_vocab and plan.text.vocab_size == ck.text().vocab_size
    assert tree(ck_a) == before


def test_init_geometry_is_checked_before_any_data_is_read(tmp_path, ck_a):
    preset = load_preset(write_preset(tmp_path / "p.toml"), {"model": {"horizon": 5}})
    with pytest.raises(SpecError, match=r"contradicts preset .*model.horizon: preset 5, checkpoint 6"):
        plan_from_init(preset, train_config(preset), ck_a, [str(tmp_path / "no-store")], progress=False)


def test_resume_plan_continues_the_checkpoint_from_its_step(tmp_path, two_stores, ck_a):
    preset = load_preset(write_preset(tmp_path / "p.toml"))
    ck, before = Checkpoint(ck_a), tree(ck_a)
    plan = plan_resume(preset, train_config(preset, steps=4), ck_a, two_stores[:1])
    assert plan.start == 2 and plan.state["step"] == 2 and plan.train.steps == 4 and plan.init is None
    assert set(plan.state) >= {"model", "optimizer", "ema"}
    assert plan.model.embodiments == {"armA": (4, 3)} and plan.model.horizon == ck.resolved.model.horizon
    assert set(plan.stats) == {"armA"} and plan.text_vocab == ck.resolved.text_vocab
    assert plan.source == {} and plan.train.lora.rank == 0 and plan.train.freeze == "none"
    again = plan_resume(preset, train_config(preset, steps=4), ck_a, two_stores[:1], init="elsewhere")
    assert again.source == {"init": "elsewhere"}  # the --init of the run continued, recorded again
    assert tree(ck_a) == before


def test_resume_keeps_the_runs_lora_and_freezing(tmp_path, two_stores, ck_a):
    preset = load_preset(write_preset(tmp_path / "p.toml"))
    with pytest.raises(SpecError, match="trained with LoRA rank 0, this run asks for 4"):
        plan_resume(preset, train_config(preset, lora_rank=4), ck_a, two_stores[:1], lora_rank=4)
    frozen = load_preset(write_preset(tmp_path / "p.toml"), {"train": {"freeze": "vision"}})
    with pytest.raises(SpecError, match="trained with freeze='none', this run asks for 'vision'"):
        plan_resume(frozen, train_config(frozen), ck_a, two_stores[:1])


def test_train_config_applies_the_runs_overrides(tmp_path):
    preset = load_preset(write_preset(tmp_path / "p.toml"))
    assert train_config(preset).steps == 6 and train_config(preset, steps=3).steps == 3
    assert train_config(preset, max_seconds=60).steps == UNCAPPED_STEPS  # the clock ends it
    assert train_config(preset, steps=3, max_seconds=60).steps == 3
    assert train_config(preset, lora_rank=8).lora.rank == 8
    with pytest.raises(SpecError, match="batch_size 4 must be divisible by the 3 processes"):
        train_config(preset, world=3)
    odd = load_preset(write_preset(tmp_path / "p.toml"), {"train": {"stepz": 3}})
    with pytest.raises(SpecError, match=r"unknown \[train\] keys \['stepz'\]"):
        train_config(odd)
