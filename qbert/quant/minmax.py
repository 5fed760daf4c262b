"""Min-max symmetric linear quantization of weights, as in Q8BERT (Zafrir et al. 2019,
arXiv:1910.06188):

    s = max|x| / Qp   (recomputed every forward; per tensor or per row)
    y = clamp(round(x / s), -Qp, Qp) * s

on the restricted symmetric grid [-Qp, Qp], Qp = 2^(b-1) - 1 (2^b - 1 levels); unsigned:
[0, Qp], Qp = 2^b - 1. Gradient: straight-through (identity) inside the range, 0 outside;
s is treated as a constant. The scale is the weight's own: there is nothing to calibrate.
"""
import torch

from .base import EPS, Quantizer
from .registry import register_quantizer


@register_quantizer("minmax", roles=("weight",))
class MinMaxQuantizer(Quantizer):
    restricted = True
    scale_from_tensor = True
    _range_tol = 1e-5  # max|x| / s may exceed Qp by an ulp

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            m = self._rows(x.detach()).abs().amax(dim=1, keepdim=True).reshape(self.param_shape)
            return (m / self.Qp).clamp_min(EPS)
