"""The elementwise kernels of uniform fake quantization with the STE, reference and fused.

Uniform fake quantization (LSQ, Esser et al. 2020; PACT, Choi et al. 2018; Q8BERT,
Zafrir et al. 2019) of fp32 ``x`` with step ``s`` (already clamped to EPS)::

    forward:   y = round(clamp(x / s, qmin, qmax)) * s
    backward:  v = x / s,  m = [lo <= v <= hi]   (lo, hi = qmin, qmax times 1 + tol)
               dL/dx = gy * m
               dL/ds = g * sum(gy * (round(clamp(v)) - v * m))    (LSQ, eq. 3)
                     = g * sum((gy - gy * m) * round(clamp(v)))   (PACT, eq. 3: no inside term)

:func:`reference_forward` / :func:`reference_backward` are that math written as a few
eager passes (the definition every faster path is tested against). The fused kernels are
the same functions compiled by ``torch.compile`` (inductor generates one vectorised loop per
direction: the forward reads x and writes y; the backward reads x and gy, writes dL/dx and
reduces the step-gradient sums in the same pass). They compute the same values bit for bit
(the same IEEE operations in the same order: division, clamp, round half to even, multiply);
only the step-gradient sums are reassociated (fp32 rounding).

Which kernels run (:func:`set_backend`, environment ``QBERT_QUANT_KERNELS``):

* ``auto`` (default): compiled kernels for tensors of at least :data:`MIN_FUSED_NUMEL`
  elements when a C++ compiler is found; the reference otherwise (small tensors: the
  compile time and call overhead would not pay off, and tiny test models stay bit-identical);
* ``compile``: compiled kernels for every size (tests);
* ``eager``: the reference everywhere.

A compile failure falls back to the reference for the rest of the process (one warning).
"""
import functools
import logging
import math
import os
import shutil
from typing import Dict, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "compile", "eager")
#: ``auto`` compiles kernels only for tensors at least this large
MIN_FUSED_NUMEL = 1 << 16

_backend = os.environ.get("QBERT_QUANT_KERNELS", "auto").strip().lower() or "auto"
_compiled: Dict[str, object] = {}
_compile_broken = False


def set_backend(name: str) -> str:
    """Choose ``auto`` / ``compile`` / ``eager`` kernels; returns the previous choice."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"quantization kernels must be one of {', '.join(BACKENDS)}, got {name!r}")
    previous, _backend = _backend, name
    return previous


def get_backend() -> str:
    return _backend


@functools.lru_cache(maxsize=None)
def _compiler_available() -> bool:
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)


def use_fused(x: torch.Tensor) -> bool:
    """Whether the compiled kernels handle ``x`` under the current backend."""
    if _compile_broken or _backend == "eager" or x.device.type not in ("cpu", "cuda"):
        return False
    if _backend == "compile":
        return True
    return x.numel() >= MIN_FUSED_NUMEL and _compiler_available()


# ---------------------------------------------------------------------- reference
def reference_forward(x: torch.Tensor, s: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """round(clamp(x / s, qmin, qmax)) * s in four passes (the definition)."""
    return (x / s).clamp_(qmin, qmax).round_().mul_(s)


def _sum_of_products(a: torch.Tensor, b: torch.Tensor, shape) -> torch.Tensor:
    """sum(a * b) reduced to ``shape`` (a dot product, no temporary, for one scale)."""
    if math.prod(shape) == 1:
        return torch.dot(a.reshape(-1), b.reshape(-1)).reshape(shape)
    return (a * b).sum_to_size(shape)


def reference_backward(x: torch.Tensor, s: torch.Tensor, gy: torch.Tensor, qmin: int, qmax: int,
                       inside_step_grad: bool, tol: float, need_gs: bool
                       ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(dL/dx, unscaled dL/ds or None); written for few passes over the tensor.

    With c = clamp(v), r = round(c) and the inside mask m, dy/ds = r - v*m covers the three
    cases at once (inside: round(v) - v; below: qmin; above: qmax), so
    sum(gy * dy/ds) = <gy, r> - <gy*m, v>; PACT (no inside term): <gy - gy*m, r>.
    """
    v = x / s
    c = v.clamp(qmin, qmax)
    if tol:
        inside = (v >= qmin * (1 + tol)) & (v <= qmax * (1 + tol))
    else:
        inside = c == v
    gx = gy * inside
    gs = None
    if need_gs:
        r = c.round_()
        if inside_step_grad:
            gs = _sum_of_products(gy, r, s.shape) - _sum_of_products(gx, v, s.shape)
        else:
            gs = _sum_of_products(gy - gx, r, s.shape)
    return gx, gs


# ------------------------------------------------------------------------- fused
# x is 1-D with s of shape [1] (per tensor) or 2-D [C, N] with s [C, 1] (per row); lo, hi
# are 0-d fp32 tensors (qmin, qmax times 1 + tol, rounded to fp32 as eager rounds them).
def _fwd(x, s, qmin: int, qmax: int):
    return torch.round(torch.clamp(x / s, qmin, qmax)) * s


def _bwd_gx(x, s, gy, lo, hi):
    v = x / s
    return gy * ((v >= lo) & (v <= hi))


def _bwd_lsq_tensor(x, s, gy, lo, hi, qmin: int, qmax: int):
    v = x / s
    gx = gy * ((v >= lo) & (v <= hi))
    r = torch.round(torch.clamp(v, qmin, qmax))
    return gx, ((gy * r).sum() - (gx * v).sum()).reshape(1)


