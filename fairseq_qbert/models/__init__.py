"""Models of fairseq-qbert (registered with fairseq on import)."""
from . import (
    quant_bert,  # noqa: F401  (quant_bert* archs on the quant_roberta model)
    quant_roberta,  # noqa: F401
)
