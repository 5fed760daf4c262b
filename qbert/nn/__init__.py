"""Building blocks shared by the fairseq model and the fairseq-free rebuilds (export)."""
from .attention import self_attention

__all__ = ["self_attention"]
