"""What a fine-tune trains: freezing options, combined with LoRA (vla.train.lora).

`freeze` in the preset's [train] table (or `vla train --freeze`):
    "none"    everything trains (a full fine-tune)
    "vision"  the SigLIP vision tower is frozen; the projector, the Gemma stacks and the heads train
    "vlm"     the whole VLM is frozen (vision tower, projector, Gemma decoder and its token
              embedding): only the action expert and the state/action/time layers train, as
              SmolVLA trains its expert on a frozen VLM
A stack with LoRA adapters is frozen apart from its adapters; the adapters always train.
"""

from __future__ import annotations

import logging

from torch import nn

from vla.spec import SpecError
from vla.train.lora import LoraSpec, is_adapter, lora_stacks

log = logging.getLogger(__name__)

FREEZE_MODES = {"none": (), "vision": ("backbone.vision_tower",), "vlm": ("backbone",)}


def check_mode(freeze: str) -> None:
    if freeze not in FREEZE_MODES:
        raise SpecError(f"freeze must be one of {sorted(FREEZE_MODES)}, got {freeze!r}")


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def set_trainable(model: nn.Module, freeze: str, lora: LoraSpec, *, report: bool = True) -> dict:
    """Set requires_grad on every parameter; -> {"trainable": n, "frozen": n} (element counts)."""
    check_mode(freeze)
    frozen_prefixes = (*FREEZE_MODES[freeze], *lora_stacks(lora))
    counts = {"trainable": 0, "frozen": 0}
    for name, p in model.named_parameters():
        train = is_adapter(name) or not _under(name, frozen_prefixes)
        p.requires_grad_(train)
        counts["trainable" if train else "frozen"] += p.numel()
    if not counts["trainable"]:
        raise SpecError(f"freeze={freeze!r} with this LoRA setting leaves no parameter to train")
    if counts["frozen"] and report:
        total = counts["trainable"] + counts["frozen"]
        log.info(
            "training %s of %s parameters (%.1f%%; freeze=%s, lora rank %d)",
            f"{counts['trainable']:,}",
            f"{total:,}",
            100 * counts["trainable"] / total,
            freeze,
            lora.rank,
        )
    return counts
