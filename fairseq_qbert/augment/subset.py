"""A low-resource training split: the first ``n`` rows of a binarized folder's ``train``.

    python -m fairseq_qbert.augment.subset DATA-bin --size N     # writes split train<N>

Writes ``input0/train<N>.{bin,idx}`` (``input1`` for pairs) and ``label/train<N>.{bin,idx}``
(``label/train<N>.label`` for regression) next to ``train``, so a student trains on it with
fairseq's own ``--train-subset train<N>`` while the teacher was fine-tuned on the whole
``train`` and both are measured on the same ``valid`` -- the runner's ``QAT_TRAIN_SIZE``
(the issue's "low-resource QAT": quantizing with little data, where the student cannot
relearn from its labels what the teacher knows). The first ``n`` rows, not a sample: the
mini-GLUE generator's rows are i.i.d., the subsets are nested (train300 is part of
train1000) and nothing depends on a seed. ``qbert-augment --split train<N>`` augments it.

Idempotent and safe to call from parallel runs: a file lock serialises writers, files are
written under temporary names and renamed, an existing split of the right size is kept.
"""
import argparse
import fcntl
import os
import sys
from typing import Optional, Sequence

import torch

from qbert.errors import ConfigError, DataError, cli_errors

FIELDS = ("input0", "input1")


def subset_name(size: int) -> str:
    return f"train{size}"


def _rows(prefix: str, dictionary):
    from fairseq.data import data_utils

    if not (os.path.isfile(prefix + ".bin") and os.path.isfile(prefix + ".idx")):
        return None
    return data_utils.load_indexed_dataset(prefix, dictionary)


def write_subset(data_bin: str, size: int, source: str = "train") -> str:
    """Write split ``train<size>`` (the first ``size`` rows of ``source``); returns its name."""
    from fairseq.data import Dictionary, indexed_dataset

    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"QAT_TRAIN_SIZE / --size must be an integer >= 1, got {size!r}")
    name = subset_name(size)
    dict0 = os.path.join(data_bin, "input0", "dict.txt")
    if not os.path.isfile(dict0):
        raise DataError(f"{data_bin}: no input0/dict.txt; not a binarized sentence_prediction folder")
    with open(os.path.join(data_bin, ".subset.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        d = Dictionary.load(dict0)
        existing = _rows(os.path.join(data_bin, "input0", name), d)
        if existing is not None and len(existing) == size:
            return name
        src = _rows(os.path.join(data_bin, "input0", source), d)
        if src is None:
            raise DataError(f"{data_bin}: no input0/{source}.bin/.idx")
        if size >= len(src):
            raise ConfigError(f"QAT_TRAIN_SIZE={size}: {data_bin} has only {len(src)} {source} rows; "
                              "the low-resource split must be smaller")
        renames = []

        def write_bin(folder, dictionary, vocab_size):
            rows = _rows(os.path.join(data_bin, folder, source), dictionary)
            if rows is None:
                return False
            tmp = os.path.join(data_bin, folder, f".{name}.tmp")
            builder = indexed_dataset.make_builder(tmp + ".bin", impl="mmap", vocab_size=vocab_size)
            for i in range(size):
                builder.add_item(rows[i].to(torch.int32))
            builder.finalize(tmp + ".idx")
            renames.extend((tmp + ext, os.path.join(data_bin, folder, name + ext)) for ext in (".bin", ".idx"))
            return True

        for field in FIELDS:
            write_bin(field, d, len(d) + 1)
        label_txt = os.path.join(data_bin, "label", f"{source}.label")
        if os.path.isfile(label_txt):
            with open(label_txt, encoding="utf-8") as f:
                lines = f.read().splitlines()
            tmp = os.path.join(data_bin, "label", f".{name}.label.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines[:size]))
            renames.append((tmp, os.path.join(data_bin, "label", f"{name}.label")))
        else:
            label_dict = os.path.join(data_bin, "label", "dict.txt")
            if not os.path.isfile(label_dict) or not write_bin("label", Dictionary.load(label_dict), 256):
                raise DataError(f"{data_bin}: no label/{source}.label or label/{source}.bin/.idx")
        # input0 last: its presence with the right size marks a complete split
        renames.sort(key=lambda r: os.sep + "input0" + os.sep in r[1])
        for tmp, final in renames:
            os.replace(tmp, final)
    return name


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fairseq_qbert.augment.subset",
                                description=__doc__.partition("\n\n")[0])
    p.add_argument("data", metavar="DATA-bin")
    p.add_argument("--size", type=int, required=True, help="rows of the subset")
    p.add_argument("--source", default="train", help="split to take the rows from (train)")
    args = p.parse_args(argv)
    with cli_errors():
        print(write_subset(args.data, args.size, args.source))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
