"""``qbert-export CHECKPOINT --out DIR [--verify DATA-bin]``: a QAT (or FP) checkpoint as a
real quantized model (packed safetensors + config.json + int8 ONNX Runtime graph)."""
import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from qbert.errors import cli_errors
from qbert.export.predict import BPE_CHOICES
from qbert.lat.config import format_length_config

from .convert import HEAD_NAME, export_checkpoint
from .verify import MIN_AGREEMENT, verify


def fp32_bytes(export) -> int:
    """Bytes of the exported tensors as fp32 (what the unquantized model stores)."""
    return 4 * (sum(t.numel() for t in export.fp.values()) + sum(w.codes.numel() for w in export.weights.values()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="qbert-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="fairseq checkpoint: quant_roberta (any quantizer) or roberta (FP)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty; see --force)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--head-name", default=None,
                        help=f"classification head to export (default {HEAD_NAME}, or the only head)")
    parser.add_argument("--data", default=None, metavar="DATA-bin",
                        help="binarized data whose input0/dict.txt and label/dict.txt go into the export "
                             "(default: --verify's, else the checkpoint's own data folder)")
    parser.add_argument("--verify", default=None, metavar="DATA-bin",
                        help="compare the ONNX model with the fake-quant model on this data's dev set")
    parser.add_argument("--valid-subset", default="valid", help="subset --verify runs (valid)")
    parser.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                        help=f"--verify fails below this prediction agreement in percent ({MIN_AGREEMENT})")
    parser.add_argument("--fast", action="store_true",
                        help="weight-only groups as dynamically quantized int8 activations (not exact; "
                             "--verify measures the change)")
    parser.add_argument("--nbits", action="store_true",
                        help="weight-only groups as MatMulNBits (accuracy level 0: exact) instead of fp32 MatMul")
    parser.add_argument("--bpe", default="whitespace", choices=BPE_CHOICES, help="tokenizer of the training data")
    parser.add_argument("--encoder-json", default=None, help="GPT-2 BPE encoder.json (--bpe gpt2)")
    parser.add_argument("--vocab-bpe", default=None, help="GPT-2 BPE vocab.bpe (--bpe gpt2)")
    parser.add_argument("--vocab", default=None, help="BERT vocab.txt in fairseq order (--bpe wordpiece)")
    parser.add_argument("--cased", action="store_true", help="--bpe wordpiece: do not lowercase (cased BERT)")
    parser.add_argument("--length-config", default=None, metavar="(L1,...,LN)",
                        help="bake a length configuration into the graph: tokens kept after each layer's "
                             "attention block (qbert-length-search's output; default: the checkpoint's "
                             "own, if any; 'none': every token)")
    parser.add_argument("--batch-size", type=int, default=32, help="--verify batch size (32)")
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads for --verify")
    args = parser.parse_args(argv)
    # force: importing fairseq already ran wav2vec2_classification's basicConfig(level=DEBUG)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
    import fairseq_qbert  # noqa: F401  (registers quant_roberta)

    with cli_errors():
        out, export, model, state = export_checkpoint(
            args.checkpoint, args.out, head_name=args.head_name, force=args.force, fast=args.fast,
            nbits=args.nbits, data_dir=args.data or args.verify, bpe=args.bpe,
            encoder_json=args.encoder_json, vocab_bpe=args.vocab_bpe, vocab=args.vocab, lowercase=not args.cased,
            length_config=args.length_config)
        size = os.path.getsize(os.path.join(out, "model.safetensors"))
        print(f"wrote {out}: {export.quantization.get('describe')}; model.safetensors {size / 1e6:.2f} MB "
              f"= {size / fp32_bytes(export):.3f}x of fp32")
        if export.masks:
            compact, dense = export.sparse_bytes()
            print(f"2:4 sparse: {len(export.masks)} weights stored compactly (kept values + 2-bit positions): "
                  f"{compact / 1e6:.3f} MB instead of {dense / 1e6:.3f} MB dense ({compact / dense:.3f}x); "
                  "model.onnx runs them as dense masked weights (ORT CPU has no 2:4 kernel)")
        if export.arch.get("length_config"):
            print(f"length configuration {format_length_config(export.arch['length_config'])} "
                  "baked into model.onnx (recorded in config.json)")
        if args.verify:
            verify(model, state, out, args.verify, export.arch["head_name"],
                   args.valid_subset, args.batch_size, args.threads, args.min_agreement)
    return 0


def cli_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli_main()
