"""The length_adaptive family's table/plot from search outputs (no training here)."""
import json

from qbert.experiments import length_adaptive
from qbert.lat import SearchSettings, Store, evolutionary_search, save_search, write_atomic


def _search(out, offset, latency=True):
    cost = lambda g: float(sum(g)) * 1e6  # noqa: E731
    extra = lambda g: {"macs_max": cost(g), **({"latency_ms": sum(g) / (8 + offset)} if latency else {})}  # noqa: E731
    result = evolutionary_search(lambda g: 50 + sum(g) / 4 - offset, cost, 2, 16,
                                 SearchSettings(population_size=3, evo_iter=1, mutation_size=2,
                                                crossover_size=1), store=Store(), extra=extra)
    save_search(str(out), result.store, result.front)
    full = result.store[(16, 16)]
    write_atomic(str(out / "summary.json"), {"full": full.to_json(),
                                             "front": [r.to_json() for r in result.front],
                                             "latency": {"threads": 1, "onnx_mb": 0.25} if latency else None})
    return result


def test_tables_have_full_constant_ratio_and_front_rows(tmp_path):
    searches = {}
    for model, offset in (("FP", 0), ("W8A8", 1)):
        (tmp_path / model).mkdir()
        result = _search(tmp_path / model, offset)
        searches[model] = str(tmp_path / model)
    paths = length_adaptive.write_tables("SST-2", "accuracy", searches, str(tmp_path / "results"),
                                         command="python -m qbert.experiments.length_adaptive SST-2 d t o cpu")
    md = open(paths["md"]).read()
    data = json.load(open(paths["json"]))
    assert md.splitlines()[0] == length_adaptive.GENERATED
    assert "Regenerate: `python -m qbert.experiments.length_adaptive SST-2 d t o cpu`" in md
    assert "| model | datatype | kind | length config | size (MB) | accuracy | latency (ms) | GMACs" in md
    # seed's shape: datatype, ONNX size, latency, speedup over the FP full model
    assert "| FP | fp32 | full | (16,16) | 0.250 | 58.00 | 4.0000 | 0.03200 | 0.03200 | 1.00x |" in md
    assert "| W8A8 | int8 | full | (16,16) | 0.250 | 57.00 | 3.5556 | 0.03200 | 0.03200 | 1.12x |" in md
    for model in ("FP", "W8A8"):
        kinds = [r["kind"] for r in data["rows"][model]]
        assert kinds[0] == "full" and "constant ratio" in kinds and "Pareto front" in kinds
    assert data["command"].startswith("python -m") and data["latency_settings"]["FP"]["threads"] == 1
    assert len(data["rows"]["FP"]) == 1 + (len([r for r in result.store.records.values()
                                                 if r.method == "init"]) - 1) + len(result.front)
    assert open(paths["png"], "rb").read(4) == b"\x89PNG"


def test_search_command_uses_the_runs_best_checkpoint():
    spec = {"data_bin": "/d", "device": "cpu"}
    cmd = length_adaptive.search_command(spec, "/r", ["--evo-iter", "2"])
    assert cmd[1:4] == ["-m", "fairseq_qbert.lat.search_cli", "/d"]
    assert cmd[cmd.index("--path") + 1] == "/r/checkpoints/checkpoint_best.pt" and cmd[-1] == "--cpu"


def test_tables_without_latency_and_the_regenerate_command(tmp_path):
    (tmp_path / "FP").mkdir()
    _search(tmp_path / "FP", 0, latency=False)
    paths = length_adaptive.write_tables("RTE", "accuracy", {"FP": str(tmp_path / "FP")}, str(tmp_path / "r"))
    md = open(paths["md"]).read()
    assert "| FP | fp32 | full | (16,16) | - | 58.00 | - | 0.03200 | 0.03200 | - |" in md
    assert "Regenerate" not in md
    repo = length_adaptive.runner.REPO_DIR
    cmd = length_adaptive.regenerate_command(
        ["SST-2", f"{repo}/work/mini-glue/data/SST-2-bin", "/elsewhere/t.pt", f"{repo}/work/mini-glue/exp", "cpu"],
        {"LAT_SEARCH": "--evo-iter 4 --measure-latency", "LR": "1e-4", "HOME": "/root",
         "RESULTS_DIR": f"{repo}/results"})
    assert cmd == ("LAT_SEARCH='--evo-iter 4 --measure-latency' LR=1e-4 RESULTS_DIR=results python -m "
                   "qbert.experiments.length_adaptive SST-2 work/mini-glue/data/SST-2-bin /elsewhere/t.pt "
                   "work/mini-glue/exp cpu")
