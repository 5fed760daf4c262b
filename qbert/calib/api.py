"""``calibrate(model, forward_loop, ...)``: post-training calibration of our fake quantizers.

In the spirit of NVIDIA ModelOpt's ``mtq.quantize(model, config, forward_loop)`` and the
pytorch-quantization flow of NVIDIA's BERT example (``enable_calib`` / ``disable_quant``,
N batches, ``load_calib_amax``, ``enable_quant``):

1. the model is put in eval mode and every quantizer is bypassed (identity), so the
   forward loop runs the full-precision model;
2. the input of every *input* quantizer is observed by a calibrator (``method``: max,
   percentile, mse or entropy; see :mod:`qbert.calib.calibrators`);
3. the weight of every *weight* quantizer is calibrated directly from the module's weight
   (``weight_method``: max or mse; per row when the quantizer is per channel); a 2:4-sparse
   module's weight is taken times its ``weight_mask``, as its forward uses it;
4. every quantizer takes its state from its amax through ``quantizer.set_amax(amax)``
   (LSQ step = amax / Qp, PACT clip = amax, EMA running max = amax; it is then marked
   initialised, so QAT started from it does not re-initialise). Min-max and TWN weight
   quantizers are defined by the weight itself (range max|w|; TWN threshold 0.7 mean|w| and
   scale): they keep computing that from the weight and are reported as such;
5. the bypass is removed and the training mode restored.

Works on any ``nn.Module`` whose submodules hold :class:`qbert.quant.Quantizer` objects as
``weight_quantizer`` (next to a ``weight``) or ``input_quantizer`` (QuantLinear,
QuantEmbedding, quant_roberta's modules). Deterministic: the same model, data order and
settings give bit-identical quantizer state.
"""
import contextlib
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

from qbert.errors import ConfigError, DataError
from qbert.quant.base import Quantizer

from .calibrators import (
    ACT_METHODS,
    DEFAULT_PERCENTILE,
    NUM_BINS,
    START_BIN,
    WEIGHT_METHODS,
    HistogramCalibrator,
    MaxCalibrator,
    check_method,
    check_percentile,
    weight_amax,
)


def defined_by_tensor(q: Quantizer) -> bool:
    """Min-max and TWN: the scale is recomputed from the tensor at every forward."""
    return bool(getattr(q, "scale_from_tensor", False))


@dataclass
class QuantizerCalibration:
    """What calibration set for one quantizer (JSON-friendly via :meth:`as_dict`)."""

    module: str
    role: str                      # "weight" | "input"
    quantizer: str                 # class name
    bits: int
    method: str                    # calibrator, or "defined-by-tensor" (min-max, TWN)
    amax: Optional[float] = None   # per tensor; per channel: the max over channels
    amax_mean: Optional[float] = None
    channels: int = 1

    def as_dict(self) -> Dict:
        return asdict(self)


@dataclass
class CalibrationReport:
    method: str
    weight_method: str
    percentile: Optional[float]
    num_batches: int = 0
    entries: List[QuantizerCalibration] = field(default_factory=list)

    def as_dict(self) -> Dict:
        return {"method": self.method, "weight_method": self.weight_method,
                "percentile": self.percentile, "num_batches": self.num_batches,
                "quantizers": [e.as_dict() for e in self.entries]}


def find_quantizers(model: nn.Module):
    """[(module name, role, owning module, quantizer)] in module order."""
    out = []
    for name, module in model.named_modules():
        for role in ("weight", "input"):
            q = getattr(module, role + "_quantizer", None)
            if isinstance(q, Quantizer):
                if role == "weight" and not isinstance(getattr(module, "weight", None), torch.Tensor):
                    continue
                out.append((name, role, module, q))
    return out


@contextlib.contextmanager
def bypassed(quantizers, observers: Optional[Dict[int, Callable]] = None):
    """Inside: every quantizer's forward is the identity (after calling its observer). The
    fused layer paths of :mod:`qbert.quant.fused` see the replaced forwards and call them."""
    observers = observers or {}
    saved = []
    try:
        for q in quantizers:
            saved.append((q, q.__dict__.get("forward")))
            observe = observers.get(id(q))

            def passthrough(x, _observe=observe):
                if _observe is not None:
                    _observe(x)
                return x

            q.forward = passthrough
        yield
    finally:
        for q, old in saved:
            q.__dict__.pop("forward", None)
            if old is not None:
                q.forward = old


