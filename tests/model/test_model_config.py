"""The model-config contract (vla.model.contract.ModelConfig): the shared base and its checks, the
grounding sub-config pi0 / pi0.5 take by composition, and the old flat layout still loading."""

import json

import numpy as np
import pytest
import torch

from vla.config import load_preset
from vla.model.contract import ModelConfig
from vla.model.grounding.tokens import FLAT_FIELDS, GroundingConfig
from vla.model.interop.checkpoint import Checkpoint, CheckpointConfig, build_from_checkpoint, save_checkpoint
from vla.model.registry import MODEL_TYPES, model_type
from vla.spec import Camera, Dim, Embodiment, SpecError

from model.tiny_configs import tiny_backbone, tiny_pi0

# The five fields the layout before [model.grounding] wrote flat into every pi0 / pi0.5 config.
PLAIN_FLAT = {
    "grounding_tokens": 0,
    "env_state_loss": 0.0,
    "env_state_dim": 6,
    "env_state_input": False,
    "grounding_keypoints": 0,
}


def _flat(d: dict) -> dict:
    """A config dict in the new layout -> the old flat one (as config.json was written before)."""
    d = dict(d)
    g = d.pop("grounding")
    flat = dict(PLAIN_FLAT)
    if g is not None:
        back = {v: k for k, v in FLAT_FIELDS.items()}
        flat.update({back[k]: v for k, v in g.items()})
    return {**d, **flat}


