"""Toy data with alphabetic words (TinyBERT replaces only those) and a tiny masked LM.

* ``aug_data(kind)``: binarized ``sentence_prediction`` folders, ``cls`` (single sentences,
  2 classes, label/*.bin) and ``reg_pairs`` (pairs, float targets, label/*.label), built
  with fairseq's own preprocessing in-process and cached per pytest process.
* ``masked_lm(data)``: a randomly initialised 2 x 64 RoBERTa built by fairseq's
  ``masked_lm`` task on the data's dictionary, saved the way fairseq's trainer does, with
  ``dict.txt`` next to it (the ``roberta.base/`` layout).
"""
import random
import shutil
import sys
import zlib
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import kd_fixtures  # noqa: E402
import torch  # noqa: E402
from scratch import scratch_dir  # noqa: E402

WORDS = ["apple", "river", "stone", "green", "quick", "music", "table", "light", "cloud", "paper",
         "tiger", "ocean", "dance", "bread", "chair", "plant", "smile", "storm", "glass", "heart"]
STOP = ["the", "not", "and", "is"]
_CACHE = {}


def _write_raw(raw: Path, kind: str):
    rng = random.Random(7 if kind == "cls" else 8)
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 24), ("valid", 16)):
        a_lines, b_lines, labels = [], [], []
        for _ in range(n):
            a = [rng.choice(WORDS + STOP) for _ in range(rng.randint(3, 9))] + ["."]
            b = [rng.choice(WORDS + STOP) for _ in range(rng.randint(2, 6))]
            a_lines.append(" ".join(a))
            b_lines.append(" ".join(b))
            if kind == "cls":
                labels.append(str(int("not" in a)))
            else:
                labels.append(f"{len(set(a) & set(b)) / 3:.3f}")
        (raw / f"{split}.input0").write_text("\n".join(a_lines) + "\n")
        (raw / f"{split}.input1").write_text("\n".join(b_lines) + "\n")
        (raw / f"{split}.label").write_text("\n".join(labels) + "\n")


def aug_data(kind: str = "cls") -> str:
    key = "data_" + kind
    if key not in _CACHE:
        root = scratch_dir("augment")
        raw, out = root / f"raw_{kind}", root / f"bin_{kind}"
        _write_raw(raw, kind)
        common = ["--only-source", "--workers", "1"]
        kd_fixtures._preprocess([*common, "--trainpref", str(raw / "train.input0"), "--validpref",
                                 str(raw / "valid.input0"), "--destdir", str(out / "input0")])
        if kind == "cls":
            kd_fixtures._preprocess([*common, "--trainpref", str(raw / "train.label"), "--validpref",
                                     str(raw / "valid.label"), "--destdir", str(out / "label")])
        else:
            kd_fixtures._preprocess([*common, "--trainpref", str(raw / "train.input1"),
                                     "--validpref", str(raw / "valid.input1"), "--destdir",
                                     str(out / "input1"), "--srcdict", str(out / "input0" / "dict.txt")])
            (out / "label").mkdir(exist_ok=True)
            for split in ("train", "valid"):
                shutil.copy(raw / f"{split}.label", out / "label" / f"{split}.label")
        _CACHE[key] = str(out)
    return _CACHE[key]


def masked_lm(data: str, name: str = "mlm", seed: int = 3) -> str:
    """``<scratch>/<name>/model.pt`` (+ ``dict.txt``): a random masked LM on ``data``'s dictionary."""
    key = f"mlm_{name}:{data}"
    if key not in _CACHE:
        root = scratch_dir("augment") / f"{name}_{zlib.crc32(data.encode()):08x}"
        root.mkdir(exist_ok=True)
        shutil.copy(Path(data) / "input0" / "dict.txt", root / "dict.txt")
        torch.manual_seed(seed)
        cfg, _, model, _ = kd_fixtures.build(str(root), ["--task", "masked_lm", "--criterion", "masked_lm",
                                                        *kd_fixtures.ROBERTA_TINY], criterion=False)
        _CACHE[key] = kd_fixtures.save_checkpoint(root / "model.pt", cfg, model)
    return _CACHE[key]
