"""LSQ: Learned Step Size Quantization (Esser et al., ICLR 2020, arXiv:1902.08153).

    v_hat = round(clamp(v / s, -Qn, Qp)) * s

with a learned step s (one per tensor, or one per row of a 2-D weight), initialised from
the first tensor seen (weights and activations alike) as s = 2 * mean|v| / sqrt(Qp).
Gradients (paper eq. 3, STE for round):

    d v_hat / d v = 1 if -Qn <= v/s <= Qp else 0
    d v_hat / d s = -v/s + round(v/s) inside, -Qn below, Qp above

and the step gradient is scaled by g = 1 / sqrt(N * Qp), N = number of elements sharing
that step (x.numel() per tensor, elements per row per channel).
"""
import math

import torch
import torch.nn as nn

from .base import EPS, Quantizer, fake_quant_ste


class LSQQuantizer(Quantizer):
    _init_state = ("step",)

    def __init__(self, bits: int, signed: bool = True, per_channel: bool = False,
                 num_channels: int = 1):
        super().__init__(bits, signed, per_channel, num_channels)
        self.step = nn.Parameter(torch.ones(self.param_shape))

    def initialize(self, x: torch.Tensor) -> None:
        s = 2 * self._rows(x).abs().mean(dim=1, keepdim=True) / math.sqrt(self.Qp)
        self.step.data.copy_(s.clamp_min(EPS).reshape(self.param_shape))

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        s = self.step.float()
        self._last_step = s.detach().clamp_min(EPS)
        g = 1.0 / math.sqrt(self._group_size(x) * self.Qp)
        return fake_quant_ste(x, s, self.qmin, self.qmax, grad_scale=g)

    def scale_summary(self) -> torch.Tensor:
        return self.step.detach().float().clamp_min(EPS).mean()
