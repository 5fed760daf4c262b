"""Fake quantizers and quantized layers (pure torch; no fairseq imports).

* LSQ  (Esser et al. 2020)  :class:`LSQQuantizer`   learned step size
* PACT (Choi et al. 2018)   :class:`PACTQuantizer`  learned clip
* Q8BERT (Zafrir et al. 2019) :class:`MinMaxQuantizer` (weights), :class:`EMAQuantizer` (activations)
* TWN  (Li et al. 2016)     :class:`TWNQuantizer`   ternary weights

Each kind registers itself (:func:`register_quantizer`) with its config dataclass and
roles; :data:`QUANTIZERS`, :data:`WEIGHT_QUANTIZERS` and :data:`ACT_QUANTIZERS` are live
views of :data:`QUANTIZER_REGISTRY`. Every quantizer's grid is data: :class:`QParams`
(``q.qparams(x)``), with the pure reference :func:`quantize` / :func:`dequantize` /
:func:`fake_quant`.
"""
from .base import EPS, BitsMismatchError, Quantizer, QuantizerStateError, fake_quant_ste, straight_through
from .config import OPTIMIZER_KIND, OPTIMIZER_KINDS, QuantizerConfig
from .modules import QuantEmbedding, QuantLinear
from .qparams import QParams, dequantize, fake_quant, quantize
from .registry import QUANTIZER_REGISTRY, QuantizerSpec, RoleView, build_quantizer, register_quantizer

# The import order of the kinds is their registration order, the order users see in
# "allowed: lsq, pact, minmax, ema, twn": keep it.
# isort: off
from .lsq import LSQQuantizer
from .pact import PACTConfig, PACTQuantizer
from .minmax import MinMaxQuantizer
from .ema import EMAConfig, EMAQuantizer
from .ternary import TWNQuantizer
# isort: on

QUANTIZERS = RoleView()
WEIGHT_QUANTIZERS = RoleView("weight")
ACT_QUANTIZERS = RoleView("activation")

__all__ = [
    "EPS", "Quantizer", "QuantizerStateError", "BitsMismatchError", "fake_quant_ste",
    "straight_through", "LSQQuantizer", "PACTQuantizer", "MinMaxQuantizer", "EMAQuantizer",
    "TWNQuantizer", "QuantLinear", "QuantEmbedding", "QUANTIZERS", "WEIGHT_QUANTIZERS",
    "ACT_QUANTIZERS", "OPTIMIZER_KIND", "OPTIMIZER_KINDS", "build_quantizer",
    "register_quantizer", "QUANTIZER_REGISTRY", "QuantizerSpec", "RoleView",
    "QuantizerConfig", "PACTConfig", "EMAConfig", "QParams", "quantize", "dequantize",
    "fake_quant",
]
