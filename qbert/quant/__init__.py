"""Fake quantizers and quantized layers (pure torch; no fairseq imports).

* LSQ  (Esser et al. 2020)  :class:`LSQQuantizer`   learned step size
* PACT (Choi et al. 2018)   :class:`PACTQuantizer`  learned clip
* Q8BERT (Zafrir et al. 2019) :class:`MinMaxQuantizer` (weights), :class:`EMAQuantizer` (activations)
* TWN  (Li et al. 2016)     :class:`TWNQuantizer`   ternary weights
"""
from qbert.errors import ConfigError

from .base import EPS, Quantizer, fake_quant_ste, straight_through
from .ema import EMAQuantizer
from .lsq import LSQQuantizer
from .minmax import MinMaxQuantizer
from .modules import QuantEmbedding, QuantLinear
from .pact import OPTIMIZER_KINDS, PACTQuantizer
from .ternary import TWNQuantizer

QUANTIZERS = {
    "lsq": LSQQuantizer,
    "pact": PACTQuantizer,
    "minmax": MinMaxQuantizer,
    "ema": EMAQuantizer,
    "twn": TWNQuantizer,
}
WEIGHT_QUANTIZERS = {k: QUANTIZERS[k] for k in ("lsq", "pact", "minmax", "ema", "twn")}
ACT_QUANTIZERS = {k: QUANTIZERS[k] for k in ("lsq", "pact", "ema")}


def build_quantizer(name: str, bits: int, *, signed: bool = True, per_channel: bool = False,
                    num_channels: int = 1, pact_init_clip: float = 1.0,
                    pact_lr_scale: float = 1.0, pact_weight_decay: float = 0.0,
                    optimizer_kind: str = "adaptive", ema_decay: float = 0.9) -> Quantizer:
    """Build the quantizer registered as ``name`` (one of QUANTIZERS)."""
    key = str(name).lower()
    if key not in QUANTIZERS:
        raise ConfigError(f"unknown quantizer {name!r}; allowed: {', '.join(QUANTIZERS)}")
    common = dict(signed=signed, per_channel=per_channel, num_channels=num_channels)
    if key == "pact":
        return PACTQuantizer(bits, init_clip=pact_init_clip, lr_scale=pact_lr_scale,
                             weight_decay=pact_weight_decay, optimizer_kind=optimizer_kind,
                             **common)
    if key == "ema":
        return EMAQuantizer(bits, ema_decay=ema_decay, **common)
    return QUANTIZERS[key](bits, **common)


__all__ = [
    "EPS", "Quantizer", "fake_quant_ste", "straight_through", "LSQQuantizer", "PACTQuantizer",
    "MinMaxQuantizer", "EMAQuantizer", "TWNQuantizer", "QuantLinear", "QuantEmbedding",
    "QUANTIZERS", "WEIGHT_QUANTIZERS",
    "ACT_QUANTIZERS", "OPTIMIZER_KINDS", "build_quantizer",
]
