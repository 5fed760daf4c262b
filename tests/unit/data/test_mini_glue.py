"""Mini-GLUE is written in the exact GLUE layout and formats, deterministically.

The expectations below are written out by hand from the GLUE download (and from what
fairseq's examples/roberta/preprocess_GLUE_tasks.sh reads), not taken from the code
under test.
"""
import collections
import filecmp
import os
import subprocess
import sys

import pytest
from conftest import ALL_TASKS, REPO_DIR, SMALL_SIZES, read_tsv

MNLI_BASE = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
             "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
STSB_BASE = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
             "sentence1", "sentence2"]
NLI2 = {"entailment", "not_entailment"}
NLI3 = {"entailment", "neutral", "contradiction"}

# task -> {file: (header or None, number of columns, 0-based label column or None, label space)}
# label space "float" = a score in [0, 5]
EXPECTED = {
    "CoLA": {
        "train.tsv": (None, 4, 1, {"0", "1"}),
        "dev.tsv": (None, 4, 1, {"0", "1"}),
        "test.tsv": (["index", "sentence"], 2, None, None),
    },
    "SST-2": {
        "train.tsv": (["sentence", "label"], 2, 1, {"0", "1"}),
        "dev.tsv": (["sentence", "label"], 2, 1, {"0", "1"}),
        "test.tsv": (["index", "sentence"], 2, None, None),
    },
    "MRPC": {
        # the GLUE download copies the header of msr_paraphrase_train.txt, UTF-8 BOM included
        "train.tsv": (["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"], 5, 0, {"0", "1"}),
        "dev.tsv": (["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"], 5, 0, {"0", "1"}),
        "test.tsv": (["index", "#1 ID", "#2 ID", "#1 String", "#2 String"], 5, None, None),
    },
    "STS-B": {
        "train.tsv": (STSB_BASE + ["score"], 10, 9, "float"),
        "dev.tsv": (STSB_BASE + ["score"], 10, 9, "float"),
        "test.tsv": (STSB_BASE, 9, None, None),
    },
    "QQP": {
        "train.tsv": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], 6, 5, {"0", "1"}),
        "dev.tsv": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], 6, 5, {"0", "1"}),
        "test.tsv": (["id", "question1", "question2"], 3, None, None),
    },
    "MNLI": {
        "train.tsv": (MNLI_BASE + ["label1", "gold_label"], 12, 11, NLI3),
        "dev_matched.tsv": (MNLI_BASE + ["label1", "label2", "label3", "label4", "label5", "gold_label"],
                            16, 15, NLI3),
        "dev_mismatched.tsv": (MNLI_BASE + ["label1", "label2", "label3", "label4", "label5", "gold_label"],
                               16, 15, NLI3),
        "test_matched.tsv": (MNLI_BASE, 10, None, None),
        "test_mismatched.tsv": (MNLI_BASE, 10, None, None),
    },
    "QNLI": {
        "train.tsv": (["index", "question", "sentence", "label"], 4, 3, NLI2),
        "dev.tsv": (["index", "question", "sentence", "label"], 4, 3, NLI2),
        "test.tsv": (["index", "question", "sentence"], 3, None, None),
    },
    "RTE": {
        "train.tsv": (["index", "sentence1", "sentence2", "label"], 4, 3, NLI2),
        "dev.tsv": (["index", "sentence1", "sentence2", "label"], 4, 3, NLI2),
        "test.tsv": (["index", "sentence1", "sentence2"], 3, None, None),
    },
}
# 0-based text columns (train/dev; test) as preprocess_GLUE_tasks.sh cuts them (1-based there)
TEXT_COLUMNS = {
    "CoLA": ((3,), (1,)), "SST-2": ((0,), (1,)), "MRPC": ((3, 4), (3, 4)), "STS-B": ((7, 8), (7, 8)),
    "QQP": ((3, 4), (1, 2)), "MNLI": ((8, 9), (8, 9)), "QNLI": ((1, 2), (1, 2)), "RTE": ((1, 2), (1, 2)),
}


def _data_rows(task, fname, rows):
    header = EXPECTED[task][fname][0]
    return rows[1:] if header is not None else rows


def _size_of(fname, sizes):
    if fname.startswith("train"):
        return sizes["train_size"]
    if fname.startswith("dev"):
        return sizes["dev_size"]
    return sizes["test_size"]


