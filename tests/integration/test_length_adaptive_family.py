"""scripts/length_adaptive.sh end to end (a few updates, a tiny search) on conftest's
mini_teacher: the LengthDrop FP and W8A8 runs, their searches with the ONNX export's latency,
and the generated table in the seed's shape with the command that regenerates it."""
import json

import ablation_fixtures as F

from qbert.experiments import length_adaptive

FAST = dict(TOTAL_NUM_UPDATES=4, WARMUP_UPDATES=1, LOG_INTERVAL=2, JOBS=1,
            LAT_SEARCH="--population-size 2 --evo-iter 1 --mutation-size 2 --crossover-size 1 --seed 1 "
                       "--batch-size 128 --length-drop-ratio-bound 0.8 --measure-latency --latency-repeats 1")


def family(teacher, out, results):
    return F.run([F.SCRIPTS / "length_adaptive.sh", teacher.task, teacher.data_bin, teacher.checkpoint, out,
                  "cpu"], RESULTS_DIR=results, **FAST)


def test_length_adaptive_family_tables_with_onnx_latency(mini_teacher, tmp_path):
    out, results = tmp_path / "exp", tmp_path / "results"
    family(mini_teacher, out, results)
    md = (results / "length_adaptive_SST-2.md").read_text()
    lines = md.splitlines()
    assert lines[0] == length_adaptive.GENERATED
    regenerate = next(line for line in lines if line.startswith("Regenerate: `"))
    assert "LAT_SEARCH='--population-size 2" in regenerate and "TOTAL_NUM_UPDATES=4" in regenerate
    assert f"python -m qbert.experiments.length_adaptive SST-2 {mini_teacher.data_bin}" in regenerate
    data = json.loads((results / "length_adaptive_SST-2.json").read_text())
    assert data["command"] == regenerate[len("Regenerate: `"):-1]
    for model, datatype in (("FP", "fp32"), ("W8A8", "int8")):
        rows = data["rows"][model]
        assert {r["kind"] for r in rows} == {"full", "constant ratio", "Pareto front"}
        assert all(r["latency_ms"] > 0 and r["onnx_mb"] > 0 and r["speedup"] > 0 for r in rows)
        assert data["latency_settings"][model]["threads"] == 1
        assert any(line.startswith(f"| {model} | {datatype} | full |") for line in lines)
    assert data["rows"]["FP"][0]["speedup"] == 1.0
    assert data["rows"]["W8A8"][0]["onnx_mb"] < data["rows"]["FP"][0]["onnx_mb"]  # int8 weights
    assert (results / "length_adaptive_SST-2.png").read_bytes()[:4] == b"\x89PNG"

    family(mini_teacher, out, results)  # everything done: skipped, same table
    assert (results / "length_adaptive_SST-2.md").read_text() == md
