"""`vla convert` / `vla export-weights`: parity with transformers' PI0 (the pi0 oracle) on tiny
random weights written in LeRobot's layout by this test, and the bad-input cases."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PI0Config, PI0ForConditionalGeneration

from vla.model.interop.checkpoint import Checkpoint, build_from_checkpoint
from vla.model.interop.convert import convert
from vla.spec import SpecError

IMAGE, PATCH, VOCAB, H = 28, 14, 300, 5
TPI = (IMAGE // PATCH) ** 2  # tokens per image
IMAGE_TOKEN = VOCAB  # as PI0's default: the id after the text vocabulary

PRESET = f"""
type = "pi0"
norm_mode = "zscore"
[model]
horizon = {H}
num_steps = 10
cameras = 2
max_tokens = 8
shared_head_dim = 32
prompt_format = "paligemma"
[model.backbone]
image_size = {IMAGE}
patch_size = {PATCH}
vision_width = 32
vision_depth = 1
vision_heads = 2
vision_mlp = 64
vocab_size = {VOCAB}
text = {{ width = 64, depth = 2, mlp = 96, heads = 2, kv_heads = 1, head_dim = 16 }}
[model.expert]
width = 32
depth = 2
mlp = 48
heads = 2
kv_heads = 1
head_dim = 16
"""


def tiny_pi0_reference(seed: int = 0) -> PI0ForConditionalGeneration:
    cfg = PI0Config(
        vlm_config={
            "text_config": {
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "intermediate_size": 96,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "head_dim": 16,
                "vocab_size": VOCAB,
            },
            "vision_config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "patch_size": PATCH,
                "image_size": IMAGE,
                "vision_use_head": False,
            },
            "projection_dim": 64,
            "image_token_id": IMAGE_TOKEN,
        },
        dit_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "intermediate_size": 48,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
        },
        chunk_size=H,
    )
    torch.manual_seed(seed)
    m = PI0ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # weights large enough that every path matters numerically
        for name, p in m.named_parameters():
            p.normal_(0.0, 0.3 if "norm" in name else 0.08)
    return m


def lerobot_layout(m: PI0ForConditionalGeneration, prefix: str = "") -> dict:
    """PI0's weights as LeRobot / openpi store them: paligemma_with_expert.*, lm_head-only embedding."""
    out = {}
    for k, v in m.state_dict().items():
        if k.startswith("model.vlm.vision_tower."):
            k = "paligemma_with_expert.paligemma.model.vision_tower.vision_model." + k[len("model.vlm.vision_tower.") :]
        elif k == "model.vlm.language_model.embed_tokens.weight":
            k = "paligemma_with_expert.paligemma.lm_head.weight"
        elif k.startswith("model.vlm."):
            k = "paligemma_with_expert.paligemma.model." + k[len("model.vlm.") :]
        elif k == "model.dit.embed_tokens.weight":
            k = "paligemma_with_expert.gemma_expert.lm_head.weight"
        elif k.startswith("model.dit."):
            k = "paligemma_with_expert.gemma_expert.model." + k[len("model.dit.") :]
        elif k.startswith("embed_action_time."):
            k = k[len("embed_action_time.") :]
        out[prefix + k] = v.detach().clone().contiguous()
    return out


