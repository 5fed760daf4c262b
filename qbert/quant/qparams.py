"""Quantization parameters as data, and the pure reference quantize / dequantize.

A :class:`QParams` is everything needed to map a float tensor to integer codes and back,
in the spirit of brevitas' ``(y, scale, zero_point, bit_width)`` and torchao's ``scale`` /
``zero_point`` attributes: calibration sets it, export reads it, fast kernels take it.

Uniform grid (LSQ, Esser et al. 2020; PACT, Choi et al. 2018; Q8BERT, Zafrir et al. 2019),
with step ``s`` and zero point ``z``, in exactly the order the quantizers' forward uses
(clamp, then round half to even, as ``torch.round`` does)::

    q     = round(clamp(x / s + z, qmin, qmax))
    x_hat = (q - z) * s

Ternary grid (TWN, Li et al. 2016), with dead zone ``threshold`` = Delta and scale alpha::

    q     = sign(x) * [|x| > Delta]        (in {-1, 0, 1})
    x_hat = q * alpha

``fake_quant(x, q.qparams(x))`` equals the quantizer's eval forward ``q(x)`` for every
quantizer kind (equal as numbers: a -0.0 of the forward may come back as +0.0).
All math is fp32 (``x.float()``); codes are the smallest signed integer dtype that holds
[qmin, qmax] (int8 for up to 8-bit signed and 7-bit unsigned grids, else int16 / int32).
"""
from dataclasses import dataclass
from typing import Optional

import torch

_CODE_DTYPES = (torch.int8, torch.int16, torch.int32)


@dataclass(frozen=True, eq=False)
class QParams:
    """One quantizer's grid for one tensor.

    * ``scale``: fp32 step, shape [1] (per tensor) or [C, 1] (one per row, ``axis`` = 0);
    * ``zero_point``: integer tensor of the same shape (zeros for our symmetric grids);
    * ``qmin``, ``qmax``: the integer range of the codes;
    * ``bits``, ``signed``, ``restricted`` (signed grid [-Qp, Qp] instead of [-Qn, Qp]);
    * ``threshold``: TWN's dead zone Delta (shape of ``scale``), None for uniform grids.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    axis: Optional[int]
    bits: int
    signed: bool
    restricted: bool
    threshold: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.zero_point.shape != self.scale.shape:
            raise ValueError(f"QParams: zero_point shape {tuple(self.zero_point.shape)} differs "
                             f"from scale shape {tuple(self.scale.shape)}")
        if not self.qmin < self.qmax:
            raise ValueError(f"QParams: need qmin < qmax, got [{self.qmin}, {self.qmax}]")

    @property
    def code_dtype(self) -> torch.dtype:
        """The smallest signed integer dtype holding every code in [qmin, qmax]."""
        return code_dtype(self.qmin, self.qmax)


def code_dtype(qmin: int, qmax: int) -> torch.dtype:
    """int8 if [qmin, qmax] fits in it, else int16, else int32."""
    for dtype in _CODE_DTYPES:
        info = torch.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return dtype
    raise ValueError(f"no integer dtype of at most 32 bits holds [{qmin}, {qmax}]")


def quantize(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Integer codes of ``x`` (fp32 math): round(clamp(x / s + z)), or TWN's sign(x)[|x| > Delta]."""
    xf = x.float()
    if qp.threshold is not None:
        codes = torch.sign(xf) * (xf.abs() > qp.threshold)
    else:
        codes = (xf / qp.scale + qp.zero_point).clamp_(qp.qmin, qp.qmax).round_()
    return codes.to(qp.code_dtype)


def dequantize(codes: torch.Tensor, qp: QParams) -> torch.Tensor:
    """fp32 values of integer ``codes``: (q - z) * s."""
    return (codes.float() - qp.zero_point) * qp.scale


def fake_quant(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """dequantize(quantize(x)): the reference fake quantization (no gradient rules)."""
    return dequantize(quantize(x, qp), qp)