def _summary(amax: torch.Tensor):
    a = amax.detach().float().reshape(-1)
    return float(a.max()), float(a.mean()), a.numel()


def calibrate(model: nn.Module, forward_loop: Callable[[nn.Module], Optional[int]],
              method: str = "max", *, percentile: float = DEFAULT_PERCENTILE,
              weight_method: str = "max", num_bins: int = NUM_BINS,
              start_bin: int = START_BIN) -> CalibrationReport:
    """Calibrate every quantizer of ``model`` (see the module docstring); returns a report.

    ``forward_loop(model)`` runs the calibration batches through the model (its return value,
    if an int, is recorded as the number of batches). ``method``: activation calibrator
    (max, percentile, mse, entropy); ``percentile`` in (0, 100] (percentile only);
    ``weight_method``: max or mse. Raises :class:`ConfigError` for bad settings (before any
    batch runs) and :class:`DataError` when the loop feeds no data to an input quantizer.
    """
    check_method(method, ACT_METHODS, "--calibrator")
    check_method(weight_method, WEIGHT_METHODS, "--weight-calibrator")
    percentile = check_percentile(percentile)
    found = find_quantizers(model)
    if not found:
        raise ConfigError("the model has no quantizers to calibrate (no --quant-groups?)")
    for _, _, _, q in found:
        if not hasattr(q, "set_amax"):
            raise ConfigError(f"{type(q).__name__} has no set_amax(): this qbert.quant is too old")
    report = CalibrationReport(method, weight_method, percentile if method == "percentile" else None)

    calibrators = {}
    for _, role, _, q in found:
        if role == "input" and not defined_by_tensor(q):
            calibrators[id(q)] = MaxCalibrator() if method == "max" else HistogramCalibrator(num_bins)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), bypassed([q for *_, q in found],
                                       {k: c.collect for k, c in calibrators.items()}):
            n = forward_loop(model)
    finally:
        model.train(was_training)
    report.num_batches = int(n) if isinstance(n, int) else 0

    with torch.no_grad():
        for name, role, module, q in found:
            bits = int(q.bits)
            entry = QuantizerCalibration(name, role, type(q).__name__, bits,
                                         method if role == "input" else weight_method)
            if defined_by_tensor(q):
                entry.method = "defined-by-tensor"
                report.entries.append(entry)
                continue
            if role == "weight":
                weight = module.weight
                mask = module._buffers.get("weight_mask")  # 2:4-sparse: what the forward uses
                if mask is not None:
                    weight = weight * mask
                amax = weight_amax(weight, weight_method, bits, per_channel=q.per_channel,
                                   unsigned=not q.signed, num_bins=num_bins, start_bin=start_bin)
            else:
                cal = calibrators[id(q)]
                if method == "max":
                    amax = cal.compute_amax()
                else:
                    value = cal.compute_amax(method, bits=bits, unsigned=not q.signed,
                                             percentile=percentile, start_bin=start_bin)
                    amax = None if value is None else torch.tensor(value, dtype=torch.float32)
                if amax is None:
                    raise DataError(f"calibration fed no data to the input quantizer of '{name}': "
                                    "the forward loop must run at least one batch through the model")
            q.set_amax(amax.reshape(q.param_shape) if amax.numel() > 1 else amax)
            entry.amax, entry.amax_mean, entry.channels = _summary(amax)
            report.entries.append(entry)
    return report


def calibrate_batches(model: nn.Module, batches, run: Callable[[nn.Module, object], object],
                      **kwargs) -> CalibrationReport:
    """:func:`calibrate` with the forward loop ``for b in batches: run(model, b)``."""
    def loop(m):
        count = 0
        for b in batches:
            run(m, b)
            count += 1
        return count

    return calibrate(model, loop, **kwargs)
