"""`vla export-weights`: a vla pi0 / pi0.5 checkpoint -> weights other tools load.

    pi0   a transformers PI0 directory: config.json (PI0Config) + model.safetensors in the
          openpi / LeRobot key layout (vla.model.interop.layout), which
          `PI0ForConditionalGeneration.from_pretrained(OUT)` loads with no missing or unexpected
          keys (transformers renames that layout itself) and LeRobot / openpi read as well
    pi0.5 model.safetensors in LeRobot's pi05 layout + a small config.json naming the geometry
          (transformers has no pi0.5 class)
Both carry the text tokenizer when the checkpoint has one. The published weights use one head
over 32 padded dims (openpi's convention); a checkpoint with per-embodiment heads exports one
embodiment's heads zero-padded to that width, which gives that embodiment exactly its actions
(padded inputs meet zero columns, padded outputs are zero rows).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from vla.model.interop.atomic import atomic_dir
from vla.model.interop.checkpoint import Checkpoint
from vla.model.interop.layout import TO_LEROBOT, rename
from vla.spec import SpecError

PADDED = 32  # openpi's state / action width

log = logging.getLogger(__name__)


def _heads(weights: dict, cfg, embodiment: str | None) -> tuple[dict, int]:
    """Per-embodiment heads -> one zero-padded head (`*.linear.*`); -> (weights, padded width)."""
    if cfg.shared_head_dim:
        return weights, cfg.shared_head_dim
    names = sorted(cfg.embodiments)
    if embodiment is None:
        if len(names) > 1:
            raise SpecError(f"this checkpoint has per-embodiment heads for {names}: choose one with --embodiment")
        embodiment = names[0]
    if embodiment not in names:
        raise SpecError(f"embodiment {embodiment!r} has no heads in this checkpoint (it has {names})")
    width = max(PADDED, *cfg.embodiments[embodiment])
    out = {k: v for k, v in weights.items() if not k.startswith(("state_in.", "action_in.", "action_out."))}
    for head in ("state_in", "action_in", "action_out"):
        w, b = weights.get(f"{head}.proj.{embodiment}.weight"), weights.get(f"{head}.proj.{embodiment}.bias")
        if w is None:
            continue  # pi0.5 has no state head
        if head == "action_out":  # [a, w] -> [width, w]; bias [a] -> [width]
            out[f"{head}.linear.weight"] = torch.cat([w, w.new_zeros(width - w.shape[0], w.shape[1])])
            out[f"{head}.linear.bias"] = torch.cat([b, b.new_zeros(width - b.shape[0])])
        else:  # [w, d] -> [w, width]
            out[f"{head}.linear.weight"] = torch.cat([w, w.new_zeros(w.shape[0], width - w.shape[1])], 1)
            out[f"{head}.linear.bias"] = b
    return out, width


def pi0_config_dict(cfg, text_vocab: int, width: int) -> dict:
    """transformers' PI0Config for a vla pi0 config."""
    bb, t, e = cfg.backbone, cfg.backbone.text, cfg.expert
    from transformers import PI0Config

    return PI0Config(
        vlm_config={
            "text_config": {
                "hidden_size": t.width,
                "num_hidden_layers": t.depth,
                "intermediate_size": t.mlp,
                "num_attention_heads": t.heads,
                "num_key_value_heads": t.kv_heads,
                "head_dim": t.head_dim,
                "vocab_size": text_vocab,
            },
            "vision_config": {
                "hidden_size": bb.vision_width,
                "intermediate_size": bb.vision_mlp,
                "num_hidden_layers": bb.vision_depth,
                "num_attention_heads": bb.vision_heads,
                "patch_size": bb.patch_size,
                "image_size": bb.image_size,
                "vision_use_head": False,
            },
            "projection_dim": t.width,
            "image_token_id": text_vocab,
        },
        dit_config={
            "hidden_size": e.width,
            "num_hidden_layers": e.depth,
            "intermediate_size": e.mlp,
            "num_attention_heads": e.heads,
            "num_key_value_heads": e.kv_heads,
            "head_dim": e.head_dim,
        },
        chunk_size=cfg.horizon,
        max_state_dim=width,
        max_action_dim=width,
        num_inference_steps=cfg.num_steps,
    ).to_dict()


