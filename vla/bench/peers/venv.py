"""The side virtual environment that LeRobot runs in: LeRobot cannot be installed beside vla's torch.

`peer_python(given)` returns the Python to run `lerobot_side.py` with: the one given (checked: it
must import lerobot), else the bench's own environment under ~/.cache/vla/peers-venv (or
$VLA_PEERS_VENV), created on first use with `python -m venv` and `pip install` of PEER_REQUIREMENTS
through pip's usual configuration (pip.conf, PIP_INDEX_URL / PIP_EXTRA_INDEX_URL: point the latter
at PyTorch's CPU index where it can be reached to avoid the CUDA build's download).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from vla.spec import SpecError

log = logging.getLogger(__name__)

PEER_REQUIREMENTS = ("lerobot==0.4.4", "torch==2.9.1", "torchvision==0.24.1")
SIDE_SCRIPT = Path(str(importlib.resources.files("vla.bench.peers") / "lerobot_side.py"))


def default_venv() -> Path:
    return Path(os.environ.get("VLA_PEERS_VENV", Path.home() / ".cache" / "vla" / "peers-venv"))


def check_python(python: str | Path, script: str | Path = SIDE_SCRIPT, timeout: float = 300) -> dict:
    """Run the side script's `check` with `python` -> its versions; SpecError naming the fix if it fails."""
    p = Path(python)
    if not p.is_file():
        raise SpecError(f"--peer-python {python}: no such file; give the python of a LeRobot 0.4 environment")
    try:
        r = subprocess.run(
            [str(p), str(script), "check"], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SpecError(f"--peer-python {python}: could not run it ({e})") from None
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise SpecError(
            f"--peer-python {python} cannot run LeRobot ({last}); install it there: "
            f"{python} -m pip install {' '.join(PEER_REQUIREMENTS)}"
        )
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise SpecError(f"--peer-python {python}: unexpected answer {lines[-1]!r}") from None


def create_venv(root: Path) -> Path:
    """python -m venv ROOT, then pip install PEER_REQUIREMENTS into it (minutes; several GB with CUDA torch)."""
    log.info("creating the LeRobot side environment in %s (%s)", root, ", ".join(PEER_REQUIREMENTS))
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    py = root / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS])
    if r.returncode != 0:
        raise SpecError(
            f"pip could not install {' '.join(PEER_REQUIREMENTS)} into {root} (exit {r.returncode}); fix the "
            f"error above, or pass --peer-python with an environment that has LeRobot 0.4"
        )
    return py


def peer_python(given: str | Path | None = None, *, create: bool = True) -> tuple[str, dict]:
    """-> (the Python that runs LeRobot, its versions)."""
    if given is not None:
        return str(given), check_python(given)
    root = default_venv()
    py = root / "bin" / "python"
    if not py.exists():
        if not create:
            raise SpecError(f"no LeRobot side environment at {root}; pass --peer-python")
        py = create_venv(root)
    return str(py), check_python(py)
