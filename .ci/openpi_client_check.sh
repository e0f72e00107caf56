#!/usr/bin/env bash
# Interop check: the public openpi-client package (0.1.2, from PyPI) drives `vla serve` unmodified.
# openpi-client pins numpy<2 and imports typing_extensions without declaring it, so it gets its own
# small venv (never the project's). Then tests/runtime/test_openpi_interop.py runs with that venv's
# python as VLA_OPENPI_PYTHON. If the venv cannot be built (no network, no PyPI), the test is
# skipped with a message; the normal test suite never depends on this script.
# Usage: bash .ci/openpi_client_check.sh   (makes the project's .venv with launch/setup.sh if missing)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -x "$ROOT/.venv/bin/python" ] || source "$ROOT/launch/setup.sh"  # the project's own venv (fresh clone)
VENV="${VLA_OPENPI_VENV:-${TMPDIR:-/tmp}/vla-openpi-client-venv}"
PY="${PYTHON:-python3}"
ok() { "$VENV/bin/python" -c "import openpi_client.websocket_client_policy, typing_extensions, numpy; assert numpy.__version__ < '2'" 2>/dev/null; }
if ! ok; then
  echo "[openpi-interop] building $VENV with openpi-client==0.1.2, numpy<2, typing_extensions"
  rm -rf "$VENV"
  { "$PY" -m venv "$VENV" && "$VENV/bin/python" -m pip install -q "openpi-client==0.1.2" "numpy<2" typing_extensions; } \
    2>&1 | grep -v '^WARNING: Location' || true
fi
if ok; then
  export VLA_OPENPI_PYTHON="$VENV/bin/python"
else
  echo "[openpi-interop] could not build the openpi-client venv; the interop test will be skipped"
  unset VLA_OPENPI_PYTHON
fi
exec "$ROOT/.venv/bin/python" -m pytest -q -rs tests/runtime/test_openpi_interop.py
