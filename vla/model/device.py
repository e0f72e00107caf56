"""The torch device a user names (`--device`), checked: a typo or a GPU this machine lacks is one
clear error, not a torch assertion deep inside the first step."""

from __future__ import annotations

import torch

from vla.spec import SpecError


def resolve_device(name: str | None, default: str | None = None) -> torch.device:
    """`name` (cpu, cuda, cuda:1, mps ...) or, when None, `default`, else cuda where available."""
    name = name or default or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise SpecError(f"--device {name!r} is not a torch device: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError(f"--device {name}: this machine (or this torch build) has no CUDA device; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpecError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 ...)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SpecError(f"--device {name}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise SpecError(f"--device {name}: vla runs on cpu, cuda or mps")
    return dev
