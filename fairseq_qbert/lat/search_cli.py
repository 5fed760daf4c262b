"""``qbert-length-search``: evolutionary search of length configurations on a checkpoint.

    qbert-length-search DATA-bin --path CKPT --out DIR [--valid-subset valid]
        [--population-size 20 --evo-iter 30 --mutation-size 30 --mutation-prob 0.5
         --crossover-size 30 --seed 1] [--length-drop-ratio-bound B] [--max-length N]
        [--max-gflops G | --max-metric-drop D] [--batch-size 32] [--cpu]
        [--measure-latency [--latency-threads 1 --latency-repeats 3]]

The Length-Adaptive Transformer's search (Kim & Cho 2021; see qbert.lat.search) on a
``quant_roberta`` (quantized or not) or plain ``roberta`` sentence-prediction checkpoint,
ideally trained with ``--criterion length_drop_sentence_prediction``. Each configuration is
scored by the dev metric of the checkpoint's criterion (accuracy, MCC, acc_and_f1,
pearson_and_spearman; minus the loss for a plain regression model) and costed by the analytic
MACs of the model's shape (qbert.lat.macs) averaged over the dev sentences' real lengths
(``gmacs``; the search's cost) and at the maximum length (``gmacs_max``). ``--max-length``
(default: the longest dev sentence) is the L of the initial population and of mutations.

Writes DIR/store.tsv and store.json (every evaluated configuration), pareto.tsv and
pareto.json (the front, with the settings and per-iteration history) and pareto.png, after
every iteration; a second run with the same DIR resumes: configurations already in
store.json are not evaluated again (same seed and settings: the same search). Prints the
full model, the front, and the best configuration under ``--max-gflops`` (GMACs per
sentence, the QuaLA table's "GFLOPS" column) or ``--max-metric-drop`` (points below the full
model). Apply it with ``--length-config`` (fairseq-validate: ``--model-overrides
"{'length_config': '(..)'}"``; ``qbert-export --length-config`` bakes it into the ONNX model).

``--measure-latency`` also times, after the search, the full model, the initial population
and the front as they run in deployment: the checkpoint exported (``qbert-export``'s integer
ONNX graph, in memory) with each configuration baked in (qbert.export.length), the dev set at
``--batch-size`` on ONNX Runtime with ``--latency-threads`` threads, one warm-up pass, the
median of ``--latency-repeats`` passes. Recorded as ``latency_ms`` (per sentence) in the
store (kept on resume when measured with the same settings) and printed with the speedup
over the full model. The search itself minimises MACs (deterministic, so resumable).
"""
import argparse
import logging
import os
import sys

import torch

from qbert.checkpoint_state import first_line, head_shapes, model_args, read_checkpoint
from qbert.cli import data_checkpoint_parser
from qbert.errors import CheckpointError, ConfigError, QBertError, entry_point

PROG = "qbert-length-search"
logger = logging.getLogger(PROG)