def _bwd_lsq_channel(x, s, gy, lo, hi, qmin: int, qmax: int):
    v = x / s
    gx = gy * ((v >= lo) & (v <= hi))
    r = torch.round(torch.clamp(v, qmin, qmax))
    return gx, (gy * r).sum(1, keepdim=True) - (gx * v).sum(1, keepdim=True)


def _bwd_pact_tensor(x, s, gy, lo, hi, qmin: int, qmax: int):
    v = x / s
    gx = gy * ((v >= lo) & (v <= hi))
    r = torch.round(torch.clamp(v, qmin, qmax))
    return gx, ((gy - gx) * r).sum().reshape(1)


def _bwd_pact_channel(x, s, gy, lo, hi, qmin: int, qmax: int):
    v = x / s
    gx = gy * ((v >= lo) & (v <= hi))
    r = torch.round(torch.clamp(v, qmin, qmax))
    return gx, ((gy - gx) * r).sum(1, keepdim=True)


_KERNELS = {"fwd": _fwd, "gx": _bwd_gx, "lsq_tensor": _bwd_lsq_tensor,
            "lsq_channel": _bwd_lsq_channel, "pact_tensor": _bwd_pact_tensor,
            "pact_channel": _bwd_pact_channel}


def _kernel(name: str):
    fn = _compiled.get(name)
    if fn is None:
        fn = _compiled[name] = torch.compile(_KERNELS[name], dynamic=True, fullgraph=True)
    return fn


_bounds: Dict[Tuple[int, int, float, torch.device], Tuple[torch.Tensor, torch.Tensor]] = {}


def _range(qmin: int, qmax: int, tol: float, device) -> Tuple[torch.Tensor, torch.Tensor]:
    key = (qmin, qmax, tol, device)
    if key not in _bounds:
        lo = torch.tensor(qmin * (1 + tol), dtype=torch.float32, device=device)
        hi = torch.tensor(qmax * (1 + tol), dtype=torch.float32, device=device)
        _bounds[key] = (lo, hi)
    return _bounds[key]


def _broken(e: Exception) -> None:
    global _compile_broken
    _compile_broken = True
    logger.warning("qbert: torch.compile of the fake-quantization kernels failed (%s: %s); "
                   "using the reference kernels", type(e).__name__, str(e).splitlines()[0] if str(e) else "")


def _memory_order(x: torch.Tensor):
    """(x permuted to a contiguous view, inverse permutation) for a dense tensor stored in
    another dimension order (fairseq's T x B x C transposes), else None."""
    if x.is_contiguous():
        return x, None
    perm = sorted(range(x.dim()), key=lambda d: -x.stride(d))
    xp = x.permute(perm)
    if not xp.is_contiguous():
        return None
    inv = [0] * len(perm)
    for i, d in enumerate(perm):
        inv[d] = i
    return xp, inv


def _layout(x: torch.Tensor, s: torch.Tensor):
    """(x's elements as 1-D with one step, or 2-D [C, N] with a step per row, inverse
    permutation to x's dimension order) or None if the kernels do not cover it."""
    if s.numel() == 1:
        ordered = _memory_order(x)
        if ordered is None:
            return None
        return ordered[0].reshape(-1), s.reshape(1), ordered
    if (s.dim() == 2 and s.shape[1] == 1 and x.dim() == 2 and x.shape[0] == s.shape[0]
            and x.is_contiguous()):
        return x, s, (x, None)
    return None


def _restore(flat: torch.Tensor, ordered) -> torch.Tensor:
    """A kernel's output (x's elements in memory order) in x's shape and strides."""
    xp, inv = ordered
    out = flat.view(xp.shape)
    return out if inv is None else out.permute(inv)


def ste_forward(x: torch.Tensor, s: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """round(clamp(x / s, qmin, qmax)) * s (fp32 ``x``, ``s`` clamped to EPS); the result
    has x's strides, as the eager ops give it."""
    if use_fused(x):
        layout = _layout(x, s)
        if layout is not None:
            xf, sf, ordered = layout
            try:
                return _restore(_kernel("fwd")(xf, sf, qmin, qmax), ordered)
            except Exception as e:  # pragma: no cover - depends on the toolchain
                _broken(e)
    return reference_forward(x, s, qmin, qmax)


def ste_backward(x: torch.Tensor, s: torch.Tensor, gy: torch.Tensor, qmin: int, qmax: int,
                 inside_step_grad: bool, tol: float, need_gs: bool
                 ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(dL/dx, unscaled dL/ds of s's shape or None) of :func:`ste_forward`."""
    if use_fused(x) and gy.shape == x.shape:
        layout = _layout(x, s)
        if layout is not None:
            xf, sf, ordered = layout
            xp, inv = ordered
            g = gy if inv is None else gy.permute([inv.index(i) for i in range(len(inv))])
            g = g.reshape(xf.shape)  # gy in x's memory order (a copy if stored otherwise)
            lo, hi = _range(qmin, qmax, tol, x.device)
            try:
                if not need_gs:
                    return _restore(_kernel("gx")(xf, sf, g, lo, hi), ordered), None
                name = ("lsq" if inside_step_grad else "pact") + ("_tensor" if xf.dim() == 1 else "_channel")
                gx, gs = _kernel(name)(xf, sf, g, lo, hi, qmin, qmax)
                return _restore(gx, ordered), gs.reshape(s.shape)
            except Exception as e:  # pragma: no cover - depends on the toolchain
                _broken(e)
    return reference_backward(x, s, gy, qmin, qmax, inside_step_grad, tol, need_gs)
