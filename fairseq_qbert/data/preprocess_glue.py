"""Turn one GLUE task folder (real GLUE or mini-GLUE) into fairseq binaries.

Does what fairseq's ``examples/roberta/preprocess_GLUE_tasks.sh`` does, in Python:
strip headers (CoLA train/dev have none), drop malformed QQP rows, cut the input and
label columns (see ``glue_tasks.py``), tokenize, and binarize with fairseq's own
``fairseq_cli.preprocess`` (``--only-source --srcdict``). The result is what the stock
``sentence_prediction`` task reads::

    DEST/input0/{dict.txt,train,valid[,valid1],test[,test1].{bin,idx}}
    DEST/input1/...                      (sentence-pair tasks)
    DEST/label/{dict.txt,train,valid[,valid1]}.{bin,idx}   (classification)
    DEST/label/{train,valid}.label       (STS-B: score / 5, as fairseq's awk writes it)
    DEST/processed/                      (intermediate text files, for inspection)

Two tokenizers, same code otherwise:

* ``--bpe gpt2 --encoder-json encoder.json --vocab-bpe vocab.bpe --dict dict.txt``:
  fairseq's GPT-2 BPE (``fairseq.data.encoders.gpt2_bpe_utils.get_encoder``), writing
  BPE ids as ``examples/roberta/multiprocessing_bpe_encoder.py --keep-empty`` does, and
  RoBERTa's ``dict.txt`` (use this for real GLUE and pretrained RoBERTa).
* ``--bpe wordpiece --vocab vocab.txt --dict dict.txt [--cased]``: BERT's WordPiece (the
  ``tokenizers`` library, from the ``hf`` extra), for BERT models imported with
  ``qbert-import-hf`` (its ``vocab.txt`` and ``dict.txt``). The binarized layout is BERT's
  ``[CLS] A [SEP] B [SEP]`` when trained with ``--init-token 0`` and *no*
  ``--separator-token``; ``quant_bert`` derives the segment ids from it.
* ``--bpe whitespace`` (default): split on whitespace; the dictionary is built from the
  training split (input0 and input1) with fairseq's ``Dictionary`` and reused for
  dev/test. Needs no download (mini-GLUE). ``--dict`` reuses an existing dictionary.

Usage::

    python -m fairseq_qbert.data.preprocess_glue --glue-dir glue_data --task RTE \\
        --dest-dir RTE-bin [--bpe whitespace | --bpe gpt2 --encoder-json ... --vocab-bpe ... --dict ...]
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from typing import Iterable, List, Optional, Sequence

from qbert.data.glue_tasks import TASK_NAMES, UnknownTaskError, check_label_symbols, get_task
from qbert.errors import DataError

logger = logging.getLogger(__name__)

BPE_CHOICES = ("whitespace", "gpt2", "wordpiece")


class PreprocessError(DataError):
    """A one-line, user-facing problem with the inputs (raised before any work)."""


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------


def check_inputs(glue_dir: str, task: str, bpe: str = "whitespace", encoder_json: Optional[str] = None,
                 vocab_bpe: Optional[str] = None, dict_path: Optional[str] = None,
                 vocab_txt: Optional[str] = None):
    """Raise PreprocessError for the first problem found; returns the TaskSpec."""
    try:
        spec = get_task(task)
    except UnknownTaskError as e:
        raise PreprocessError(str(e)) from None
    if bpe not in BPE_CHOICES:
        raise PreprocessError(f"unknown --bpe {bpe!r}; expected one of: {', '.join(BPE_CHOICES)}")
    if not glue_dir or not os.path.isdir(glue_dir):
        raise PreprocessError(
            f"GLUE data folder {glue_dir!r} not found; expected a folder holding {spec.name}/train.tsv "
            f"(from download_glue_data.py or qbert-mini-glue --out-dir)"
        )
    task_dir = os.path.join(glue_dir, spec.name)
    if not os.path.isdir(task_dir):
        raise PreprocessError(f"task folder {task_dir!r} not found; expected GLUE's {spec.name}/ with "
                              f"{', '.join(s + '.tsv' for s in spec.splits)}")
    for split in (spec.train_split,) + spec.dev_splits:
        path = os.path.join(task_dir, f"{split}.tsv")
        if not os.path.isfile(path):
            raise PreprocessError(f"{path!r} not found; {spec.name} needs "
                                  f"{', '.join(s + '.tsv' for s in (spec.train_split,) + spec.dev_splits)}")
    if bpe == "gpt2":
        given = {"--encoder-json": encoder_json, "--vocab-bpe": vocab_bpe, "--dict": dict_path}
        missing = [k for k, v in given.items() if not v]
        if missing:
            raise PreprocessError(
                f"--bpe gpt2 needs {' '.join(missing)}; expected GPT-2 BPE encoder.json, vocab.bpe and "
                f"RoBERTa's dict.txt (https://dl.fbaipublicfiles.com/fairseq/gpt2_bpe/)"
            )
        for k, v in given.items():
            if not os.path.isfile(v):
                raise PreprocessError(f"{k} file {v!r} not found")
    elif bpe == "wordpiece":
        given = {"--vocab": vocab_txt, "--dict": dict_path}
        missing = [k for k, v in given.items() if not v]
        if missing:
            raise PreprocessError(f"--bpe wordpiece needs {' '.join(missing)}; expected BERT's vocab.txt and "
                                  "dict.txt as qbert-import-hf writes them")
        for k, v in given.items():
            if not os.path.isfile(v):
                raise PreprocessError(f"{k} file {v!r} not found")
    elif dict_path and not os.path.isfile(dict_path):
        raise PreprocessError(f"--dict file {dict_path!r} not found")
    return spec


# ----------------------------------------------------------------------------------------
# column extraction (header strip, QQP filter, cut -f)
# ----------------------------------------------------------------------------------------


def _read_lines(path: str) -> List[str]:
    # split on "\n" only, like cut/awk (str.splitlines would also split on \x1c, \u2028 ...)
    with open(path, "r", encoding="utf-8", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _cut(line: str, col: int) -> str:
    """``cut -f COL``: a line without any tab is printed whole; a missing field is empty."""
    if "\t" not in line:
        return line
    fields = line.split("\t")
    return fields[col - 1] if col <= len(fields) else ""


def extract_split(spec, split: str, tsv_path: str):
    """-> (list of input columns (each a list of str), labels or None)."""
    lines = _read_lines(tsv_path)
    if spec.has_header(split):
        lines = lines[1:]
    if spec.filter_num_fields and not spec.is_test(split):
        lines = [ln for ln in lines if len(ln.split("\t")) == spec.filter_num_fields]
    inputs = [[_cut(ln, c) for ln in lines] for c in spec.columns(split)]
    col = spec.label_col(split)
    labels = None if col is None else [_cut(ln, col) for ln in lines]
    return inputs, labels


# ----------------------------------------------------------------------------------------
# tokenizers
# ----------------------------------------------------------------------------------------

_GPT2 = None


def _gpt2_init(encoder_json, vocab_bpe):
    global _GPT2
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    _GPT2 = get_encoder(encoder_json, vocab_bpe)


def _gpt2_encode(line: str) -> str:
    # as examples/roberta/multiprocessing_bpe_encoder.py (--keep-empty): strip, encode, ids
    return " ".join(map(str, _GPT2.encode(line.strip())))


def _whitespace_encode(line: str) -> str:
    return " ".join(line.split())


def wordpiece_tokenizer(vocab_txt: str, lowercase: bool = True):
    """BERT's WordPiece (``tokenizers`` library) over ``vocab_txt``."""
    from qbert.hf.compat import import_tokenizers

    try:
        return import_tokenizers().BertWordPieceTokenizer(vocab_txt, lowercase=lowercase)
    except Exception as e:  # noqa: BLE001 - unreadable vocab
        raise PreprocessError(f"--vocab {vocab_txt}: cannot build a WordPiece tokenizer ({e})") from None


