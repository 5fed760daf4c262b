"""The length_adaptive family's table/plot from search outputs (no training here)."""
import json

from qbert.experiments import length_adaptive
from qbert.lat import SearchSettings, Store, evolutionary_search, save_search, write_atomic


def _search(out, offset):
    cost = lambda g: float(sum(g)) * 1e6  # noqa: E731
    result = evolutionary_search(lambda g: 50 + sum(g) / 4 - offset, cost, 2, 16,
                                 SearchSettings(population_size=3, evo_iter=1, mutation_size=2,
                                                crossover_size=1), store=Store(),
                                 extra=lambda g: {"macs_max": cost(g)})
    save_search(str(out), result.store, result.front)
    full = result.store[(16, 16)]
    write_atomic(str(out / "summary.json"), {"full": full.to_json(),
                                             "front": [r.to_json() for r in result.front]})
    return result


def test_tables_have_full_constant_ratio_and_front_rows(tmp_path):
    searches = {}
    for model, offset in (("FP", 0), ("W8A8", 1)):
        (tmp_path / model).mkdir()
        result = _search(tmp_path / model, offset)
        searches[model] = str(tmp_path / model)
    paths = length_adaptive.write_tables("SST-2", "accuracy", searches, str(tmp_path / "results"))
    md = open(paths["md"]).read()
    data = json.load(open(paths["json"]))
    for model in ("FP", "W8A8"):
        kinds = [r["kind"] for r in data["rows"][model]]
        assert kinds[0] == "full" and "constant ratio" in kinds and "Pareto front" in kinds
        assert f"| {model} | full | (16,16) | 0.03200 | 0.03200 |" in md
    assert len(data["rows"]["FP"]) == 1 + (len([r for r in result.store.records.values()
                                                 if r.method == "init"]) - 1) + len(result.front)
    assert open(paths["png"], "rb").read(4) == b"\x89PNG"


def test_search_command_uses_the_runs_best_checkpoint():
    spec = {"data_bin": "/d", "device": "cpu"}
    cmd = length_adaptive.search_command(spec, "/r", ["--evo-iter", "2"])
    assert cmd[1:4] == ["-m", "fairseq_qbert.lat.search_cli", "/d"]
    assert cmd[cmd.index("--path") + 1] == "/r/checkpoints/checkpoint_best.pt" and cmd[-1] == "--cpu"
