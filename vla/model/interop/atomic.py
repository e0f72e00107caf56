"""A directory written all at once: filled in a temporary sibling, renamed into place when done.

A crash or an error never leaves a half-written directory at `out`, and what is at `out` is
replaced only when it is of the kind the caller names (a checkpoint over a checkpoint); anything
else there is refused, before the work and again just before the rename.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vla.outputs import is_free, set_modes


@contextmanager
def atomic_dir(
    out: str | Path,
    *,
    refuse: Callable[[Path], Exception],
    replaces: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yields an empty temporary sibling of `out` to fill. On success every file in it gets one
    mode (vla.outputs.set_modes: safetensors writes 0600) and it is renamed to `out`; on any error
    it is removed and the error goes on.

    replaces: what at `out` may be replaced (an empty folder counts as nothing there); None: `out`
    must not exist at all. refuse(out): the exception raised for anything else at `out`."""
    out = Path(out)

    def check() -> None:
        taken = out.exists() or out.is_symlink()
        if taken and (replaces is None or not (is_free(out) or replaces(out))):
            raise refuse(out)

    check()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        check()
        set_modes(tmp)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