def build_parser() -> argparse.ArgumentParser:
    p = data_checkpoint_parser(PROG, __doc__, "binarized sentence_prediction data",
                               "fairseq checkpoint (quant_roberta* or roberta)",
                               "output folder (resumed when it holds store.json)")
    p.add_argument("--valid-subset", default="valid", help="subset scored (default valid)")
    s = p.add_argument_group("search (the reference's defaults)")
    s.add_argument("--population-size", type=int, default=20)
    s.add_argument("--evo-iter", type=int, default=30)
    s.add_argument("--mutation-size", type=int, default=30)
    s.add_argument("--mutation-prob", type=float, default=0.5)
    s.add_argument("--crossover-size", type=int, default=30)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--length-drop-ratio-bound", type=float, default=None,
                   help="smallest configuration's ratio (default: the checkpoint's, else 0.2)")
    s.add_argument("--max-length", type=int, default=None,
                   help="maximum tokens L (default: the longest dev sentence)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--max-gflops", type=float, default=None,
                   help="print the best configuration within this many GMACs per sentence")
    b.add_argument("--max-metric-drop", type=float, default=None,
                   help="print the cheapest configuration within this drop of the full model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    m = p.add_argument_group("latency of the ONNX export (qbert-export --length-config)")
    m.add_argument("--measure-latency", action="store_true",
                   help="time the full model, initial population and front as ONNX exports")
    m.add_argument("--latency-threads", type=int, default=1, help="ONNX Runtime intra-op threads (1)")
    m.add_argument("--latency-repeats", type=int, default=3, help="timed passes over the dev set (3)")
    return p


# ---------------------------------------------------------------------------- model
def load_model(path: str, data: str):
    """(state, task, model, criterion, metric name) of a sentence-prediction checkpoint."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    from fairseq_qbert.calib.ptq import build_criterion, headline_metric, quant_model_args, setup_task
    from fairseq_qbert.checkpoint_loading import load_checkpoint_to_cpu
    from fairseq_qbert.models.quant_roberta import QuantRobertaModel

    state = read_checkpoint(path, load_checkpoint_to_cpu, source=f"--path {path}")
    if state.get("cfg") is None or not head_shapes(state.get("model") or {}):
        raise CheckpointError(f"--path {path}: not a fairseq sentence-prediction checkpoint "
                              "(no cfg or no classification head)")
    args = model_args(state, f"--path {path}")
    model_cls = ARCH_MODEL_REGISTRY.get(getattr(args, "arch", None))
    if model_cls is None or not issubclass(model_cls, QuantRobertaModel):
        args = quant_model_args(state, {}, path)  # a plain roberta: rebuilt as FP quant_roberta
    args.length_config, args.layer_dropout_prob = None, 0.0
    args.load_checkpoint_heads = True
    _cfg, task = setup_task(state, data, path)
    model = QuantRobertaModel.build_checked_model(args, task)
    for name, (classes, inner_dim) in head_shapes(state["model"]).items():
        model.register_classification_head(name, num_classes=classes, inner_dim=inner_dim)
    try:
        model.load_checked_state_dict(dict(state["model"]), strict=True)
    except QBertError:
        raise
    except Exception as e:
        raise CheckpointError(f"--path {path}: its weights do not fit quant_roberta "
                              f"({first_line(e)})") from None
    criterion = build_criterion(state, task)
    return state, args, task, model, criterion, headline_metric(criterion)


def trained_with_length_drop(state) -> bool:
    from fairseq_qbert.criterions.length_drop import NAME

    crit = state["cfg"].get("criterion")
    return getattr(crit, "_name", None) == NAME if crit is not None else False


def dev_metric(model, task, criterion, split: str, batch_size: int, device, metric: str) -> float:
    """The criterion's ``metric`` on ``split`` (only that one is converted: with --report-mcc
    fairseq also logs the pred/targ lists)."""
    from fairseq import metrics, utils

    from fairseq_qbert.calib.ptq import batch_iterator

    model.eval()
    logs = [task.valid_step(utils.move_to_cuda(s) if device.type == "cuda" else s, model, criterion)[2]
            for s in batch_iterator(task, model, split, batch_size, seed=1, shuffle=False)]
    with metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics(logs, criterion)
        return float(agg.get_smoothed_value(metric))


def dev_lengths(task, model, split: str, batch_size: int):
    from fairseq_qbert.calib.ptq import batch_iterator

    pad = task.source_dictionary.pad()
    out = []
    for sample in batch_iterator(task, model, split, batch_size, seed=1, shuffle=False):
        out += sample["net_input"]["src_tokens"].ne(pad).sum(dim=1).tolist()
    return out


def measure_latencies(args, store, front, full_gene, model, task, criterion) -> dict:
    """``latency_ms`` (ONNX export, configuration baked in) of the full model, the initial
    population and ``front``, into their records' ``extra``; returns the settings."""
    from fairseq_qbert.calib.ptq import batch_iterator
    from fairseq_qbert.export.convert import HEAD_NAME, to_export
    from qbert.export.length import measure_latency

    if args.latency_threads < 1 or args.latency_repeats < 1:
        raise ConfigError("--latency-threads and --latency-repeats must be >= 1")
    settings = {"threads": args.latency_threads, "repeats": args.latency_repeats,
                "batch_size": args.batch_size, "valid_subset": args.valid_subset}
    previous = store.meta.get("latency") or {}
    same = {k: previous.get(k) for k in settings} == settings
    if not same:  # measured otherwise (or never): measure again
        for record in store.records.values():
            record.extra.pop("latency_ms", None)
    from fairseq_qbert.models.length_adaptive import set_length_config

    model = model.cpu().eval()
    set_length_config(model, None)  # the search left its last configuration on the model
    export = to_export(model, getattr(criterion, "classification_head_name", None) or HEAD_NAME,
                       bool(getattr(criterion, "regression_target", False)))
    batches = [sample["net_input"]["src_tokens"].numpy() for sample in
               batch_iterator(task, model, args.valid_subset, args.batch_size, seed=1, shuffle=False)]
    genes = [full_gene] + [g for g, r in store.records.items() if r.method == "init"] + [r.gene for r in front]
    size = previous.get("onnx_mb") if same else None
    for gene in dict.fromkeys(genes):
        record = store[gene]
        if "latency_ms" in record.extra:
            continue
        # the full model runs as the plain graph (every dev sentence fits its lengths)
        m = measure_latency(export, None if gene == full_gene else gene, batches,
                            args.latency_threads, args.latency_repeats)
        size, record.extra["latency_ms"] = m["onnx_mb"], m["latency_ms"]
    store.meta["latency"] = {**settings, "onnx_mb": size}
    return store.meta["latency"]


