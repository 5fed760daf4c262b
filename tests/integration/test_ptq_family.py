"""scripts/ptq.sh end to end (reduced grid, a few updates) on conftest's mini_teacher: PTQ
cells (qbert-calibrate + fairseq-validate), QAT cells started from a calibration, the two
table layouts made by make_tables, finished cells skipped on a re-run."""
import json
import re

import ablation_fixtures as F
import pytest

from qbert.experiments import runner
from qbert.experiments import tables as make_tables

FAST = dict(TOTAL_NUM_UPDATES=4, WARMUP_UPDATES=1, LOG_INTERVAL=2, JOBS=2, FP_CONTROL=0,
            BITS=2, SEQ_BITS=2, PTQ_PERCENTILE=99.99, CALIBRATORS="pct99.99", W_CALIBRATORS="mse",
            CALIB_BATCHES=2, CALIB_BATCH_SIZE=8)


def ptq_family(teacher, out, **env):
    return F.run([F.SCRIPTS / "ptq.sh", teacher.task, teacher.data_bin, teacher.checkpoint, out, "cpu"],
                 **{**FAST, **env})


def rows_of(md):
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--"))
    header = [c.strip() for c in lines[start - 1].split(" | ")]
    return header, [[c.strip() for c in line.split(" | ")] for line in lines[start + 1:] if " | " in line]


def validated(run_dir):
    """The accuracy of the fairseq-validate line in a PTQ cell's log (independent of the runner)."""
    text = (run_dir / "train.log").read_text()
    values = re.findall(r"valid on 'valid' subset .*?\| accuracy ([\d.]+)", text)
    assert len(values) == 1, text[-2000:]
    return float(values[0])


def test_ptq_family_tables_and_resume(mini_teacher, tmp_path):
    out = tmp_path / "exp"
    ptq_family(mini_teacher, out)
    plans = sorted(p.name for p in (out / "plans").iterdir())
    assert plans == ["ptq_grid_EMB-QKV-FFN__SST-2.json", "ptq_sequence_EMB-QKV-FFN__SST-2.json"]
    grid = json.loads((out / "plans" / plans[0]).read_text())
    assert grid["rows"] == ["W2", "W2A8"] and grid["control"] is None
    assert all(c["kind"] == "ptq" for c in grid["cells"])

    results = tmp_path / "results"
    make_tables.make([str(out)], str(results), plots=False)
    header, rows = rows_of((results / "ptq_grid_EMB-QKV-FFN_SST-2.md").read_text())
    assert header == ["Setting", "percentile 99.99", "mse"]
    assert rows[0][:2] == ["W2", "n/a"] and rows[1][2] == "n/a"   # W: weight calibrators only
    grid_json = json.loads((results / "ptq_grid_EMB-QKV-FFN_SST-2.json").read_text())
    cells = {(c["row"], c["col"]): c for c in grid_json["cells"]}
    for key in (("W2", "mse"), ("W2A8", "percentile 99.99")):
        assert cells[key]["value"] == pytest.approx(validated(out / cells[key]["run"]))
        assert re.fullmatch(r"\d+\.\d\([+-]\d+\.\d\)", cells[key]["text"])

    header, rows = rows_of((results / "ptq_sequence_EMB-QKV-FFN.md").read_text())
    assert header == ["Task", "Setting", "FP", "PTQ", "QAT (from PTQ)", "QAT+KD (from PTQ)", "QAT (default init)"]
    assert rows[0][:2] == ["SST-2", "W2A8"] and float(rows[0][2]) == pytest.approx(mini_teacher.best_accuracy, abs=0.05)
    assert all(re.fullmatch(r"\d+\.\d\([+-]\d+\.\d\)", t) for t in rows[0][3:])

    seq = json.loads((out / "plans" / plans[1]).read_text())
    by_col = {c["col"]: c for c in seq["cells"]}
    kd_dir = out / by_col["QAT+KD (from PTQ)"]["run"]
    result = json.loads((kd_dir / "result.json").read_text())
    assert result["calib"][:4] == ["--calibrator", "percentile", "--percentile", "99.99"]
    assert result["command"][result["command"].index("--finetune-from-model") + 1] == str(kd_dir / "ptq.pt")
    assert "--criterion" in result["command"] and "--criterion" not in result["calibrate_command"]
    assert not (kd_dir / "ptq.pt").exists()   # a QAT cell keeps its checkpoint_best.pt, not its start
    assert (out / by_col["PTQ"]["run"] / "ptq.pt").is_file()
    assert by_col["PTQ"]["run"] == cells[("W2A8", "percentile 99.99")]["run"]  # one run for both tables
    default = json.loads((out / by_col["QAT (default init)"]["run"] / "result.json").read_text())
    assert default["calib"] is None and default["command"][default["command"].index("--finetune-from-model") + 1] \
        == str(mini_teacher.checkpoint)

    again = ptq_family(mini_teacher, out)   # everything finished: skipped
    assert "[start]" not in again.stdout and again.stdout.count("[skip]") >= 7


def test_cells_file_calibration_column(tmp_path):
    path = tmp_path / "cells.tsv"
    path.write_text("W8\tmax\tptq_w8\t--quant-groups FFN --weight-bits 8 --criterion x\tptq --calibrator max\n"
                    "W8\tQAT\tqat_w8\t--quant-groups FFN\n")
    cells = runner.read_cells(str(path))
    assert cells[0]["kind"] == "ptq" and cells[0]["calib"] == ["--calibrator", "max"]
    assert "kind" not in cells[1]
    assert runner.quant_flags(cells[0]["flags"]) == ["--quant-groups", "FFN", "--weight-bits", "8"]
    path.write_text("W8\tmax\tptq_w8\t--quant-groups FFN\tcalibrate --calibrator max\n")
    with pytest.raises(runner.RunnerError, match="must start with ptq or qat"):
        runner.read_cells(str(path))
