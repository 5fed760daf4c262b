"""The ``length_adaptive`` family (QuaLA): LengthDrop fine-tunes, FP and W8A8, and their searches.

For one task: two LengthDrop fine-tunes of quant_roberta from the FP teacher through the
ablation runner (:func:`qbert.experiments.runner.execute`: skipped when done, resumed when
interrupted), ``FP`` and ``W8A8`` (8-bit weights and activations on EMB, QKV and FFN), both
with ``--criterion length_drop_sentence_prediction --num-sandwich 2
--length-drop-ratio-bound 0.2 --layer-dropout-prob 0.2`` (the reference recipe); then
``qbert-length-search`` on each run's ``checkpoint_best.pt`` (resumable, in
``RUN_DIR/search``); then ``results/length_adaptive_TASK.{md,json,png}``: dev metric vs GMACs
per sentence for the full model, the constant-ratio configurations and the searched Pareto
front of both models.

    python -m qbert.experiments.length_adaptive TASK DATA_BIN TEACHER OUT_DIR [cpu|gpu]

Hyperparameters: the runner's environment variables (``TOTAL_NUM_UPDATES``, ``LR``, ...);
``LAT_TRAIN`` = the LengthDrop flags (default the reference recipe above; a 2-layer mini model
wants a larger bound, e.g. ``--length-drop-ratio-bound 0.5``, for its sub-models to drop as
many tokens as the reference's 6 layers do); ``LAT_SEARCH`` = the search flags (default: the
reference's sizes, ``--population-size 20 --evo-iter 30 --mutation-size 30 --mutation-prob 0.5
--crossover-size 30 --seed 1``);
``RESULTS_DIR`` (default ``OUT_DIR/results``).
"""
import json
import os
import shlex
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from qbert.errors import ConfigError, entry_point

from . import runner

FAMILY = "length_adaptive"
LD_FLAGS = ("--criterion", "length_drop_sentence_prediction", "--num-sandwich", "2",
            "--length-drop-ratio-bound", "0.2", "--layer-dropout-prob", "0.2")
CELLS = (("FP", ()), ("W8A8", ("--quant-groups", "EMB,QKV,FFN", "--weight-bits", "8", "--act-bits", "8")))
DEFAULT_SEARCH = ("--population-size 20 --evo-iter 30 --mutation-size 30 --mutation-prob 0.5 "
                  "--crossover-size 30 --seed 1")


def search_command(spec: Dict, run_dir: str, search_flags: Sequence[str]) -> List[str]:
    cmd = [sys.executable, "-m", "fairseq_qbert.lat.search_cli", spec["data_bin"], "--path",
           os.path.join(run_dir, "checkpoints", "checkpoint_best.pt"),
           "--out", os.path.join(run_dir, "search"), *search_flags]
    return cmd + (["--cpu"] if spec["device"] == "cpu" else [])


def run_search(spec: Dict, run_dir: str, search_flags: Sequence[str]) -> Dict:
    """qbert-length-search of a finished run (skipped when done with the same flags)."""
    out = os.path.join(run_dir, "search")
    done = os.path.join(out, "DONE")
    if os.path.isfile(done) and open(done).read() == " ".join(search_flags):
        return runner.read_json(os.path.join(out, "summary.json"))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(run_dir, "search.log"), "w") as log:
        proc = subprocess.run(search_command(spec, run_dir, search_flags), stdout=log,
                              stderr=subprocess.STDOUT, cwd=runner.REPO_DIR,
                              env={"OMP_NUM_THREADS": "1", **os.environ})
    if proc.returncode != 0:
        raise runner.RunnerError(f"qbert-length-search failed in {run_dir}; see search.log")
    with open(done, "w") as f:
        f.write(" ".join(search_flags))
    return runner.read_json(os.path.join(out, "summary.json"))


def table_rows(search_dir: str) -> List[Dict]:
    """full / constant-ratio / Pareto-front rows of one search, cheapest first per kind."""
    store = runner.read_json(os.path.join(search_dir, "store.json"))["records"]
    summary = runner.read_json(os.path.join(search_dir, "summary.json"))
    full = tuple(summary["full"]["gene"])
    rows = [("full", summary["full"])]
    rows += [("constant ratio", r) for r in store if r["method"] == "init" and tuple(r["gene"]) != full]
    rows += [("Pareto front", r) for r in summary["front"]]
    return [{"kind": kind, "length_config": "(" + ",".join(map(str, r["gene"])) + ")",
             "gmacs": r["cost"] / 1e9, "gmacs_max": r.get("extra", {}).get("macs_max", 0) / 1e9,
             "score": r["score"]} for kind, r in rows]


