"""The tree passes ruff with the settings in pyproject.toml (import order, pyflakes, line length)."""
import os
import subprocess
import sys

from conftest import REPO_DIR


def test_tree_passes_ruff():
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    proc = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO_DIR, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