def test_every_type_derives_from_the_base_and_round_trips():
    for name in ("pi0-tiny", "pi05-tiny", "fast-tiny", "pi0-paligemma", "pi0-smolvlm2-tiny"):
        p = load_preset(name)
        mt = model_type(p.type)
        cfg = mt.make_config(p.model, embodiments={"a": (3, 2)})
        assert isinstance(cfg, ModelConfig) and issubclass(mt.config, ModelConfig)
        assert mt.make_config(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert set(MODEL_TYPES) == {"pi0", "pi05", "fast"}


def test_base_fields_are_checked_with_expected_and_actual():
    with pytest.raises(SpecError, match=r"pi0: horizon must be >= 1, got horizon = 0"):
        tiny_pi0(horizon=0)
    with pytest.raises(SpecError, match=r"cameras and max_tokens must be >= 1, got cameras = 0, max_tokens = -1"):
        tiny_pi0(cameras=0, max_tokens=-1)
    with pytest.raises(SpecError, match=r"prompt_format must be one of .*'plain'.*got 'chat'"):
        tiny_pi0(prompt_format="chat")
    with pytest.raises(SpecError, match=r"embodiments\['a'\] must be \(state_dim, action_dim\).*got \(3,\)"):
        tiny_pi0(embodiments={"a": [3]})
    with pytest.raises(SpecError, match=r"fast: max_action_tokens must be an int >= 3.*got 2"):
        model_type("fast").config(backbone=tiny_backbone(), max_action_tokens=2)
    with pytest.raises(SpecError, match=r"fast: horizon must be >= 1, got horizon = 0"):
        model_type("fast").config(backbone=tiny_backbone(), horizon=0)
    # embodiments from JSON (lists) or numpy ints become (int, int) pairs
    assert tiny_pi0(embodiments={"a": [3, np.int64(2)]}).embodiments == {"a": (3, 2)}


def test_what_memory_estimation_and_export_ask_of_a_config():
    g = tiny_pi0(grounding=GroundingConfig(tokens=3))
    plain = tiny_pi0()
    assert g.prefix_tokens == plain.prefix_tokens + 3
    assert plain.prefix_tokens == plain.cameras * plain.backbone.tokens_per_image + plain.max_tokens
    pi0 = model_type("pi0").model
    assert pi0.layer_streams(g) == [(g.prefix_tokens, 32), (g.horizon + 1, 16)]  # + the state token
    assert model_type("pi05").model.layer_streams(plain)[1] == (plain.horizon, 16)  # no state token
    fast = model_type("fast").config(backbone=tiny_backbone(), max_action_tokens=8)
    assert model_type("fast").model.layer_streams(fast) == [(fast.prefix_tokens + 1 + 8, 32)]
    shallow = g.with_depths(1, 3)
    assert (shallow.backbone.text.depth, shallow.expert.depth, shallow.backbone.vision_depth) == (1, 1, 3)
    assert fast.with_depths(1, 2).backbone.text.depth == 1
    assert tiny_pi0(shared_head_dim=8).padded_dim == 8 and plain.padded_dim == 0 and fast.padded_dim == 0
    assert not fast.predicts_env_state and not plain.predicts_env_state


def test_old_flat_presets_map_to_the_grounding_table(tmp_path):
    new = load_preset("pi0-tiny")
    assert new.model["grounding"] == {"tokens": 4, "env_state_loss": 1.0, "keypoints": 8}
    mt = model_type("pi0")
    flat = {k: v for k, v in new.model.items() if k != "grounding"}
    flat.update(grounding_tokens=4, env_state_loss=1.0, grounding_keypoints=8)
    assert mt.make_config(flat) == mt.make_config(new.model)
    assert mt.make_config({**flat, **PLAIN_FLAT}).grounding is None  # grounding_tokens = 0: pi0 as published
    with pytest.raises(SpecError, match=r"grounding_keypoints = 8 feed the grounding tokens: set grounding_tokens > 0"):
        mt.make_config({**flat, "grounding_tokens": 0, "env_state_loss": 0.0})
    with pytest.raises(SpecError, match=r"both \[model.grounding\] and the older flat fields \['grounding_tokens'\]"):
        mt.make_config({**new.model, "grounding_tokens": 4})
    with pytest.raises(SpecError, match=r"pi0 model config: .*unexpected keyword argument 'colour'"):
        mt.make_config({**new.model, "grounding": {"tokens": 2, "colour": 1}})


def _embodiment() -> Embodiment:
    return Embodiment(
        name="arm",
        state=tuple(Dim(f"s{i}") for i in range(3)),
        actions=tuple(Dim(f"a{i}") for i in range(3)),
        cameras=(Camera("front", 16, 16),),
        control_hz=10.0,
    )


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_a_checkpoint_written_in_the_old_flat_layout_loads_with_the_same_weights(tmp_path, kind):
    """config.json as written before [model.grounding]: the same config, weights and actions."""
    mt = model_type(kind)
    grounding = GroundingConfig(tokens=2, keypoints=2, env_state_loss=1.0, env_state_input=kind == "pi0")
    cfg = mt.make_config(
        tiny_pi0().to_dict() | {"embodiments": {"arm": (3, 3)}, "cameras": 1, "grounding": grounding},
    )
    torch.manual_seed(0)
    weights = mt.build(cfg, text_vocab=64).state_dict()
    rc = CheckpointConfig(kind, cfg, "zscore", {"arm": _embodiment()}, text_vocab=64)
    ck = save_checkpoint(tmp_path / "ck", weights=weights, config=rc, stats={}, text=None)
    meta = json.loads((ck / "config.json").read_text())
    assert meta["policy"]["config"]["grounding"]["tokens"] == 2 and "grounding_tokens" not in meta["policy"]["config"]
    model_new, _, _ = build_from_checkpoint(Checkpoint(ck))

    meta["policy"]["config"] = _flat(meta["policy"]["config"])
    assert meta["policy"]["config"]["grounding_tokens"] == 2 and "grounding" not in meta["policy"]["config"]
    (ck / "config.json").write_text(json.dumps(meta))
    old = Checkpoint(ck)
    assert old.resolved.model == cfg
    model_old, _, cfg_old = build_from_checkpoint(old)
    assert set(model_old.state_dict()) == set(weights)  # state_dict keys unchanged by the layout
    assert all(torch.equal(model_old.state_dict()[k], v) for k, v in weights.items())
    batch = cfg_old.example_batch(2, vocab_size=64)
    noise = torch.randn(2, cfg.horizon, 3)
    torch.testing.assert_close(
        model_old.sample_actions(batch, noise=noise), model_new.sample_actions(batch, noise=noise)
    )


def test_a_plain_checkpoint_in_the_old_layout_is_pi0_as_published(tmp_path):
    mt = model_type("pi0")
    cfg = mt.make_config(tiny_pi0().to_dict() | {"embodiments": {"arm": (3, 3)}, "cameras": 1})
    rc = CheckpointConfig("pi0", cfg, "zscore", {"arm": _embodiment()}, text_vocab=64)
    ck = save_checkpoint(
        tmp_path / "ck", weights=mt.build(cfg, text_vocab=64).state_dict(), config=rc, stats={}, text=None
    )
    meta = json.loads((ck / "config.json").read_text())
    meta["policy"]["config"] = _flat(meta["policy"]["config"])
    (ck / "config.json").write_text(json.dumps(meta))
    model, _, got = build_from_checkpoint(Checkpoint(ck))
    assert got == cfg and got.grounding is None and model.grounding is None
