"""`vla train --init CKPT`: start a run from another checkpoint's weights (a converted pi0_base,
or any vla checkpoint) instead of a random init.

Taken from the checkpoint: the model type and geometry (its config, with the embodiments of the
new data; the preset's [model] table must agree with it, or the error names each field with the
expected and actual value), its head convention (shared 32-dim head or per-embodiment heads), the norm mode, the
text tokenizer, the model type's assets, the norm stats of embodiments it has them for, and every
weight. Stats of the other embodiments come from the new data. With per-embodiment heads, a robot
the checkpoint has no heads for gets new (random) ones; heads of robots absent from the data are
dropped. Anything else that does not match is an error.
"""

from __future__ import annotations

import logging
import re
from dataclasses import fields, is_dataclass, replace

import torch

from vla.config import Preset
from vla.model.interop.checkpoint import Checkpoint
from vla.model.interop.layout import match_module_keys
from vla.model.text import TextTokenizer
from vla.spec import SpecError

log = logging.getLogger(__name__)

HEAD_KEY = re.compile(r"^(state_in|action_in|action_out)\.proj\.([^.]+)\.")


def check_same_type(ck: Checkpoint, preset: Preset) -> None:
    rc = ck.resolved
    if rc.model_type != preset.type:
        raise SpecError(
            f"{ck.path} is a {rc.model_type} checkpoint but preset {preset.name!r} is {preset.type}: "
            f"use a {rc.model_type} preset"
        )
    if rc.norm_mode != preset.norm_mode:
        log.warning(
            "using the checkpoint's norm mode %r (preset %r says %r)", rc.norm_mode, preset.name, preset.norm_mode
        )


# Fields of a model config that are not the checkpoint's geometry: filled from the data, set by
# the trainer, or used only by a random init.
NOT_GEOMETRY = {"embodiments", "grad_checkpoint", "rtc_max_delay", "pretrained", "vision_pos_init", "init_std"}
# Training choices a fine-tune may change: the preset's value is used.
FROM_PRESET = ("num_steps", "mask_padded_actions", "time_at_one", "noise_scale")


def _differences(want, got, path: str = "") -> list[tuple[str, object, object]]:
    out = []
    for f in fields(want):
        if f.name in NOT_GEOMETRY:
            continue
        a, b = getattr(want, f.name), getattr(got, f.name)
        if is_dataclass(a) and is_dataclass(b):
            out += _differences(a, b, f"{path}{f.name}.")
        elif a != b:
            out.append((f"{path}{f.name}", a, b))
    return out


def init_config(ck: Checkpoint, preset: Preset, mt):
    """The model config of a run started from `ck`: the checkpoint's, checked field by field
    against the preset's [model] table (expected = the preset, actual = the checkpoint), with the
    training choices in FROM_PRESET taken from the preset."""
    want = mt.make_config(preset.model)
    got = ck.resolved.model
    diff = [d for d in _differences(want, got) if d[0] not in FROM_PRESET]
    if diff:
        rows = "; ".join(f"model.{k}: preset {a!r}, checkpoint {b!r}" for k, a, b in diff)
        raise SpecError(
            f"--init {ck.path}: its geometry contradicts preset {preset.name!r} ({rows}). "
            "Use a preset that matches the checkpoint (e.g. the one it was converted with)."
        )
    return replace(got, **{f.name: getattr(want, f.name) for f in fields(want) if f.name in FROM_PRESET})


def init_inputs(ck: Checkpoint, preset: Preset, embodiments: dict) -> tuple[TextTokenizer, dict, dict]:
    """-> (text tokenizer, the type's assets, norm stats of the data's embodiments that `ck` has)."""
    text = ck.text()
    if text is None:
        if not preset.text.pretrained:
            raise SpecError(
                f"--init {ck.path} has no text tokenizer (converted without --tokenizer): convert again "
                "with --tokenizer PATH, or name one in the preset's [text] pretrained"
            )
        text = TextTokenizer.load(preset.text.pretrained)
    assets = ck.assets()
    stats = {n: s for n, s in ck.stats().items() if n in embodiments}
    return text, assets, stats


def load_init_weights(model: torch.nn.Module, ck: Checkpoint) -> None:
    """The checkpoint's weights into `model`; new robots keep their fresh heads."""
    own = set(model.state_dict())
    weights = match_module_keys(ck.weights(), own)
    dropped = [k for k in weights if k not in own and HEAD_KEY.match(k)]
    weights = {k: v for k, v in weights.items() if k not in dropped}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    fresh = [k for k in missing if HEAD_KEY.match(k)]
    other = [k for k in missing if k not in fresh]
    if other or unexpected:
        raise SpecError(
            f"--init {ck.path}: weights do not fit the model (missing {other[:5]}, unexpected {unexpected[:5]})"
        )
    robots = sorted({HEAD_KEY.match(k).group(2) for k in fresh})
    if robots:
        log.info("--init: new heads (random init) for %s", robots)
    if dropped:
        log.info(
            "--init: dropped heads of robots not in the data: %s", sorted({HEAD_KEY.match(k).group(2) for k in dropped})
        )
