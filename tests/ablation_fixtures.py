"""A small mini-GLUE SST-2 and a tiny FP teacher for the ablation-script tests.

Built once per pytest process with the project's own scripts (scripts/prepare_mini_glue.sh,
scripts/train_teacher.sh), in a temporary directory removed at exit.
"""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
PYTHON = sys.executable
RECIPE_VARS = ("ARCH", "LR", "TOTAL_NUM_UPDATES", "WARMUP_UPDATES", "MAX_SENTENCES", "MAX_EPOCH",
               "MAX_POSITIONS", "MAX_TOKENS", "SEED", "FP16", "DATA_KIND", "JOBS", "BITS", "GROUP_SETS",
               "QUANT_GROUPS", "PARTS", "KD_PARTS", "PACT_GRID", "EXTRA_ARGS", "KEEP_CHECKPOINTS",
               "FAIRSEQ_TRAIN", "FAIRSEQ_VALIDATE", "DEVICE")

_CACHE = {}


def env(**overrides) -> dict:
    """Environment for the scripts: this interpreter, one thread, no stray recipe variables."""
    e = {k: v for k, v in os.environ.items() if k not in RECIPE_VARS}
    e.update(PYTHON=PYTHON, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore",
             TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    e.update({k: str(v) for k, v in overrides.items()})
    return e


def run(cmd, check=True, **env_overrides) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env(**env_overrides),
                          cwd=str(REPO), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def workdir() -> Path:
    if "root" not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="qbert_ablation_"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _CACHE["root"] = root
    return _CACHE["root"]


def mini_sst2():
    """(DATA_BIN, TEACHER checkpoint) of a small mini-GLUE SST-2 and a 2 x 64 FP teacher."""
    if "sst2" not in _CACHE:
        root = workdir()
        run([SCRIPTS / "prepare_mini_glue.sh", root / "data", "SST-2"],
            TRAIN_SIZE=256, DEV_SIZE=96, TEST_SIZE=16)
        data_bin = root / "data" / "SST-2-bin"
        run([SCRIPTS / "train_teacher.sh", "SST-2", data_bin, root / "teacher"],
            TOTAL_NUM_UPDATES=24, WARMUP_UPDATES=2, LOG_INTERVAL=8)
        teacher = root / "teacher" / "checkpoint_best.pt"
        assert teacher.is_file()
        _CACHE["sst2"] = (data_bin, teacher)
    return _CACHE["sst2"]
