"""MuJoCo's warnings into Python logging.

Left to itself MuJoCo prints a warning (an unstable simulation: "Nan, Inf or huge value in QACC")
and appends it to MUJOCO_LOG.TXT in the current working folder: a file no vla command asked for,
outside its OUT. The handler is process-wide in the MuJoCo library, so `vla.sim` installs it once
on import (worker processes import `vla.sim` again); external suites' envs share it.
"""

from __future__ import annotations

import logging

import mujoco

log = logging.getLogger("vla.sim.mujoco")


def _warn(message: str) -> None:
    log.warning("MuJoCo: %s", message.strip())


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to the `vla.sim.mujoco` logger instead of stdout and MUJOCO_LOG.TXT."""
    mujoco.set_mju_user_warning(_warn)
