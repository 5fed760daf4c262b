"""A short real fairseq-train run (scripts/train_teacher.sh, tiny CPU config) learns
mini-GLUE: well above the majority class (regression: Pearson well above 0)."""
import collections
import os
import re
import subprocess
import time

import pytest
from conftest import REPO_DIR, read_tsv

# task -> updates; short runs keep the suite fast (about a minute on 2 cores); the
# script's default (3000 updates) reaches more
RUNS = {"SST-2": 400, "RTE": 1000, "STS-B": 1500}
SIZES = dict(train_size=8000, dev_size=500, test_size=20)


@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory):
    from fairseq_qbert.data.preprocess_glue import preprocess_task
    from qbert.data import mini_glue

    root = tmp_path_factory.mktemp("teacher")
    glue = str(root / "glue")
    mini_glue.generate(glue, list(RUNS), seed=1, **SIZES)
    procs = {}
    for task, updates in RUNS.items():
        bin_dir = preprocess_task(glue, task, str(root / f"{task}-bin"))
        save = root / f"ckpt-{task}"
        env = dict(os.environ, TOTAL_NUM_UPDATES=str(updates), WARMUP_UPDATES=str(updates // 16),
                   OMP_NUM_THREADS="1", SEED="1")
        for k in ("ROBERTA_PATH", "ARCH", "LR", "MAX_SENTENCES", "EXTRA_ARGS", "NUM_CLASSES", "DEVICE"):
            env.pop(k, None)
        out = open(root / f"{task}.out", "w")
        procs[task] = (subprocess.Popen(["bash", os.path.join(REPO_DIR, "scripts", "train_teacher.sh"),
                                         task, bin_dir, str(save)],
                                        stdout=out, stderr=subprocess.STDOUT, cwd=str(root), env=env),
                       out, save, time.time())
    results = {}
    for task, (p, out, save, t0) in procs.items():
        rc = p.wait(timeout=600)
        out.close()
        results[task] = dict(rc=rc, save=save, stdout=(root / f"{task}.out").read_text(),
                             seconds=time.time() - t0, glue=glue, updates=RUNS[task])
    return results


def _valid_metrics(log_text):
    """Every 'valid' evaluation of fairseq's simple log as a dict of floats."""
    evals = []
    for line in log_text.splitlines():
        if "valid on 'valid' subset" not in line:
            continue
        fields = line.split(" | ")
        d = {}
        for f in fields:
            m = re.fullmatch(r"(\w+) (-?[0-9.]+)", f.strip())
            if m:
                d[m.group(1)] = float(m.group(2))
        evals.append(d)
    return evals


def _majority(glue, task, col):
    rows = read_tsv(os.path.join(glue, task, "dev.tsv"))[1:]
    counts = collections.Counter(r[col] for r in rows)
    return 100.0 * max(counts.values()) / len(rows)


def _check_run(r, metric):
    assert r["rc"] == 0, r["stdout"][-3000:]
    log = (r["save"] / "train.log").read_text()
    evals = _valid_metrics(log)
    assert evals, "no validation in the log"
    best = max(e[metric] for e in evals)
    # the script's own summary agrees with the log
    m = re.search(rf"^best dev {metric}: (-?[0-9.]+)$", r["stdout"], re.M)
    assert m and float(m.group(1)) == best, r["stdout"][-1500:]
    assert (r["save"] / "checkpoint_best.pt").exists()
    tb = r["save"] / "tb"
    assert any("tfevents" in f for _, _, files in os.walk(tb) for f in files), "no tensorboard events"
    assert "| INFO | train_inner |" in log or "| INFO | train |" in log
    assert evals[-1]["num_updates"] == r["updates"], "TOTAL_NUM_UPDATES not honoured"
    return best, evals


@pytest.mark.parametrize("task, label_column, margin", [("SST-2", 1, 20), ("RTE", 3, 10)])
def test_teacher_beats_majority(teacher_runs, task, label_column, margin):
    r = teacher_runs[task]
    best, _ = _check_run(r, "accuracy")
    majority = _majority(r["glue"], task, label_column)
    print(f"{task}: best dev accuracy {best} (majority {majority:.1f}) in {r['seconds']:.0f}s")
    assert best >= majority + margin


def test_stsb_teacher_correlates(teacher_runs):
    r = teacher_runs["STS-B"]
    best, evals = _check_run(r, "pearson_and_spearman")
    pearson = max(e["pearson"] for e in evals)
    print(f"STS-B: best dev pearson {pearson} ({best} pearson_and_spearman) in {r['seconds']:.0f}s")
    assert pearson >= 30.0


def test_stsb_teacher_calibrates_as_a_regression(teacher_runs, tmp_path):
    """qbert-calibrate on a regression teacher: its data has no label/dict.txt (float labels),
    which PTQ must not ask for; W8 PTQ keeps the correlation and writes the checkpoint."""
    from fairseq_qbert.calib.cli import main

    r = teacher_runs["STS-B"]
    data_bin = r["save"].parent / "STS-B-bin"
    assert not (data_bin / "label" / "dict.txt").exists()
    out = tmp_path / "ptq.pt"
    summary = main([str(data_bin), "--path", str(r["save"] / "checkpoint_best.pt"), "--quant-groups", "EMB,QKV,FFN",
                    "--weight-bits", "8", "--weight-calibrator", "max", "--num-calib-batches", "2",
                    "--batch-size", "16", "--cpu", "--out", str(out)])
    assert out.is_file()
    assert summary["fp"]["pearson"] >= 30.0
    assert abs(summary["ptq"]["pearson"] - summary["fp"]["pearson"]) <= 2.0