def test_expected_table_covers_all_tasks():
    assert sorted(EXPECTED) == sorted(ALL_TASKS)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_glue_layout_and_format(small_glue, task):
    task_dir = os.path.join(small_glue, task)
    assert sorted(os.listdir(task_dir)) == sorted(EXPECTED[task])
    for fname, (header, ncols, label_col, space) in EXPECTED[task].items():
        rows = read_tsv(os.path.join(task_dir, fname))
        if header is None:
            # CoLA train/dev: no header, first row is data (source code, 0/1, '*' or '')
            assert rows[0][1] in {"0", "1"}, rows[0]
        else:
            assert rows[0] == header, (fname, rows[0])
        data = _data_rows(task, fname, rows)
        assert len(data) == _size_of(fname, SMALL_SIZES)
        for r in data:
            assert len(r) == ncols, (fname, r)
        train_cols, test_cols = TEXT_COLUMNS[task]
        for r in data:
            for c in (test_cols if fname.startswith("test") else train_cols):
                assert r[c].strip(), (fname, r)
                assert r[c] == r[c].lower()
        if label_col is None:
            continue
        labels = [r[label_col] for r in data]
        if space == "float":
            scores = [float(x) for x in labels]
            assert all(0.0 <= s <= 5.0 for s in scores)
            assert all(len(x.split(".")[1]) == 3 for x in labels), "STS-B scores as 3-decimal strings"
            assert max(scores) - min(scores) > 3.0, "scores should span the 0-5 range"
        else:
            counts = collections.Counter(labels)
            assert set(counts) == space, (fname, counts)


def test_cola_columns(small_glue):
    rows = read_tsv(os.path.join(small_glue, "CoLA", "train.tsv"))
    for source, label, star, _sentence in rows:
        assert source and " " not in source
        assert star == ("" if label == "1" else "*")


def test_mnli_labels(small_glue):
    train = read_tsv(os.path.join(small_glue, "MNLI", "train.tsv"))[1:]
    assert all(r[10] == r[11] for r in train), "MNLI train: label1 == gold_label"
    for split in ("dev_matched", "dev_mismatched"):
        dev = read_tsv(os.path.join(small_glue, "MNLI", f"{split}.tsv"))[1:]
        for r in dev:
            votes = collections.Counter(r[10:15])
            assert votes[r[15]] == max(votes.values()), "gold_label is a majority label"
    matched = {r[3] for r in read_tsv(os.path.join(small_glue, "MNLI", "dev_matched.tsv"))[1:]}
    mismatched = {r[3] for r in read_tsv(os.path.join(small_glue, "MNLI", "dev_mismatched.tsv"))[1:]}
    assert matched and mismatched and not (matched & mismatched), "genres differ between matched/mismatched"


def _best_single_token_rule(texts, labels):
    """Accuracy of the best rule 'label depends only on whether token t occurs'."""
    n = len(labels)
    totals = collections.Counter(labels)
    by_tok = collections.defaultdict(collections.Counter)
    for toks, lab in zip(texts, labels):
        for t in toks:
            by_tok[t][lab] += 1
    best = max(totals.values()) / n
    for c in by_tok.values():
        rest = totals - c
        best = max(best, (max(c.values()) + (max(rest.values()) if rest else 0)) / n)
    return best


@pytest.mark.parametrize("task", [t for t in ALL_TASKS if t != "STS-B"])
def test_no_single_keyword_decides_the_label(tmp_path, task):
    """The signal needs context: no token's presence predicts the label much better
    than the majority class (while a tiny model reaches far more, see test_teacher_learns)."""
    from qbert.data import mini_glue

    mini_glue.generate(str(tmp_path), task, train_size=3000, dev_size=1, test_size=1, seed=3)
    fname = "train.tsv"
    header, _, label_col, _ = EXPECTED[task][fname]
    data = _data_rows(task, fname, read_tsv(tmp_path / task / fname))
    cols = TEXT_COLUMNS[task][0]
    texts = [{f"{k}:{w}" for k, c in enumerate(cols) for w in r[c].split()} for r in data]
    labels = [r[label_col] for r in data]
    majority = max(collections.Counter(labels).values()) / len(labels)
    assert _best_single_token_rule(texts, labels) < majority + 0.12


def test_stsb_score_not_a_single_keyword(tmp_path):
    import numpy as np

    from qbert.data import mini_glue

    mini_glue.generate(str(tmp_path), "STS-B", train_size=3000, dev_size=1, test_size=1, seed=3)
    data = read_tsv(tmp_path / "STS-B" / "train.tsv")[1:]
    y = np.array([float(r[9]) for r in data])
    texts = [set(r[7].split()) | set(r[8].split()) for r in data]
    vocab = sorted(set().union(*texts))
    best = max(abs(np.corrcoef([t in x for x in texts], y)[0, 1]) for t in vocab
               if 0 < sum(t in x for x in texts) < len(texts))
    assert best < 0.2
    # ... but the graded overlap of the two sentences does carry the score
    overlap = [len(set(r[7].split()) & set(r[8].split())) / len(set(r[7].split()) | set(r[8].split()))
               for r in data]
    assert np.corrcoef(overlap, y)[0, 1] > 0.5