def tokenize_lines(lines: Sequence[str], bpe: str, encoder_json=None, vocab_bpe=None,
                   workers: int = 1, vocab_txt=None, lowercase: bool = True) -> List[str]:
    if bpe == "whitespace":
        return [_whitespace_encode(x) for x in lines]
    if bpe == "wordpiece":
        tok = wordpiece_tokenizer(vocab_txt, lowercase)
        return [" ".join(e.tokens) for e in tok.encode_batch(list(lines), add_special_tokens=False)]
    if workers > 1 and len(lines) > 10000:
        from multiprocessing import Pool

        with Pool(workers, initializer=_gpt2_init, initargs=(encoder_json, vocab_bpe)) as pool:
            return list(pool.imap(_gpt2_encode, lines, chunksize=1000))
    _gpt2_init(encoder_json, vocab_bpe)
    return [_gpt2_encode(x) for x in lines]


# ----------------------------------------------------------------------------------------
# fairseq binarization
# ----------------------------------------------------------------------------------------


def _write_lines(path: str, lines: Iterable[str]):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def build_whitespace_dict(token_files: Sequence[str], out_path: str):
    """fairseq Dictionary over the given (training) token files, finalized like
    fairseq-preprocess does by default (no threshold, padding factor 8)."""
    from fairseq.data import Dictionary
    from fairseq.tokenizer import tokenize_line

    d = Dictionary()
    for path in token_files:
        Dictionary.add_file_to_dictionary(path, d, tokenize_line, 1)
    d.finalize(threshold=-1, nwords=-1, padding_factor=8)
    d.save(out_path)
    return d


