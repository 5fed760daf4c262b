"""Running the project's shell scripts from tests: this interpreter, one thread, no stray
recipe variables from the caller's shell. (The data and teacher they run on come from the
``mini_teacher`` fixture of conftest.py.)"""
import subprocess
import sys
from pathlib import Path

from scratch import scratch_dir, subprocess_env

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
PYTHON = sys.executable
RECIPE_VARS = ("ARCH", "LR", "TOTAL_NUM_UPDATES", "WARMUP_UPDATES", "MAX_SENTENCES", "MAX_EPOCH",
               "MAX_POSITIONS", "MAX_TOKENS", "SEED", "SEEDS", "FP16", "DATA_KIND", "JOBS", "BITS",
               "GROUP_SETS", "QUANT_GROUPS", "PARTS", "KD_PARTS", "PACT_GRID", "EXTRA_ARGS",
               "KEEP_CHECKPOINTS", "FAIRSEQ_TRAIN", "FAIRSEQ_VALIDATE", "DEVICE", "ROBERTA_PATH",
               "ENCODER_LAYERS", "HEAD_NAME", "NUM_CLASSES", "USER_DIR", "LOG_INTERVAL",
               "QAT_TRAIN_SIZE", "AUG", "AUG_N", "AUG_TOP_K", "AUG_P", "AUG_SEED", "AUG_PRETRAINED",
               "AUG_BATCH_SIZE", "FAMILIES", "PERMUTE", "SPARSE_GROUP_SETS")


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
