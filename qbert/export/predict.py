"""``qbert-predict DIR --input FILE.tsv``: predictions of an exported model on raw sentences.

Runs on ONNX Runtime, numpy and the tokenizer only -- no fairseq, no torch import. Each
input line is one example: one sentence, or two tab-separated sentences for pair tasks
(the export's ``num_inputs``). They are tokenized as the training data was (``whitespace``:
split on whitespace; ``gpt2``: GPT-2's byte-level BPE with the export's encoder.json and
vocab.bpe; ``wordpiece``: BERT's WordPiece over the export's vocab.txt, with the
``tokenizers`` library as ``qbert-preprocess-glue --bpe wordpiece`` does), mapped through
fairseq's dictionary (``dict.txt``; <s>=0, <pad>=1, </s>=2, <unk>=3) and framed as fairseq's
``sentence_prediction`` task does with the checkpoint's ``--init-token`` I and
``--separator-token`` S (``files`` in config.json): ``I A </s> [S B </s>]`` -- RoBERTa's
``<s> A </s> </s> B </s>`` (I=0, S=2), BERT's ``[CLS] A [SEP] B [SEP]`` (I=0, no S) --
cut to the model's positions. The output TSV
has the predicted label and one probability per label (classification) or the score
(regression).
"""
import argparse
import json
import os
import sys
from functools import lru_cache
from typing import Dict, List, Optional, Sequence

import numpy as np

from qbert.errors import ConfigError, DataError, cli_errors

from .format import read_config

BPE_CHOICES = ("whitespace", "gpt2", "wordpiece")
BOS, PAD, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


class Dictionary:
    """fairseq's ``Dictionary.load`` order: the 4 specials, dict.txt's symbols, then <mask>."""

    def __init__(self, path: str):
        self.symbols = list(SPECIALS)
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                sym = line.split(" ")[0]
                if sym not in self.symbols:
                    self.symbols.append(sym)
        if "<mask>" not in self.symbols:  # sentence_prediction adds it
            self.symbols.append("<mask>")
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def encode(self, tokens: Sequence[str]) -> List[int]:
        return [self.index.get(t, UNK) for t in tokens] + [EOS]


def read_labels(path: str) -> List[str]:
    """Class i's label: the i-th symbol of the label dictionary (fairseq's order)."""
    with open(path, encoding="utf-8") as f:
        return [line.split(" ")[0] for line in f.read().split("\n") if line.strip()]


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class GPT2BPE:
    """GPT-2's byte-level BPE (Radford et al. 2019): split into pre-tokens, map bytes to
    characters, merge the lowest-ranked adjacent pair until none is left, look up ids."""

    PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

    def __init__(self, encoder_json: str, vocab_bpe: str):
        try:
            import regex
        except ImportError:
            raise ConfigError("GPT-2 BPE needs the 'regex' package (pip install regex)") from None
        with open(encoder_json, encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(vocab_bpe, encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().split("\n")[1:] if line.strip()]
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_chars = _bytes_to_unicode()
        self.pattern = regex.compile(self.PATTERN)
        self.bpe = lru_cache(maxsize=65536)(self._bpe)

    def _bpe(self, token: str) -> tuple:
        parts = list(token)
        while len(parts) > 1:
            pairs = list(zip(parts, parts[1:], strict=False))
            rank = min(self.ranks.get(pair, float("inf")) for pair in pairs)
            if rank == float("inf"):
                break
            first, second = next(pair for pair in pairs if self.ranks.get(pair) == rank)
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)

    def encode(self, text: str) -> List[str]:
        ids = []
        for piece in self.pattern.findall(text):
            chars = "".join(self.byte_chars[b] for b in piece.encode("utf-8"))
            ids.extend(str(self.encoder[p]) for p in self.bpe(chars))
        return ids


