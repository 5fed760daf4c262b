"""Shared fixtures, each built once per test session (per pytest-xdist worker): mini-GLUE (all tasks, small) and
``mini_teacher``, the one trained FP teacher that the KD, QAT and ablation tests share."""
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TESTS_DIR)
for _path in (REPO_DIR, TESTS_DIR):  # the packages, and the shared helper modules here
    if _path not in sys.path:
        sys.path.insert(0, _path)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest-xdist worker per core (scripts/run_tests.sh): one thread each, for the
    # worker's own torch and every subprocess it starts, instead of two workers x all cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ALL_TASKS = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE")
SMALL_SIZES = dict(train_size=240, dev_size=60, test_size=30)
# mini_teacher: mini-GLUE SST-2 of this size, and the updates of its teacher's run (about
# 20 CPU seconds; it ends near 95% dev accuracy, majority class ~50%)
MINI_TEACHER_SIZES = dict(train_size=2000, dev_size=400, test_size=10)
MINI_TEACHER_UPDATES = dict(TOTAL_NUM_UPDATES=600, WARMUP_UPDATES=36)


def read_tsv(path):
    """Rows of a GLUE TSV, split on "\\n" and "\\t" only (as cut/awk do)."""
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    assert text.endswith("\n"), f"{path} must end with a newline"
    return [line.split("\t") for line in text[:-1].split("\n")]


@pytest.fixture(scope="session")
def small_glue(tmp_path_factory):
    """All eight tasks, small, in the GLUE layout: returns the GLUE folder."""
    from qbert.data import mini_glue

    out = str(tmp_path_factory.mktemp("mini_glue_small"))
    mini_glue.generate(out, "all", seed=1, **SMALL_SIZES)
    return out


@pytest.fixture(scope="session")
def small_glue_bin(small_glue, tmp_path_factory):
    """small_glue binarized with the whitespace tokenizer: returns {task: DEST}."""
    from fairseq_qbert.data.preprocess_glue import preprocess_task

    root = tmp_path_factory.mktemp("mini_glue_small_bin")
    out = {}
    for task in ALL_TASKS:
        out[task] = preprocess_task(small_glue, task, str(root / f"{task}-bin"), bpe="whitespace")
    return out


@dataclass(frozen=True)
class MiniTeacher:
    """A mini-GLUE task, binarized, and the FP teacher a real fairseq-train run fine-tuned on it."""
    task: str
    glue_dir: Path        # GLUE layout (TASK/train.tsv, dev.tsv, test.tsv)
    data_bin: Path        # fairseq binaries: input0/, label/ (whitespace tokenizer)
    checkpoint: Path      # checkpoint_best.pt: a 2 x 64 ``roberta`` (plain fairseq, no plugin)
    best_accuracy: float  # its best dev accuracy, read from its train.log
    train_log: str


@pytest.fixture(scope="session")
def mini_teacher(tmp_path_factory):
    """The one trained FP teacher of the suite, for every test that needs *a* trained
    sentence-classification teacher: mini-GLUE SST-2 (sizes above) generated and binarized
    in-process, then ``scripts/train_teacher.sh`` (fairseq-train, tiny CPU recipe, plain
    fairseq: USER_DIR=0). Checked to have learned the task (> 80% dev accuracy)."""
    from ablation_fixtures import SCRIPTS, run

    from fairseq_qbert.data.preprocess_glue import preprocess_task
    from qbert.data import mini_glue

    root = tmp_path_factory.mktemp("mini_teacher")
    glue = root / "glue"
    mini_glue.generate(str(glue), "SST-2", seed=1, **MINI_TEACHER_SIZES)
    data_bin = Path(preprocess_task(str(glue), "SST-2", str(root / "SST-2-bin"), bpe="whitespace"))
    save = root / "teacher"
    run(["bash", SCRIPTS / "train_teacher.sh", "SST-2", data_bin, save], USER_DIR=0, SEED=1,
        **MINI_TEACHER_UPDATES)
    log = (save / "train.log").read_text()
    accuracies = [float(a) for a in re.findall(r"valid on 'valid' subset .*?\| accuracy ([\d.]+)", log)]
    assert accuracies and max(accuracies) > 80, \
        f"the teacher must learn mini-GLUE SST-2 (majority class ~50%): {accuracies}"
    assert (save / "checkpoint_best.pt").is_file()
    return MiniTeacher("SST-2", glue, data_bin, save / "checkpoint_best.pt", max(accuracies), log)


def pytest_collection_modifyitems(config, items):
    """Everything under tests/integration/ is ``slow`` (fairseq-train runs, real training)."""
    integration = os.path.join(TESTS_DIR, "integration") + os.sep
    for item in items:
        if str(item.fspath).startswith(integration):
            item.add_marker(pytest.mark.slow)
