"""LeRobot 0.4.4's own FeetechMotorsBus and DynamixelMotorsBus, unmodified, drive `vla virtual-bus`.

LeRobot cannot be installed beside vla's torch, so the client runs in LeRobot's own venv: the one
.ci/lerobot_bus_check.sh builds (VLA_LEROBOT_PYTHON), else /tmp/lerobot-venv when it exists; skipped
otherwise. The client is tests/robots/lerobot_bus_client.py (it imports nothing from vla).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.interop, pytest.mark.sim]

CLIENT = Path(__file__).with_name("lerobot_bus_client.py")


def _lerobot_python() -> str | None:
    for py in (os.environ.get("VLA_LEROBOT_PYTHON"), "/tmp/lerobot-venv/bin/python"):
        if py and Path(py).is_file():
            probe = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))"
            ok = subprocess.run([py, "-c", probe, "lerobot", "scservo_sdk", "dynamixel_sdk", "deepdiff", "serial"])
            if ok.returncode == 0:
                return py
    return None


def test_lerobot_buses_drive_the_virtual_arms(tmp_path):
    py = _lerobot_python()
    if py is None:
        pytest.skip("no LeRobot venv with lerobot, feetech-servo-sdk and dynamixel-sdk (run .ci/lerobot_bus_check.sh)")
    vla = str(Path(sys.executable).with_name("vla"))
    cmd = [py, str(CLIENT), "--robot", "so101", "--robot", "koch", "--vla", vla, "--workdir", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    steps = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert r.returncode == 0, r.stdout + r.stderr
    assert [s["robot"] for s in steps if s["step"] == "ok"] == ["so101", "koch"]
    models = [s["models"] for s in steps if s["step"] == "connect"]
    assert models == [{str(i): 777 for i in range(1, 7)}, {"1": 1060, "2": 1060, **{str(i): 1200 for i in range(3, 7)}}]
