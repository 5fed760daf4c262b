"""``qbert-augment``: TinyBERT data augmentation of a binarized sentence_prediction folder.

    qbert-augment --data DATA-bin --pretrained PRETRAINED.pt --n-aug N --top-k K \
        --replace-prob P --seed S --out AUG-bin

Every sentence of DATA-bin's train split (each text field of a pair separately, the other
kept, as TinyBERT's ``AugmentProcessor``) yields up to N variants in which each
replaceable word is, with probability P, replaced by one of the pretrained masked LM's K
most likely whole words at its masked position (nearest neighbours in the embedding table
for multi-piece words): TinyBERT, arXiv 1909.10351, Sec. 3.3 (see
:mod:`qbert.augment.core` for the exact procedure). The output folder is a
``sentence_prediction`` folder: the original rows first, then the augmented rows (their
label slot copies the source row's label, a placeholder), plus ``augment/`` with the
per-row original flags that ``--task sentence_prediction_aug`` loads (see
:mod:`qbert.augment.layout`). ``--out-split NAME`` instead of ``--out`` adds the same rows
to DATA-bin itself as split NAME (``fairseq-train --train-subset NAME``). Deterministic for
a seed.

Errors (one line, exit status 1, nothing written: the folder is built under a temporary
name and renamed at the end): a checkpoint that is not a pretrained RoBERTa masked LM, a
data dictionary other than the model's, N or K < 1, P outside [0, 1], OUT (or the
split NAME) existing.
"""
import argparse
import fcntl
import logging
import os
import shutil
import sys
import tempfile
from typing import List, Optional, Sequence

import numpy as np
import torch

from qbert.augment.core import check_params, row_rng, sample_variants
from qbert.augment.layout import META_DIR, AugmentMeta, read_meta, write_meta, write_rows
from qbert.errors import ConfigError, DataError, cli_errors

from .mlm import CANDIDATES, MLM_INPUTS, gpt2_vocab, load_masked_lm, plan_sentences, whitespace_vocab

logger = logging.getLogger("qbert-augment")

FIELDS = ("input0", "input1")


def build_parser() -> argparse.ArgumentParser:
    summary, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(prog="qbert-augment", description=summary, epilog=rest,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DATA-bin",
                   help="binarized sentence_prediction folder (input0/, [input1/], label/)")
    p.add_argument("--pretrained", required=True, metavar="PRETRAINED.pt",
                   help="pretrained RoBERTa masked LM (--task masked_lm checkpoint, e.g. "
                        "roberta.base/model.pt or pretrain_mini.sh's OUT/model.pt)")
    p.add_argument("--pretrained-dict", default=None, metavar="DICT",
                   help="the model's dict.txt (default: dict.txt next to --pretrained, if there)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="AUG-bin", help="output folder (must not exist): a copy of "
                     "DATA-bin whose --split holds the original plus the augmented rows")
    out.add_argument("--out-split", metavar="NAME", help="instead, add the original plus augmented "
                     "rows to DATA-bin itself as split NAME (train with --train-subset NAME)")
    p.add_argument("--n-aug", type=int, default=20, help="variants per sentence, N (20; at most N "
                   "distinct ones are kept)")
    p.add_argument("--top-k", type=int, default=15, help="candidates per word, K (15)")
    p.add_argument("--replace-prob", type=float, default=0.4,
                   help="probability P that a replaceable word is replaced (0.4)")
    p.add_argument("--seed", type=int, default=1, help="random seed (1)")
    p.add_argument("--split", default="train", help="split to augment (train)")
    p.add_argument("--bpe", choices=("whitespace", "gpt2"), default="whitespace",
                   help="how DATA-bin was tokenized: whole words (mini-GLUE) or GPT-2 BPE "
                        "(roberta.base; needs --encoder-json)")
    p.add_argument("--encoder-json", default=None, help="GPT-2 encoder.json (--bpe gpt2)")
    p.add_argument("--mlm-input", choices=MLM_INPUTS, default="with-original",
                   help="MLM input per masked word: TinyBERT's masked sentence + original "
                        "sentence (with-original), or the masked sentence only")
    p.add_argument("--candidates", choices=CANDIDATES, default="content",
                   help="content (default): candidates must be words TinyBERT would replace "
                        "(letters, no stop word); tinybert: any whole-word token, as TinyBERT")
    p.add_argument("--batch-size", type=int, default=64, help="MLM inputs per forward (64)")
    p.add_argument("--device", default="cpu", help="torch device of the MLM (cpu)")
    return p


def _load_dictionary(data: str):
    from fairseq.data import Dictionary

    path = os.path.join(data, "input0", "dict.txt")
    if not os.path.isfile(path):
        raise DataError(f"--data {data}: no input0/dict.txt; not a binarized sentence_prediction folder")
    dictionary = Dictionary.load(path)
    dictionary.add_symbol("<mask>")  # as sentence_prediction and masked_lm do
    return dictionary


