"""The sparsity family's table (make_tables) from fake run directories (no training here): the
layout per task and sparse group set, values and deltas taken from result.json, the FP control,
and ``--only sparsity`` merging its entries into an existing generated index.md."""
import json
import os

import pytest

from qbert.experiments import tables

COLS = ["2:4 FP", "2:4 + W8A8 QAT", "2:4 + W8A8 QAT+KD", "2:4 + W4 QAT+KD"]
ROWS = ["FFN", "QKV,FFN"]


def _run(out, rel, best, flags, kind="qat", metric="accuracy"):
    d = out / rel
    d.mkdir(parents=True)
    result = {"version": 1, "kind": kind, "task": rel.split("/")[1], "flags": flags, "metric": metric,
              "best": best, "arch": "quant_roberta_tiny" if kind == "qat" else "roberta",
              "model_config": {"encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
                               "encoder_attention_heads": 4},
              "teacher_init": "scratch" if kind == "fp" else None, "data_kind": "mini", "device": "cpu",
              "hparams": {"LR": "5e-04", "TOTAL_NUM_UPDATES": "250", "WARMUP_UPDATES": "15", "MAX_EPOCH": "0",
                          "MAX_SENTENCES": "32", "SEED": "1"} if kind == "qat" else {},
              "git_commit": "0123456789abcdef", "git_dirty": False,
              "calib": ["--calibrator", "percentile"] if "QAT" in rel else None}
    (d / "result.json").write_text(json.dumps(result))
    (d / "DONE").write_text("x\n")
    return rel


def _family(out, task, metric, fp, values, ctl):
    """A plan like run_family writes, with fake finished runs: values[(row, col)] = best."""
    cells = []
    for (row, col), best in values.items():
        flags = ["--sparse-groups", row] + (["--quant-groups", "EMB,QKV,FFN"] if "QAT" in col else [])
        rel = _run(out, f"runs/{task}/{row}-{col}-QAT".replace(" ", "_").replace(",", "-").replace(":", "")
                   .replace("+", "p") if "QAT" in col else
                   f"runs/{task}/{row}-fp".replace(",", "-"), best, flags, metric=metric)
        cells.append({"row": row, "col": col, "run": rel, "runs": [rel], "flags": flags})
    plan = {"family": "sparsity", "variant": "EMB-QKV-FFN", "task": task, "title": "2:4 sparsity",
            "meta": {"quantized groups": "EMB,QKV,FFN"}, "device": "cpu", "data_kind": "mini",
            "metric": metric, "baseline": _run(out, f"fp/{task}/teacher", fp, [], kind="fp", metric=metric),
            "seeds": ["1"], "control": None, "control_runs": [], "rows": ROWS, "cols": COLS, "cells": cells}
    ctl_rel = _run(out, f"runs/{task}/fp_recipe", ctl, [], metric=metric)
    plan["control"], plan["control_runs"] = ctl_rel, [ctl_rel]
    (out / "plans").mkdir(exist_ok=True)
    (out / "plans" / f"sparsity_EMB-QKV-FFN__{task}.json").write_text(json.dumps(plan))


def _values(base):
    return {(r, c): base - i - 2 * j for i, r in enumerate(ROWS) for j, c in enumerate(COLS)}


@pytest.fixture()
def exp(tmp_path):
    out = tmp_path / "exp"
    _family(out, "SST-2", "accuracy", 95.6, _values(95.0), 95.2)
    _family(out, "CoLA", "mcc", 75.5, _values(74.0), 75.0)
    return out


def test_table_rows_per_task_and_group_set_values_from_the_runs(exp, tmp_path):
    results = tmp_path / "results"
    written = tables.make([str(exp)], str(results), plots=True)
    md = (results / "sparsity_EMB-QKV-FFN.md").read_text()
    assert md.startswith(tables.GENERATED) and str(results / "sparsity_EMB-QKV-FFN.png") in written
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--"))
    header = lines[start - 1].split(" | ")
    assert header == ["Task", "2:4 groups", "FP", *COLS, "FP ctl"]
    rows = [line.split(" | ") for line in lines[start + 1:] if " | " in line]
    assert [r[:2] for r in rows] == [["SST-2", "FFN"], ["SST-2", "QKV,FFN"], ["CoLA", "FFN"], ["CoLA", "QKV,FFN"]]
    assert rows[0][2:] == ["95.6", "95.0(-0.6)", "93.0(-2.6)", "91.0(-4.6)", "89.0(-6.6)", "95.2(-0.4)"]
    assert rows[3][2:4] == ["75.5", "73.0(-2.5)"] and "CoLA: MCC" in md and "m4n2_1d" in md
    data = json.loads((results / "sparsity_EMB-QKV-FFN.json").read_text())
    cell = next(c for c in data["cells"] if c["task"] == "SST-2" and c["row"] == "QKV,FFN" and c["col"] == COLS[2])
    assert cell["value"] == 95.0 - 1 - 4 and cell["flags"][:2] == ["--sparse-groups", "QKV,FFN"]
    assert (results / "sparsity_EMB-QKV-FFN.png").read_bytes()[:4] == b"\x89PNG"
    # a planned cell without a finished run is an error, unless --allow-missing
    os.remove(exp / data["cells"][3]["run"] / "DONE")
    with pytest.raises(tables.TableError, match="missing results"):
        tables.make([str(exp)], str(results), plots=False)
    tables.make([str(exp)], str(results), plots=False, allow_missing=True)
    assert "missing" in (results / "sparsity_EMB-QKV-FFN.md").read_text()


def test_only_merges_into_the_generated_index(exp, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "group_ablation_SST-2.md").write_text(tables.GENERATED + "\n")
    (results / "index.md").write_text(
        tables.GENERATED + "\n# Results\n\nGenerated by `python scripts/make_tables.py work/mini-glue/exp` from "
        "the runs' result.json files.\n\n- [SST-2: groups](group_ablation_SST-2.md)\n- [gone](pact_sweep_SST-2.md)\n")
    tables.main([str(exp), "--results-dir", str(results), "--only", "sparsity", "--no-plots"])
    index = (results / "index.md").read_text().splitlines()
    entries = [line for line in index if line.startswith("- [")]
    assert entries == ["- [SST-2: groups](group_ablation_SST-2.md)",
                       "- [2:4 sparsity](sparsity_EMB-QKV-FFN.md)"]  # the stale entry is dropped
    assert any("work/mini-glue/exp" in line and "--only sparsity` added the sparsity tables" in line
               for line in index)
    assert (results / "group_ablation_SST-2.md").is_file()  # nothing else touched
    assert tables.main([str(exp), "--results-dir", str(results), "--only", "kd_effect"]) == 1
    assert tables.main([str(exp), "--results-dir", str(results), "--only", "sparsity", "--clean"]) == 1
