"""EMA-range symmetric linear quantization of activations, as in Q8BERT (Zafrir et al. 2019,
arXiv:1910.06188):

    training:  m_t = d * m_{t-1} + (1 - d) * max|x|   (the first batch sets m = max|x|)
    eval:      m = the stored running_max
    s = m / Qp,  y = clamp(round(x / s), -Qp, Qp) * s

on the restricted symmetric grid [-Qp, Qp] (unsigned: [0, Qp], Qp = 2^b - 1). Gradient:
clipped STE, 1 inside the range, 0 outside; s is a constant. Under data parallelism the
first value is averaged over workers; later EMA updates are per worker (rank 0's is saved).
"""
import torch

from qbert.errors import ConfigError

from .base import EPS, Quantizer, fake_quant_ste


class EMAQuantizer(Quantizer):
    restricted = True
    _init_state = ("running_max",)
    _range_tol = 1e-5

    def __init__(self, bits: int, signed: bool = True, per_channel: bool = False,
                 num_channels: int = 1, ema_decay: float = 0.9):
        super().__init__(bits, signed, per_channel, num_channels)
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.ema_decay = float(ema_decay)
        self.register_buffer("running_max", torch.zeros(self.param_shape))

    def _batch_max(self, x: torch.Tensor) -> torch.Tensor:
        return self._rows(x.detach()).abs().amax(dim=1, keepdim=True).reshape(self.param_shape)

    def initialize(self, x: torch.Tensor) -> None:
        self.running_max.copy_(self._batch_max(x))

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                m = self.running_max.float()
                m += (1 - self.ema_decay) * (self._batch_max(x) - m)
                self.running_max.copy_(m)
        s = (self.running_max.float() / self.Qp).clamp_min(EPS)
        self._last_step = s
        return fake_quant_ste(x, s, self.qmin, self.qmax, tol=self._range_tol)

    def scale_summary(self) -> torch.Tensor:
        return (self.running_max.float() / self.Qp).clamp_min(EPS).mean()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ema_decay={self.ema_decay}"