def _refuse_grounding(path: Path, model_type: str, cfg) -> None:
    """The published layouts have no grounding tokens or keypoint stem (vla.model.grounding.tokens), and
    the actions depend on them: dropping them would export a different policy."""
    g = cfg.grounding
    if g is None:
        return
    used = [f"grounding.tokens = {g.tokens}"] + ([f"grounding.keypoints = {g.keypoints}"] if g.keypoints else [])
    layout = "transformers' PI0" if model_type == "pi0" else "LeRobot's pi05"
    raise SpecError(
        f"{path} cannot be exported: {layout} has no grounding or keypoint modules and this checkpoint's "
        f"actions depend on them ({', '.join(used)}; pi0-tiny has both); vla serve / eval / run take it as it is. "
        "To export, train a preset without grounding: pi0-small, pi0-paligemma (the published layout), or a "
        "copy of pi0-tiny.toml without its [model.grounding] table"
    )


def export_weights(ckpt: str | Path, out: str | Path, *, embodiment: str | None = None) -> Path:
    ck, out = Checkpoint(ckpt), Path(out)
    rc = ck.resolved
    if rc.model_type not in TO_LEROBOT:
        raise SpecError(f"export-weights writes pi0 / pi0.5 weights; {ck.path} is a {rc.model_type!r} checkpoint")
    cfg = rc.model
    if cfg.backbone.family != "paligemma" or cfg.attach != "joint":
        raise SpecError(
            f"export-weights writes the published pi0 / pi0.5 layout (a PaliGemma backbone with a jointly "
            f"attending expert); {ck.path} has a {cfg.backbone.family!r} backbone with attach="
            f"{cfg.attach!r}, which that layout cannot hold"
        )
    _refuse_grounding(ck.path, rc.model_type, cfg)
    if cfg.noise_scale != 1.0:  # sampling only: the weights are the same, the published samplers are not
        log.warning(
            "%s samples from noise scaled by %g (noise_scale); the exported layout has no such setting and "
            "its samplers draw N(0, I): pass them noise = %g * N(0, I) (zeros for 0) to get this checkpoint's actions",
            ck.path,
            cfg.noise_scale,
            cfg.noise_scale,
        )
    vocab = rc.text_vocab or (ck.text().vocab_size if ck.text() is not None else 0)
    weights, width = _heads(ck.weights(), cfg, embodiment)
    renamed, unmatched = rename(weights, TO_LEROBOT[rc.model_type])
    if unmatched:
        raise SpecError(f"{ck.path}: weights with no place in the exported layout: {unmatched[:5]}")
    embed = renamed["paligemma_with_expert.paligemma.lm_head.weight"]
    # The expert's (unused) token embedding: transformers' PI0 has one, so the file carries zeros.
    renamed["paligemma_with_expert.gemma_expert.lm_head.weight"] = embed.new_zeros(embed.shape[0], cfg.expert.width)
    if rc.model_type == "pi0":
        config = pi0_config_dict(cfg, vocab, width)
    else:
        config = {
            "type": "pi05",
            "chunk_size": cfg.horizon,
            "max_state_dim": width,
            "max_action_dim": width,
            "num_inference_steps": cfg.num_steps,
            "tokenizer_max_length": cfg.max_tokens,
            "note": "LeRobot pi05 weight layout, written by vla export-weights",
        }

    with atomic_dir(out, refuse=lambda p: SpecError(f"{p} exists: choose a new directory")) as tmp:
        save_file({k: v.contiguous() for k, v in renamed.items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if (ck.path / "tokenizer.json").exists():
            shutil.copy2(ck.path / "tokenizer.json", tmp / "tokenizer.json")
    return out
