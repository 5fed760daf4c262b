#!/usr/bin/env bash
# The test suite: creates/reuses the virtualenv, then runs pytest (extra args are passed on).
# TEST_WORKERS pytest-xdist processes (default 2, one per core of the 2-core target
# machine; 0 = no xdist). Files are the unit of distribution (--dist loadfile), so a
# module-scoped fixture is built once; each worker builds its own session fixtures.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
WORKERS="${TEST_WORKERS:-2}"
if ! [[ "$WORKERS" =~ ^[0-9]+$ ]]; then
  echo "error: TEST_WORKERS=$WORKERS; expected a number of processes (0 = no xdist)" >&2; exit 2
fi
XDIST=()
if [ "$WORKERS" -gt 0 ]; then XDIST=(-n "$WORKERS" --dist loadfile); fi
exec "$VENV/bin/python" -m pytest -q "${XDIST[@]}" tests "$@"
