"""Models of fairseq-qbert (registered with fairseq on import)."""
from . import quant_roberta  # noqa: F401
