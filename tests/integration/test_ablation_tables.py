"""Ablation scripts end to end: reduced group_ablation + kd_parts on mini-GLUE SST-2, tables
filled from the runs' logs, finished runs skipped, interrupted runs resumed."""
import json
import os
import re

import ablation_fixtures as F
import pytest

from qbert.experiments import runner as qat_runner
from qbert.experiments import tables as make_tables

# a few updates per run: the point is the plumbing, not the numbers
FAST = dict(TOTAL_NUM_UPDATES=6, WARMUP_UPDATES=1, LOG_INTERVAL=3, JOBS=2)
CELL_RE = re.compile(r"^(\*\*)?(-?\d+\.\d)(\*\*)?(\(([+-]\d+\.\d)\))?$")


# ---------------------------------------------------------------------------- helpers
def md_tables(path):
    """{'fp': float or None, 'header': [...], 'rows': [[...], ...]} of the one table in a file."""
    text = open(path, encoding="utf-8").read()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--"))
    header = [c.strip() for c in lines[start - 1].split(" | ")]
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append([c.strip() for c in line.split(" | ")])
    m = re.search(r"Full Precision \w+ : (-?\d+\.\d)", text)
    return {"fp": float(m.group(1)) if m else None, "header": header, "rows": rows, "text": text}


def cell_value(text):
    m = CELL_RE.match(text)
    assert m, f"cell {text!r} is not 'value' or 'value(delta)'"
    return float(m.group(2)), (float(m.group(5)) if m.group(5) else None)


def best_in_log(run_dir, metric="accuracy"):
    """Independent of the runner: fairseq's best_<metric> on the last validation line."""
    lines = [line for line in open(os.path.join(run_dir, "train.log"), encoding="utf-8")
             if "valid on 'valid' subset" in line]
    assert lines, f"no validation in {run_dir}/train.log"
    m = re.search(r"\| best_%s (-?[\d.]+)" % metric, lines[-1]) or re.search(r"\| %s (-?[\d.]+)" % metric, lines[-1])
    return float(m.group(1))


def plan(out, name):
    return json.load(open(out / "plans" / name, encoding="utf-8"))


def family(teacher, script, out, **env):
    """Run an ablation script on the shared mini-GLUE SST-2 teacher (conftest's mini_teacher)."""
    return F.run([F.SCRIPTS / script, teacher.task, teacher.data_bin, teacher.checkpoint, out, "cpu"],
                 **{**FAST, **env})


# ---------------------------------------------------------------------------- tests
def test_log_parsing_takes_fairseqs_best_and_checks_it(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "2024 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 0.5 | accuracy 80.5 | "
        "num_updates 10 | best_accuracy 80.5\n"
        "2024 | INFO | valid | epoch 001 | valid on 'valid1' subset | loss 0.5 | accuracy 99 | num_updates 10\n"
        "# qat_runner resume\n"
        "2024 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 0.4 | accuracy 79.0 | pred [] | "
        "num_updates 20 | best_accuracy 80.5\n")
    best = qat_runner.best_from_log(str(log), "accuracy")
    assert best["value"] == 80.5 and best["best_num_updates"] == 10 and best["final_value"] == 79.0
    assert best["num_validations"] == 2
    # a log that lost the validation fairseq's best came from is refused
    log.write_text("x | valid on 'valid' subset | accuracy 70.0 | num_updates 20 | best_accuracy 80.5\n")
    with pytest.raises(qat_runner.RunnerError, match="incomplete"):
        qat_runner.best_from_log(str(log), "accuracy")
    log.write_text("nothing\n")
    with pytest.raises(qat_runner.RunnerError, match="no 'mcc'"):
        qat_runner.best_from_log(str(log), "mcc")


