"""Console scripts ``qbert-import-hf`` and ``qbert-export-hf`` (one-line errors, exit 1)."""
import argparse
import logging
from typing import Optional, Sequence

from qbert.errors import cli_errors

from .spec import HEAD_NAME, SUPPORTED_ARCHITECTURES


def import_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qbert-import-hf",
        description="Convert a local transformers RoBERTa/BERT folder (save_pretrained) into a fairseq "
                    f"checkpoint + dictionary. Supported: {', '.join(SUPPORTED_ARCHITECTURES)}.")
    parser.add_argument("hf_dir", help="folder with config.json, model.safetensors or pytorch_model.bin, tokenizer")
    parser.add_argument("--out", required=True, help="output folder (must not exist)")
    parser.add_argument("--head-name", default=HEAD_NAME, help=f"fairseq classification head name ({HEAD_NAME})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from . import import_hf

    with cli_errors():
        out = import_hf(args.hf_dir, args.out, head_name=args.head_name)
    print(f"wrote {out}/model.pt, {out}/dict.txt (see {out}/hf_import.json)")
    return 0


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qbert-export-hf",
        description="Write a fairseq RoBERTa/BERT checkpoint (full precision or quant_roberta/quant_bert, "
                    "weights dequantized) as a transformers save_pretrained folder.")
    parser.add_argument("checkpoint", help="fairseq checkpoint (.pt)")
    parser.add_argument("--out", required=True, help="output folder (must not exist)")
    parser.add_argument("--head-name", default=HEAD_NAME, help=f"classification head to export ({HEAD_NAME})")
    parser.add_argument("--tokenizer", default=None,
                        help="HF tokenizer folder in fairseq's ids to copy in (qbert-import-hf's OUT/hf_tokenizer)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from . import export_hf

    with cli_errors():
        out = export_hf(args.checkpoint, args.out, head_name=args.head_name, tokenizer_dir=args.tokenizer)
    print(f"wrote {out}")
    return 0
