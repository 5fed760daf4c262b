"""scripts/sparsity.sh end to end (one sparse group set, a few updates) on conftest's
mini_teacher: the 2:4 FP cell and the calibrated 2:4 + QAT (+KD) cells run, the masks are
the teacher's 2:4 masks and stay fixed through QAT (pruned weights 0 in checkpoint_best.pt),
the calibration is given the same --sparse-groups, and the table is filled from the logs."""
import json
import re

import ablation_fixtures as F
import pytest
import torch

from qbert.experiments import tables as make_tables
from qbert.sparse import mask_2to4

FAST = dict(TOTAL_NUM_UPDATES=4, WARMUP_UPDATES=1, LOG_INTERVAL=2, JOBS=1, FP_CONTROL=0,
            SPARSE_GROUP_SETS="FFN", CALIB_BATCHES=2, CALIB_BATCH_SIZE=8)
COLS = ["2:4 FP", "2:4 + W8A8 QAT", "2:4 + W8A8 QAT+KD", "2:4 + W4 QAT+KD"]


def best_in_log(run_dir):
    lines = [line for line in open(run_dir / "train.log", encoding="utf-8") if "valid on 'valid' subset" in line]
    m = re.search(r"\| best_accuracy (-?[\d.]+)", lines[-1]) or re.search(r"\| accuracy (-?[\d.]+)", lines[-1])
    return float(m.group(1))


def test_sparsity_family_runs_and_its_table_comes_from_the_logs(mini_teacher, tmp_path):
    out = tmp_path / "exp"
    proc = F.run([F.SCRIPTS / "sparsity.sh", mini_teacher.task, mini_teacher.data_bin, mini_teacher.checkpoint,
                  out, "cpu"], **FAST)
    assert proc.stdout.count("[done]") == 5, proc.stdout  # FP baseline + 4 cells
    plan = json.loads((out / "plans" / "sparsity_EMB-QKV-FFN__SST-2.json").read_text())
    assert plan["rows"] == ["FFN"] and plan["cols"] == COLS
    runs = {c["col"]: out / c["run"] for c in plan["cells"]}
    teacher = torch.load(mini_teacher.checkpoint, weights_only=False)["model"]
    for col, run_dir in runs.items():
        result = json.loads((run_dir / "result.json").read_text())
        assert result["flags"][:2] == ["--sparse-groups", "FFN"]
        assert result["command"][result["command"].index("--sparse-groups") + 1] == "FFN"
        if col == "2:4 FP":
            assert result["calib"] is None and "--quant-groups" not in result["flags"]
        else:  # NVIDIA's order: calibrated with the masks, then QAT from that checkpoint
            calib = result["calibrate_command"]
            assert calib[calib.index("--sparse-groups") + 1] == "FFN"
            assert result["command"][result["command"].index("--finetune-from-model") + 1] == str(run_dir / "ptq.pt")
            assert "2:4 FFN" in (run_dir / "train.log").read_text()  # qbert-calibrate's sparsity line
        sd = torch.load(run_dir / "checkpoints" / "checkpoint_best.pt", weights_only=False)["model"]
        for i in (0, 1):
            for m in ("fc1", "fc2"):
                key = f"encoder.sentence_encoder.layers.{i}.{m}.weight"
                mask = sd[key + "_mask"]
                assert torch.equal(mask, mask_2to4(teacher[key]))          # the teacher's masks, kept
                assert torch.count_nonzero(sd[key][~mask]) == 0           # pruned weights stay 0
        assert not any(k.endswith("weight_mask") for k in sd if "self_attn" in k)

    results = tmp_path / "results"
    make_tables.make([str(out)], str(results), plots=False)
    text = (results / "sparsity_EMB-QKV-FFN.md").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--"))
    assert lines[start - 1].split(" | ") == ["Task", "2:4 groups", "FP", *COLS]
    (row,) = [line.split(" | ") for line in lines[start + 1:] if " | " in line]
    fp = json.loads((out / plan["baseline"] / "result.json").read_text())["best"]
    assert row[:3] == ["SST-2", "FFN", f"{fp:.1f}"]
    for col, text_ in zip(COLS, row[3:]):
        value = best_in_log(runs[col])
        assert text_ == make_tables.fmt_delta(value, fp), (col, text_, value)
    assert "mini-GLUE" in text and "quant_roberta_tiny" in text
    again = F.run([F.SCRIPTS / "sparsity.sh", mini_teacher.task, mini_teacher.data_bin, mini_teacher.checkpoint,
                   out, "cpu"], **FAST)
    assert "[start]" not in again.stdout and again.stdout.count("[skip]") == 5


@pytest.mark.parametrize("value", ["2"])
def test_permute_must_be_0_or_1(mini_teacher, tmp_path, value):
    proc = F.run([F.SCRIPTS / "sparsity.sh", mini_teacher.task, mini_teacher.data_bin, mini_teacher.checkpoint,
                  tmp_path / "exp", "cpu"], check=False, PERMUTE=value)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: PERMUTE=2; expected 0 or 1"
