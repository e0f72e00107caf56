#!/usr/bin/env bash
# Create .venv (if missing) and install the project into it. Sourced by quickstart.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
# MuJoCo renders offscreen through Mesa's EGL (software). Install it on a bare Debian machine.
if ! ldconfig -p 2>/dev/null | grep -q libEGL_mesa && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing Mesa EGL for offscreen rendering"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri) >/dev/null 2>&1 \
    || echo "[setup] could not install Mesa EGL; simulation rendering may fail"
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
# Only reinstall when the project's requirements changed since the last install.
STAMP=.venv/.vla-installed
HASH="$(sha256sum pyproject.toml packages/vla-client/pyproject.toml launch/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$HASH" ]; then
  echo "[setup] installing torch 2.13.0 (CPU build) and the project"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  # The CPU torch first, so the range in pyproject.toml does not pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v '^WARNING: Location' || true
  # The robot-side client is its own distribution (packages/vla-client) that vla depends on: install
  # both from this checkout in one go, so pip never looks for `vla-client` on an index.
  .venv/bin/python -m pip install -q -e ./packages/vla-client -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c "import vla, vla_client, torch, zarr, av, pyarrow"
  echo "$HASH" > "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