def _load_split(data: str, field: str, split: str, dictionary):
    from fairseq.data import data_utils

    prefix = os.path.join(data, field, split)
    if not (os.path.isfile(prefix + ".bin") and os.path.isfile(prefix + ".idx")):
        return None
    dataset = data_utils.load_indexed_dataset(prefix, dictionary)
    if dataset is None:
        raise DataError(f"--data {data}: cannot read {prefix}.bin/.idx")
    return dataset


def _label_rows(data: str, split: str, n_rows: int):
    """('bin', dataset) for class labels, ('txt', lines) for regression targets."""
    from fairseq.data import Dictionary

    label_dir = os.path.join(data, "label")
    txt = os.path.join(label_dir, f"{split}.label")
    if os.path.isfile(txt):
        with open(txt, encoding="utf-8") as f:
            lines = f.read().splitlines()
        kind, rows = "txt", lines
    else:
        dict_path = os.path.join(label_dir, "dict.txt")
        if not os.path.isfile(dict_path):
            raise DataError(f"--data {data}: no label/{split}.label or label/dict.txt")
        dataset = _load_split(data, "label", split, Dictionary.load(dict_path))
        if dataset is None:
            raise DataError(f"--data {data}: no label/{split}.bin/.idx")
        kind, rows = "bin", dataset
    if len(rows) != n_rows:
        raise DataError(f"--data {data}: {split} has {n_rows} sentences but {len(rows)} labels")
    return kind, rows


def _write_split(folder: str, split: str, fields, new_rows, n_rows: int, label_kind: str, labels,
                 source: List[int], vocab_size: int) -> None:
    """``split`` of ``folder``: the ``n_rows`` original rows, then ``new_rows``; labels by source row."""
    from fairseq.data import indexed_dataset

    for f, rows in fields.items():
        os.makedirs(os.path.join(folder, f), exist_ok=True)
        prefix = os.path.join(folder, f, split)
        builder = indexed_dataset.make_builder(prefix + ".bin", impl="mmap", vocab_size=vocab_size)
        for i in range(n_rows):
            builder.add_item(rows[i].to(torch.int32))
        for tokens in new_rows[f]:
            builder.add_item(torch.tensor(tokens, dtype=torch.int32))
        builder.finalize(prefix + ".idx")
    os.makedirs(os.path.join(folder, "label"), exist_ok=True)
    if label_kind == "txt":
        with open(os.path.join(folder, "label", f"{split}.label"), "w", encoding="utf-8") as fh:
            fh.write("".join(labels[s] + "\n" for s in source))
    else:
        prefix = os.path.join(folder, "label", split)
        builder = indexed_dataset.make_builder(prefix + ".bin", impl="mmap", vocab_size=256)
        for s in source:
            builder.add_item(labels[s].to(torch.int32))
        builder.finalize(prefix + ".idx")