def fairseq_preprocess(argv: List[str]):
    """Run fairseq-preprocess in-process (saves ~3 s of import per call)."""
    from fairseq import options
    from fairseq_cli import preprocess as fs_pre

    parser = options.get_preprocessing_parser()
    args = parser.parse_args(argv)
    fs_logger = logging.getLogger("fairseq_cli.preprocess")
    before = list(fs_logger.handlers)
    try:
        fs_pre.main(args)
    finally:
        # fairseq adds a FileHandler (DEST/preprocess.log) on every call; drop it again
        for h in list(fs_logger.handlers):
            if h not in before:
                fs_logger.removeHandler(h)
                h.close()


def _awk_div5(value: str, scale: float) -> str:
    """``awk '{print $1 / 5.0}'``: awk prints numbers with OFMT=%.6g (integers plainly)."""
    try:
        x = float(value.split()[0]) / scale if value.split() else 0.0
    except ValueError:
        x = 0.0
    return format(x, ".6g")


def preprocess_task(glue_dir: str, task: str, dest_dir: str, bpe: str = "whitespace",
                    encoder_json: Optional[str] = None, vocab_bpe: Optional[str] = None,
                    dict_path: Optional[str] = None, workers: int = 1, quiet: bool = True,
                    vocab_txt: Optional[str] = None, lowercase: bool = True) -> str:
    spec = check_inputs(glue_dir, task, bpe, encoder_json, vocab_bpe, dict_path, vocab_txt)
    task_dir = os.path.join(glue_dir, spec.name)
    splits = [s for s in spec.splits if os.path.isfile(os.path.join(task_dir, f"{s}.tsv"))]
    missing_tests = [s for s in spec.test_splits if s not in splits]
    if missing_tests:
        logger.warning("%s: no %s; binarizing without it", spec.name,
                       ", ".join(s + ".tsv" for s in missing_tests))

    if quiet:
        for name in ("fairseq_cli.preprocess", "fairseq.binarizer", "fairseq.data.indexed_dataset"):
            logging.getLogger(name).setLevel(logging.WARNING)

    # fresh output (fairseq's script does rm -rf "$TASK-bin")
    os.makedirs(dest_dir, exist_ok=True)
    for sub in ("input0", "input1", "label", "processed"):
        shutil.rmtree(os.path.join(dest_dir, sub), ignore_errors=True)
    proc = os.path.join(dest_dir, "processed")
    os.makedirs(proc)

    # 1) cut columns, 2) tokenize
    label_lines = {}
    for split in splits:
        inputs, labels = extract_split(spec, split, os.path.join(task_dir, f"{split}.tsv"))
        for k, col in enumerate(inputs):
            _write_lines(os.path.join(proc, f"{split}.raw.input{k}"), col)
            toks = tokenize_lines(col, bpe, encoder_json, vocab_bpe, workers, vocab_txt, lowercase)
            _write_lines(os.path.join(proc, f"{split}.input{k}"), toks)
        if labels is not None:
            label_lines[split] = labels
            _write_lines(os.path.join(proc, f"{split}.label"), labels)

    # 3) input dictionary
    if dict_path:
        src_dict = dict_path
    else:
        src_dict = os.path.join(proc, "dict.txt")
        build_whitespace_dict(
            [os.path.join(proc, f"{spec.train_split}.input{k}") for k in range(spec.num_inputs)], src_dict
        )

    def prefs(names, lang):
        present = [n for n in names if n in splits]
        return ",".join(os.path.join(proc, f"{n}.{lang}") for n in present)

    workers_arg = ["--workers", str(max(1, workers))]
    # 4) binarize inputs
    for k in range(spec.num_inputs):
        lang = f"input{k}"
        argv = ["--only-source", "--trainpref", os.path.join(proc, f"{spec.train_split}.{lang}"),
                "--validpref", prefs(spec.dev_splits, lang),
                "--destdir", os.path.join(dest_dir, lang), "--srcdict", src_dict] + workers_arg
        test_pref = prefs(spec.test_splits, lang)
        if test_pref:
            argv += ["--testpref", test_pref]
        fairseq_preprocess(argv)

    # 5) labels
    label_dir = os.path.join(dest_dir, "label")
    if spec.regression:
        os.makedirs(label_dir, exist_ok=True)
        # fairseq: train.label and valid.label only (dev_matched-style second dev sets have none)
        for split in (spec.train_split, spec.dev_splits[0]):
            out = os.path.join(label_dir, f"{spec.fairseq_split(split)}.label")
            _write_lines(out, (_awk_div5(v, spec.regression_scale) for v in label_lines[split]))
    else:
        fairseq_preprocess(["--only-source", "--trainpref", os.path.join(proc, f"{spec.train_split}.label"),
                            "--validpref", prefs(spec.dev_splits, "label"),
                            "--destdir", label_dir] + workers_arg)
        try:
            check_label_symbols(spec.name, _label_symbols(os.path.join(label_dir, "dict.txt")))
        except ValueError as e:
            raise PreprocessError(str(e)) from None
    return dest_dir


