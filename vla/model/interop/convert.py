"""`vla convert`: pi0 / pi0.5 weights from openpi, LeRobot or transformers -> a vla checkpoint.

    SRC  a LeRobot pi0/pi05 checkpoint dir, an openpi PyTorch checkpoint dir, or a transformers
         PI0 dir: model.safetensors (or a sharded index), optional config.json, tokenizer.json,
         policy_preprocessor.json + its state file (LeRobot stats), assets/<id>/norm_stats.json
         (openpi stats)
    OUT  a vla checkpoint in openpi's convention (shared 32-dim head, camera slots, PaliGemma
         prompt) that vla train --init, eval, serve and run take

Nothing is instantiated: the preset's model is built on the meta device for its key set and
shapes, every source tensor is renamed (vla.model.interop.layout) and checked against them,
and the checkpoint is written through save_checkpoint (a temp dir renamed into place, so a
failed conversion leaves nothing). Without stats the checkpoint still converts (a fine-tune
computes them); serving it is refused. Without a tokenizer the model runs on token ids.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open

from vla.config import Preset, load_preset
from vla.data.foreign_stats import find_foreign_stats
from vla.model.interop.checkpoint import CheckpointConfig, save_checkpoint
from vla.model.interop.layout import RULES, detect, expected_key, group_keys, rename
from vla.model.registry import model_type
from vla.model.text import TextTokenizer
from vla.outputs import is_checkpoint
from vla.resources import load_embodiment
from vla.spec import ACTION, STATE, Camera, Dim, Embodiment, SpecError

log = logging.getLogger(__name__)

DEFAULT_PRESETS = {"pi0": "pi0-paligemma", "pi05": "pi05-paligemma"}
CAMERA_SLOTS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # openpi's pi0 camera names


def read_weights(src: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, or the shards a model.safetensors.index.json names."""
    single, index = src / "model.safetensors", src / "model.safetensors.index.json"
    if single.exists():
        files = [single]
    elif index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as e:
            raise SpecError(f"{index}: not a safetensors index ({e})") from None
        files = [src / s for s in shards]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise SpecError(f"{src}: shards named by model.safetensors.index.json are missing: {missing}")
    else:
        raise SpecError(f"{src}: no model.safetensors (or model.safetensors.index.json): not a pi0 / pi0.5 checkpoint")
    out = {}
    for f in files:
        try:
            with safe_open(str(f), "pt") as h:
                for k in h.keys():
                    out[k] = h.get_tensor(k)
        except Exception as e:  # safetensors raises its own error types
            raise SpecError(f"{f}: cannot be read as safetensors: {e}") from None
    return out


# openpi's / LeRobot's Gemma variants (paligemma_variant, action_expert_variant in their configs).
GEMMA_VARIANTS = {
    "gemma_2b": {"width": 2048, "depth": 18, "mlp": 16384, "heads": 8, "kv_heads": 1, "head_dim": 256},
    "gemma_300m": {"width": 1024, "depth": 18, "mlp": 4096, "heads": 8, "kv_heads": 1, "head_dim": 256},
    "dummy": {"width": 64, "depth": 4, "mlp": 128, "heads": 8, "kv_heads": 1, "head_dim": 16},
}


