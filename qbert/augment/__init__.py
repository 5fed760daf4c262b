"""TinyBERT-style data augmentation for distillation, the fairseq-free parts.

See :mod:`qbert.augment.core` (word selection, candidate sets, variant sampling) and
:mod:`qbert.augment.layout` (what an augmented data folder holds next to fairseq's
binaries, and how its per-row "original" flags are read). The masked-LM part and the
``qbert-augment`` console script are in :mod:`fairseq_qbert.augment`.
"""
from .core import (
    STOP_WORDS,
    check_params,
    is_replaceable,
    nearest_neighbours,
    row_rng,
    sample_variants,
    top_k_candidates,
    word_spans,
)
from .layout import AugmentMeta, load_original_flags, load_source_rows, read_meta

__all__ = [
    "STOP_WORDS", "check_params", "is_replaceable", "nearest_neighbours", "row_rng",
    "sample_variants", "top_k_candidates", "word_spans", "AugmentMeta",
    "load_original_flags", "load_source_rows", "read_meta",
]
