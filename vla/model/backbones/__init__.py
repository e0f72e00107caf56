"""Backbone adapters, one per VLM family (the interface: vla.model.backbones.base).

BACKBONES is the one explicit registry from `BackboneConfig.family` to its adapter class."""

from __future__ import annotations

from vla.model.backbones.base import Prefix, VLMBackbone, family_of
from vla.model.backbones.config import FAMILIES, BackboneConfig
from vla.model.backbones.paligemma import PaliGemmaBackbone
from vla.model.backbones.qwen_vl import Qwen3VLBackbone, Qwen3VLMoeBackbone, Qwen25VLBackbone
from vla.model.backbones.smolvlm import SmolVLMBackbone
from vla.spec import SpecError

BACKBONES: dict[str, type[VLMBackbone]] = {
    c.family: c for c in (PaliGemmaBackbone, SmolVLMBackbone, Qwen25VLBackbone, Qwen3VLBackbone, Qwen3VLMoeBackbone)
}
assert tuple(BACKBONES) == FAMILIES


def backbone_class(family: str) -> type[VLMBackbone]:
    if family not in BACKBONES:
        raise SpecError(f"unknown backbone family {family!r}; supported: {list(BACKBONES)}")
    return BACKBONES[family]


def Backbone(cfg: BackboneConfig, vocab_size: int | None = None, *, lm_head: bool = False):  # noqa: N802 (the old class name)
    """The backbone adapter for `cfg.family` (vla.model.backbones.base.VLMBackbone).

    vocab_size: rows of the token embedding (the text tokenizer's vocabulary, plus FAST's action
    ids); a pretrained embedding with fewer rows grows. lm_head: keep the family's LM head for
    decoding (FAST); a tied head reads the token embedding."""
    return backbone_class(cfg.family)(cfg, vocab_size, lm_head=lm_head)


__all__ = ["BACKBONES", "Backbone", "Prefix", "VLMBackbone", "backbone_class", "family_of"]
