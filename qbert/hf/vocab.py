"""The fairseq dictionary (and BPE / WordPiece files) of an HF tokenizer, and its id order.

fairseq's ``Dictionary`` always has ``<s> <pad> </s> <unk>`` at 0..3, reads the other
symbols from ``dict.txt`` in file order, and ``sentence_prediction``/``masked_lm`` then add
``<mask>`` unless ``dict.txt`` has it. ``fairseq_order`` lists, for each fairseq index, the
HF id it stands for: the HF tokenizer's bos/cls, pad, eos/sep and unk ids, then every other
HF id in increasing order, ``<mask>`` among them under the symbol ``<mask>``.

* RoBERTa (byte-level BPE): ``encoder.json`` (= the HF vocabulary) and ``vocab.bpe`` (= its
  merges) make fairseq's GPT-2 BPE produce the HF ids; ``dict.txt`` lists those ids as
  symbols. With HF's usual layout (``<s> <pad> </s> <unk>`` = 0..3) the order is the
  identity, so the ids are literally the HF tokenizer's.
* BERT (WordPiece): the symbols are the WordPiece tokens; ``vocab.txt`` is written in
  fairseq's order (fairseq index = line number), so a tokenizer built on it (the
  ``hf_tokenizer/`` folder, and ``qbert-preprocess-glue --bpe wordpiece``) gives fairseq's ids.
"""
import json
import os
from typing import Dict, List, Optional, Tuple

from qbert.errors import ConfigError

MASK = "<mask>"


def special_ids(tokenizer, family: str, source: str) -> Dict[str, int]:
    """{bos, pad, eos, unk, mask} HF ids of a transformers tokenizer (BERT: cls as bos, sep as eos)."""
    names = {"bos": "cls_token_id" if family == "bert" else "bos_token_id",
             "eos": "sep_token_id" if family == "bert" else "eos_token_id",
             "pad": "pad_token_id", "unk": "unk_token_id", "mask": "mask_token_id"}
    out = {}
    for role, attr in names.items():
        value = getattr(tokenizer, attr, None)
        if value is None:
            raise ConfigError(f"{source}: the tokenizer has no {attr.replace('_id', '')}; "
                              "fairseq's dictionary needs bos/cls, pad, eos/sep, unk and mask tokens")
        out[role] = int(value)
    if len(set(out.values())) != len(out):
        raise ConfigError(f"{source}: the tokenizer's special tokens share ids ({out})")
    return out


def fairseq_order(vocab_size: int, specials: Dict[str, int], source: str) -> List[int]:
    """HF id of every fairseq index (see module docstring)."""
    head = [specials["bos"], specials["pad"], specials["eos"], specials["unk"]]
    bad = [i for i in list(specials.values()) if not 0 <= i < vocab_size]
    if bad:
        raise ConfigError(f"{source}: special token id {bad[0]} is outside the model's vocabulary "
                          f"({vocab_size} rows)")
    taken = set(head)
    return head + [i for i in range(vocab_size) if i not in taken]


def dict_lines(order: List[int], specials: Dict[str, int], symbol_of) -> List[str]:
    """dict.txt lines for fairseq indices 4.. (``symbol_of(hf_id)``; the mask row is ``<mask>``)."""
    lines = []
    seen = set()
    for hf_id in order[4:]:
        sym = MASK if hf_id == specials["mask"] else symbol_of(hf_id)
        if not sym or any(c.isspace() for c in sym) or sym in seen:
            sym = f"madeupword{hf_id:05d}"  # fairseq's own name for rows no text maps to
        seen.add(sym)
        lines.append(f"{sym} 1")
    return lines


def bpe_files(tokenizer, source: str) -> Tuple[Dict[str, int], List[str]]:
    """(encoder.json dict, vocab.bpe merge lines) of a byte-level BPE tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"{source}: a fast (tokenizer.json) byte-level BPE tokenizer is needed")
    model = json.loads(backend.to_str())["model"]
    if model.get("type") != "BPE":
        raise ConfigError(f"{source}: RoBERTa tokenizer model is {model.get('type')!r}, expected byte-level BPE")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    if pre.get("add_prefix_space"):
        raise ConfigError(f"{source}: tokenizers with add_prefix_space=True are not supported "
                          "(fairseq's GPT-2 BPE adds no prefix space)")
    return dict(model["vocab"]), merges


def write_roberta_files(out_dir: str, tokenizer, order: List[int], specials: Dict[str, int], source: str):
    """dict.txt, encoder.json, vocab.bpe for fairseq's GPT-2 BPE + dictionary."""
    if order[:4] != [0, 1, 2, 3]:
        raise ConfigError(f"{source}: RoBERTa tokenizer must have <s> <pad> </s> <unk> at ids 0..3 "
                          f"(as roberta-base and fairseq), got {order[:4]}")
    encoder, merges = bpe_files(tokenizer, source)
    _write(os.path.join(out_dir, "dict.txt"), dict_lines(order, specials, str))
    with open(os.path.join(out_dir, "encoder.json"), "w", encoding="utf-8") as f:
        json.dump(encoder, f, ensure_ascii=False)
    _write(os.path.join(out_dir, "vocab.bpe"), ["#version: 0.2"] + merges)


def write_bert_files(out_dir: str, tokenizer, order: List[int], specials: Dict[str, int]) -> List[str]:
    """dict.txt and vocab.txt (fairseq order); returns the vocab in fairseq order."""
    id_to_token = {i: t for t, i in tokenizer.get_vocab().items()}
    tokens = [id_to_token.get(i, f"[unused_row_{i}]") for i in order]
    _write(os.path.join(out_dir, "dict.txt"), dict_lines(order, specials, id_to_token.get))
    _write(os.path.join(out_dir, "vocab.txt"), tokens)
    return tokens


def read_vocab_txt(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def read_dict_symbols(path: str) -> List[str]:
    """fairseq's symbols of dict.txt: the four specials, then its lines, then <mask> if absent."""
    symbols = ["<s>", "<pad>", "</s>", "<unk>"]
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                symbols.append(line.rsplit(" ", 1)[0] if " " in line else line)
    if MASK not in symbols:
        symbols.append(MASK)
    return symbols


def _write(path: str, lines: List[str]):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def bert_tokenizer_options(tokenizer) -> Dict[str, Optional[object]]:
    """Options to rebuild a WordPiece tokenizer over another vocab order."""
    opts = {"do_lower_case": getattr(tokenizer, "do_lower_case", True)}
    for name in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        opts[name] = str(getattr(tokenizer, name))
    for name in ("tokenize_chinese_chars", "strip_accents"):
        if hasattr(tokenizer, name):
            opts[name] = getattr(tokenizer, name)
    return opts
