"""EMA-range symmetric linear quantization of activations, as in Q8BERT (Zafrir et al. 2019,
arXiv:1910.06188):

    training:  m_t = d * m_{t-1} + (1 - d) * max|x|   (the first batch sets m = max|x|)
    eval:      m = the stored running_max
    s = m / Qp,  y = clamp(round(x / s), -Qp, Qp) * s

on the restricted symmetric grid [-Qp, Qp] (unsigned: [0, Qp], Qp = 2^b - 1). Gradient:
clipped STE, 1 inside the range, 0 outside; s is a constant. Under data parallelism the
first value is averaged over workers; later EMA updates are per worker (rank 0's is saved).
Calibration (:meth:`~qbert.quant.base.Quantizer.set_amax`) sets m = amax.
"""
from dataclasses import dataclass

import torch

from .base import EPS, Quantizer
from .config import HalfOpen, QuantizerConfig, option
from .registry import register_quantizer


@dataclass(frozen=True)
class EMAConfig(QuantizerConfig):
    decay: float = option(0.9, "decay d of the running max|x| (default {default})", HalfOpen(0, 1))


@register_quantizer("ema", config=EMAConfig, roles=("weight", "activation"))
class EMAQuantizer(Quantizer):
    restricted = True
    _init_state = ("running_max",)
    _range_tol = 1e-5

    def __init__(self, bits: int, signed: bool = True, per_channel: bool = False,
                 num_channels: int = 1, ema_decay: float = EMAConfig.decay):
        super().__init__(bits, signed, per_channel, num_channels)
        EMAConfig(decay=ema_decay).validate()
        self.ema_decay = float(ema_decay)
        self.register_buffer("running_max", torch.zeros(self.param_shape))

    @classmethod
    def from_config(cls, bits: int, config: EMAConfig, **grid) -> "EMAQuantizer":
        return cls(bits, ema_decay=config.decay, **grid)

    def _batch_max(self, x: torch.Tensor) -> torch.Tensor:
        return self._rows(x.detach()).abs().amax(dim=1, keepdim=True).reshape(self.param_shape)

    def initialize(self, x: torch.Tensor) -> None:
        self.running_max.copy_(self._batch_max(x))

    def _step(self, x):
        return (self.running_max.float() / self.Qp).clamp_min(EPS)

    def _set_amax(self, amax: torch.Tensor) -> None:
        self.running_max.copy_(amax)

    def ste_step(self, x: torch.Tensor):
        if self.training:
            with torch.no_grad():
                m = self.running_max.float()
                m += (1 - self.ema_decay) * (self._batch_max(x) - m)
                self.running_max.copy_(m)
        return super().ste_step(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ema_decay={self.ema_decay}"