def write_tables(task: str, metric: str, searches: Dict[str, str], results_dir: str,
                 recipe: Sequence[str] = LD_FLAGS, search: Sequence[str] = ()) -> Dict[str, str]:
    """results_dir/length_adaptive_TASK.{md,json,png} from ``{model: search dir}``."""
    os.makedirs(results_dir, exist_ok=True)
    rows = {model: table_rows(d) for model, d in searches.items()}
    base = os.path.join(results_dir, f"{FAMILY}_{task}")
    lines = [f"# Length-adaptive {task}: dev {metric} vs GMACs per sentence", "",
             f"LengthDrop fine-tunes (`{' '.join(recipe)}`) searched by qbert-length-search "
             f"(`{' '.join(search)}`); GMACs = analytic encoder MACs per sentence at the dev "
             "sentences' real lengths (and at the longest). The front is searched on the dev set it is "
             "reported on (as the reference does): its scores are optimistic.", "",
             f"| model | kind | length config | GMACs | GMACs (max len) | {metric} |",
             "| -- | -- | -- | --: | --: | --: |"]
    for model, rs in rows.items():
        lines += [f"| {model} | {r['kind']} | {r['length_config']} | {r['gmacs']:.5f} | "
                  f"{r['gmacs_max']:.5f} | {r['score']:.2f} |" for r in rs]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(base + ".json", "w") as f:
        json.dump({"task": task, "metric": metric, "rows": rows}, f, indent=1)
        f.write("\n")
    _plot(base + ".png", task, metric, rows)
    return {"md": base + ".md", "json": base + ".json", "png": base + ".png"}


def _plot(path: str, task: str, metric: str, rows: Dict[str, List[Dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for (model, rs), color in zip(rows.items(), ("tab:blue", "tab:red", "tab:green")):
        pick = lambda kind, rs=rs: [r for r in rs if r["kind"] == kind]  # noqa: E731
        front, const, full = pick("Pareto front"), pick("constant ratio"), pick("full")
        ax.plot([r["gmacs"] for r in front], [r["score"] for r in front], "-o", ms=3, c=color,
                label=f"{model} Pareto front")
        ax.scatter([r["gmacs"] for r in const], [r["score"] for r in const], marker="s", s=14,
                   facecolors="none", edgecolors=color, label=f"{model} constant ratio")
        ax.scatter([r["gmacs"] for r in full], [r["score"] for r in full], marker="*", s=90,
                   c=color, label=f"{model} full")
    ax.set_xlabel("GMACs per sentence")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(f"{task}: length-adaptive, FP vs W8A8")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_task(task: str, data_bin: str, teacher: str, out_dir: str, device: str = "cpu",
             env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ if env is None else env)
    search_flags = shlex.split(env.get("LAT_SEARCH", DEFAULT_SEARCH))
    train_flags = shlex.split(env["LAT_TRAIN"]) if env.get("LAT_TRAIN") else list(LD_FLAGS)
    searches, metric = {}, None
    for name, flags in CELLS:
        spec = runner.build_spec("qat", task, data_bin, teacher, device, [*train_flags, *flags], env)
        run_dir = os.path.join(out_dir, "runs", spec["task"], f"{FAMILY}_{name}-{runner.spec_hash(spec)}")
        runner.execute(spec, run_dir)
        run_search(spec, run_dir, search_flags)
        searches[name] = os.path.join(run_dir, "search")
        metric = spec["metric"]
    return write_tables(spec["task"], metric, searches,
                        env.get("RESULTS_DIR") or os.path.join(out_dir, "results"), train_flags, search_flags)


@entry_point
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: errors (RunnerError, bad arguments) are one line and exit status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) not in (4, 5):
        raise ConfigError("usage: python -m qbert.experiments.length_adaptive TASK DATA_BIN "
                          "TEACHER OUT_DIR [cpu|gpu]")
    paths = run_task(*argv)
    print(f"{FAMILY}: wrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
