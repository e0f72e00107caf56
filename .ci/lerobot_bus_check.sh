#!/usr/bin/env bash
# Interop check: LeRobot 0.4.4's own motor buses (FeetechMotorsBus, DynamixelMotorsBus), unmodified, drive
# `vla virtual-bus` (SO-101 and Koch followers): LeRobot's handshake, calibration calls, sync read and write.
# LeRobot pins torch<2.11 and cannot share vla's venv, so it gets its own small one: lerobot with --no-deps plus
# what lerobot.motors imports (the vendor SDKs, pyserial, deepdiff, tqdm, numpy). lerobot.utils.utils also
# imports torch, accelerate and datasets, which the buses never use; the client stands in empty modules for
# them when they are absent (it says so in its first line). Then tests/robots/test_lerobot_bus.py runs with
# that venv's python as VLA_LEROBOT_PYTHON. If the venv cannot be built (no network, no PyPI), the test is
# skipped with a message; the normal test suite never depends on this script.
# Usage: bash .ci/lerobot_bus_check.sh   (makes the project's .venv with launch/setup.sh if missing)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -x "$ROOT/.venv/bin/python" ] || source "$ROOT/launch/setup.sh"  # the project's own venv (fresh clone)
VENV="${VLA_LEROBOT_BUS_VENV:-${TMPDIR:-/tmp}/vla-lerobot-bus-venv}"
PY="${PYTHON:-python3}"
ok() {
  "$VENV/bin/python" -c "import lerobot, scservo_sdk, dynamixel_sdk, serial, deepdiff, tqdm, numpy; \
assert lerobot.__version__ == '0.4.4'" 2>/dev/null
}
if ! ok; then
  echo "[lerobot-bus] building $VENV with lerobot==0.4.4 (--no-deps) and what lerobot.motors imports"
  rm -rf "$VENV"
  { "$PY" -m venv "$VENV" \
    && "$VENV/bin/python" -m pip install -q --no-deps "lerobot==0.4.4" \
    && "$VENV/bin/python" -m pip install -q feetech-servo-sdk dynamixel-sdk pyserial "deepdiff>=7.0.1,<9" tqdm numpy; } \
    2>&1 | grep -v -e '^WARNING: Location' -e 'requires' -e 'dependency resolver' || true
fi
if ok; then
  export VLA_LEROBOT_PYTHON="$VENV/bin/python"
else
  echo "[lerobot-bus] could not build the LeRobot venv; the interop test will be skipped"
  unset VLA_LEROBOT_PYTHON
fi
exec "$ROOT/.venv/bin/python" -m pytest -q -rs tests/robots/test_lerobot_bus.py
