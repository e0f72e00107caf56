"""Fine-tuning from a checkpoint: LoRA (PEFT) trains only its adapters and the unfrozen parts and
serves merged; freezing leaves frozen weights bit-identical; LoRA resumes exactly; bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from vla.config import load_preset
from vla.model.interop.checkpoint import Checkpoint, build_from_checkpoint
from vla.model.registry import model_type
from vla.runtime.policy import load_policy
from vla.spec import SpecError
from vla.train.lora import GEMMA_TARGETS, LoraSpec, apply_lora, is_adapter, merged_weights, scalings
from vla.train.trainer import train

from train.conftest import write_preset

STACKS = ("backbone.language_model.", "expert.")


@pytest.fixture(scope="module")
def base(tmp_path_factory, two_stores):
    """A trained tiny pi0 checkpoint to fine-tune from (one step: a start that is not the init)."""
    root = tmp_path_factory.mktemp("base")
    preset = write_preset(root / "p.toml")
    return preset, train(load_preset(preset), two_stores, root / "ck", steps=1, progress=False)


def _infer(ck):
    pol = load_policy(ck)
    obs = {
        "observation/state": np.zeros(4, np.float32),
        "task": "reach the red target",
        "embodiment": "armA",
        "observation/images/front": np.zeros((16, 16, 3), np.uint8),
        "observation/images/wrist": np.zeros((16, 16, 3), np.uint8),
    }
    return pol.infer(obs)["actions"]


def test_lora_trains_only_adapters_and_unfrozen_parts_and_serves_merged(tmp_path, base, two_stores):
    preset, ck0 = base
    ck = train(load_preset(preset), two_stores, tmp_path / "ft", init=ck0, steps=3, lora_rank=2, progress=False)
    before, after = load_file(str(ck0 / "model.safetensors")), load_file(str(ck / "model.safetensors"))
    assert before.keys() == after.keys()  # merged, in the plain key layout: no base_layer, no lora_A/B
    raw = torch.load(ck / "train_state.pt", weights_only=False)["model"]
    assert any(is_adapter(k) for k in raw)
    for k, v in raw.items():  # the adapted stacks' own weights never moved (only their adapters)
        if k.startswith(STACKS) and not is_adapter(k):
            assert torch.equal(v, before[k.replace(".base_layer.", ".")]), k
    targeted = tuple(f"{t}.weight" for t in GEMMA_TARGETS)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    in_stacks = {k for k in changed if k.startswith(STACKS)}
    assert in_stacks and all(k.endswith(targeted) for k in in_stacks)  # merged deltas, on targets only
    assert any(k.startswith("backbone.vision_tower.") for k in changed)  # not frozen by LoRA (as openpi)
    assert any(k.startswith("action_out.") for k in changed)
    # The adapter is kept beside the merged weights, in PEFT's file names.
    cfg = json.loads((ck / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and set(cfg["rank_pattern"].values()) == {2, 4}  # expert at 2x the VLM's rank
    assert load_file(str(ck / "adapter_model.safetensors"))
    # Serving needs no PEFT: the checkpoint rebuilds a plain model.
    model, _, _ = build_from_checkpoint(Checkpoint(ck))
    assert not any("lora" in n for n, _ in model.named_modules())
    assert np.isfinite(_infer(ck)).all()


def test_merged_weights_equal_pefts_merge():
    p = load_preset("pi0-tiny")
    mt = model_type(p.type)
    model = mt.build(mt.make_config(p.model, embodiments={"a": (4, 3)}), text_vocab=64)
    apply_lora(model, LoraSpec(rank=4), "pi0")
    with torch.no_grad():
        for n, t in model.named_parameters():
            if ".lora_B." in n:
                t.normal_(0, 0.1)
    merged = merged_weights(model.state_dict(), scalings(model))
    from peft.tuners.lora import LoraLayer

    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert len(layers) == 2 * 4 * len(GEMMA_TARGETS)
    for n, m in layers.items():
        m.merge()
        torch.testing.assert_close(merged[f"{n}.weight"], m.base_layer.weight, atol=1e-6, rtol=0)


@pytest.mark.parametrize("freeze, frozen", [("vision", ("backbone.vision_tower.",)), ("vlm", ("backbone.",))])
def test_frozen_weights_stay_bit_identical(tmp_path, base, two_stores, freeze, frozen):
    preset, ck0 = base
    ck = train(
        load_preset(preset, {"train": {"freeze": freeze}}),
        two_stores,
        tmp_path / "ft",
        init=ck0,
        steps=2,
        progress=False,
    )
    before, after = load_file(str(ck0 / "model.safetensors")), load_file(str(ck / "model.safetensors"))
    raw = torch.load(ck / "train_state.pt", weights_only=False)["model"]
    for k in before:
        if k.startswith(frozen):
            assert torch.equal(before[k], after[k]) and torch.equal(before[k], raw[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("expert."))
    assert Checkpoint(ck).resolved.train["freeze"] == freeze


def test_lora_resume_is_exact(tmp_path, base, two_stores):
    preset, ck0 = base
    p = load_preset(preset)
    full = train(p, two_stores, tmp_path / "full", init=ck0, steps=4, lora_rank=2, progress=False)
    train(p, two_stores, tmp_path / "part", init=ck0, steps=2, lora_rank=2, progress=False)
    resumed = train(p, two_stores, tmp_path / "part", steps=4, resume=True, progress=False)  # LoRA from the ckpt
    a = torch.load(full / "train_state.pt", weights_only=False)["model"]
    b = torch.load(resumed / "train_state.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SpecError, match="trained with LoRA rank 2, this run asks for 8"):
        train(p, two_stores, tmp_path / "part", steps=5, resume=True, lora_rank=8, progress=False)


def test_lora_refuses_fast_and_unknown_modules(tmp_path, two_stores):
    fast = load_preset(write_preset(tmp_path / "f.toml", kind="fast"))
    with pytest.raises(SpecError, match=r"LoRA applies to the flow-matching types.*Linear modules: \["):
        train(fast, two_stores[:1], tmp_path / "f", steps=1, lora_rank=4, progress=False)
    p = write_preset(tmp_path / "p.toml")
    bad = {"lora": {"rank": 4, "stacks": {"backbone": {"targets": ["q_proj", "qkv_proj"]}}}}
    with pytest.raises(
        SpecError,
        match=r"stack 'backbone' has no module\(s\) \['qkv_proj'\]; its modules are "
        r"\['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'\]",
    ):
        train(load_preset(p, {"train": bad}), two_stores, tmp_path / "x", steps=1, progress=False)
    with pytest.raises(
        SpecError, match=r"unknown stack\(s\) \['decoder'\]; stacks: \['backbone', 'expert', 'vision'\]"
    ):
        train(
            load_preset(p, {"train": {"lora": {"stacks": {"decoder": {}}}}}), two_stores, tmp_path / "x", progress=False
        )
    with pytest.raises(SpecError, match=r"freeze must be one of \['none', 'vision', 'vlm'\], got 'all'"):
        train(load_preset(p, {"train": {"freeze": "all"}}), two_stores, tmp_path / "x", progress=False)


def test_fsdp_without_torchrun_says_how_to_launch(tmp_path, two_stores, monkeypatch):
    from vla.cli import app

    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    p = write_preset(tmp_path / "p.toml")
    with pytest.raises(SpecError, match=r"launch as: torchrun --nproc_per_node N \$\(which vla\) train PRESET --fsdp"):
        train(load_preset(p), two_stores, tmp_path / "x", fsdp=True, progress=False)
    r = CliRunner().invoke(
        app, ["train", str(p), "--data", ",".join(two_stores), "--out", str(tmp_path / "y"), "--fsdp"]
    )
    assert r.exit_code == 2 and "torchrun --nproc_per_node N" in r.output
    assert not (tmp_path / "y").exists()


def test_frozen_weights_in_bf16_train_under_autocast_and_save_float32(tmp_path):
    """The CUDA path keeps frozen weights in bfloat16 under bf16 autocast (as openpi); CPU autocast
    stands in for it here: the step runs, only trainable weights move, the checkpoint is float32."""
    from vla.train.trainee import Trainee, store_frozen
    from vla.train.trainer import TrainConfig

    p = load_preset("pi0-tiny")
    mt = model_type(p.type)
    model = mt.build(mt.make_config(p.model, embodiments={"a": (4, 3)}), text_vocab=64)
    t = Trainee(model, TrainConfig(lora={"rank": 2}, freeze="vision", ema=0.5), torch.device("cpu"), kind="pi0")
    store_frozen(t.model, torch.bfloat16)
    frozen = {n: q.detach().clone() for n, q in t.model.named_parameters() if not q.requires_grad}
    assert frozen and all(v.dtype == torch.bfloat16 for v in frozen.values())
    assert all(q.dtype == torch.float32 for q in t.trainable.values())
    batch = t.model.example_batch(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = t.loss(batch, torch.Generator().manual_seed(0))
    assert np.isfinite(t.step(loss, 1e-2))
    assert all(torch.equal(frozen[n], q) for n, q in t.model.named_parameters() if n in frozen)
    served, state, extra = t.checkpoint(1, tmp_path / "adapter")
    assert all(v.dtype == torch.float32 for v in served.values() if v.is_floating_point())
    assert set(extra) == {"adapter_model.safetensors", "adapter_config.json"}
    name = "backbone.language_model.layers.0.self_attn.q_proj"
    delta = served[f"{name}.weight"] - frozen[f"{name}.base_layer.weight"].float()
    assert delta.abs().max() > 0  # the merged LoRA update, kept in float32 over the bf16 base


def test_cli_lora_and_freeze_flags(tmp_path, base, two_stores):
    from vla.cli import app

    preset, ck0 = base
    out = tmp_path / "ft"
    r = CliRunner().invoke(
        app,
        [
            "train",
            str(preset),
            "--data",
            ",".join(two_stores),
            "--out",
            str(out),
            "--steps",
            "1",
            "--init",
            str(ck0),
            "--lora",
            "2",
            "--freeze",
            "vision",
        ],
    )
    assert r.exit_code == 0, r.output
    train_cfg = Checkpoint(out).resolved.train
    assert train_cfg["lora"]["rank"] == 2 and train_cfg["freeze"] == "vision"
    assert (out / "adapter_model.safetensors").exists()
    bad = CliRunner().invoke(
        app, ["train", str(preset), "--data", two_stores[0], "--out", str(tmp_path / "x"), "--freeze", "everything"]
    )
    assert bad.exit_code == 2 and "freeze must be one of" in bad.output