def _label_symbols(dict_txt: str) -> List[str]:
    out = []
    with open(dict_txt, encoding="utf-8") as f:
        for line in f:
            sym = line.rstrip("\n").rsplit(" ", 1)[0]
            if not sym.startswith("madeupword"):
                out.append(sym)
    return out


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qbert-preprocess-glue",
        description="Binarize one GLUE task (real or mini-GLUE) for fairseq's sentence_prediction task.",
    )
    parser.add_argument("--glue-dir", required=True, help="GLUE data folder (holding TASK/train.tsv ...)")
    parser.add_argument("--task", required=True, help=f"one of {', '.join(TASK_NAMES)}")
    parser.add_argument("--dest-dir", "--destdir", dest="dest_dir", default=None,
                        help="output folder (default: GLUE_DIR/TASK-bin)")
    parser.add_argument("--bpe", default="whitespace",
                        help="whitespace (default; mini-GLUE), gpt2 (real GLUE, RoBERTa) or wordpiece (BERT)")
    parser.add_argument("--vocab", dest="vocab_txt", default=None, help="BERT vocab.txt (--bpe wordpiece)")
    parser.add_argument("--cased", action="store_true", help="--bpe wordpiece: do not lowercase (cased BERT)")
    parser.add_argument("--encoder-json", default=None, help="GPT-2 BPE encoder.json (--bpe gpt2)")
    parser.add_argument("--vocab-bpe", default=None, help="GPT-2 BPE vocab.bpe (--bpe gpt2)")
    parser.add_argument("--dict", dest="dict_path", default=None,
                        help="fairseq dict.txt (required for gpt2: RoBERTa's; optional for whitespace)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="show fairseq-preprocess logging")
    args = parser.parse_args(argv)
    try:
        spec = check_inputs(args.glue_dir, args.task, args.bpe, args.encoder_json, args.vocab_bpe, args.dict_path,
                            args.vocab_txt)
        dest = args.dest_dir or os.path.join(args.glue_dir, f"{spec.name}-bin")
        preprocess_task(args.glue_dir, spec.name, dest, args.bpe, args.encoder_json, args.vocab_bpe,
                        args.dict_path, args.workers, quiet=not args.verbose, vocab_txt=args.vocab_txt,
                        lowercase=not args.cased)
    except PreprocessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{spec.name}: wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
