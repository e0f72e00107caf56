"""Offscreen OpenGL for MuJoCo rendering: the one place vla chooses it.

MuJoCo picks its GL backend from MUJOCO_GL when `mujoco` is first imported, so this runs at the
top of `vla/sim/__init__.py`, before any sim module imports mujoco. Worker processes inherit the
environment, and import `vla.sim` again when they unpickle their job function.
"""

from __future__ import annotations

import logging
import os


def ensure_offscreen_gl() -> None:
    """Default to headless EGL (Mesa's software renderer when there is no GPU); a user's MUJOCO_GL wins."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    # Mesa llvmpipe: render in the calling thread. Its worker threads only add sync cost at these image
    # sizes (measured: ~530 vs ~470 renders/s at 96x96 on 2 cores) and oversubscribe parallel workers.
    os.environ.setdefault("LP_NUM_THREADS", "0")
    logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL logs an INFO line per process otherwise
