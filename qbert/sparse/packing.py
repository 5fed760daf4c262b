"""Compact 2:4 storage: the 2 kept values of every group of 4 and their 2-bit positions.

``pack_2to4(weight, mask) -> (values, indices)``: ``values`` is ``[out, in/2]`` in
``weight``'s dtype (the kept values in input order), ``indices`` is ``uint8 [out, in/8]``:
each group's two positions (0..3, ascending) take 2 bits each, 4 bits per group, two groups
per byte (low nibble first). Storage per weight: half a value + 1 bit (int8 weights: 0.625
byte instead of 1). :func:`unpack_2to4` restores ``weight * mask`` exactly.
"""
from typing import Tuple

import torch

from qbert.errors import ConfigError

from .masks import M, N, is_2to4


def pack_2to4(weight: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    rows, cols = weight.shape
    if mask.shape != weight.shape or cols % (2 * M) or not is_2to4(mask):
        raise ConfigError(f"pack_2to4 needs a 2:4 mask of the weight's shape with in_features a "
                          f"multiple of {2 * M}; got weight {tuple(weight.shape)}, mask {tuple(mask.shape)}")
    groups = mask.reshape(rows, -1, M)
    pos = torch.sort(groups.to(torch.int8), dim=-1, descending=True, stable=True).indices[..., :N]
    pos = torch.sort(pos, dim=-1).values                               # [out, G, 2] ascending
    values = torch.gather(weight.reshape(rows, -1, M), -1, pos).reshape(rows, -1).clone()
    nibble = (pos[..., 0] | (pos[..., 1] << 2)).to(torch.uint8)        # [out, G]
    indices = nibble[:, 0::2] | (nibble[:, 1::2] << 4)
    return values, indices


def unpack_2to4(values: torch.Tensor, indices: torch.Tensor, in_features: int) -> torch.Tensor:
    """The dense ``[out, in_features]`` weight (zeros where pruned) of :func:`pack_2to4`."""
    rows = values.size(0)
    if values.shape != (rows, in_features // 2) or indices.shape != (rows, in_features // (2 * M)):
        raise ConfigError(f"unpack_2to4: values {tuple(values.shape)} / indices {tuple(indices.shape)} "
                          f"do not fit in_features {in_features}")
    nibble = torch.stack([indices & 0xF, indices >> 4], -1).reshape(rows, -1).long()
    pos = torch.stack([nibble & 0x3, nibble >> 2], -1)                 # [out, G, 2]
    dense = torch.zeros(rows, in_features // M, M, dtype=values.dtype)
    dense.scatter_(-1, pos, values.reshape(rows, -1, N))
    return dense.reshape(rows, in_features)


def packed_nbytes(out_features: int, in_features: int, value_bytes: int) -> int:
    """Bytes of the packed form of an ``[out, in]`` weight with ``value_bytes`` per value."""
    return out_features * (in_features // 2) * value_bytes + out_features * in_features // (2 * M)
