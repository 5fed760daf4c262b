"""``qbert-calibrate``: PTQ of a fine-tuned RoBERTa checkpoint into a quant_roberta checkpoint.

    qbert-calibrate DATA-bin --path FP.pt [--quant-groups ... --weight-bits N --act-bits N
        --weight-quantizer Q --act-quantizer Q --lsq-per-channel]
        [--sparse-groups QKV,FFN [--sparse-permute]]
        --calibrator {max,percentile,mse,entropy} [--percentile P]
        --weight-calibrator {max,mse} --num-calib-batches N --batch-size B --out PTQ.pt

Writes PTQ.pt (``fairseq-validate --user-dir fairseq_qbert --path PTQ.pt`` evaluates it;
``fairseq-train --finetune-from-model PTQ.pt`` with the same quantization flags starts QAT from
it) and prints the dev metric of the FP model and of PTQ side by side. With ``--sparse-groups``
the 2:4 masks are computed from the FP weights first and calibration sees the pruned weights
(NVIDIA's order); the masks are saved in PTQ.pt, so QAT from it needs the same
``--sparse-groups``, and the 2:4 FP metric (pruned, not quantized) is printed too. ``--summary X.json``
also writes the summary (metrics and every quantizer's amax) as JSON. Every error is one line
naming the flag or file, reported before any batch runs; no output file is written then.
"""
import argparse
import json
import logging
import os
import sys

from qbert.calib.calibrators import ACT_METHODS, DEFAULT_PERCENTILE, WEIGHT_METHODS
from qbert.cli import data_checkpoint_parser
from qbert.errors import ConfigError, cli_errors

PROG = "qbert-calibrate"


def build_parser() -> argparse.ArgumentParser:
    from fairseq_qbert.models.quant_config import add_quant_args
    from fairseq_qbert.models.sparsity import add_sparse_args

    p = data_checkpoint_parser(PROG, __doc__, "binarized sentence_prediction data (qbert-preprocess-glue)",
                               "fine-tuned full-precision fairseq checkpoint",
                               "the quant_roberta checkpoint to write")
    q = p.add_argument_group("quantization (quant_roberta's flags)")
    add_quant_args(q)
    add_sparse_args(p.add_argument_group("2:4 sparsity (quant_roberta's flags; masks before calibration)"))
    c = p.add_argument_group("calibration")
    c.add_argument("--calibrator", default="max", help=f"activation calibrator: {', '.join(ACT_METHODS)} (default max)")
    c.add_argument("--percentile", default=DEFAULT_PERCENTILE,
                   help=f"percentile in (0, 100] (default {DEFAULT_PERCENTILE})")
    c.add_argument("--weight-calibrator", default="max",
                   help=f"weight calibrator: {', '.join(WEIGHT_METHODS)} (default max)")
    c.add_argument("--num-calib-batches", type=int, default=16, help="calibration batches (default 16)")
    c.add_argument("--batch-size", type=int, default=16, help="sentences per batch (default 16)")
    c.add_argument("--calib-subset", default="train", help="subset the batches come from (default train)")
    c.add_argument("--valid-subset", default="valid", help="subset the metric is reported on (default valid)")
    c.add_argument("--seed", type=int, default=1, help="shuffling seed of the calibration batches (default 1)")
    c.add_argument("--no-fp-eval", action="store_true", help="do not evaluate the FP model")
    p.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    p.add_argument("--summary", default=None, help="also write the summary as JSON to this file")
    return p


def _fmt(metrics, name):
    v = metrics.get(name)
    return "?" if v is None else f"{v:.2f}"


def main(argv=None) -> dict:
    import fairseq_qbert  # noqa: F401  (registers quant_roberta, safe checkpoint loading)
    from fairseq_qbert.calib.ptq import QUANT_ARG_NAMES, SPARSE_DEFAULTS, ptq

    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.INFO, stream=sys.stdout, force=True)
    quant = {name: getattr(args, name) for name in QUANT_ARG_NAMES}
    sparse = {name: getattr(args, name) for name in SPARSE_DEFAULTS}
    if args.summary and not os.path.isdir(os.path.dirname(os.path.abspath(args.summary))):
        raise ConfigError(f"--summary {args.summary}: its directory does not exist")
    summary = ptq(args.data, args.path, quant, method=args.calibrator, percentile=args.percentile,
                  weight_method=args.weight_calibrator, num_batches=args.num_calib_batches,
                  batch_size=args.batch_size, out=args.out, seed=args.seed,
                  calib_subset=args.calib_subset, valid_subset=args.valid_subset, cpu=args.cpu,
                  evaluate_fp=not args.no_fp_eval, sparse=sparse)
    metric = summary["metric"]
    fp, q = summary.get("fp", {}), summary["ptq"]
    cal = summary["calibration"]
    how = cal["method"] + (f" {cal['percentile']:g}" if cal["percentile"] is not None else "")
    delta = f" ({q[metric] - fp[metric]:+.2f})" if metric in fp and metric in q else ""
    print(f"{PROG}: {summary['quantization']}; activations {how}, weights {cal['weight_method']}, "
          f"{cal['num_batches']} batches of {cal['batch_size']}")
    if "sparsity" in summary:
        sp = summary["sparsity"]
        kept = "; ".join(f"{g} sparsity {v['sparsity']:.3f} kept magnitude {v['kept']:.4f}"
                         for g, v in sp.get("by_group", {}).items())
        print(f"{PROG}: 2:4 {','.join(sp['groups'])}: {sp['masks']} masked weights ({sp['from']})"
              + (f"; {kept}" if kept else ""))
        sfp = summary.get("sparse_fp", {})
        print(f"{PROG}: {summary['valid_subset']} {metric}: FP {_fmt(fp, metric)} | 2:4 FP {_fmt(sfp, metric)} "
              f"| 2:4 PTQ {_fmt(q, metric)}{delta}")
    else:
        print(f"{PROG}: {summary['valid_subset']} {metric}: FP {_fmt(fp, metric)} | PTQ {_fmt(q, metric)}{delta}")
    print(f"{PROG}: wrote {summary['out']}")
    if args.summary:
        tmp = args.summary + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        os.replace(tmp, args.summary)
    return summary


def cli_main(argv=None) -> int:
    with cli_errors():
        main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
