#!/usr/bin/env bash
# Install (if needed) and run the main job on its embedded default. Extra args go to `vla quickstart`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/setup.sh"
cd "$ROOT"
exec vla quickstart "$@"