def test_group_ablation_and_kd_parts_tables_are_filled_from_the_logs(tmp_path, mini_teacher):
    out = tmp_path / "exp"
    results = tmp_path / "results"
    ga = family(mini_teacher, "group_ablation.sh", out, BITS="2", GROUP_SETS="FFN ALL")
    assert ga.stdout.count("[done]") == 4  # FP baseline, FP control, 2 cells
    kp = family(mini_teacher, "kd_parts.sh", out, PARTS="none logits")
    # -KD at 2 bit on all groups is the group ablation's "All Together" run: reused, not rerun
    assert re.search(r"\[skip\] \S+/runs/SST-2/lsq_w2_EMB-QKV-FFN-[0-9a-f]{8}: finished", kp.stdout), kp.stdout
    assert kp.stdout.count("[done]") == 1

    mt = F.run([F.PYTHON, F.SCRIPTS / "make_tables.py", out, "--results-dir", results])
    for name in ("group_ablation_SST-2", "kd_parts_w2_EMB-QKV-FFN"):
        for ext in (".md", ".json", ".png"):
            assert (results / (name + ext)).is_file(), mt.stdout
    assert (results / "index.md").is_file()

    fp_dir = out / plan(out, "group_ablation__SST-2.json")["baseline"]
    fp = json.load(open(fp_dir / "result.json"))["best"]
    assert fp == best_in_log(fp_dir)  # fairseq-validate's accuracy of the teacher

    # group ablation: every cell = the run's best dev accuracy (result.json and its log), delta to FP
    table = md_tables(results / "group_ablation_SST-2.md")
    assert "mini-GLUE" in table["text"] and "quant_roberta_tiny" in table["text"]
    assert "FP teacher (`roberta`, trained from scratch on its task)" in table["text"]  # its saved cfg
    assert re.search(r"Git commit: [0-9a-f]{12}", table["text"])
    assert table["fp"] == fp
    ctl_dir = out / plan(out, "group_ablation__SST-2.json")["control"]
    ctl = json.load(open(ctl_dir / "result.json"))
    assert ctl["flags"] == [] and ctl["best"] == best_in_log(ctl_dir)  # no quantizer, no KD
    assert "FP ctl: %s" % make_tables.fmt_delta(ctl["best"], fp) in table["text"]
    assert table["header"] == ["Layer/bit", "FFN", "All Together"]
    assert [r[0] for r in table["rows"]] == ["2bit"]
    p = plan(out, "group_ablation__SST-2.json")
    runs = {(c["row"], c["col"]): out / c["run"] for c in p["cells"]}
    assert len(runs) == 2
    for row in table["rows"]:
        for col, text in zip(table["header"][1:], row[1:]):
            value, delta = cell_value(text)
            run_dir = runs[(row[0], col)]
            result = json.load(open(run_dir / "result.json"))
            assert value == result["best"] == best_in_log(run_dir), (row[0], col)
            assert delta == pytest.approx(round(value - fp, 1))
            assert result["data_kind"] == "mini" and result["arch"] == "quant_roberta_tiny"
            assert result["log"]["num_updates"] == FAST["TOTAL_NUM_UPDATES"]
            assert (run_dir / "DONE").is_file() and list((run_dir / "tb").iterdir())

    # kd_parts: one row per task; FP, -KD, then deltas against -KD
    table = md_tables(results / "kd_parts_w2_EMB-QKV-FFN.md")
    assert table["header"] == ["", "FP", "FP ctl", "-KD", "Logits"]
    (row,) = table["rows"]
    assert row[0] == "SST-2" and cell_value(row[1]) == (fp, None)
    assert cell_value(row.pop(2))[0] == ctl["best"]  # the control is shared by both families
    p = plan(out, "kd_parts_w2_EMB-QKV-FFN__SST-2.json")
    runs = {c["col"]: out / c["run"] for c in p["cells"]}
    assert runs["-KD"] == out / plan(out, "group_ablation__SST-2.json")["cells"][1]["run"]
    nokd = json.load(open(runs["-KD"] / "result.json"))["best"]
    assert cell_value(row[2]) == (nokd, None)
    value, delta = cell_value(row[3])
    result = json.load(open(runs["Logits"] / "result.json"))
    assert value == result["best"] == best_in_log(runs["Logits"])
    assert delta == pytest.approx(round(value - nokd, 1))
    assert "--kd-parts" in result["flags"] and "kd_sentence_prediction" in result["flags"]
    assert "kd_logits" in open(runs["Logits"] / "train.log").read()  # the KD criterion really ran

    # re-running a family skips every finished run: no fairseq process, logs untouched
    logs = {d: os.path.getmtime(d / "train.log") for d in (out / "runs" / "SST-2").iterdir()}
    again = family(mini_teacher, "group_ablation.sh", out, BITS="2", GROUP_SETS="FFN ALL")
    assert again.stdout.count("[skip]") == 4 and "[start]" not in again.stdout, again.stdout
    assert logs == {d: os.path.getmtime(d / "train.log") for d in logs}

    # a planned cell without a finished run is an error, unless --allow-missing
    os.remove(runs["Logits"] / "DONE")
    bad = F.run([F.PYTHON, F.SCRIPTS / "make_tables.py", out, "--results-dir", results, "--no-plots"], check=False)
    assert bad.returncode == 1 and "missing results" in bad.stderr and "Logits" in bad.stderr
    F.run([F.PYTHON, F.SCRIPTS / "make_tables.py", out, "--results-dir", results, "--no-plots", "--allow-missing"])
    assert md_tables(results / "kd_parts_w2_EMB-QKV-FFN.md")["rows"][0][4] == "missing"


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, mini_teacher):
    """A run that died after 3 updates continues from checkpoint_last.pt, not from the teacher."""
    data_bin, teacher = mini_teacher.data_bin, mini_teacher.checkpoint
    crash = tmp_path / "crashing-fairseq-train"
    train = os.path.join(os.path.dirname(F.PYTHON), "fairseq-train")
    crash.write_text(f"#!/usr/bin/env bash\n'{train}' \"$@\" --max-update 3\nexit 3\n")
    crash.chmod(0o755)
    run_dir = tmp_path / "run"
    cmd = [F.SCRIPTS / "lib" / "run_qat.sh", "SST-2", data_bin, teacher, run_dir, "cpu",
           "--", "--quant-groups", "FFN", "--weight-bits", "2"]
    first = F.run(cmd, check=False, FAIRSEQ_TRAIN=crash, **FAST)
    assert first.returncode == 1 and "exited with 3" in first.stderr
    assert (run_dir / "checkpoints" / "checkpoint_last.pt").is_file() and not (run_dir / "DONE").exists()

    # same run with other flags: refused, the half-done run is not touched
    other = F.run(cmd[:-1] + ["4"], check=False, **FAST)
    assert other.returncode == 1 and "holds a different run" in other.stderr

    second = F.run(cmd, **FAST)
    assert "[resume]" in second.stdout
    log = open(run_dir / "train.log").read()
    assert re.search(r"Loaded checkpoint \S+/run/checkpoints/checkpoint_last\.pt \(epoch \d+ @ 3 updates\)", log)
    result = json.load(open(run_dir / "result.json"))
    assert result["log"]["num_updates"] == FAST["TOTAL_NUM_UPDATES"]
    assert result["best"] == best_in_log(run_dir)
    assert (run_dir / "DONE").is_file() and not (run_dir / "checkpoints" / "checkpoint_last.pt").exists()
    assert "[skip]" in F.run(cmd, **FAST).stdout


