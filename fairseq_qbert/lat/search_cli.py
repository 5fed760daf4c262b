"""``qbert-length-search``: evolutionary search of length configurations on a checkpoint.

    qbert-length-search DATA-bin --path CKPT --out DIR [--valid-subset valid]
        [--population-size 20 --evo-iter 30 --mutation-size 30 --mutation-prob 0.5
         --crossover-size 30 --seed 1] [--length-drop-ratio-bound B] [--max-length N]
        [--max-gflops G | --max-metric-drop D] [--batch-size 32] [--cpu]

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
"{'length_config': '(..)'}"``).
"""
import argparse
import logging
import os
import sys

import torch

from qbert.checkpoint_state import first_line, head_shapes, model_args
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
    return p


# ---------------------------------------------------------------------------- model
def load_model(path: str, data: str):
    """(state, task, model, criterion, metric name) of a sentence-prediction checkpoint."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    from fairseq_qbert.calib.ptq import build_criterion, headline_metric, quant_model_args, setup_task
    from fairseq_qbert.checkpoint_loading import load_checkpoint_to_cpu
    from fairseq_qbert.models.quant_roberta import QuantRobertaModel

    if not os.path.isfile(path):
        raise CheckpointError(f"--path {path}: no such file")
    try:
        state = load_checkpoint_to_cpu(path)
    except QBertError as e:
        raise CheckpointError(f"--path {path}: {e.message}") from None
    except Exception as e:
        raise CheckpointError(f"--path {path}: cannot read it as a fairseq checkpoint "
                              f"({first_line(e)})") from None
    if not isinstance(state, dict) or state.get("cfg") is None or not head_shapes(state.get("model") or {}):
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
    meta_name = meta["metric"]
    plot = plot_search(os.path.join(args.out, "pareto.png"), store.sorted(), result.front,
                       meta_name, title=os.path.basename(os.path.abspath(args.path)))
    full = store[(max_length,) * layers]
    best = best_under(result.front, None if args.max_gflops is None else args.max_gflops * 1e9,
                      args.max_metric_drop, full.score)

    def line(r):
        return (f"{format_length_config(r.gene)} {r.cost / 1e9:.4f} GMACs "
                f"({r.extra.get('macs_max', 0) / 1e9:.4f} at {max_length} tokens) {meta_name} {r.score:.4f}")

    print(f"{PROG}: {len(store)} configurations in {args.out}/store.tsv "
          f"({result.evaluated} evaluated by this run); Pareto front of {len(result.front)}")
    print(f"{PROG}: full model {line(full)}")
    for r in result.front:
        print(f"{PROG}: front {line(r)}")
    summary = {"full": full.to_json(), "front": [r.to_json() for r in result.front],
               "evaluated": result.evaluated, "store_size": len(store), "plot": plot, "best": None}
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