class WordPiece:
    """BERT's WordPiece (``tokenizers.BertWordPieceTokenizer`` over vocab.txt, whose line i
    is fairseq index i): the word pieces of a sentence, without special tokens."""

    def __init__(self, vocab_txt: str, lowercase: bool = True):
        try:
            import tokenizers
        except ImportError:
            raise ConfigError("--bpe wordpiece needs the 'tokenizers' package (pip install tokenizers, "
                              "or the plugin's [hf] extra)") from None
        try:
            self.tokenizer = tokenizers.BertWordPieceTokenizer(vocab_txt, lowercase=lowercase)
        except Exception as e:  # noqa: BLE001 - unreadable vocab
            raise DataError(f"{vocab_txt}: cannot build a WordPiece tokenizer ({e})") from None

    def encode(self, text: str) -> List[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens


class Tokenizer:
    """Raw sentence(s) -> fairseq token ids, as the export's training data was made."""

    def __init__(self, export_dir: str, config: Dict):
        files = config.get("files", {})
        dict_name = files.get("dictionary")
        if not dict_name or not os.path.isfile(os.path.join(export_dir, dict_name)):
            raise DataError(f"{export_dir}: the export has no dictionary (export it with --data DATA-bin)")
        self.dictionary = Dictionary(os.path.join(export_dir, dict_name))
        self.bpe_name = files.get("bpe", "whitespace")
        if self.bpe_name not in BPE_CHOICES:
            raise DataError(f"{export_dir}: unknown BPE {self.bpe_name!r} in config.json")
        self.bpe = None
        if self.bpe_name == "gpt2":
            self.bpe = GPT2BPE(os.path.join(export_dir, files["encoder_json"]),
                               os.path.join(export_dir, files["vocab_bpe"]))
        elif self.bpe_name == "wordpiece":
            if not files.get("vocab") or not os.path.isfile(os.path.join(export_dir, files["vocab"])):
                raise DataError(f"{export_dir}: a wordpiece export needs its vocab.txt (export it with --vocab)")
            self.bpe = WordPiece(os.path.join(export_dir, files["vocab"]), bool(files.get("lowercase", True)))
        self.max_positions = int(config["arch"]["max_positions"])
        # sentence_prediction's framing: [init] A </s> ([sep] B </s>); None = not added
        self.init_token = files.get("init_token", BOS)
        self.separator_token = files.get("separator_token", EOS)

    def tokens(self, sentence: str) -> List[str]:
        if self.bpe is None:
            return sentence.split()
        return self.bpe.encode(sentence.strip())

    def encode(self, columns: Sequence[str]) -> List[int]:
        ids = ([] if self.init_token is None else [self.init_token]) + self.dictionary.encode(self.tokens(columns[0]))
        for extra in columns[1:]:
            ids += ([] if self.separator_token is None else [self.separator_token]) + \
                self.dictionary.encode(self.tokens(extra))
        return ids[:self.max_positions]


def read_inputs(path: str, num_inputs: int) -> List[List[str]]:
    """Rows of the input TSV, each with exactly ``num_inputs`` columns (DataError otherwise)."""
    if not os.path.isfile(path):
        raise DataError(f"--input {path}: no such file")
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(f"--input {path}: the file is empty (one example per line expected)")
    rows = []
    for number, line in enumerate(lines, 1):
        cols = line.rstrip("\r").split("\t")
        if len(cols) < num_inputs:
            raise DataError(f"--input {path}: line {number} has {len(cols)} column(s) but the model "
                            f"takes {num_inputs} tab-separated sentences (a column is missing)")
        rows.append(cols[:num_inputs])
    return rows


def batches(ids: List[List[int]], batch_size: int):
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        width = max(len(x) for x in chunk)
        out = np.full((len(chunk), width), PAD, dtype=np.int64)
        for i, x in enumerate(chunk):
            out[i, :len(x)] = x
        yield out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict(export_dir: str, rows: List[List[str]], batch_size: int = 32,
            threads: Optional[int] = None) -> List[List[str]]:
    """Output rows (header first) for the input ``rows``."""
    from .runtime import OnnxClassifier

    model = OnnxClassifier(export_dir, threads)
    config = model.config
    tokenizer = Tokenizer(export_dir, config)
    arch = config["arch"]
    labels_file = config.get("files", {}).get("labels")
    labels = read_labels(os.path.join(export_dir, labels_file)) if labels_file else []
    # fairseq-preprocess pads the label dictionary with madeupword symbols: keep the classes
    labels = labels[:arch["num_classes"]] + [str(i) for i in range(len(labels), arch["num_classes"])]
    ids = [tokenizer.encode(r) for r in rows]
    logits = np.concatenate([model.logits(b) for b in batches(ids, max(1, batch_size))])
    if arch.get("regression"):
        return [["score"]] + [[f"{v:.6f}"] for v in logits[:, 0]]
    probs = softmax(logits.astype(np.float64))
    out = [["label"] + [f"prob_{label}" for label in labels]]
    for p in probs:
        out.append([labels[int(p.argmax())]] + [f"{v:.6f}" for v in p])
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="qbert-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", metavar="DIR", help="a qbert-export output folder")
    parser.add_argument("--input", required=True, metavar="FILE.tsv",
                        help="one example per line: a sentence, or two tab-separated sentences")
    parser.add_argument("--output", default="-", metavar="FILE.tsv", help="where to write (default stdout)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="ORT intra-op threads")
    args = parser.parse_args(argv)
    with cli_errors():
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
        config = read_config(args.export_dir)
        rows = read_inputs(args.input, int(config.get("files", {}).get("num_inputs", 1)))
        lengths = config["arch"].get("length_config")
        if lengths:  # baked into model.onnx by qbert-export --length-config
            print("qbert-predict: length configuration (" + ",".join(str(int(v)) for v in lengths) + ")",
                  file=sys.stderr)
        out = predict(args.export_dir, rows, args.batch_size, args.threads)
    text = "".join("\t".join(r) + "\n" for r in out)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


def cli_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli_main()
