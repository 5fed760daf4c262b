"""TWN: Ternary Weight Networks (Li et al. 2016, arXiv:1605.04711), as used by TernaryBERT
(Zhang et al. 2020):

    Delta = 0.7 * mean|W|
    alpha = mean of |W| over {|W| > Delta}
    W_t   = alpha * sign(W) * [|W| > Delta]          (3 levels: -alpha, 0, alpha)

per tensor or per row. Gradient: straight-through (identity) for every element. The
``bits`` buffer is 2.
"""
import torch

from qbert.errors import ConfigError

from .base import EPS, Quantizer, straight_through


class TWNQuantizer(Quantizer):
    restricted = True  # grid {-1, 0, 1} * alpha

    def __init__(self, bits: int = 2, signed: bool = True, per_channel: bool = False,
                 num_channels: int = 1):
        if bits != 2 or not signed:
            raise ConfigError(f"twn is ternary: it needs bits=2 and signed=True, got bits={bits}, "
                             f"signed={signed}")
        super().__init__(bits, signed, per_channel, num_channels)

    def _ternarize(self, x: torch.Tensor) -> torch.Tensor:
        w = self._rows(x)
        a = w.abs()
        mask = a > 0.7 * a.mean(dim=1, keepdim=True)
        alpha = (a * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp_min(1)
        self._last_step = alpha.clamp_min(EPS).reshape(self.param_shape)
        return (alpha * torch.sign(w) * mask).reshape(x.shape)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        return straight_through(x, self._ternarize)
