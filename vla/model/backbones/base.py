"""The backbone adapter interface: what pi0 / pi0.5 / FAST need of a VLM, whatever its family.

    encode_images(pixels [b, c, 3, S, S] in [-1, 1]) -> image tokens [b, c * p, d] (+ DeepStack features)
    embed_tokens(ids [b, l])                           -> text tokens [b, l, d]
    embed_prefix(images, image_mask, tokens, token_mask) -> Prefix: tokens, validity, RoPE positions
    language_model                                     the decoder stack vla.model.layers.attention drives:
                                                       `.layers` (q/k/v/o projections, optional q/k
                                                       norms, norms, `mlp(x)`), `.norm`, `.rotary_emb`
    rope(like, positions) -> (cos, sin)                RoPE tables for the positions of a Prefix (or
                                                       text-like [b, l] positions)
    make_expert(size)                                  a randomly initialized decoder stack for the
                                                       action expert, in the family's layer style
    logits(hidden)                                     the LM head (FAST)

Running the prefix and returning per-layer keys/values is `vla.model.layers.attention.joint_forward`
with `keep_kv=True` on `language_model` (pi0's cached sampling and the cross-attention expert
both read that cache).

Positions. Each family states a prefix's positions its own way: 1D (PaliGemma, SmolVLM: the
count of real tokens before), or multimodal RoPE (Qwen-VL: an image block of g x g tokens gets
(t, h, w) = (s, s + row, s + col) and the next block starts at s + g; text is (p, p, p)). Tokens
after the prefix (the action expert's suffix, FAST's postfix) always continue text-like from
`Prefix.next_pos`, as a Qwen-VL model places text after an image; with all three streams equal,
multimodal RoPE is plain 1D RoPE, so the expert can use a 1D rotary table of the same base.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from vla.model.backbones.config import FAMILIES, BackboneConfig, GemmaSize
from vla.model.layers.positions import sincos_2d
from vla.spec import SpecError

log = logging.getLogger(__name__)

# Hugging Face `model_type` of a checkpoint's config.json -> our family.
MODEL_TYPES = {
    "paligemma": "paligemma",
    "smolvlm": "smolvlm",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl_moe",
}


@dataclass
class Prefix:
    """The observation's tokens as the decoder sees them."""

    embeds: torch.Tensor  # [b, lp, d]
    valid: torch.Tensor  # [b, lp] bool
    positions: torch.Tensor  # [b, lp] (1D) or [3, b, lp] (multimodal RoPE)
    next_pos: torch.Tensor  # [b] the position a token after the prefix takes
    layer_adds: list[torch.Tensor] | None = None  # per decoder layer, added to the prefix's hidden after it

    def extend(self, embeds: torch.Tensor, valid: torch.Tensor) -> "Prefix":
        """The prefix followed by more tokens [b, n, d] (text-like positions, nothing added to them)."""
        pos = self.next_pos[:, None] + torch.cumsum(valid.long(), dim=1) - 1
        if self.positions.dim() == 3:
            pos = pos[None].expand(3, -1, -1)
        adds = (
            None
            if self.layer_adds is None
            else [torch.cat([a, a.new_zeros(a.shape[0], embeds.shape[1], a.shape[2])], 1) for a in self.layer_adds]
        )
        return Prefix(
            torch.cat([self.embeds, embeds.to(self.embeds.dtype)], 1),
            torch.cat([self.valid, valid], 1),
            torch.cat([self.positions, pos], -1),
            self.next_pos + valid.sum(1),
            adds,
        )

    def after(self, valid: torch.Tensor) -> torch.Tensor:
        """Text-like positions [b, n] of n tokens that follow the prefix (the action expert's suffix)."""
        return self.next_pos[:, None] + torch.cumsum(valid.long(), dim=1) - 1


