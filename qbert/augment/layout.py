"""What ``qbert-augment`` writes next to fairseq's binaries, and how it is read back.

An augmented data folder (AUG-bin) is an ordinary ``sentence_prediction`` folder
(``input0/``, ``input1/`` for pairs, ``label/``, each ``dict.txt`` copied from DATA-bin)
whose ``train`` split holds first the ``R`` original rows, unchanged and in their order
(row ``i`` of AUG-bin = row ``i`` of DATA-bin), then the augmented rows, grouped by the
row they come from. An augmented row keeps its source row's label: the label slot is
only a placeholder (KD ignores it, and ``--task sentence_prediction_aug`` keeps the
ground-truth loss off it). ``valid``/``test`` are copied unchanged. Next to them:

* ``augment/augment.json``: the parameters (N, K, p, seed, pretrained model, fields)
  and per augmented split ``rows`` and ``original_rows``;
* ``augment/train.original.npy``: one flag per row (uint8, 1 = original row): the marker
  that ``--task sentence_prediction_aug`` loads as ``sample["original"]``;
* ``augment/train.source.npy``: per row, the index of the original row it was made from
  (an original row points to itself).

With ``qbert-augment --out-split NAME`` the same rows go into DATA-bin itself as split
NAME (``augment/NAME.*``, ``augment.json`` lists every augmented split); nothing else changes.

Why a sidecar and not a fourth fairseq dataset: fairseq's ``sentence_prediction`` loads
exactly ``input0``, ``input1`` and ``label``, so any per-row marker needs a task that
loads it; a plain numpy array indexed by fairseq's row id (``sample["id"]``) is all that
task needs, and a stock ``sentence_prediction`` run can still read the folder.
"""
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from qbert.errors import DataError

META_DIR = "augment"
META_FILE = "augment.json"
FORMAT = "qbert-augment/1"


@dataclass
class AugmentMeta:
    n_aug: int
    top_k: int
    replace_prob: float
    seed: int
    pretrained: str
    fields: List[str]
    mlm_input: str
    candidates: str = "content"
    splits: Dict[str, Dict[str, int]] = field(default_factory=dict)
    format: str = FORMAT


def meta_path(data_dir: str) -> str:
    return os.path.join(data_dir, META_DIR, META_FILE)


def original_path(data_dir: str, split: str) -> str:
    return os.path.join(data_dir, META_DIR, f"{split}.original.npy")


def source_path(data_dir: str, split: str) -> str:
    return os.path.join(data_dir, META_DIR, f"{split}.source.npy")


def write_meta(data_dir: str, meta: AugmentMeta) -> None:
    os.makedirs(os.path.join(data_dir, META_DIR), exist_ok=True)
    with open(meta_path(data_dir), "w", encoding="utf-8") as f:
        json.dump(asdict(meta), f, indent=1, sort_keys=True)
        f.write("\n")


def write_rows(data_dir: str, split: str, source_rows: np.ndarray, original_rows: int) -> None:
    """The two per-row sidecars of ``split``: source row index and original flag."""
    os.makedirs(os.path.join(data_dir, META_DIR), exist_ok=True)
    source_rows = np.asarray(source_rows, dtype=np.int64)
    flags = (np.arange(len(source_rows)) < original_rows).astype(np.uint8)
    np.save(source_path(data_dir, split), source_rows, allow_pickle=False)
    np.save(original_path(data_dir, split), flags, allow_pickle=False)


def read_meta(data_dir: str) -> Optional[AugmentMeta]:
    """The folder's :class:`AugmentMeta`, or None when it is not an augmented folder."""
    path = meta_path(data_dir)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT!r}")
        return AugmentMeta(**raw)
    except Exception as e:  # noqa: BLE001 - any malformed file is one DataError
        raise DataError(f"{path}: not a qbert-augment description ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _load_array(path: str, n_rows: int, what: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing; the folder's {META_FILE} lists this split as augmented "
                        f"(re-run qbert-augment)")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: unreadable {what} ({type(e).__name__})") from None
    if arr.ndim != 1 or len(arr) != n_rows:
        raise DataError(f"{path}: {what} for {arr.shape[0] if arr.ndim else 0} rows but the split "
                        f"has {n_rows} rows; the binaries and the sidecar do not belong together")
    return arr


def load_original_flags(data_dir: str, split: str, n_rows: int) -> np.ndarray:
    """Per-row bool flags of ``split``: True = original row.

    A folder that qbert-augment did not write, or a split it did not augment, is all
    original. A listed split whose flags are missing or of another length is a DataError.
    """
    meta = read_meta(data_dir)
    if meta is None or split not in meta.splits:
        return np.ones(n_rows, dtype=bool)
    return _load_array(original_path(data_dir, split), n_rows, "original flags").astype(bool)


def load_source_rows(data_dir: str, split: str, n_rows: int) -> np.ndarray:
    """Per-row index of the original row each row was made from (identity if not augmented)."""
    meta = read_meta(data_dir)
    if meta is None or split not in meta.splits:
        return np.arange(n_rows, dtype=np.int64)
    return _load_array(source_path(data_dir, split), n_rows, "source rows").astype(np.int64)
