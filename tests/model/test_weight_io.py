"""Loading with one copy of the weights (vla.model.interop.weight_io): the file's tensors become the
parameters, read into fresh memory; the model's own parameters are never allocated."""

import threading

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vla.config import load_preset
from vla.model.interop.checkpoint import (
    Checkpoint,
    CheckpointConfig,
    CheckpointError,
    build_from_checkpoint,
    save_checkpoint,
)
from vla.model.interop.weight_io import params_on_meta, read_safetensors
from vla.model.registry import model_type
from vla.spec import Camera, Dim, Embodiment


def tiny_checkpoint(path, *, dtype=torch.float32, seed=0):
    """pi0-tiny with random weights saved in `dtype` -> (checkpoint dir, the weights as saved)."""
    p = load_preset("pi0-tiny")
    emb = Embodiment(
        name="arm",
        state=tuple(Dim(f"s{i}") for i in range(3)),
        actions=tuple(Dim(f"a{i}") for i in range(3)),
        cameras=(Camera("front", 16, 16),),
        control_hz=10.0,
    )
    mt = model_type("pi0")
    cfg = mt.make_config(p.model, embodiments={"arm": (3, 3)})
    torch.manual_seed(seed)
    weights = {k: v.to(dtype) for k, v in mt.build(cfg, text_vocab=300).state_dict().items()}
    rc = CheckpointConfig("pi0", cfg, p.norm_mode, {"arm": emb}, text_vocab=300)
    return save_checkpoint(path, weights=weights, config=rc, stats={}, text=None), weights


def test_read_safetensors_equals_safetensors_for_every_kind_of_tensor(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5),
        "bf16": torch.randn(7).bfloat16(),
        "f16": torch.randn(2, 2).half(),
        "i64": torch.arange(6).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    save_file(tensors, tmp_path / "w.safetensors", metadata={"note": "x"})
    got, want = read_safetensors(tmp_path / "w.safetensors"), load_file(tmp_path / "w.safetensors")
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape and torch.equal(got[k], want[k]), k


def test_a_truncated_file_is_refused_naming_the_checkpoint(tmp_path):
    ck, _ = tiny_checkpoint(tmp_path / "ck")
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="model.safetensors cannot be read.*file ends inside|do not fit"):
        Checkpoint(ck, verify=False).weights()


def test_loading_assigns_the_files_tensors_instead_of_copying_them(tmp_path, monkeypatch):
    """The no-second-copy property: every parameter *is* a tensor read from the file (the old
    build-then-load_state_dict copied each into a randomly initialised model)."""
    ck, saved = tiny_checkpoint(tmp_path / "ck")
    read = []
    original = Checkpoint.weights
    monkeypatch.setattr(Checkpoint, "weights", lambda self: read.append(original(self)) or read[-1])
    model, _, _ = build_from_checkpoint(Checkpoint(ck))
    from_file = {t.data_ptr() for t in read[0].values()}
    params = dict(model.named_parameters())
    assert params and all(p.data_ptr() in from_file for p in params.values())
    assert all(not p.is_meta for p in params.values()) and all(not b.is_meta for b in model.buffers())
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if k in state)


def test_weights_in_another_dtype_are_cast_to_the_models_and_buffers_are_built(tmp_path):
    ck, saved = tiny_checkpoint(tmp_path / "ck", dtype=torch.bfloat16)
    model, _, cfg = build_from_checkpoint(Checkpoint(ck))
    plain = model_type("pi0").build(cfg, text_vocab=300)  # built as before: real parameters and buffers
    state = model.state_dict()
    for k, v in plain.state_dict().items():
        assert state[k].dtype == v.dtype, k
        if k in saved:
            assert torch.equal(state[k], saved[k].to(v.dtype)), k
    buffers = dict(model.named_buffers())
    for k, v in plain.named_buffers():  # the non-persistent ones (RoPE frequencies ...) are in no file
        assert torch.equal(buffers[k], v), k
    assert all(p.requires_grad == q.requires_grad for p, q in zip(model.parameters(), plain.parameters()))


def test_params_on_meta_holds_for_this_thread_only_and_is_undone():
    register = nn.Module.register_parameter
    other = []
    with params_on_meta():
        here = nn.Linear(4, 4)
        t = threading.Thread(target=lambda: other.append(nn.Linear(4, 4)))
        t.start()
        t.join()
    assert here.weight.is_meta and here.bias.is_meta
    assert not other[0].weight.is_meta
    assert nn.Module.register_parameter is register and not nn.Linear(2, 2).weight.is_meta


def test_vision_key_alias_both_ways():
    from vla.model.interop.layout import expected_key, match_module_keys, vision_alias

    old, new = "backbone.vision_tower.vision_model.encoder.w", "backbone.vision_tower.encoder.w"
    assert vision_alias(old) == new and vision_alias(new) == old
    assert expected_key(new, {old}) == old and expected_key(old, {new}) == new
    assert expected_key("expert.w", {old}) is None
    assert list(match_module_keys({new: 1, "expert.w": 2}, {old, "expert.w"})) == [old, "expert.w"]
