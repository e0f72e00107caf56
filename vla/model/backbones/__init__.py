"""Backbone adapters, one per VLM family (the interface: vla.model.backbones.base).

BACKBONES is the one explicit registry from `BackboneConfig.family` to its adapter class."""

from __future__ import annotations

from vla.model.backbone import FAMILIES
from vla.model.backbones.base import Prefix, VLMBackbone, family_of
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


__all__ = ["BACKBONES", "Prefix", "VLMBackbone", "backbone_class", "family_of"]