def batches(seed: int = 1):
    """The same observation for vla (model side) and for transformers' PI0: row 0 has both
    cameras and 6 text tokens, row 1 only the first camera and 3 text tokens."""
    g = torch.Generator().manual_seed(seed)
    b, lt = 2, 8
    images = torch.rand(b, 2, 3, IMAGE, IMAGE, generator=g) * 2 - 1
    image_mask = torch.tensor([[True, True], [True, False]])
    n_text = [6, 3]
    tokens = torch.randint(4, VOCAB - 1, (b, lt), generator=g)
    token_mask = torch.arange(lt)[None] < torch.tensor(n_text)[:, None]
    state = torch.randn(b, 32, generator=g)
    vla = {
        "images": images,
        "image_mask": image_mask,
        "tokens": tokens * token_mask,
        "token_mask": token_mask,
        "state": state,
        "embodiment": ["openpi"] * b,
    }
    rows = [[IMAGE_TOKEN] * (TPI * int(image_mask[i].sum())) + tokens[i, : n_text[i]].tolist() for i in range(b)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    hf = {
        "state": state,
        "input_ids": ids,
        "pixel_values": images,
        "attention_mask": attn,
        "pixel_attention_mask": image_mask,
    }
    return vla, hf, torch.randn(b, H, 32, generator=g)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    ref = tiny_pi0_reference()
    (root / "tiny.toml").write_text(PRESET)
    outs = {}
    for name, prefix in (("hub", ""), ("lerobot_saved", "model.")):
        src = root / f"src_{name}"
        src.mkdir()
        save_file(lerobot_layout(ref, prefix), str(src / "model.safetensors"))
        (src / "config.json").write_text(json.dumps({"type": "pi0"}))
        outs[name] = convert(src, root / f"out_{name}", preset=root / "tiny.toml")
    return ref, outs, root


@pytest.mark.parametrize("source", ["hub", "lerobot_saved"])
@pytest.mark.parametrize("path", ["cached", "uncached", "fused"])
def test_converted_pi0_reproduces_transformers_pi0(converted, source, path):
    ref, outs, _ = converted
    model, _, cfg = build_from_checkpoint(Checkpoint(outs[source]))
    assert cfg.shared_head_dim == 32
    vla, hf, noise = batches()
    with torch.no_grad():
        want = ref.sample_actions(noise=noise.clone(), num_steps=10, **hf)
    if path == "fused":
        model.prepare_for_inference()
    got = model.sample_actions(vla, num_steps=10, noise=noise.clone(), use_cache=path != "uncached")
    assert got.shape == (2, H, 32)
    assert (got - want).abs().max() <= 1e-4


def test_converted_pi0_compiled_path(converted):
    ref, outs, _ = converted
    model, _, _ = build_from_checkpoint(Checkpoint(outs["hub"]))
    model.prepare_for_inference()
    assert model.enable_compile()
    vla, hf, noise = batches(seed=3)
    with torch.no_grad():
        want = ref.sample_actions(noise=noise.clone(), num_steps=10, **hf)
    got = model.sample_actions(vla, num_steps=10, noise=noise.clone())
    assert (got - want).abs().max() <= 1e-4


def test_converted_checkpoint_without_stats_or_tokenizer_refuses_to_serve_clearly(converted):
    from vla.runtime.policy import load_policy

    _, outs, _ = converted
    ck = Checkpoint(outs["hub"])
    assert ck.text() is None and ck.stats() == {} and ck.resolved.source["type"] == "pi0"
    with pytest.raises(SpecError, match="no norm stats for \\['openpi'\\].*vla train PRESET --init"):
        load_policy(outs["hub"])  # so `vla serve` refuses it at start, saying why


# ---- bad input ----


def _src(root, name, weights, config=None):
    src = root / name
    src.mkdir()
    save_file(weights, str(src / "model.safetensors"))
    if config is not None:
        (src / "config.json").write_text(json.dumps(config))
    return src


def test_unknown_layout_lists_key_groups(tmp_path, converted):
    src = _src(tmp_path, "odd", {"encoder.layers.0.weight": torch.zeros(2), "decoder.head.bias": torch.zeros(2)})
    with pytest.raises(SpecError, match=r"unknown weight layout.*encoder\.layers\.N"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unmatched_keys_are_named_by_group(tmp_path, converted):
    ref, _, root = converted
    w = lerobot_layout(ref)
    w["lora_adapters.0.A.weight"] = torch.zeros(3)
    with pytest.raises(SpecError, match=r"match no rule .* groups \['lora_adapters.N.A \(1\)'\]"):
        convert(_src(tmp_path, "extra", w), tmp_path / "out", preset=root / "tiny.toml")
    del w["lora_adapters.0.A.weight"]
    w["paligemma_with_expert.gemma_expert.model.layers.0.extra_adapter.weight"] = torch.zeros(3)
    with pytest.raises(SpecError, match=r"not weights of preset 'tiny'.*expert.layers.N"):
        convert(_src(tmp_path, "extra2", w), tmp_path / "out", preset=root / "tiny.toml")
    assert not (tmp_path / "out").exists()


def test_pi05_weights_under_a_pi0_preset_are_refused(tmp_path, converted):
    ref, _, root = converted
    w = {k: v for k, v in lerobot_layout(ref).items() if not k.startswith(("state_proj", "action_time_mlp"))}
    w["time_mlp_in.weight"] = torch.zeros(32, 32)
    with pytest.raises(SpecError, match="is a pi05 checkpoint, but preset"):
        convert(_src(tmp_path, "p05", w), tmp_path / "out", preset=root / "tiny.toml")
    with pytest.raises(SpecError, match="config.json says pi0 but the weights are pi05"):
        convert(_src(tmp_path, "p05b", w, {"type": "pi0"}), tmp_path / "out2")


def test_shape_contradicting_the_preset_names_key_and_shapes(tmp_path, converted):
    ref, _, root = converted
    w = lerobot_layout(ref)
    w["action_out_proj.weight"] = torch.zeros(24, 32)
    with pytest.raises(
        SpecError, match=r"action_out.linear.weight: shape \[24, 32\] contradicts .* expects \[32, 32\]"
    ):
        convert(_src(tmp_path, "shape", w), tmp_path / "out", preset=root / "tiny.toml")
    assert not (tmp_path / "out").exists()


def test_missing_files_are_named(tmp_path, converted):
    _, _, root = converted
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="no model.safetensors"):
        convert(tmp_path / "empty", tmp_path / "out", preset=root / "tiny.toml")
    idx = tmp_path / "sharded"
    idx.mkdir()
    (idx / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001.safetensors"}}))
    with pytest.raises(SpecError, match="model-00001.safetensors"):
        convert(idx, tmp_path / "out", preset=root / "tiny.toml")


def test_missing_weight_is_named(tmp_path, converted):
    ref, _, root = converted
    w = {k: v for k, v in lerobot_layout(ref).items() if k != "state_proj.bias"}
    with pytest.raises(SpecError, match="state_in.linear.bias"):
        convert(_src(tmp_path, "missing", w), tmp_path / "out", preset=root / "tiny.toml")


def test_sharded_source_converts(tmp_path, converted):
    ref, outs, root = converted
    w = lerobot_layout(ref)
    keys = sorted(w)
    src = tmp_path / "sharded"
    src.mkdir()
    half = len(keys) // 2
    save_file({k: w[k] for k in keys[:half]}, str(src / "model-00001-of-00002.safetensors"))
    save_file({k: w[k] for k in keys[half:]}, str(src / "model-00002-of-00002.safetensors"))
    index = {
        "weight_map": {
            k: ("model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.safetensors")
            for i, k in enumerate(keys)
        }
    }
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    out = convert(src, tmp_path / "out", preset=root / "tiny.toml")
    a, b = load_file(str(out / "model.safetensors")), load_file(str(outs["hub"] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- pi0.5: against the independent reference of the published math (model/pi_reference.py) ----


def _pi05_preset(geom) -> str:
    v, t, e = geom.vision, geom.text, geom.expert
    return f"""
type = "pi05"
norm_mode = "quantile"
[model]
horizon = {geom.chunk}
num_steps = 10
cameras = 2
max_tokens = 8
shared_head_dim = {geom.max_dim}
[model.backbone]
image_size = {v.image_size}
patch_size = {v.patch_size}
vision_width = {v.width}
vision_depth = {v.depth}
vision_heads = {v.heads}
vision_mlp = {v.mlp}
vocab_size = {t.vocab_size}
[model.backbone.text]
width = {t.width}
depth = {t.depth}
mlp = {t.mlp}
heads = {t.heads}
kv_heads = {t.kv_heads}
head_dim = {t.head_dim}
[model.expert]
width = {e.width}
depth = {e.depth}
mlp = {e.mlp}
heads = {t.heads}
kv_heads = {t.kv_heads}
head_dim = {t.head_dim}
"""


@pytest.fixture(scope="module")
def converted_pi05(tmp_path_factory):
    from model import pi_reference as ref

    root = tmp_path_factory.mktemp("pi05")
    geom = ref.tiny_geometry(pi05=True, chunk=5)
    weights = ref.random_lerobot_weights(geom, seed=4)
    (root / "pi05.toml").write_text(_pi05_preset(geom))
    src = root / "src"
    src.mkdir()
    save_file({"model." + k: v for k, v in weights.items()}, str(src / "model.safetensors"))
    (src / "config.json").write_text(json.dumps({"type": "pi05"}))
    return geom, weights, convert(src, root / "out", preset=root / "pi05.toml")


@pytest.mark.parametrize("path", ["cached", "uncached", "fused"])
def test_converted_pi05_reproduces_the_reference(converted_pi05, path):
    from model import pi_reference as ref

    geom, weights, out = converted_pi05
    model, _, cfg = build_from_checkpoint(Checkpoint(out))
    assert type(model).__name__ == "Pi05Model" and cfg.prompt_format == "pi05"
    g = torch.Generator().manual_seed(5)
    s, lt = geom.vision.image_size, 8
    batch = {
        "images": torch.rand(2, 2, 3, s, s, generator=g) * 2 - 1,
        "image_mask": torch.tensor([[True, True], [False, True]]),
        "tokens": torch.randint(4, geom.text.vocab_size, (2, lt), generator=g),
        "token_mask": torch.arange(lt)[None] < torch.tensor([[7], [4]]),
        "state": torch.randn(2, 32, generator=g),
        "embodiment": ["openpi", "openpi"],
    }
    noise = torch.randn(2, geom.chunk, 32, generator=g)
    want = ref.reference_sample(
        weights, geom, {k: v for k, v in batch.items() if k != "embodiment"}, noise, num_steps=10
    ).float()
    if path == "fused":
        model.prepare_for_inference()
    got = model.sample_actions(batch, num_steps=10, noise=noise, use_cache=path != "uncached")
    assert (got - want).abs().max() <= 1e-4


# ---- export: vla -> transformers PI0 / LeRobot layout ----


def _hf_batch(vla: dict, tpi: int, image_token: int):
    rows = [
        [image_token] * (tpi * int(vla["image_mask"][i].sum())) + vla["tokens"][i, vla["token_mask"][i]].tolist()
        for i in range(len(vla["embodiment"]))
    ]
    width = max(len(r) for r in rows)
    state = torch.nn.functional.pad(vla["state"], (0, 32 - vla["state"].shape[1]))
    return {
        "state": state,
        "input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "pixel_values": vla["images"],
        "pixel_attention_mask": vla["image_mask"],
    }


def test_export_loads_in_transformers_with_the_same_actions(converted, tmp_path):
    from vla.model.interop.export import export_weights

    _, outs, _ = converted
    exported = export_weights(outs["hub"], tmp_path / "hf")
    modes = {f.name: f.stat().st_mode & 0o777 for f in exported.iterdir()}
    assert len(set(modes.values())) == 1, modes  # model.safetensors was 0600, the rest 0644
    hf, info = PI0ForConditionalGeneration.from_pretrained(exported, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    model, _, _ = build_from_checkpoint(Checkpoint(outs["hub"]))
    vla, hf_batch, noise = batches(seed=7)
    with torch.no_grad():
        want = hf.eval().sample_actions(noise=noise.clone(), num_steps=10, **hf_batch)
    assert (model.sample_actions(vla, num_steps=10, noise=noise) - want).abs().max() <= 1e-4
    with pytest.raises(SpecError, match="exists"):
        export_weights(outs["hub"], exported)


def test_export_of_per_embodiment_heads_pads_one_embodiment(tmp_path):
    """A vla-trained pi0 (per-embodiment heads, two robots) exports one robot's heads zero-padded
    to 32: transformers' PI0 then gives that robot's actions in its first dims."""
    from vla.config import load_preset
    from vla.data import EpisodeStore
    from vla.data.synthetic import write_synthetic
    from vla.model.interop.export import export_weights
    from vla.train.trainer import train

    from helpers import tiny_embodiment
    from train.conftest import write_preset

    stores = []
    for name, (s, a, cams) in {
        "armA": (4, 3, (("front", 16, 16), ("wrist", 16, 16))),
        "armB": (6, 5, (("front", 20, 16),)),
    }.items():
        emb = tiny_embodiment(name, s=s, a=a, cams=cams)
        store = EpisodeStore.create(tmp_path / name, [emb])
        write_synthetic(store, emb, episodes=2, length=8, seed=len(stores))
        stores.append(str(tmp_path / name))
    ck = train(load_preset(write_preset(tmp_path / "p.toml")), stores, tmp_path / "ck", steps=2, progress=False)
    with pytest.raises(SpecError, match="choose one with --embodiment"):
        export_weights(ck, tmp_path / "x")
    exported = export_weights(ck, tmp_path / "hf", embodiment="armA")
    hf, info = PI0ForConditionalGeneration.from_pretrained(exported, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    model, _, cfg = build_from_checkpoint(Checkpoint(ck))
    batch = cfg.example_batch(2, vocab_size=Checkpoint(ck).resolved.text_vocab, seed=3)
    batch["embodiment"] = ["armA", "armA"]
    batch["state"] = batch["state"][:, :4]
    noise = torch.randn(2, cfg.horizon, 3)
    got = model.sample_actions(batch, noise=noise)
    tpi = (cfg.backbone.image_size // cfg.backbone.patch_size) ** 2
    with torch.no_grad():
        want = hf.eval().sample_actions(
            noise=torch.nn.functional.pad(noise, (0, 29)),
            num_steps=cfg.num_steps,
            **_hf_batch(batch, tpi, hf.config.vlm_config.image_token_id),
        )
    assert (got - want[..., :3]).abs().max() <= 1e-4


def test_pi05_export_is_lerobots_layout_and_reproduces_the_reference(converted_pi05, tmp_path):
    from vla.model.interop.export import export_weights

    from model import pi_reference as ref

    geom, weights, out = converted_pi05
    exported = export_weights(out, tmp_path / "lr")
    back = load_file(str(exported / "model.safetensors"))
    assert json.loads((exported / "config.json").read_text())["type"] == "pi05"
    assert set(weights) <= set(back)  # every key of the source layout (plus the expert's zero lm_head)
    assert all(torch.equal(back[k], weights[k]) for k in weights if k != ref.EXPERT_LM_HEAD)


def test_openpi_norm_stats_come_along(tmp_path, converted):
    ref, _, root = converted
    src = _src(tmp_path, "openpi", lerobot_layout(ref))
    (src / "assets" / "trossen").mkdir(parents=True)
    stats = {
        "norm_stats": {
            k: {"mean": [0.1] * 14, "std": [0.5] * 14, "q01": [-1.0] * 14, "q99": [1.2] * 14}
            for k in ("state", "actions")
        }
    }
    (src / "assets" / "trossen" / "norm_stats.json").write_text(json.dumps(stats))
    ck = Checkpoint(convert(src, tmp_path / "out", preset=root / "tiny.toml"))
    (name,) = ck.embodiments
    assert ck.embodiments[name].state_dim == 14 and ck.embodiments[name].action_dim == 14  # sized by the stats
    st = ck.stats()[name]
    assert st["action"].q99.tolist() == pytest.approx([1.2] * 14) and st["observation/state"].std[0] == pytest.approx(
        0.5
    )
    assert "norm_stats.json" in ck.resolved.source["stats"]
    from vla.runtime.policy import load_policy

    pol = load_policy(ck.path)  # stats: it loads; but no tokenizer, so instructions are refused
    obs = {
        "observation/state": torch.zeros(14).numpy(),
        "task": "fold the towel",
        **{
            f"observation/images/{c.name}": torch.zeros(c.shape, dtype=torch.uint8).numpy()
            for c in ck.embodiments[name].cameras
        },
    }
    with pytest.raises(SpecError, match="no text tokenizer.*--tokenizer"):
        pol.infer(obs)


def test_transformers_pi0_dir_converts_with_its_own_geometry(tmp_path):
    """A transformers PI0 dir (save_pretrained: native keys + PI0Config) converts with no --preset:
    the geometry comes from its config.json, and the actions are PI0's."""
    ref = tiny_pi0_reference(seed=9)
    ref.save_pretrained(tmp_path / "hf")
    model, _, cfg = build_from_checkpoint(Checkpoint(convert(tmp_path / "hf", tmp_path / "out")))
    assert (cfg.horizon, cfg.backbone.image_size, cfg.expert.width) == (H, IMAGE, 32)
    vla, hf, noise = batches(seed=11)
    with torch.no_grad():
        want = ref.sample_actions(noise=noise.clone(), num_steps=10, **hf)
    assert (model.sample_actions(vla, num_steps=10, noise=noise) - want).abs().max() <= 1e-4


def test_lerobot_config_geometry_is_read(tmp_path):
    from vla.model.interop.convert import source_geometry

    d = tmp_path
    (d / "config.json").write_text(
        json.dumps(
            {
                "type": "pi05",
                "chunk_size": 10,
                "num_inference_steps": 5,
                "tokenizer_max_length": 200,
                "max_action_dim": 32,
                "paligemma_variant": "gemma_2b",
                "action_expert_variant": "gemma_300m",
                "image_resolution": [224, 224],
            }
        )
    )
    g = source_geometry(d)
    assert g["horizon"] == 10 and g["num_steps"] == 5 and g["max_tokens"] == 200 and g["shared_head_dim"] == 32
    assert (
        g["backbone"]["text"]["width"] == 2048 and g["expert"]["width"] == 1024 and g["backbone"]["image_size"] == 224
    )


def test_old_lerobot_normalization_buffers_are_not_weights(tmp_path, converted):
    ref, outs, root = converted
    w = lerobot_layout(ref, "model.")
    w["normalize_inputs.buffer_observation_state.mean"] = torch.zeros(32)
    out = convert(_src(tmp_path, "old", w), tmp_path / "out", preset=root / "tiny.toml")
    a, b = load_file(str(out / "model.safetensors")), load_file(str(outs["hub"] / "model.safetensors"))
    assert a.keys() == b.keys()


def test_convert_and_export_refuse_other_backbones_clearly(tmp_path, converted):
    from vla.model.interop.export import export_weights

    ref, _, _ = converted
    with pytest.raises(SpecError, match="'smolvlm' backbone .* need a PaliGemma backbone"):
        convert(_src(tmp_path, "s", lerobot_layout(ref)), tmp_path / "out", preset="pi0-smolvlm2")
    from test_contract import cpu_sized  # a tiny smolvlm checkpoint to export

    from vla.data import EpisodeStore
    from vla.data.synthetic import write_synthetic
    from vla.train.trainer import train

    from helpers import tiny_embodiment

    emb = tiny_embodiment("armA", s=4, a=3, cams=(("front", 16, 16),))
    store = EpisodeStore.create(tmp_path / "st", [emb])
    write_synthetic(store, emb, episodes=2, length=8, seed=0)
    ck = train(cpu_sized("pi0-smolvlm2-tiny"), [str(tmp_path / "st")], tmp_path / "ck", steps=1, progress=False)
    with pytest.raises(SpecError, match="'smolvlm' backbone"):
        export_weights(ck, tmp_path / "hf")


def test_export_of_a_grounding_checkpoint_refuses_in_one_line_and_its_advice_exports(tmp_path, caplog):
    """pi0-tiny (the default CPU preset) has grounding tokens and a keypoint stem, which transformers'
    PI0 has no place for: `vla export-weights` says so in one line, exits non-zero and writes nothing;
    the preset it points to (pi0-tiny without its grounding lines) exports and loads in transformers."""
    from pathlib import Path

    from test_contract import cpu_sized
    from typer.testing import CliRunner

    from vla.cli import app
    from vla.data import EpisodeStore
    from vla.data.synthetic import write_synthetic
    from vla.train.trainer import train

    from helpers import tiny_embodiment

    emb = tiny_embodiment("armA", s=4, a=3, cams=(("front", 16, 16), ("wrist", 16, 16)))
    store = EpisodeStore.create(tmp_path / "st", [emb])
    write_synthetic(store, emb, episodes=2, length=8, seed=0)
    ck = train(cpu_sized("pi0-tiny"), [str(tmp_path / "st")], tmp_path / "ck", steps=1, progress=False)
    before = sorted(tmp_path.iterdir())
    r = CliRunner().invoke(app, ["export-weights", str(ck), str(tmp_path / "hf")])
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit)
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
    for said in ("transformers' PI0 has no grounding or keypoint modules", "grounding.keypoints = 8", "vla serve"):
        assert said in r.output, r.output
    assert "pi0-small" in r.output and "pi0-tiny.toml without its [model.grounding] table" in r.output
    assert sorted(tmp_path.iterdir()) == before  # nothing written, not even a temp dir

    tiny = (Path(__file__).resolve().parents[2] / "policies" / "pi0-tiny.toml").read_text().splitlines()
    plain = tmp_path / "pi0-plain.toml"
    table = tiny.index("[model.grounding]")
    end = next(i for i in range(table + 1, len(tiny)) if tiny[i].startswith("["))
    plain.write_text("\n".join(tiny[:table] + tiny[end:]))
    ck = train(cpu_sized(str(plain)), [str(tmp_path / "st")], tmp_path / "plain", steps=1, progress=False)
    r = CliRunner().invoke(app, ["export-weights", str(ck), str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    _, info = PI0ForConditionalGeneration.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    # pi0-tiny samples from zero (noise_scale = 0), which the published layout cannot record: said, not dropped.
    from vla.model.interop.export import export_weights

    with caplog.at_level("WARNING", logger="vla.model.interop.export"):
        export_weights(ck, tmp_path / "hf2")
    assert "noise_scale" in caplog.text and "zeros for 0" in caplog.text
