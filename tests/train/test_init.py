"""`vla train --init`: fine-tune a converted pi0 (openpi convention) on an imported 6-D LeRobot
dataset, with stats and tokenizer from the source where it has them, then serve it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file, save_file

from vla.config import load_preset
from vla.data.lerobot_import import import_lerobot
from vla.model.interop.checkpoint import Checkpoint
from vla.model.interop.convert import convert
from vla.model.text import TextTokenizer
from vla.spec import SpecError
from vla.train.trainer import train

from model.test_convert import PRESET, lerobot_layout, tiny_pi0_reference

SO100 = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot" / "so100_video"  # written by LeRobot 0.4.4
TRAIN = "\n[train]\nsteps = 3\nbatch_size = 2\nworkers = 0\nwarmup = 1\nlog_every = 1\nlr = 1e-3\n"


@pytest.fixture(scope="module")
def converted_with_stats(tmp_path_factory):
    """A tiny pi0 in LeRobot's layout with a LeRobot stats file (6-D so100) and a tokenizer."""
    root = tmp_path_factory.mktemp("init")
    src = root / "src"
    src.mkdir()
    save_file(lerobot_layout(tiny_pi0_reference(seed=2)), str(src / "model.safetensors"))
    (src / "config.json").write_text(json.dumps({"type": "pi0"}))
    TextTokenizer.train(["pick the red cube", "push the blue block left"], 280).save(src / "tokenizer.json")
    stats = {
        f"{k}.{s}": v
        for k in ("observation.state", "action")
        for s, v in (
            ("mean", np.full(6, 0.5, np.float32)),
            ("std", np.full(6, 2.0, np.float32)),
            ("min", np.full(6, -3, np.float32)),
            ("max", np.full(6, 4, np.float32)),
            ("q01", np.full(6, -2, np.float32)),
            ("q99", np.full(6, 3, np.float32)),
        )
    }
    save_np(stats, str(src / "policy_preprocessor_step_1_normalizer_processor.safetensors"))
    (src / "policy_preprocessor.json").write_text(
        json.dumps(
            {
                "name": "policy_preprocessor",
                "steps": [
                    {"registry_name": "rename_observations_processor", "config": {}},
                    {
                        "registry_name": "normalizer_processor",
                        "config": {},
                        "state_file": "policy_preprocessor_step_1_normalizer_processor.safetensors",
                    },
                ],
            }
        )
    )
    (root / "tiny.toml").write_text(PRESET + TRAIN)
    if not SO100.exists():
        pytest.skip(f"LeRobot fixture {SO100} not found")
    import_lerobot(SO100, root / "store", embodiment="so100")
    store = root / "store"
    out = convert(src, root / "converted", preset=root / "tiny.toml", embodiment=_so100_toml(root, store))
    return root, src, out, store


def _so100_toml(root: Path, store) -> Path:
    """The imported dataset's embodiment as a TOML file (the converted stats belong to it)."""
    from vla.data import EpisodeStore

    emb = next(iter(EpisodeStore.open(store).embodiments.values()))
    lines = [f'name = "{emb.name}"', f"control_hz = {emb.control_hz}", "state = ["]
    lines += [f'  {{ name = "{d.name}" }},' for d in emb.state] + ["]", "actions = ["]
    lines += [f'  {{ name = "{d.name}" }},' for d in emb.actions] + ["]", "cameras = ["]
    lines += [f'  {{ name = "{c.name}", height = {c.height}, width = {c.width} }},' for c in emb.cameras] + ["]"]
    p = root / "so100.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_converted_checkpoint_carries_source_stats_and_tokenizer(converted_with_stats):
    _, _, out, _ = converted_with_stats
    ck = Checkpoint(out)
    (name,) = ck.embodiments
    assert ck.text() is not None and ck.text().vocab_size <= 300
    np.testing.assert_allclose(ck.stats()[name]["observation/state"].std, 2.0)
    assert "normalizer_processor" in ck.resolved.source["stats"]


