"""The 2:4 mask (ASP's ``m4n2_1d``), ASP's size rule and what a mask keeps.

A weight is ``[out_features, in_features]`` (a Linear's; an embedding table counts as the
tied output projection's, ``in`` = embedding dim). Each row is cut into groups of 4
consecutive input weights and the 2 of largest magnitude are kept. Ties are broken towards
the lower input index (stable sort), so the mask is a function of the weight alone.
"""
from typing import Optional

import torch

from qbert.errors import ConfigError

M, N = 4, 2  # groups of M consecutive inputs, N kept
#: ASP's rule for tensor-core 2:4 kernels: out_features % 8 == 0 and in_features % 16 == 0
OUT_MULTIPLE, IN_MULTIPLE = 8, 16


def size_rule_violation(out_features: int, in_features: int) -> Optional[str]:
    """Why ASP would skip a weight of this shape, or None when it can be pruned."""
    bad = []
    if out_features % OUT_MULTIPLE:
        bad.append(f"out_features {out_features} % {OUT_MULTIPLE} != 0")
    if in_features % IN_MULTIPLE:
        bad.append(f"in_features {in_features} % {IN_MULTIPLE} != 0")
    return "; ".join(bad) or None


def _groups(weight: torch.Tensor) -> torch.Tensor:
    if weight.dim() != 2 or weight.size(1) % M:
        raise ConfigError(f"a 2:4 mask needs a 2-D weight whose in_features is a multiple of {M}, "
                          f"got shape {tuple(weight.shape)}")
    return weight.detach().abs().float().reshape(weight.size(0), -1, M)


def mask_2to4(weight: torch.Tensor) -> torch.Tensor:
    """Bool mask of ``weight``'s shape: in every group of 4 consecutive inputs of a row, the
    2 of largest |w| (ties: lower index first)."""
    mag = _groups(weight)
    order = torch.sort(mag, dim=-1, descending=True, stable=True).indices[..., :N]
    mask = torch.zeros_like(mag, dtype=torch.bool).scatter_(-1, order, True)
    return mask.reshape(weight.shape)


def kept_magnitude(weight: torch.Tensor, mask: Optional[torch.Tensor] = None) -> float:
    """Fraction of sum|w| that ``mask`` (default: the 2:4 mask of ``weight``) keeps."""
    mag = weight.detach().abs().double()
    total = float(mag.sum())
    if mask is None:
        mask = mask_2to4(weight)
    return float((mag * mask).sum()) / total if total > 0 else 1.0


def is_2to4(mask: torch.Tensor) -> bool:
    """True when every group of 4 consecutive inputs keeps exactly 2."""
    return bool((_groups(mask.to(torch.float32)).sum(-1) == N).all())