# ---------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    import fairseq_qbert  # noqa: F401  (registers quant_roberta, safe checkpoint loading)
    from fairseq_qbert.models.length_adaptive import set_length_config
    from qbert.lat import (
        SearchSettings,
        Store,
        best_under,
        encoder_macs,
        evolutionary_search,
        format_length_config,
        mean_encoder_macs,
        plot_search,
        save_search,
        write_atomic,
    )

    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.WARNING, stream=sys.stdout, force=True)
    logging.getLogger("qbert.lat.search").setLevel(logging.INFO)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    state, margs, task, model, criterion, metric = load_model(args.path, args.data)
    crit_cfg = state["cfg"].get("criterion")
    if not trained_with_length_drop(state):
        print(f"{PROG}: warning: {args.path} was not trained with LengthDrop (--criterion "
              "length_drop_sentence_prediction): its sub-models were never trained, so the "
              "searched configurations will score poorly", file=sys.stderr)
    bound = args.length_drop_ratio_bound
    if bound is None:
        bound = getattr(crit_cfg, "length_drop_ratio_bound", None) or 0.2
    settings = SearchSettings(args.population_size, args.evo_iter, args.mutation_size,
                              args.mutation_prob, args.crossover_size, args.seed, bound).check()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    model.to(device).eval()

    layers, d, d_ff = margs.encoder_layers, margs.encoder_embed_dim, margs.encoder_ffn_embed_dim
    max_positions = model.encoder.sentence_encoder.max_positions()
    lengths = dev_lengths(task, model, args.valid_subset, args.batch_size)
    max_length = args.max_length or min(max(lengths), max_positions)
    if not 2 <= max_length <= max_positions:
        raise ConfigError(f"--max-length must be in [2, {max_positions}], got {max_length}")

    def cost(gene):
        return mean_encoder_macs(lengths, layers, d, d_ff, gene)

    def extra(gene):
        return {"macs_max": float(encoder_macs(max_length, layers, d, d_ff, gene))}

    def score(gene):
        set_length_config(model, gene)
        value = dev_metric(model, task, criterion, args.valid_subset, args.batch_size, device, metric)
        return -value if metric == "loss" else value

    meta = {"checkpoint": os.path.abspath(args.path), "data": os.path.abspath(args.data),
            "valid_subset": args.valid_subset, "metric": metric if metric != "loss" else "-loss",
            "num_layers": layers, "embed_dim": d, "ffn_dim": d_ff, "max_length": max_length}
    os.makedirs(args.out, exist_ok=True)
    store_path = os.path.join(args.out, "store.json")
    resumed = os.path.isfile(store_path)
    # what the stored scores and costs depend on must match; the search settings may change
    store = Store.load(store_path, meta) if resumed else Store(meta)
    store.meta["length_drop_ratio_bound"] = bound
    if resumed:
        print(f"{PROG}: resuming from {store_path} ({len(store)} configurations)")
    history = []

    def on_iteration(it, st, front):
        history.append({"iteration": it, "front": [list(r.gene) for r in front], "store_size": len(st)})
        save_search(args.out, st, front, history)

    result = evolutionary_search(score, cost, layers, max_length, settings, store=store,
                                 extra=extra, on_iteration=on_iteration)
    full_gene = (max_length,) * layers
    if args.measure_latency:
        measured = measure_latencies(args, store, result.front, full_gene, model, task, criterion)
        save_search(args.out, store, result.front, history)
        print(f"{PROG}: latency of the ONNX export ({measured['onnx_mb'] or 0:.2f} MB) on ONNX Runtime, "
              f"{args.latency_threads} thread(s), batch {args.batch_size}, median of {args.latency_repeats}")
    meta_name = meta["metric"]
    plot = plot_search(os.path.join(args.out, "pareto.png"), store.sorted(), result.front,
                       meta_name, title=os.path.basename(os.path.abspath(args.path)))
    full = store[full_gene]
    best = best_under(result.front, None if args.max_gflops is None else args.max_gflops * 1e9,
                      args.max_metric_drop, full.score)

    def line(r):
        text = (f"{format_length_config(r.gene)} {r.cost / 1e9:.4f} GMACs "
                f"({r.extra.get('macs_max', 0) / 1e9:.4f} at {max_length} tokens) {meta_name} {r.score:.4f}")
        if "latency_ms" in r.extra and "latency_ms" in full.extra:
            text += (f", {r.extra['latency_ms']:.4g} ms/sentence "
                     f"({full.extra['latency_ms'] / r.extra['latency_ms']:.2f}x)")
        return text

    print(f"{PROG}: {len(store)} configurations in {args.out}/store.tsv "
          f"({result.evaluated} evaluated by this run); Pareto front of {len(result.front)}")
    print(f"{PROG}: full model {line(full)}")
    for r in result.front:
        print(f"{PROG}: front {line(r)}")
    summary = {"full": full.to_json(), "front": [r.to_json() for r in result.front],
               "evaluated": result.evaluated, "store_size": len(store), "plot": plot, "best": None,
               "latency": store.meta.get("latency") if args.measure_latency else None}
    if args.max_gflops is not None or args.max_metric_drop is not None:
        budget = (f"--max-gflops {args.max_gflops:g}" if args.max_gflops is not None
                  else f"--max-metric-drop {args.max_metric_drop:g}")
        if best is None:
            print(f"{PROG}: no configuration on the front meets {budget}")
        else:
            print(f"{PROG}: best under {budget}: {line(best)}; apply it with "
                  f"--length-config \"{format_length_config(best.gene)}\"")
            summary["best"] = best.to_json()
    write_atomic(os.path.join(args.out, "summary.json"), summary)
    return summary


@entry_point
def cli_main(argv=None) -> int:
    """The console script: a library error is one line ``fairseq-qbert: error: ...``."""
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
