"""Linear and Embedding layers that fake-quantize their weight (and the Linear's input).

Parameter names are those of nn.Linear / nn.Embedding (``weight``, ``bias``), so full-precision
fairseq RoBERTa checkpoints load into them; the quantizers add ``weight_quantizer.*`` and
``input_quantizer.*`` keys. A 2:4-sparse module (``add_weight_mask()``) also has a bool
``weight_mask`` buffer, applied before the weight quantizer; dense modules have no such key.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fused
from .base import Quantizer


class _Maskable:
    """Optional fixed weight mask (2:4 sparsity): the forward uses ``weight * weight_mask``,
    so masked weights get no gradient."""

    def add_weight_mask(self):
        """Register the ``weight_mask`` buffer (all kept until a mask is computed)."""
        self.register_buffer("weight_mask", torch.ones_like(self.weight, dtype=torch.bool))
        return self

    def masked_weight(self) -> torch.Tensor:
        mask = self._buffers.get("weight_mask")
        return self.weight if mask is None else self.weight * mask

    def quantized_weight(self) -> torch.Tensor:
        w = self.masked_weight()
        return w if self.weight_quantizer is None else self.weight_quantizer(w)


class QuantLinear(_Maskable, nn.Linear):
    """y = F.linear(input_quantizer(x), weight_quantizer(W), b); a missing quantizer is identity."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 weight_quantizer: Optional[Quantizer] = None,
                 input_quantizer: Optional[Quantizer] = None, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_quantizer: Optional[Quantizer] = None,
                    input_quantizer: Optional[Quantizer] = None) -> "QuantLinear":
        """A QuantLinear with a copy of ``linear``'s weight and bias (same device and dtype)."""
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                weight_quantizer=weight_quantizer, input_quantizer=input_quantizer,
                device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            q.weight.copy_(linear.weight)
            if linear.bias is not None:
                q.bias.copy_(linear.bias)
        return q

    def forward(self, x: torch.Tensor, input_quantized: bool = False) -> torch.Tensor:
        """``input_quantized``: ``x`` already went through the input quantizer (one
        quantizer shared by several Linears that read the same tensor)."""
        y = fused.quant_linear(self, x, input_quantized)  # same values, no quantized copies kept
        if y is not None:
            return y
        if self.input_quantizer is not None and not input_quantized:
            x = self.input_quantizer(x)
        return F.linear(x, self.quantized_weight(), self.bias)


class QuantEmbedding(_Maskable, nn.Embedding):
    """nn.Embedding whose lookup table is weight_quantizer(W) (identity when None).

    ``max_norm`` renormalizes the stored (full-precision) rows in place before quantization,
    as nn.Embedding does; padding_idx, scale_grad_by_freq and sparse behave as in nn.Embedding.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None,
                 max_norm: Optional[float] = None, norm_type: float = 2.0,
                 scale_grad_by_freq: bool = False, sparse: bool = False,
                 _weight: Optional[torch.Tensor] = None, _freeze: bool = False,
                 device=None, dtype=None, weight_quantizer: Optional[Quantizer] = None):
        super().__init__(num_embeddings, embedding_dim, padding_idx, max_norm, norm_type,
                         scale_grad_by_freq, sparse, _weight, _freeze, device, dtype)
        self.weight_quantizer = weight_quantizer

    @classmethod
    def from_embedding(cls, emb: nn.Embedding,
                       weight_quantizer: Optional[Quantizer] = None) -> "QuantEmbedding":
        """A QuantEmbedding with a copy of ``emb``'s weight and options."""
        q = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, emb.max_norm,
                emb.norm_type, emb.scale_grad_by_freq, emb.sparse,
                device=emb.weight.device, dtype=emb.weight.dtype,
                weight_quantizer=weight_quantizer)
        with torch.no_grad():
            q.weight.copy_(emb.weight)
        q.weight.requires_grad_(emb.weight.requires_grad)
        return q

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.max_norm is not None:
            with torch.no_grad():
                torch.embedding_renorm_(self.weight, input, self.max_norm, self.norm_type)
        y = fused.quant_embedding(self, input)  # the same values; quantizes only used rows
        if y is not None:
            return y
        return F.embedding(input, self.quantized_weight(), self.padding_idx, None,
                           self.norm_type, self.scale_grad_by_freq, self.sparse)
