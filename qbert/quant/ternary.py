"""TWN: Ternary Weight Networks (Li et al. 2016, arXiv:1605.04711), as used by TernaryBERT
(Zhang et al. 2020):

    Delta = 0.7 * mean|W|
    alpha = mean of |W| over {|W| > Delta}
    W_t   = alpha * sign(W) * [|W| > Delta]          (3 levels: -alpha, 0, alpha)

per tensor or per row. Gradient: straight-through (identity) for every element. The
``bits`` buffer is 2. As :class:`~qbert.quant.qparams.QParams`: scale alpha, threshold
Delta, codes in {-1, 0, 1}; both come from the weight itself (nothing to calibrate).
"""
from typing import Tuple

import torch

from qbert.errors import ConfigError

from .base import EPS, Quantizer, straight_through
from .registry import register_quantizer


@register_quantizer("twn", roles=("weight",))
class TWNQuantizer(Quantizer):
    restricted = True  # grid {-1, 0, 1} * alpha
    scale_from_tensor = True
    allowed_bits = (2,)
    allows_unsigned = False

    def __init__(self, bits: int = 2, signed: bool = True, per_channel: bool = False,
                 num_channels: int = 1):
        if bits not in self.allowed_bits or not signed:
            raise ConfigError(f"twn is ternary: it needs bits=2 and signed=True, got bits={bits}, "
                             f"signed={signed}")
        super().__init__(bits, signed, per_channel, num_channels)

    @staticmethod
    def _ternary(a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mask |W| > Delta, Delta, alpha) of the rows ``a`` = |W| (shape [C, N])."""
        delta = 0.7 * a.mean(dim=1, keepdim=True)
        mask = a > delta
        alpha = (a * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp_min(1)
        return mask, delta, alpha

    def _ternarize(self, x: torch.Tensor) -> torch.Tensor:
        w = self._rows(x)
        mask, _, alpha = self._ternary(w.abs())
        self._last_step = alpha.clamp_min(EPS).reshape(self.param_shape)
        return (alpha * torch.sign(w) * mask).reshape(x.shape)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        return straight_through(x, self._ternarize)

    def _scale_and_threshold(self, x: torch.Tensor):
        _, delta, alpha = self._ternary(self._rows(x).abs())
        scale = torch.where(alpha > 0, alpha, torch.full_like(alpha, EPS))  # all-zero row: codes 0
        return scale, delta.reshape(self.param_shape)
