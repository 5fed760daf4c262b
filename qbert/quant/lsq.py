"""LSQ: Learned Step Size Quantization (Esser et al., ICLR 2020, arXiv:1902.08153).

    v_hat = round(clamp(v / s, -Qn, Qp)) * s

with a learned step s (one per tensor, or one per row of a 2-D weight), initialised from
the first tensor seen (weights and activations alike) as s = 2 * mean|v| / sqrt(Qp).
Gradients (paper eq. 3, STE for round):

    d v_hat / d v = 1 if -Qn <= v/s <= Qp else 0
    d v_hat / d s = -v/s + round(v/s) inside, -Qn below, Qp above

and the step gradient is scaled by g = 1 / sqrt(N * Qp), N = number of elements sharing
that step (x.numel() per tensor, elements per row per channel). Calibration
(:meth:`~qbert.quant.base.Quantizer.set_amax`) sets s = amax / Qp.
"""
import math

import torch
import torch.nn as nn

from .base import EPS, Quantizer
from .registry import register_quantizer


@register_quantizer("lsq", roles=("weight", "activation"))
class LSQQuantizer(Quantizer):
    _init_state = ("step",)

    def __init__(self, bits: int, signed: bool = True, per_channel: bool = False,
                 num_channels: int = 1):
        super().__init__(bits, signed, per_channel, num_channels)
        self.step = nn.Parameter(torch.ones(self.param_shape))

    def initialize(self, x: torch.Tensor) -> None:
        s = 2 * self._rows(x).abs().mean(dim=1, keepdim=True) / math.sqrt(self.Qp)
        self.step.data.copy_(s.clamp_min(EPS).reshape(self.param_shape))

    def _step(self, x):
        return self.step.float()

    def _grad_scale(self, x: torch.Tensor) -> float:
        return 1.0 / math.sqrt(self._group_size(x) * self.Qp)

    def _set_amax(self, amax: torch.Tensor) -> None:
        self.step.data.copy_((amax / self.Qp).clamp_min(EPS))
