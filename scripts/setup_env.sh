#!/usr/bin/env bash
# Create (or reuse) the virtualenv and install fairseq-qbert with its pinned dependencies.
# Usage: source scripts/setup_env.sh   (sets $VENV and puts $VENV/bin first on PATH)
# Re-running is fast: nothing is installed again unless setup.py changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QBERT_VENV:-$ROOT/.venv}"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3 python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "fairseq-qbert: error: Python 3.11 is required (fairseq-fixed 0.12.3.1 + torch 2.13.0); set PYTHON=/path/to/python3.11" >&2
  return 1
}

want="$(cat "$ROOT/setup.py" | sha1sum | cut -d' ' -f1)"
stamp="$VENV/.qbert-installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  py="$(find_python)"
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  echo "[setup] installing fairseq-qbert and pinned dependencies into $VENV" >&2
  # torch first and pinned: otherwise a dependency may resolve a multi-GB CUDA build
  "$VENV/bin/pip" install -q --disable-pip-version-check "torch==2.13.0"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test,plots,hf]"
  echo "$want" > "$stamp"
fi
export VENV
export PATH="$VENV/bin:$PATH"