def test_seeds_run_every_cell_once_per_seed_and_tables_show_the_mean(tmp_path, mini_teacher):
    out = tmp_path / "exp"
    results = tmp_path / "results"
    r = family(mini_teacher, "kd_effect.sh", out, SEEDS="1 2", KD_PARTS="logits")
    assert r.stdout.count("[done]") == 7, r.stdout  # FP baseline + (-KD, KD, control) x 2 seeds
    # a teacher trained from scratch: no masked LM to augment with, so no KD + aug column (AUG=auto)
    assert "note: no KD + aug column" in r.stderr and "[augment]" not in r.stdout
    p = plan(out, "kd_effect_w2_EMB-QKV-FFN_kd-logits__SST-2.json")
    assert p["seeds"] == ["1", "2"] and len(p["control_runs"]) == 2
    F.run([F.PYTHON, F.SCRIPTS / "make_tables.py", out, "--results-dir", results, "--no-plots"])
    table = md_tables(results / "kd_effect_w2_EMB-QKV-FFN_kd-logits.md")
    assert "seeds 1, 2 (each QAT cell and FP ctl is the mean" in table["text"]
    assert table["header"][:5] == ["Task", "FP", "FP ctl", "-KD", "KD"]
    (row,) = table["rows"]
    cells = {c["col"]: c for c in json.load(open(results / "kd_effect_w2_EMB-QKV-FFN_kd-logits.json"))["cells"]}
    for col, text in (("-KD", row[3]), ("KD", row[4])):
        runs = [out / d for d in p["cells"][["-KD", "KD"].index(col)]["runs"]]
        assert len(set(runs)) == 2
        bests = [best_in_log(d) for d in runs]
        seeds = [json.load(open(d / "result.json"))["hparams"]["SEED"] for d in runs]
        assert seeds == ["1", "2"]
        assert cells[col]["values"] == bests
        assert cell_value(text)[0] == pytest.approx(round(sum(bests) / 2, 1), abs=0.051)
    effect = float(row[5])
    assert effect == pytest.approx(round(cells["KD"]["value"] - cells["-KD"]["value"], 1), abs=0.051)


def test_seed_list_reads_seeds_then_seed_and_names_the_bad_variable():
    assert qat_runner.seed_list({"SEEDS": "1, 2 2 3", "SEED": "9"}) == ["1", "2", "3"]
    assert qat_runner.seed_list({"SEED": "7"}) == ["7"] and qat_runner.seed_list({}) == ["1"]
    with pytest.raises(qat_runner.RunnerError, match=r"^SEEDS='1 x': expected non-negative integers"):
        qat_runner.seed_list({"SEEDS": "1 x"})
    with pytest.raises(qat_runner.RunnerError, match=r"^SEED='-1'"):
        qat_runner.seed_list({"SEED": "-1"})
