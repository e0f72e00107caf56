"""The model contract, over every preset in policies/ (a new preset is covered by dropping a TOML
there): build -> loss + backward -> sample -> train/save a checkpoint -> load -> Policy.infer ->
served round trip. Presets too big for a CPU test are shrunk in width and depth only (and in the
number of routed experts; Qwen2.5-VL, whose decoder width is heads * head_dim, in head_dim): their
type, backbone family, head counts, attachment, horizon, camera slots and token budgets are kept."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vla.config import load_preset
from vla.model.contract import ActionModel, ActionSample
from vla.model.interop.checkpoint import Checkpoint, CheckpointError, build_from_checkpoint
from vla.model.registry import MODEL_TYPES, model_type
from vla.spec import SpecError

from train.conftest import two_stores  # noqa: F401  (session fixture: two tiny stores, armA and armB)

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "policies").glob("*.toml"))
TRAIN = {"steps": 2, "batch_size": 2, "workers": 0, "warmup": 1, "log_every": 1, "fast_fit_chunks": 50}


def cpu_sized(name: str):
    """The preset with CPU-sized widths and depths (if it is larger), and the tiny training schedule."""
    preset = load_preset(name)
    model = dict(preset.model)
    bb = dict(model["backbone"])
    if bb["vision_width"] > 256 or bb["text"]["width"] > 512:
        patch, merge = bb["patch_size"], bb.get("token_merge", 1)
        bb.update(
            image_size=2 * patch * merge,
            vision_width=32,
            vision_depth=1,
            vision_heads=2,
            vision_mlp=32,
            vocab_size=300,
            text=dict(bb["text"], width=64, depth=2, mlp=64),
        )
        bb.pop("pretrained", None)
        expert = dict(width=32, depth=2, mlp=32)
        family, heads = bb.get("family", "paligemma"), bb["text"]["heads"]
        if family != "paligemma":  # transformers' Llama / Qwen configs want widths divisible by the heads
            bb["text"]["width"] = 4 * heads
            expert["width"] = 2 * model.get("expert", {}).get("heads", heads)
        if family == "qwen2_5_vl":  # its decoder's width is heads * head_dim: a smaller head_dim
            bb["text"].update(head_dim=8, width=8 * heads)
            expert["head_dim"] = 8
        if bb.get("moe_experts"):
            bb.update(moe_experts=4, moe_top_k=2, moe_mlp=32)
        if bb.get("deepstack"):
            bb["deepstack"] = [0]
        if "expert" in model:
            model["expert"] = dict(model["expert"], **expert)
    model["backbone"] = bb
    return load_preset(
        name, overrides={"model": model, "train": TRAIN, "text": {"vocab_size": 300, "pretrained": None}}
    )


def test_presets_exist_and_every_model_type_is_used():
    assert {"pi0-tiny", "fast-tiny"} <= set(PRESETS)
    assert {load_preset(p).type for p in PRESETS} == set(MODEL_TYPES)


@pytest.mark.parametrize("name", PRESETS)
def test_model_contract(name, two_stores, tmp_path):  # noqa: F811
    from vla.runtime.client import RemotePolicy
    from vla.runtime.policy import load_policy
    from vla.runtime.server import PolicyServer, ServerConfig
    from vla.train.trainer import train

    preset = cpu_sized(name)
    mt = model_type(preset.type)

    # Through the trainer: fit assets, build, loss + backward, checkpoint.
    ck = train(preset, two_stores, tmp_path / "ck", progress=False)
    model, tf, cfg = build_from_checkpoint(Checkpoint(ck))
    assert isinstance(model, ActionModel) and isinstance(model, mt.model) and isinstance(cfg, mt.config)
    assert set(cfg.embodiments) == {"armA", "armB"}
    assert cfg.horizon == load_preset(name).model.get("horizon", cfg.horizon)

    # The contract on the model itself: example batch -> per-sample loss -> gradients reach the weights.
    model.train()
    batch = model.example_batch(3, seed=1)
    loss = model.compute_loss(batch, torch.Generator().manual_seed(0))
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    names = batch["embodiment"]
    noise = model.initial_noise(names, torch.Generator().manual_seed(2))
    out = model.sample(batch, num_steps=2, noise=noise)
    a_max = getattr(cfg, "shared_head_dim", 0) or max(cfg.embodiments[n][1] for n in names)  # openpi: padded
    assert isinstance(out, ActionSample)
    assert out.actions.shape == (3, cfg.horizon, a_max) and out.malformed.shape == (3,)
    assert out.malformed.dtype == torch.bool and torch.isfinite(out.actions).all()
    torch.testing.assert_close(model.sample_actions(batch, num_steps=2, noise=noise), out.actions)

    # The runtime Policy and the served round trip.
    policy = load_policy(ck)
    obs = {
        "observation/state": np.zeros(4, np.float32),
        "task": "reach the red target",
        "embodiment": "armA",
        "observation/images/front": np.zeros((16, 16, 3), np.uint8),
        "observation/images/wrist": np.zeros((16, 16, 3), np.uint8),
    }
    local = policy.infer(obs)
    assert local["actions"].shape == (cfg.horizon, 3) and local["actions"].dtype == np.float32
    assert np.isfinite(local["actions"]).all()
    srv = PolicyServer(policy, ServerConfig(port=0)).start()
    try:
        client = RemotePolicy(srv.url)
        assert client.metadata["policy_type"] == preset.type
        assert client.metadata["action_horizon"] == cfg.horizon
        remote = client.infer(obs)
        client.close()
    finally:
        srv.stop()
    assert remote["actions"].shape == (cfg.horizon, 3) and np.isfinite(remote["actions"]).all()


def test_unknown_model_type_lists_the_registered_types(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text(
        (Path(__file__).resolve().parents[1] / "policies" / "pi0-tiny.toml")
        .read_text()
        .replace('type = "pi0"', 'type = "diffusion"')
    )
    preset = load_preset(p)
    listed = ", ".join(repr(n) for n in sorted(MODEL_TYPES))
    with pytest.raises(SpecError, match=re.escape(f"unknown model type 'diffusion'; registered types: [{listed}]")):
        model_type(preset.type)
    from vla.train.trainer import train

    with pytest.raises(SpecError, match="registered types"):
        train(preset, ["does-not-matter"], tmp_path / "ck", progress=False)  # refused before any data is read


@pytest.fixture(scope="module")
def one_step_ckpt(tmp_path_factory, two_stores):  # noqa: F811
    from vla.train.trainer import train

    return train(cpu_sized("pi0-tiny"), two_stores, tmp_path_factory.mktemp("ck") / "ck", steps=1, progress=False)


def _rewrite_config(ck: Path, edit) -> None:
    import json

    d = json.loads((ck / "config.json").read_text())
    edit(d)
    (ck / "config.json").write_text(json.dumps(d))


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["policy"].pop("norm_mode"), "policy.norm_mode"),
        (lambda d: d.pop("embodiments"), "embodiments"),
        (lambda d: d["policy"].pop("type"), "policy.type"),
        (lambda d: d["policy"]["config"].pop("backbone"), "backbone"),
        (lambda d: d["policy"]["config"].update(old_knob=1), "old_knob"),
        (lambda d: d.update(version=99), "version 99"),
    ],
)
def test_config_json_from_another_version_names_the_field(tmp_path, one_step_ckpt, edit, field):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(one_step_ckpt, bad)
    _rewrite_config(bad, edit)
    with pytest.raises(CheckpointError, match=field):
        Checkpoint(bad, verify=False)
