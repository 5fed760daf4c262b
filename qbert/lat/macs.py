"""Analytic cost (multiply-accumulates) of a length-adaptive encoder.

Layer ``i`` with ``n_in`` tokens in and ``n_out = min(l_i, n_in)`` tokens after selection,
hidden size ``d`` and FFN size ``d_ff`` costs::

    MACs_i = 4 n_in d^2        (q, k, v and output projections)
           + 2 n_in^2 d        (QK^T and attention x V)
           + 2 n_out d d_ff    (fc1 and fc2 on the kept tokens)

(embeddings, LayerNorm, softmax and the classification head are not counted). For 6 layers
of d = 384, d_ff = 1536 at 384 tokens this is 14 * 384^3 * 6 = 4.756 GMACs, the "GFLOPS"
column of the QuaLA-MiniLM table (Intel, measured with torchprofile, which counts MACs).
"""
from collections import Counter
from typing import Iterable, Optional, Sequence


def layer_macs(n_in: int, n_out: int, d: int, d_ff: int) -> int:
    return 4 * n_in * d * d + 2 * n_in * n_in * d + 2 * n_out * d * d_ff


def encoder_macs(num_tokens: int, num_layers: int, d: int, d_ff: int,
                 length_config: Optional[Sequence[int]] = None) -> int:
    """MACs of one sentence of ``num_tokens`` tokens through the encoder (no config = all kept)."""
    total, n_in = 0, int(num_tokens)
    for i in range(num_layers):
        n_out = n_in if length_config is None else min(int(length_config[i]), n_in)
        total += layer_macs(n_in, n_out, d, d_ff)
        n_in = n_out
    return total


def mean_encoder_macs(lengths: Iterable[int], num_layers: int, d: int, d_ff: int,
                      length_config: Optional[Sequence[int]] = None) -> float:
    """Mean MACs per sentence over sentences of the given (real, unpadded) lengths."""
    counts = Counter(int(n) for n in lengths)
    total = sum(counts.values())
    if not total:
        return 0.0
    return sum(c * encoder_macs(n, num_layers, d, d_ff, length_config)
               for n, c in counts.items()) / total