def source_geometry(src: Path) -> dict:
    """What the source's config.json says of the geometry, as a preset [model] table fragment
    (used when no --preset is given): transformers' PI0Config names everything; LeRobot's
    pi0 / pi05 config names the horizon, steps, token budget, padded width, image size and
    Gemma variants."""
    p = src / "config.json"
    d = json.loads(p.read_text()) if p.exists() else {}
    if not isinstance(d, dict):
        return {}
    out: dict = {}
    if isinstance(d.get("vlm_config"), dict) and isinstance(d.get("dit_config"), dict):  # transformers PI0
        t, v, e = d["vlm_config"].get("text_config", {}), d["vlm_config"].get("vision_config", {}), d["dit_config"]
        try:
            gemma = {
                "width": t["hidden_size"],
                "depth": t["num_hidden_layers"],
                "mlp": t["intermediate_size"],
                "heads": t["num_attention_heads"],
                "kv_heads": t["num_key_value_heads"],
                "head_dim": t["head_dim"],
            }
            out["backbone"] = {
                "image_size": v["image_size"],
                "patch_size": v["patch_size"],
                "vision_width": v["hidden_size"],
                "vision_depth": v["num_hidden_layers"],
                "vision_heads": v["num_attention_heads"],
                "vision_mlp": v["intermediate_size"],
                "vocab_size": t["vocab_size"],
                "text": gemma,
            }
            out["expert"] = {
                "width": e["hidden_size"],
                "depth": e["num_hidden_layers"],
                "mlp": e["intermediate_size"],
                "heads": e["num_attention_heads"],
                "kv_heads": e["num_key_value_heads"],
                "head_dim": e["head_dim"],
            }
        except KeyError as k:
            raise SpecError(f"{p}: PI0 config lacks {k}") from None
        out.update(
            horizon=d.get("chunk_size", 50),
            shared_head_dim=d.get("max_action_dim", 32),
            num_steps=d.get("num_inference_steps", 10),
        )
        return out
    for key, field in (
        ("chunk_size", "horizon"),
        ("num_inference_steps", "num_steps"),
        ("tokenizer_max_length", "max_tokens"),
        ("max_action_dim", "shared_head_dim"),
    ):
        if isinstance(d.get(key), int):
            out[field] = d[key]
    res = d.get("image_resolution") or d.get("resize_imgs_with_padding")
    backbone = {}
    if isinstance(res, (list, tuple)) and len(res) == 2 and res[0] == res[1]:
        backbone["image_size"] = int(res[0])
    if d.get("paligemma_variant") in GEMMA_VARIANTS:
        backbone["text"] = dict(GEMMA_VARIANTS[d["paligemma_variant"]])
    if d.get("action_expert_variant") in GEMMA_VARIANTS:
        out["expert"] = dict(GEMMA_VARIANTS[d["action_expert_variant"]])
    if backbone:
        out["backbone"] = backbone
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def source_type(src: Path) -> str | None:
    """The model type a source's config.json names (LeRobot: "type", transformers: "model_type")."""
    p = src / "config.json"
    if not p.exists():
        return None
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SpecError(f"{p}: corrupt JSON: {e}") from None
    t = d.get("type") or d.get("model_type") if isinstance(d, dict) else None
    return {"pi0": "pi0", "pi05": "pi05", "pi0.5": "pi05"}.get(str(t).lower()) if t else None


def default_embodiment(cfg, stats: dict | None, image_size: int) -> Embodiment:
    """openpi's generic robot: state/action dims from the stats (else the shared head's width),
    the model's camera slots under openpi's camera names."""
    n_state = len(stats[STATE].mean) if stats else cfg.shared_head_dim
    n_action = len(stats[ACTION].mean) if stats else cfg.shared_head_dim
    return Embodiment(
        name="openpi",
        state=tuple(Dim(f"state_{i}") for i in range(n_state)),
        actions=tuple(Dim(f"action_{i}") for i in range(n_action)),
        cameras=tuple(
            Camera(CAMERA_SLOTS[i] if i < len(CAMERA_SLOTS) else f"camera_{i}", image_size, image_size)
            for i in range(cfg.cameras)
        ),
        control_hz=50.0,
        description="converted pi0 / pi0.5 checkpoint: openpi's generic 32-dim robot",
    )


def _preset_for(src: Path, kind: str, preset: str | Path | Preset | None) -> Preset:
    """The given preset (it must be of the source's type), or the type's default preset with what the
    source's own config says of the geometry."""
    if preset is None:
        base = load_preset(DEFAULT_PRESETS[kind])
        p = load_preset(DEFAULT_PRESETS[kind], {"model": _merge(base.model, source_geometry(src))})
    else:
        p = preset if isinstance(preset, Preset) else load_preset(preset)
    if p.type != kind:
        raise SpecError(
            f"{src} is a {kind} checkpoint, but preset {p.name!r} is {p.type}: use --preset "
            f"{DEFAULT_PRESETS[kind]} (or another {kind} preset)"
        )
    return p


def _check_published_layout(cfg, preset_name: str) -> None:
    """The published pi0 / pi0.5 weights fit only a PaliGemma backbone with a jointly attending expert
    and openpi's shared head."""
    if cfg.backbone.family != "paligemma" or cfg.attach != "joint":
        raise SpecError(
            f"preset {preset_name!r} has a {cfg.backbone.family!r} backbone with attach={cfg.attach!r}; the "
            "published pi0 / pi0.5 weights need a PaliGemma backbone with a jointly attending expert "
            "(pi0-paligemma / pi05-paligemma)"
        )
    if not cfg.shared_head_dim:
        raise SpecError(
            f"preset {preset_name!r} has per-embodiment heads; the published weights need openpi's convention "
            "(shared_head_dim = 32 in [model])"
        )


