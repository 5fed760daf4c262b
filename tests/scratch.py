"""What the subprocess-based test fixtures share: one scratch folder per pytest process
(removed at exit) and the environment for fairseq subprocesses."""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

_ROOT = []


def scratch_dir(name: str) -> Path:
    """A folder ``name`` under this process's scratch root (created on first use)."""
    if not _ROOT:
        root = Path(tempfile.mkdtemp(prefix="qbert_tests_"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _ROOT.append(root)
    path = _ROOT[0] / name
    path.mkdir(exist_ok=True)
    return path


def subprocess_env(drop=(), **overrides) -> dict:
    """This environment with one thread per process (2 shared cores) and quiet warnings;
    ``drop`` removes variables."""
    env = {k: v for k, v in os.environ.items() if k not in set(drop)}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.update({k: str(v) for k, v in overrides.items()})
    return env
