#!/usr/bin/env bash
# The test suite: creates/reuses the virtualenv, then runs pytest (extra args are passed on).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest -q tests "$@"