def test_deterministic_and_seeded(tmp_path):
    from qbert.data import mini_glue

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sizes = dict(train_size=50, dev_size=20, test_size=10)
    mini_glue.generate(str(a), "all", seed=7, **sizes)
    # the CLI in a fresh process (other hash seed) must give byte-identical files
    env = dict(os.environ, PYTHONHASHSEED="123")
    subprocess.run([sys.executable, "-m", "qbert.data.mini_glue", "--out-dir", str(b),
                    "--seed", "7", "--train-size", "50", "--dev-size", "20", "--test-size", "10"],
                   check=True, cwd=REPO_DIR, env=env, capture_output=True)
    mini_glue.generate(str(c), "all", seed=8, **sizes)
    for task in ALL_TASKS:
        for fname in EXPECTED[task]:
            assert filecmp.cmp(a / task / fname, b / task / fname, shallow=False), (task, fname)
        assert not filecmp.cmp(a / task / "train.tsv", c / task / "train.tsv", shallow=False), \
            f"{task}: the seed has no effect"


def test_split_sizes_are_independent_streams(tmp_path):
    """Changing --dev-size must not change train (each split has its own stream)."""
    from qbert.data import mini_glue

    mini_glue.generate(str(tmp_path / "a"), "RTE,SST-2", train_size=40, dev_size=10, test_size=5, seed=1)
    mini_glue.generate(str(tmp_path / "b"), "RTE,SST-2", train_size=40, dev_size=25, test_size=5, seed=1)
    for task in ("RTE", "SST-2"):
        assert filecmp.cmp(tmp_path / "a" / task / "train.tsv", tmp_path / "b" / task / "train.tsv",
                           shallow=False)
        dev_a = read_tsv(tmp_path / "a" / task / "dev.tsv")
        dev_b = read_tsv(tmp_path / "b" / task / "dev.tsv")
        assert len(dev_a) == 11 and len(dev_b) == 26 and dev_b[:11] == dev_a


def test_cli_sizes_and_task_subset(tmp_path):
    out = tmp_path / "glue"
    r = subprocess.run([sys.executable, "-m", "qbert.data.mini_glue", "--out-dir", str(out),
                        "--tasks", "CoLA,mnli", "--train-size", "37", "--dev-size", "11",
                        "--test-size", "5"], cwd=REPO_DIR, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["CoLA", "MNLI"]
    assert len(read_tsv(out / "CoLA" / "train.tsv")) == 37          # no header
    assert len(read_tsv(out / "CoLA" / "dev.tsv")) == 11
    assert len(read_tsv(out / "CoLA" / "test.tsv")) == 5 + 1        # header
    assert len(read_tsv(out / "MNLI" / "train.tsv")) == 37 + 1
    assert len(read_tsv(out / "MNLI" / "dev_mismatched.tsv")) == 11 + 1
    assert len(read_tsv(out / "MNLI" / "test_matched.tsv")) == 5 + 1


def test_cli_unknown_task_is_one_line(tmp_path, capsys):
    from qbert.data.mini_glue import cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(["--out-dir", str(tmp_path / "x"), "--tasks", "SST-2,WNLI"])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "WNLI" in lines[0] and all(t in lines[0] for t in ALL_TASKS)
    assert not (tmp_path / "x").exists(), "nothing written on a bad task list"


def test_cli_rejects_bad_size(tmp_path, capsys):
    from qbert.data.mini_glue import cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(["--out-dir", str(tmp_path / "x"), "--train-size", "0"])
    assert e.value.code == 2 and "positive integer" in capsys.readouterr().err


def test_glue_train_sizes_are_capped_and_the_cli_takes_them(tmp_path):
    """--train-size glue: GLUE's own train sizes (RTE 2490, MRPC 3668), capped."""
    out = tmp_path / "glue"
    r = subprocess.run([sys.executable, "-m", "qbert.data.mini_glue", "--out-dir", str(out),
                        "--tasks", "RTE,MRPC,SST-2", "--train-size", "glue", "--max-train-size", "3000",
                        "--dev-size", "5", "--test-size", "5"], cwd=REPO_DIR, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(read_tsv(out / "RTE" / "train.tsv")) == 2490 + 1      # header
    assert len(read_tsv(out / "MRPC" / "train.tsv")) == 3000 + 1     # capped
    assert len(read_tsv(out / "SST-2" / "train.tsv")) == 3000 + 1
    r = subprocess.run([sys.executable, "-m", "qbert.data.mini_glue", "--out-dir", str(out),
                        "--train-size", "gleu"], cwd=REPO_DIR, capture_output=True, text=True)
    assert r.returncode == 2 and "positive integer or 'glue'" in r.stderr
