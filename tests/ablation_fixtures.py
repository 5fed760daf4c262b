"""A small mini-GLUE SST-2 and a tiny FP teacher for the ablation-script tests.

Built once per pytest process with the project's own scripts (scripts/prepare_mini_glue.sh,
scripts/train_teacher.sh), in a temporary directory removed at exit.
"""
import subprocess
import sys
from pathlib import Path

from scratch import scratch_dir, subprocess_env

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
    return subprocess_env(drop=RECIPE_VARS, PYTHON=PYTHON, **overrides)


def run(cmd, check=True, **env_overrides) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env(**env_overrides),
                          cwd=str(REPO), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def workdir() -> Path:
    return scratch_dir("ablation")


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
