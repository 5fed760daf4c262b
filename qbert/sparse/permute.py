"""Offline input-channel permutation search (ASP / Pool & Yu 2021, greedy channel swaps).

Permuting a weight's input channels (columns) changes which weights share a group of 4 and
so how much magnitude the 2:4 mask keeps. The network's function is unchanged when the
producing layer's output channels (rows, bias) are permuted the same way
(:func:`permute_pair`). Search (ASP's "channel swap", deterministic): compute the gain of
swapping every pair of columns in different groups; apply the best non-conflicting swaps
(each group at most once per round) in decreasing order of gain; repeat until no swap
gains or ``max_rounds``. ``block`` restricts swaps to blocks of that many channels (the
heads of an attention output projection, whose channels may not cross heads; or to bound
the cost on wide layers: one round costs out x in x block operations).
"""
from typing import Optional

import torch

from qbert.errors import ConfigError

from .masks import M, kept_magnitude, mask_2to4


def _kept_per_group(mag: torch.Tensor) -> torch.Tensor:
    """[groups]: sum over rows of the 2 largest of each group of 4 columns."""
    g = mag.reshape(mag.size(0), -1, M)
    return torch.topk(g, 2, dim=-1).values.sum(-1).sum(0)


def _swap_gains(mag: torch.Tensor, row_chunk: int = 256) -> torch.Tensor:
    """[B, B]: kept-magnitude gain of swapping columns a and b (B = mag's columns)."""
    rows, cols = mag.shape
    groups = mag.reshape(rows, -1, M)
    base = _kept_per_group(mag)                                       # [G]
    # kept(group of a, with a replaced by y) = r1 + max(r2, y), r1 >= r2 the two largest others
    d = torch.zeros(cols, cols, dtype=mag.dtype)
    for start in range(0, rows, row_chunk):
        g = groups[start:start + row_chunk]                           # [r, G, 4]
        others = torch.stack([torch.cat([g[..., :p], g[..., p + 1:]], -1) for p in range(M)], 2)  # [r, G, 4, 3]
        top = torch.topk(others, 2, dim=-1).values                    # [r, G, 4, 2]
        r1 = top[..., 0].reshape(g.size(0), cols, 1)
        r2 = top[..., 1].reshape(g.size(0), cols, 1)
        y = mag[start:start + row_chunk].unsqueeze(1)                 # [r, 1, B]
        d += (r1 + torch.maximum(r2, y)).sum(0)
    d -= base.repeat_interleave(M).unsqueeze(1)
    gains = d + d.t()
    group = torch.arange(cols) // M
    gains[group.unsqueeze(0) == group.unsqueeze(1)] = 0.0
    return gains


def search_permutation(weight: torch.Tensor, block: Optional[int] = None,
                       max_rounds: int = 100) -> torch.Tensor:
    """A permutation ``perm`` of the input channels (``weight[:, perm]`` keeps at least as
    much magnitude under the 2:4 mask as ``weight``); identity when nothing gains."""
    rows, cols = weight.shape
    block = cols if block is None else int(block)
    if block < 2 * M or block % M or cols % block:
        raise ConfigError(f"permutation block {block} must be a multiple of {M}, at least {2 * M}, "
                          f"and divide in_features {cols}")
    mag = weight.detach().abs().double()
    perm = torch.arange(cols)
    tol = 1e-12 * max(1.0, float(mag.sum()))  # gains below this are rounding noise
    for b0 in range(0, cols, block):
        local = torch.arange(b0, b0 + block)
        for _ in range(max_rounds):
            gains = _swap_gains(mag[:, perm[local]]).triu(1)
            flat = gains.flatten()
            positive = torch.nonzero(flat > tol).flatten()
            order = positive[torch.sort(flat[positive], descending=True, stable=True).indices]
            touched, swapped = set(), False
            for idx in order.tolist():
                a, b = divmod(idx, block)
                ga, gb = a // M, b // M
                if ga in touched or gb in touched:
                    continue
                touched.update((ga, gb))
                pa, pb = int(perm[b0 + a]), int(perm[b0 + b])
                perm[b0 + a], perm[b0 + b] = pb, pa
                swapped = True
            if not swapped:
                break
    return perm


def kept_with_and_without(weight: torch.Tensor, perm: torch.Tensor):
    """(kept-magnitude fraction of ``weight``, of ``weight[:, perm]``) under the 2:4 mask."""
    permuted = weight[:, perm]
    return kept_magnitude(weight), kept_magnitude(permuted, mask_2to4(permuted))


@torch.no_grad()
def permute_pair(producer_weight: torch.Tensor, producer_bias: Optional[torch.Tensor],
                 consumer_weight: torch.Tensor, perm: torch.Tensor):
    """(producer weight, bias, consumer weight) with the channels between them permuted:
    producer rows and bias by ``perm``, consumer columns by ``perm``; y is unchanged for any
    elementwise function between the two."""
    bias = None if producer_bias is None else producer_bias[perm].clone()
    return producer_weight[perm].clone(), bias, consumer_weight[:, perm].clone()