def test_finetune_from_converted_pi0_on_a_6d_lerobot_robot_and_serve(converted_with_stats):
    from vla.runtime.client import RemotePolicy
    from vla.runtime.policy import load_policy
    from vla.runtime.server import PolicyServer, ServerConfig

    root, _, converted, store = converted_with_stats
    preset = load_preset(root / "tiny.toml")
    ck = train(preset, [str(store)], root / "ft", init=converted, progress=False)
    c = Checkpoint(ck)
    (name,) = c.embodiments
    assert c.resolved.model.shared_head_dim == 32 and c.embodiments[name].action_dim == 6
    np.testing.assert_allclose(c.stats()[name]["observation/state"].std, 2.0)  # the source's stats, kept
    before, after = load_file(str(converted / "model.safetensors")), load_file(str(ck / "model.safetensors"))
    assert before.keys() == after.keys()
    assert not torch.equal(before["action_out.linear.weight"], after["action_out.linear.weight"])  # it trained
    # ... starting from the converted weights (3 small steps move them a little, not a re-init)
    rel = (
        after["backbone.language_model.layers.0.mlp.up_proj.weight"]
        - before["backbone.language_model.layers.0.mlp.up_proj.weight"]
    ).norm() / before["backbone.language_model.layers.0.mlp.up_proj.weight"].norm()
    assert 0 < rel < 0.2
    emb = c.embodiments[name]
    obs = {"observation/state": np.zeros(6, np.float32), "prompt": "pick the red cube"}
    for cam in emb.cameras:
        obs[f"observation/images/{cam.name}"] = np.zeros(cam.shape, np.uint8)
    srv = PolicyServer(load_policy(ck), ServerConfig(port=0)).start()
    try:
        client = RemotePolicy(srv.url)
        out = client.infer(obs)
        client.close()
    finally:
        srv.stop()
    assert out["actions"].shape == (5, 6) and np.isfinite(out["actions"]).all()


def test_init_refuses_a_checkpoint_of_another_type(converted_with_stats, tmp_path):
    root, _, converted, store = converted_with_stats
    p = tmp_path / "p05.toml"
    p.write_text((root / "tiny.toml").read_text().replace('type = "pi0"', 'type = "pi05"'))
    with pytest.raises(SpecError, match="is a pi0 checkpoint but preset"):
        train(load_preset(p), [str(store)], tmp_path / "ft", init=converted, progress=False)


def test_init_refuses_a_checkpoint_whose_geometry_contradicts_the_preset(converted_with_stats, tmp_path):
    root, _, converted, store = converted_with_stats
    p = tmp_path / "wide.toml"
    text = (root / "tiny.toml").read_text()
    p.write_text(text.replace("depth = 2\nmlp = 48", "depth = 2\nmlp = 64").replace("horizon = 5", "horizon = 7"))
    with pytest.raises(
        SpecError,
        match=r"geometry contradicts preset 'wide' \(model.horizon: preset 7, checkpoint 5; "
        r"model.expert.mlp: preset 64, checkpoint 48\)",
    ):
        train(load_preset(p), [str(store)], tmp_path / "ft", init=converted, progress=False)
    assert not (tmp_path / "ft").exists()


def test_lora_finetune_from_converted_pi0_serves_through_the_openpi_protocol(converted_with_stats, tmp_path):
    """--init a converted pi0 (openpi convention, 32-dim shared head) + --lora on an imported 6-D LeRobot
    robot: only adapters and unfrozen parts train, the merged checkpoint serves over the websocket protocol."""
    from vla.runtime.client import RemotePolicy
    from vla.runtime.policy import load_policy
    from vla.runtime.server import PolicyServer, ServerConfig

    root, _, converted, store = converted_with_stats
    ck = train(
        load_preset(root / "tiny.toml"), [str(store)], tmp_path / "ft", init=converted, lora_rank=4, progress=False
    )
    before, after = load_file(str(converted / "model.safetensors")), load_file(str(ck / "model.safetensors"))
    assert before.keys() == after.keys()
    norms = [k for k in before if k.startswith(("backbone.language_model.", "expert.")) and "norm" in k]
    assert norms and all(torch.equal(before[k], after[k]) for k in norms)  # frozen by LoRA
    assert not torch.equal(before["expert.layers.0.mlp.up_proj.weight"], after["expert.layers.0.mlp.up_proj.weight"])
    assert (ck / "adapter_model.safetensors").exists()
    c = Checkpoint(ck)
    (name,) = c.embodiments
    emb = c.embodiments[name]
    obs = {"observation/state": np.zeros(6, np.float32), "prompt": "pick the red cube"}
    for cam in emb.cameras:
        obs[f"observation/images/{cam.name}"] = np.zeros(cam.shape, np.uint8)
    srv = PolicyServer(load_policy(ck), ServerConfig(port=0)).start()
    try:
        client = RemotePolicy(srv.url)
        meta = client.metadata
        out = client.infer(obs)
        client.close()
    finally:
        srv.stop()
    assert meta["policy_type"] == "pi0" and out["actions"].shape == (5, 6) and np.isfinite(out["actions"]).all()
