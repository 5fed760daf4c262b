"""Token selection of the Length-Adaptive Transformer (PoWER-BERT significance).

PoWER-BERT (Goyal et al. 2020, arXiv 2001.08950) scores token ``j`` by the attention it
receives, summed over heads ``h`` and (non-padding) queries ``i``::

    significance_j = sum_h sum_i A[h, i, j]

Padding tokens score zero and are dropped before any real token; ``<s>`` (position 0) is
always kept; of the others the ``k - 1`` most significant are kept. The kept positions are
returned in their original order, so a configuration keeping every token changes nothing.
"""
from typing import Optional

import torch
from torch import Tensor


def significance(probs: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
    """(B, S) attention received per key from ``probs`` of shape (B, T, S) (averaged or
    summed over heads: the ranking is the same) or (B, H, T, S). Padded queries (rows) do not
    vote and padded keys score 0."""
    if probs.dim() == 4:
        probs = probs.sum(dim=1)
    if padding_mask is not None:
        probs = probs.masked_fill(padding_mask.unsqueeze(-1), 0.0)
    scores = probs.sum(dim=1)
    if padding_mask is not None:
        scores = scores.masked_fill(padding_mask, 0.0)
    return scores


def select_tokens(scores: Tensor, keep: int, padding_mask: Optional[Tensor] = None) -> Tensor:
    """(B, k) sorted positions to keep, ``k = min(keep, S)``: position 0 (``<s>``) and the
    ``k - 1`` highest-scoring others; padding positions come last whatever their score."""
    bsz, length = scores.shape
    keep = max(1, min(int(keep), length))
    ranked = scores[:, 1:].float()
    if padding_mask is not None:
        ranked = ranked.masked_fill(padding_mask[:, 1:], float("-inf"))
    others = ranked.topk(keep - 1, dim=1).indices + 1
    first = torch.zeros(bsz, 1, dtype=others.dtype, device=others.device)
    return torch.cat([first, others], dim=1).sort(dim=1).values
