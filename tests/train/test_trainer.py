import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vla.config import load_preset
from vla.model.interop.checkpoint import Checkpoint, CheckpointError
from vla.runtime.policy import load_policy
from vla.spec import SpecError
from vla.train.trainer import TrainConfig, lr_at, train

from train.conftest import write_preset


def _params(ckpt):
    return torch.load(ckpt / "train_state.pt", weights_only=False)["model"]


def test_train_writes_a_complete_checkpoint(tmp_path, two_stores):
    preset = load_preset(write_preset(tmp_path / "p.toml"))
    ck = train(preset, two_stores, tmp_path / "ck", progress=False)
    c = Checkpoint(ck)
    assert c.config["step"] == 6 and set(c.embodiments) == {"armA", "armB"}
    assert c.config["policy"]["config"]["embodiments"] == {"armA": [4, 3], "armB": [6, 5]}
    rows = [json.loads(x) for x in (ck / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(r["loss"]) for r in rows)
    assert (ck / "loss.png").stat().st_size > 1000
    # The runtime rebuilds the policy from the checkpoint alone and serves both embodiments.
    pol = load_policy(ck)
    for name, s, a, cams in (
        ("armA", 4, 3, {"front": (16, 16), "wrist": (16, 16)}),
        ("armB", 6, 5, {"front": (20, 16)}),
    ):
        obs = {"observation/state": np.zeros(s, np.float32), "task": "reach the red target", "embodiment": name}
        obs.update({f"observation/images/{c}": np.zeros((*hw, 3), np.uint8) for c, hw in cams.items()})
        out = pol.infer(obs)
        assert out["actions"].shape == (6, a) and np.isfinite(out["actions"]).all()
    with pytest.raises(SpecError, match="embodiment 'armC' is not known"):
        pol.infer({**obs, "embodiment": "armC"})
    with pytest.raises(SpecError, match="'observation/images/front': expected image"):
        pol.infer({**obs, "observation/images/front": np.zeros((8, 8, 3), np.uint8)})


def test_resume_is_exact(tmp_path, two_stores):
    preset = load_preset(write_preset(tmp_path / "p.toml"))
    full = train(preset, two_stores, tmp_path / "full", steps=6, progress=False)
    train(preset, two_stores, tmp_path / "part", steps=3, progress=False)
    resumed = train(preset, two_stores, tmp_path / "part", steps=6, resume=True, progress=False)
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ema_a, ema_b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert len((resumed / "metrics.jsonl").read_text().splitlines()) == 6


def test_fast_preset_trains_and_infers(tmp_path, two_stores):
    preset = load_preset(write_preset(tmp_path / "f.toml", kind="fast"))
    ck = train(preset, two_stores[:1], tmp_path / "ck", steps=3, progress=False)
    assert (ck / "fast" / "armA" / "fast.json").exists()
    pol = load_policy(ck)
    obs = {
        "observation/state": np.zeros(4, np.float32),
        "task": "go",
        "observation/images/front": np.zeros((16, 16, 3), np.uint8),
        "observation/images/wrist": np.zeros((16, 16, 3), np.uint8),
    }
    out = pol.infer(obs)
    # An untrained FAST model usually emits a malformed sequence: it must be flagged and counted.
    assert out["actions"].shape == (6, 3) and isinstance(out["malformed"], bool)
    assert pol.stats["malformed"] == int(out["malformed"])


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_fast_sequences_are_counted_with_loader_workers(tmp_path, two_stores, workers):
    """Token rows cut at max_action_tokens are counted in the main process: with DataLoader workers
    each worker only holds a copy of the transforms, so a count kept there never reached the log."""
    preset = load_preset(
        write_preset(tmp_path / "f.toml", kind="fast"),
        overrides={"model": {"max_action_tokens": 3}, "train": {"workers": workers}},
    )
    ck = train(preset, two_stores[:1], tmp_path / "ck", steps=3, progress=False)
    rows = [json.loads(x) for x in (ck / "metrics.jsonl").read_text().splitlines()]
    # Every chunk needs more than one FAST token, so every row of batch 4 is cut: 4 per step, summed.
    assert [r.get("fast_truncated") for r in rows] == [4, 8, 12]


def test_corrupted_checkpoint_is_detected(tmp_path, two_stores):
    preset = load_preset(write_preset(tmp_path / "p.toml"))
    ck = train(preset, two_stores[:1], tmp_path / "ck", steps=1, progress=False)
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (ck / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors is corrupted"):
        load_policy(ck)
    (ck / "norm_stats.json").unlink()
    with pytest.raises(CheckpointError, match="missing norm_stats.json"):
        Checkpoint(ck)


def test_preset_errors(tmp_path):
    with pytest.raises(SpecError, match="unknown policy preset 'nope'"):
        load_preset("nope")
    p = write_preset(tmp_path / "p.toml")
    p.write_text(p.read_text().replace('norm_mode = "zscore"', 'norm_mode = "minmax"'))
    with pytest.raises(SpecError, match="norm_mode must be one of"):
        load_preset(p)


def test_paligemma_presets_keep_openpis_head_layout():
    """The 3B presets resolve to PaliGemma's layout (MQA, head_dim 256, 224 px); the contract test
    (tests/test_contract.py) builds and runs them shrunk in width and depth."""
    from vla.model.registry import model_type

    for name in ("pi0-paligemma", "fast-paligemma"):
        preset = load_preset(name)
        cfg = model_type(preset.type).make_config(preset.model)
        assert cfg.backbone.text.head_dim == 256 and cfg.backbone.text.kv_heads == 1 and cfg.backbone.image_size == 224
        assert cfg.backbone.text.width == 2048 and cfg.backbone.text.depth == 18


def test_time_budget_stops_the_run_and_finishes_the_schedule(tmp_path, two_stores):
    cfg = TrainConfig(steps=1000, lr=1e-3, warmup=10, min_lr_ratio=0.1)
    assert lr_at(500, cfg, time_frac=0.0) > 0.5e-3
    assert lr_at(20, cfg, time_frac=1.0) == pytest.approx(1e-4)  # the budget is spent: lowest rate
    assert lr_at(5, cfg, time_frac=1.0) == pytest.approx(6e-4)  # warmup is by steps only
    preset = load_preset(write_preset(tmp_path / "p.toml"))
    ck = train(preset, two_stores, tmp_path / "ck", steps=100000, max_seconds=3, progress=False)
    step = json.loads((ck / "config.json").read_text())["step"]
    assert 2 < step < 100000  # stopped by the clock, past warmup, with a checkpoint
    rows = [json.loads(x) for x in (ck / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["lr"] < 0.5e-3  # near the end of the budget the schedule is near its floor (1e-4)


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tmp_path, two_stores):
    """torchrun with 2 gloo processes trains to the same parameters as 1 process (same global batch)."""
    preset_path = write_preset(tmp_path / "p.toml")
    single = train(load_preset(preset_path), two_stores, tmp_path / "one", steps=3, progress=False)
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\nfrom vla.config import load_preset\nfrom vla.train.trainer import train\n"
        f"train(load_preset({str(preset_path)!r}), {two_stores!r}, {str(tmp_path / 'two')!r}, steps=3, progress=False,"
        " max_seconds=1e6)\n"
    )  # a budget that never ends the run but takes the ranks' shared-clock path
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _params(single), _params(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_reliance_probe_swaps_one_input_at_a_time(tmp_path, two_stores):
    from vla.bench.learn import reliance_probe
    from vla.data import EpisodeStore
    from vla.data.synthetic import write_synthetic

    from helpers import tiny_embodiment

    preset = load_preset(write_preset(tmp_path / "p.toml"))
    ck = train(preset, two_stores[:1], tmp_path / "ck", progress=False)
    a = reliance_probe(ck, two_stores[0], windows=24, batch_size=8)
    assert a == reliance_probe(ck, two_stores[0], windows=24, batch_size=8)  # fixed windows, noise and times
    loss = a["loss"]
    assert set(loss) == {"as_recorded", "other_images", "other_instruction"} and a["windows"] == 24
    assert all(np.isfinite(v) and v > 0 for v in loss.values())
    # Each variant really changes its input (and only the loss can tell how much it matters).
    assert loss["other_images"] != loss["as_recorded"] and loss["other_instruction"] != loss["as_recorded"]
    assert a["rise_other_images"] == pytest.approx(loss["other_images"] / loss["as_recorded"] - 1, abs=1e-3)
    # One episode: nothing to swap with -> a clear error, not a silent zero rise.
    emb = tiny_embodiment("armA", s=4, a=3, cams=(("front", 16, 16), ("wrist", 16, 16)))
    one = EpisodeStore.create(tmp_path / "one", [emb])
    write_synthetic(one, emb, episodes=1, length=12, seed=5)
    with pytest.raises(SpecError, match="at least two episodes with different instructions"):
        reliance_probe(ck, tmp_path / "one", windows=8)


def test_goal_error_compares_first_frame_chunks_with_where_the_demos_went(tmp_path, two_stores):
    from vla.bench.learn import goal_error
    from vla.data import EpisodeStore

    preset = load_preset(write_preset(tmp_path / "p.toml"))
    ck = train(preset, two_stores[:1], tmp_path / "ck", progress=False)
    g = goal_error(ck, two_stores[0], episodes=4, samples=2)
    assert g == goal_error(ck, two_stores[0], episodes=4, samples=2)  # seeded sampling
    st = EpisodeStore.open(two_stores[0])
    name = st.infos()[0].embodiment
    r = g["per_embodiment"][name]
    assert r["episodes"] == 4 and g["samples"] == 2
    assert all(np.isfinite(r[k]) and r[k] > 0 for k in ("first", "end", "spread"))
    # The reference: always answering the average end point of those demos.
    h = Checkpoint(ck).config["policy"]["config"]["horizon"]
    eps = [st.episode(i) for i, info in enumerate(st.infos()) if info.embodiment == name][:4]
    ends = np.stack([e["action"][min(h, len(e["action"])) - 1] for e in eps])
    assert r["end_if_average"] == pytest.approx(np.abs(ends - ends.mean(0)).mean(), abs=1e-4)
    # Sampling from zero gives one chunk per observation: one draw, and no spread to report.
    zero = train(
        load_preset(write_preset(tmp_path / "z.toml"), {"model": {"noise_scale": 0.0}}),
        two_stores[:1], tmp_path / "ck0", steps=2, progress=False,
    )  # fmt: skip
    g0 = goal_error(zero, two_stores[0], episodes=4, samples=3)
    assert g0["samples"] == 1 and g0["noise_scale"] == 0.0 and g["noise_scale"] == 1.0
    assert g0["per_embodiment"][name]["spread"] is None


def test_shuffled_instructions_depend_on_the_episode_not_the_order():
    from vla.bench.learn import ShuffledInstructions

    class Echo:
        def reset(self):
            pass

        def infer(self, obs):
            return {"task": obs["task"]}

    pool = [f"touch the {c} target" for c in ("red", "green", "blue", "yellow", "purple")]
    obs = [{"task": "touch the red target", "observation/state": np.full(3, i, np.float32)} for i in range(12)]

    def run(order):
        w, got = ShuffledInstructions(Echo(), pool, seed=7), {}
        for i in order:
            w.reset()
            first = w.infer(obs[i])["task"]
            assert (
                w.infer({**obs[i], "observation/state": np.zeros(3, np.float32)})["task"] == first
            )  # fixed per episode
            got[i] = first
        return got

    a = run(range(12))
    assert a == run(reversed(range(12)))  # what another worker's order would give
    assert set(a.values()) <= set(pool) and len(set(a.values())) > 1


def test_a_time_budget_without_steps_is_not_capped_by_the_presets_steps(tmp_path, two_stores):
    """`vla train --minutes M` trains for M minutes: the preset's step count (2 here) no longer ends
    the run first, and the schedule follows the clock."""
    preset = load_preset(write_preset(tmp_path / "p.toml"), overrides={"train": {"steps": 2}})
    ck = train(preset, two_stores, tmp_path / "ck", max_seconds=5, progress=False)
    cfg = json.loads((ck / "config.json").read_text())
    assert cfg["step"] > 2 and cfg["train"]["steps"] > 10**6