def family_of(path: Path) -> str:
    """The family of a local Hugging Face checkpoint dir, from its config.json's model_type."""
    cfg = Path(path) / "config.json"
    if not cfg.exists():
        raise SpecError(
            f"pretrained backbone dir {path} has no config.json (expected a Hugging Face checkpoint of "
            f"one of the families {list(FAMILIES)})"
        )
    found = json.loads(cfg.read_text()).get("model_type")
    if found not in MODEL_TYPES:
        raise SpecError(
            f"pretrained backbone dir {path} holds a {found!r} model; supported backbone families: {list(FAMILIES)}"
        )
    return MODEL_TYPES[found]


class VLMBackbone(nn.Module):
    """Base class of the family adapters (see the module docstring). Subclasses build or load
    `vision_tower`, `language_model` (and `projector` where the family has one), and implement
    `encode_images` and `make_expert`."""

    family: ClassVar[str] = ""
    pixel_mean: ClassVar[tuple[float, float, float]] = (0.5, 0.5, 0.5)  # the tower's input normalization
    pixel_std: ClassVar[tuple[float, float, float]] = (0.5, 0.5, 0.5)  # (0.5, 0.5: [-1, 1] as given)

    def __init__(self, cfg: BackboneConfig, vocab_size: int | None = None, *, lm_head: bool = False):
        super().__init__()
        self.cfg = cfg
        self.lm_head: nn.Module | None = None
        if cfg.pretrained:
            path = Path(cfg.pretrained)
            found = family_of(path)
            if found != self.family:
                raise SpecError(
                    f"pretrained backbone dir {path} holds a {found!r} model but the preset's "
                    f"backbone.family is {self.family!r}; set family = {found!r} and its sizes"
                )
            self._load(path, lm_head)
            self._check_loaded(path)
            if vocab_size and vocab_size > self.language_model.embed_tokens.num_embeddings:
                self._grow_vocab(vocab_size)
        else:
            self._build(vocab_size or cfg.vocab_size, lm_head)

    # ---- family hooks ----
    def _build(self, vocab_size: int, lm_head: bool) -> None:
        raise NotImplementedError

    def _load(self, path: Path, lm_head: bool) -> None:
        raise NotImplementedError

    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """pixels [b, c, 3, S, S] in [-1, 1] -> image tokens [b, c * p, d] and, for DeepStack
        families, the per-layer features to add to them ([b, c * p, d] each; else None)."""
        raise NotImplementedError

    def make_expert(self, size: GemmaSize) -> nn.Module:
        raise NotImplementedError

    # ---- shared ----
    def siglip_vision_fields(self) -> dict:
        """A SigLIP-style tower's config fields from the preset (PaliGemma's SigLIP, SmolVLM's tower)."""
        cfg = self.cfg
        return dict(
            hidden_size=cfg.vision_width,
            intermediate_size=cfg.vision_mlp,
            num_hidden_layers=cfg.vision_depth,
            num_attention_heads=cfg.vision_heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
        )

    def _set_vision_tower(self, tower: nn.Module, positions: nn.Embedding | None) -> None:
        """Keep a randomly initialized vision tower; its learned patch position table (None where the
        tower has only rotary positions, Qwen2.5-VL) starts as `cfg.vision_pos_init` says."""
        self.vision_tower = tower
        if positions is not None and self.cfg.vision_pos_init == "sincos":
            grid = self.cfg.image_size // self.cfg.patch_size
            with torch.no_grad():
                positions.weight.copy_(sincos_2d(grid, self.cfg.vision_width))

    @property
    def width(self) -> int:
        return self.language_model.config.hidden_size

    @property
    def rope_theta(self) -> float:
        rp = getattr(self.language_model.config, "rope_parameters", None) or {}
        return float(rp.get("rope_theta", self.cfg.rope_theta))

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [b, c, 3, S, S] in [-1, 1] -> image tokens [b, c * p, d]."""
        return self.encode_images(pixels)[0]

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [b, l] -> [b, l, d] (the decoder's own embedding, with its scale where it has one)."""
        return self.language_model.embed_tokens(ids)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[-1, 1] pixels -> the tower's input normalization ((x01 - mean) / std per channel)."""
        if self.pixel_mean == (0.5, 0.5, 0.5) and self.pixel_std == (0.5, 0.5, 0.5):
            return pixels
        shape = (3, 1, 1)
        mean = torch.tensor(self.pixel_mean, dtype=pixels.dtype, device=pixels.device).view(shape)
        std = torch.tensor(self.pixel_std, dtype=pixels.dtype, device=pixels.device).view(shape)
        return ((pixels + 1) * 0.5 - mean) / std

    def embed_prefix(
        self, images: torch.Tensor, image_mask: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor
    ) -> Prefix:
        """[image tokens of every camera slot][text tokens] with validity and positions."""
        img, deep = self.encode_images(images)
        per = img.shape[1] // images.shape[1]
        img_valid = image_mask.repeat_interleave(per, dim=1)
        txt = self.embed_tokens(tokens)
        embeds = torch.cat([img, txt.to(img.dtype)], 1)
        valid = torch.cat([img_valid, token_mask], 1)
        positions, next_pos = self.prefix_positions(image_mask, per, token_mask)
        adds = None
        if deep:
            pad = img.new_zeros(img.shape[0], txt.shape[1], img.shape[2])
            adds = [torch.cat([d.to(img.dtype), pad], 1) for d in deep]
        return Prefix(embeds, valid, positions, next_pos, adds)

    def prefix_positions(
        self, image_mask: torch.Tensor, per_image: int, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """1D: each real token's position is the count of real tokens before it. -> ([b, lp], next [b])."""
        valid = torch.cat([image_mask.repeat_interleave(per_image, dim=1), token_mask], 1)
        return torch.cumsum(valid.long(), dim=1) - 1, valid.sum(1)

    def rope(self, like: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) [b, l, head_dim] for positions [b, l] or [3, b, l], in the dtype of `like`."""
        return self.language_model.rotary_emb(like, positions)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[b, l, d] -> [b, l, vocab]: the LM head, or the tied token embedding."""
        if self.lm_head is not None:
            return self.lm_head(hidden)
        return hidden @ self.language_model.embed_tokens.weight.T

    def moe_idle_params(self) -> int:
        """Parameters a token does not use (routed experts it is not sent to); 0 for dense decoders."""
        return 0

    def _check_loaded(self, path: Path) -> None:
        """Width and heads must match the preset; extra decoder layers are dropped (the first
        `text.depth` are used); fewer is an error."""
        c, t = self.language_model.config, self.cfg.text
        got = {
            "width": c.hidden_size,
            "heads": c.num_attention_heads,
            "kv_heads": c.num_key_value_heads,
            "head_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        }
        want = {k: getattr(t, k) for k in got}
        if got != want:
            raise SpecError(f"pretrained backbone {path}: decoder {got} != preset {want}")
        n = len(self.language_model.layers)
        if n < t.depth:
            raise SpecError(f"pretrained backbone {path}: {n} decoder layers, the preset uses {t.depth}")
        if n > t.depth:
            log.info("pretrained backbone %s: using the first %d of its %d decoder layers", path, t.depth, n)
            self.language_model.layers = self.language_model.layers[: t.depth]
            self.language_model.config.num_hidden_layers = t.depth

    def _grow_vocab(self, vocab_size: int) -> None:
        """FAST appends its action ids after the text vocabulary: new rows, randomly initialized."""
        self.language_model.resize_token_embeddings(vocab_size)
        if self.lm_head is not None and self.lm_head.out_features < vocab_size:
            old = self.lm_head
            self.lm_head = nn.Linear(
                old.in_features, vocab_size, bias=False, device=old.weight.device, dtype=old.weight.dtype
            )
            with torch.no_grad():
                nn.init.normal_(self.lm_head.weight, std=0.02)
                self.lm_head.weight[: old.out_features] = old.weight


def mrope_sections(head_dim: int, interleaved: bool) -> list[int]:
    """(t, h, w) frequency sections of multimodal RoPE for a head_dim, in the proportions of the
    published models: Qwen2.5-VL [16, 24, 24] and Qwen3-VL [24, 20, 20] at head_dim 128."""
    half = head_dim // 2
    if interleaved:
        hw = round(half * 20 / 64)
        return [half - 2 * hw, hw, hw]
    t = half // 4
    return [t, (half - t) // 2, half - t - (half - t) // 2]