def convert(
    src: str | Path,
    out: str | Path,
    *,
    preset: str | Path | Preset | None = None,
    tokenizer: str | Path | None = None,
    embodiment: str | Path | None = None,
    asset_id: str | None = None,
) -> Path:
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise SpecError(f"convert: source {src} is not a directory")
    if is_checkpoint(src):
        raise SpecError(f"convert: {src} is already a vla checkpoint: train --init, eval, serve and run take it as is")
    weights = read_weights(src)
    layout, kind, prefix = detect(weights)
    named = source_type(src)
    if named and named != kind:
        raise SpecError(f"{src}: config.json says {named} but the weights are {kind}")
    p = _preset_for(src, kind, preset)
    renamed, unmatched = rename(weights, RULES[(layout, kind)], strip=prefix)
    if unmatched:
        raise SpecError(
            f"{src}: {len(unmatched)} keys match no rule of the {layout} {kind} layout, e.g. groups "
            f"{group_keys(unmatched)}; first keys {unmatched[:5]}"
        )
    mt = model_type(kind)

    found = find_foreign_stats(src, asset_id=asset_id)
    raw_stats, stats_from = found if found else (None, None)
    cfg0 = mt.make_config(p.model)
    _check_published_layout(cfg0, p.name)
    emb = load_embodiment(embodiment) if embodiment else default_embodiment(cfg0, raw_stats, cfg0.backbone.image_size)
    if raw_stats:
        for key, dim in ((STATE, emb.state_dim), (ACTION, emb.action_dim)):
            if len(raw_stats[key].mean) != dim:
                raise SpecError(
                    f"{stats_from}: {key} stats have {len(raw_stats[key].mean)} dims, embodiment {emb.name!r} has {dim}"
                )
    cfg = mt.make_config(p.model, embodiments={emb.name: (emb.state_dim, emb.action_dim)})

    embed = renamed.get("backbone.language_model.embed_tokens.weight")
    if embed is None:
        raise SpecError(f"{src}: no token embedding (paligemma lm_head.weight / embed_tokens)")
    text_vocab = embed.shape[0]
    if text_vocab != cfg.backbone.vocab_size:
        raise SpecError(
            f"backbone.language_model.embed_tokens.weight: expected [{cfg.backbone.vocab_size}, "
            f"{cfg.backbone.text.width}] (preset {p.name!r}), got {list(embed.shape)}"
        )
    with torch.device("meta"):
        expected = {k: v for k, v in mt.build(cfg, text_vocab=text_vocab).state_dict().items()}
    renamed = _match_expected(renamed, expected, p.name)

    text = _tokenizer(tokenizer, src)
    if text is not None and text.vocab_size > text_vocab:
        raise SpecError(f"tokenizer has {text.vocab_size} tokens, the model's embedding {text_vocab} rows")
    stats = {emb.name: raw_stats} if raw_stats else {}
    if raw_stats:
        log.info("norm stats from %s", stats_from)
    else:
        log.warning(
            "%s has no norm stats: the checkpoint converts, but serving it is refused until a fine-tune "
            "(vla train --init) computes stats for your robot",
            src,
        )
    rc = CheckpointConfig(
        kind,
        cfg,
        p.norm_mode,
        {emb.name: emb},
        preset=p.to_dict(),
        text_vocab=text_vocab,
        params=sum(v.numel() for v in renamed.values()),
        source={
            "path": str(src),
            "layout": layout,
            "type": kind,
            "stats": stats_from,
            "tokenizer": str(tokenizer or (src / "tokenizer.json" if text else "")) or None,
        },
    )
    return save_checkpoint(out, weights=renamed, config=rc, stats=stats, text=text)


def _match_expected(renamed: dict, expected: dict, preset_name: str) -> dict:
    """Every tensor's shape checked against the preset's model; the unused expert token
    embedding (not in the published files) filled with zeros; anything else missing or extra
    is an error naming the keys."""
    out, extra = {}, []
    for k, v in renamed.items():
        key = expected_key(k, expected)
        if key is None:
            extra.append(k)
            continue
        k = key
        if tuple(v.shape) != tuple(expected[k].shape):
            raise SpecError(
                f"{k}: shape {list(v.shape)} contradicts preset {preset_name!r}, which expects "
                f"{list(expected[k].shape)}"
            )
        out[k] = v
    if extra:
        raise SpecError(
            f"{len(extra)} source weights are not weights of preset {preset_name!r}'s model: groups "
            f"{group_keys(extra)}; first {extra[:5]}"
        )
    missing = sorted(set(expected) - set(out))
    for k in [k for k in missing if k.startswith("expert.embed_tokens.")]:
        out[k] = torch.zeros(expected[k].shape, dtype=next(iter(renamed.values())).dtype)
        missing.remove(k)
    if missing:
        raise SpecError(
            f"the source lacks {len(missing)} weights of preset {preset_name!r}: {group_keys(missing)}; "
            f"first {missing[:5]}"
        )
    return out


def _tokenizer(tokenizer: str | Path | None, src: Path) -> TextTokenizer | None:
    if tokenizer:
        return TextTokenizer.load(tokenizer)
    if (src / "tokenizer.json").exists():
        return TextTokenizer.load(src)
    log.warning(
        "no tokenizer (--tokenizer PATH or SRC/tokenizer.json): the model runs on token ids; Policy.infer "
        "refuses instructions"
    )
    return None
