"""Criterions of fairseq-qbert (registered with fairseq on import)."""
from . import (
    kd_sentence_prediction,  # noqa: F401  (registers kd_sentence_prediction)
    length_drop,  # noqa: F401  (registers length_drop_sentence_prediction)
)
