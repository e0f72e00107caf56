"""`vla train --init CKPT`: start a run from another checkpoint's weights (a converted pi0_base,
or any vla checkpoint) instead of a random init.

Taken from the checkpoint: the model type and geometry (its config, with the embodiments of the
new data), its head convention (shared 32-dim head or per-embodiment heads), the norm mode, the
text tokenizer, the model type's assets, the norm stats of embodiments it has them for, and every
weight. Stats of the other embodiments come from the new data. With per-embodiment heads, a robot
the checkpoint has no heads for gets new (random) ones; heads of robots absent from the data are
dropped. Anything else that does not match is an error.
"""

from __future__ import annotations

import logging
import re

import torch

from vla.config import Preset
from vla.model.checkpoint import Checkpoint
from vla.model.text import TextTokenizer
from vla.model.weight_layout import match_module_keys
from vla.spec import SpecError

log = logging.getLogger(__name__)

HEAD_KEY = re.compile(r"^(state_in|action_in|action_out)\.proj\.([^.]+)\.")


def check_same_type(ck: Checkpoint, preset: Preset) -> None:
    rc = ck.resolved
    if rc.model_type != preset.type:
        raise SpecError(f"{ck.path} is a {rc.model_type} checkpoint but preset {preset.name!r} is {preset.type}: "
                        f"use a {rc.model_type} preset")
    if rc.norm_mode != preset.norm_mode:
        log.warning("using the checkpoint's norm mode %r (preset %r says %r)", rc.norm_mode, preset.name,
                    preset.norm_mode)


def init_inputs(ck: Checkpoint, preset: Preset, embodiments: dict) -> tuple[TextTokenizer, dict, dict]:
    """-> (text tokenizer, the type's assets, norm stats of the data's embodiments that `ck` has)."""
    text = ck.text()
    if text is None:
        if not preset.text.pretrained:
            raise SpecError(f"--init {ck.path} has no text tokenizer (converted without --tokenizer): convert again "
                            "with --tokenizer PATH, or name one in the preset's [text] pretrained")
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
        raise SpecError(f"--init {ck.path}: weights do not fit the model (missing {other[:5]}, unexpected "
                        f"{unexpected[:5]})")
    robots = sorted({HEAD_KEY.match(k).group(2) for k in fresh})
    if robots:
        log.info("--init: new heads (random init) for %s", robots)
    if dropped:
        log.info("--init: dropped heads of robots not in the data: %s",
                 sorted({HEAD_KEY.match(k).group(2) for k in dropped}))