def augment_folder(data: str, pretrained: str, out: Optional[str] = None, n_aug: int = 20,
                   top_k: int = 15, replace_prob: float = 0.4, seed: int = 1, split: str = "train",
                   bpe: str = "whitespace", encoder_json: Optional[str] = None,
                   mlm_input: str = "with-original", batch_size: int = 64, device: str = "cpu",
                   pretrained_dict: Optional[str] = None, out_split: Optional[str] = None,
                   candidates: str = "content") -> str:
    """Library form of ``qbert-augment`` (raises qbert.errors); returns the folder written.

    ``out``: a new folder (the augmented ``split`` plus copies of everything else);
    ``out_split``: instead, add the augmented rows to ``data`` itself as split
    ``out_split`` (``--train-subset OUT_SPLIT``), leaving every existing file as it is.
    """
    check_params(n_aug, top_k, replace_prob)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if (out is None) == (out_split is None):
        raise ConfigError("give exactly one of --out (a new folder) and --out-split (a new split of --data)")
    if out is not None and os.path.exists(out):
        raise ConfigError(f"--out {out}: exists; remove it or choose another folder")
    if not os.path.isdir(data):
        raise DataError(f"--data {data}: no such folder")
    if out_split is not None:
        if not out_split or os.sep in out_split or out_split.startswith(".") or out_split == split:
            raise ConfigError(f"--out-split {out_split!r}: give a new split name, e.g. {split}_aug")
        taken = [f for f in (*FIELDS, "label") for ext in (".bin", ".idx", ".label")
                 if os.path.exists(os.path.join(data, f, out_split + ext))]
        if taken:
            raise ConfigError(f"--out-split {out_split}: {data}/{taken[0]}/{out_split}.* exists; "
                              "choose another split name")
    if candidates not in CANDIDATES:
        raise ConfigError(f"--candidates must be one of {', '.join(CANDIDATES)}, got {candidates!r}")
    if bpe == "gpt2" and not encoder_json:
        raise ConfigError("--bpe gpt2 needs --encoder-json (GPT-2's encoder.json)")
    dictionary = _load_dictionary(data)
    model = load_masked_lm(pretrained, dictionary, pretrained_dict).to(device)
    vocab = whitespace_vocab(dictionary) if bpe == "whitespace" else gpt2_vocab(dictionary, encoder_json)
    if candidates == "content":
        vocab = vocab.content_words_only()

    fields = {f: _load_split(data, f, split, dictionary) for f in FIELDS}
    fields = {f: d for f, d in fields.items() if d is not None}
    if "input0" not in fields:
        raise DataError(f"--data {data}: no input0/{split}.bin/.idx")
    n_rows = len(fields["input0"])
    for f, d in fields.items():
        if len(d) != n_rows:
            raise DataError(f"--data {data}: input0/{split} has {n_rows} rows but {f}/{split} {len(d)}")
    label_kind, labels = _label_rows(data, split, n_rows)

    # rows: originals, then per source row its variants (field by field)
    new_rows = {f: [] for f in fields}
    source = list(range(n_rows))
    field_names = list(fields)
    chunk = 256
    for start in range(0, n_rows, chunk):
        stop = min(n_rows, start + chunk)
        plans = {f: plan_sentences(model, [fields[f][i] for i in range(start, stop)],
                                   dictionary, vocab, top_k, mlm_input, batch_size)
                 for f in field_names}
        for i in range(start, stop):
            for fi, f in enumerate(field_names):
                plan = plans[f][i - start]
                variants = sample_variants(plan.words, plan.candidates, n_aug, replace_prob,
                                           row_rng(seed, i, fi))
                for v in variants:
                    for g in field_names:
                        new_rows[g].append(v + [dictionary.eos()] if g == f else fields[g][i].tolist())
                    source.append(i)
        logger.info(f"augmented {stop}/{n_rows} rows: {len(source) - n_rows} new rows so far")

    dest_split = out_split or split
    entry = {"rows": len(source), "original_rows": n_rows, "source_split": split, "n_aug": n_aug,
             "top_k": top_k, "replace_prob": replace_prob, "seed": seed}
    meta = AugmentMeta(n_aug=n_aug, top_k=top_k, replace_prob=replace_prob, seed=seed,
                       pretrained=os.path.abspath(pretrained), fields=field_names, mlm_input=mlm_input,
                       candidates=candidates)
    target = os.path.abspath(out if out is not None else data)
    parent = os.path.dirname(target) if out is not None else target
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=(os.path.basename(target) + ".tmp-") if out is not None else ".augment.tmp-",
                           dir=parent)
    try:
        if out is not None:  # everything but the augmented split: copied as is
            for root, _, files in os.walk(data):
                rel = os.path.relpath(root, data)
                if rel.split(os.sep)[0] == META_DIR:
                    continue
                for name in files:
                    if name.startswith(split + ".") and rel in (*FIELDS, "label"):
                        continue
                    os.makedirs(os.path.join(tmp, rel), exist_ok=True)
                    shutil.copy2(os.path.join(root, name), os.path.join(tmp, rel, name))
        _write_split(tmp, dest_split, fields, new_rows, n_rows, label_kind, labels, source, len(dictionary))
        write_rows(tmp, dest_split, np.asarray(source), n_rows)
        if out is not None:
            meta.splits = {dest_split: entry}
            write_meta(tmp, meta)
            os.rename(tmp, out)
        else:  # into --data: the new split's files, then the description (last: marks it complete)
            with open(os.path.join(data, ".subset.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                old = read_meta(data)
                meta.splits = dict(old.splits) if old is not None else {}
                meta.splits[dest_split] = entry
                for root, _, files in os.walk(tmp):
                    rel = os.path.relpath(root, tmp)
                    for name in files:
                        os.makedirs(os.path.join(data, rel), exist_ok=True)
                        os.replace(os.path.join(root, name), os.path.join(data, rel, name))
                write_meta(data, meta)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(f"wrote {target}: split {dest_split} = {n_rows} original + {len(source) - n_rows} "
                f"augmented rows of {split}")
    return target


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.INFO, stream=sys.stderr, force=True)  # see qbert-export
    import fairseq_qbert  # noqa: F401  (safe checkpoint loading, registrations)

    with cli_errors():
        augment_folder(args.data, args.pretrained, args.out, n_aug=args.n_aug, top_k=args.top_k,
                       replace_prob=args.replace_prob, seed=args.seed, split=args.split,
                       bpe=args.bpe, encoder_json=args.encoder_json, mlm_input=args.mlm_input,
                       batch_size=args.batch_size, device=args.device,
                       pretrained_dict=args.pretrained_dict, out_split=args.out_split,
                       candidates=args.candidates)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
