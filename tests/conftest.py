"""Shared fixtures: mini-GLUE generated and binarized once per test session."""
import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TESTS_DIR)
for _path in (REPO_DIR, TESTS_DIR):  # the packages, and the shared helper modules here
    if _path not in sys.path:
        sys.path.insert(0, _path)

# torch >= 2.6 refuses fairseq checkpoints without it (see ../shared/DESIGN.md, "Traps")
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

ALL_TASKS = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE")
SMALL_SIZES = dict(train_size=240, dev_size=60, test_size=30)


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


def pytest_collection_modifyitems(config, items):
    """Everything under tests/integration/ is ``slow`` (fairseq-train runs, real training)."""
    integration = os.path.join(TESTS_DIR, "integration") + os.sep
    for item in items:
        if str(item.fspath).startswith(integration):
            item.add_marker(pytest.mark.slow)
