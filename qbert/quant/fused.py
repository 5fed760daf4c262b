"""Fast training paths of the quantized layers, equal to the reference ones in what they compute.

Linear (:func:`quant_linear`), one autograd node for::

    y = F.linear(Q_x(x), Q_w(W), b),   Q(t) = round(clamp(t / s, qmin, qmax)) * s

with the straight-through gradients of LSQ (Esser et al. 2020, eq. 3) / PACT (Choi et al.
2018, eq. 3) / Q8BERT (Zafrir et al. 2019) for x, W and the steps. The reference
(``QuantLinear`` through its quantizers' forwards) keeps Q_x(x) and Q_w(W) alive until the
backward (F.linear saves both): a full copy of every quantized weight and of every
quantized activation. This node saves only x, W and the steps, and recomputes Q_x(x) and
Q_w(W) in the backward (one fused pass each, :mod:`qbert.quant.kernels`); the matrix
products are the ones autograd runs for ``F.linear`` (``addmm`` backward), so the values
are those of the reference, bit for bit, except the step-gradient sums (fp32 reassociation
when the compiled kernels run).

Embedding (:func:`quant_embedding`): ``F.embedding(ids, Q(W))`` needs only the rows a batch
looks up, and Q is elementwise given the step (one per tensor or per row), so::

    F.embedding(ids, Q(W))[i] = Q_{s[ids[i]]}(W[ids[i]])

The reference quantizes the full table every step (50265 x 768 for roberta-base) and runs
the STE backward over all of it; this path quantizes the B x T looked-up rows. The step is
still the full table's (initialisation, min-max ranges, EMA running max and LSQ's gradient
scale g = 1 / sqrt(N Qp) use the whole table, N = its size), the table's gradient is
``F.embedding``'s (the padding row gets none) and the step gradient sums the same terms (the
padding positions' excluded) in another order. Export and calibration still read the whole
table (``integer_codes`` / ``qparams``).
"""
import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import kernels
from .base import EPS, Quantizer, fake_quant_ste

#: (qmin, qmax, grad_scale, inside_step_grad, tol) of one uniform quantizer, or None
_Cfg = Optional[Tuple[int, int, float, bool, float]]


def _cfg(q: Quantizer, grad_scale: float) -> tuple:
    return (q.qmin, q.qmax, grad_scale, q._inside_step_grad, q._range_tol)


def _fast_path_allowed(*tensors: torch.Tensor) -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if torch.onnx.is_in_onnx_export():
        return False
    return all(t.dtype == torch.float32 and t.layout == torch.strided
               and not torch.is_autocast_enabled(t.device.type) for t in tensors)


#: the fused layer paths are on (they also run with the reference kernels: the memory and
#: row savings need no compiler); tests, and ``QBERT_FUSED_LAYERS=0`` in the environment,
#: switch them off to get the reference module paths
_enabled = [os.environ.get("QBERT_FUSED_LAYERS", "1").strip() not in ("0", "false", "no", "off")]


def set_enabled(flag: bool) -> bool:
    """Turn the fused layer paths on or off (the reference module paths); returns the old value."""
    old, _enabled[0] = _enabled[0], bool(flag)
    return old


def is_enabled() -> bool:
    return _enabled[0]


def _quantize(t, s, cfg):
    return t if cfg is None else kernels.ste_forward(t, s, cfg[0], cfg[1])


def _ste_grad(t, s, g, cfg, need_t, need_s):
    """(dL/dt, dL/ds scaled by the gradient multiplier) from dL/dQ(t) = g."""
    if cfg is None:
        return g, None
    qmin, qmax, grad_scale, inside_step_grad, tol = cfg
    gt, gs = kernels.ste_backward(t, s, g, qmin, qmax, inside_step_grad, tol, need_gs=need_s)
    if gs is not None:
        gs = gs * grad_scale
    return (gt if need_t else None), gs


class _QuantLinearFn(torch.autograd.Function):
    """y = F.linear(Q_x(x), Q_w(w), b), recomputing Q_x(x), Q_w(w) in the backward."""

    @staticmethod
    def forward(ctx, x, w, b, sx, sw, cx: _Cfg, cw: _Cfg):
        sx = sx.clamp_min(EPS) if cx is not None else None
        sw = sw.clamp_min(EPS) if cw is not None else None
        xq = _quantize(x, sx, cx)  # x's strides, as the reference quantizer's output has
        y = F.linear(xq, _quantize(w, sw, cw), b)
        ctx.save_for_backward(x, w, sx, sw)
        # F.linear runs addmm(b, x, w^T) for 2-D input and contiguous 3-D input (flattened),
        # else matmul(x, w^T).add_(b): the bias gradient is reduced as each of them does
        ctx.cfg = (cx, cw, b is not None, x.dim() == 2 or (x.dim() == 3 and xq.is_contiguous()))
        return y

    @staticmethod
    def backward(ctx, gy):
        x, w, sx, sw = ctx.saved_tensors
        cx, cw, has_bias, addmm = ctx.cfg
        need_x, need_w, need_b, need_sx, need_sw = ctx.needs_input_grad[:5]
        out_features, in_features = w.shape
        gy2 = gy.reshape(-1, out_features)
        gx = gw = gb = gsx = gsw = None
        # addmm's backward, as autograd runs it for F.linear: d mat1 = grad @ mat2^T,
        # d mat2 (column-major weight^T) = (grad^T @ mat1)^T, d bias = sum_to(grad)
        if need_x or need_sx:
            gxq = gy2.mm(_quantize(w, sw, cw)).view(x.shape)
            gx, gsx = _ste_grad(x, sx, gxq, cx, need_x, need_sx)
        if need_w or need_sw:
            xq = _quantize(x, sx, cx).reshape(-1, in_features)
            gwq = gy2.t().mm(xq)
            gw, gsw = _ste_grad(w, sw, gwq, cw, need_w, need_sw)
        if has_bias and need_b:
            gb = gy2.sum(0) if addmm else gy.sum_to_size(out_features)
        return gx, gw, gb, gsx, gsw, None, None


def _observed(q: Quantizer) -> bool:
    """Whether hooks watch the quantizer's forward (statistics probes) or its forward is
    replaced on the instance (calibration's observers, :func:`qbert.calib.api.bypassed`):
    then it must run as a module, which the fused paths do not do."""
    from torch.nn.modules import module as nn_module

    return bool("forward" in q.__dict__ or q._forward_hooks or q._forward_pre_hooks or q._backward_hooks
                or q._backward_pre_hooks or nn_module._global_forward_hooks
                or nn_module._global_forward_pre_hooks)


def linear_fusable(module, input_quantized: bool = False) -> bool:
    """Whether :func:`quant_linear` applies to this QuantLinear (uniform quantizers, fp32,
    no 2:4 weight mask, no hooks on the quantizers)."""
    iq = None if input_quantized else module.input_quantizer
    qs = [q for q in (iq, module.weight_quantizer) if q is not None]
    return (_enabled[0] and bool(qs) and all(q.uniform and not _observed(q) for q in qs)
            and "weight_mask" not in module._buffers)


def quant_linear(module, x: torch.Tensor, input_quantized: bool = False) -> Optional[torch.Tensor]:
    """The fused forward of a ``QuantLinear``, or None when the reference path must run
    (``input_quantized``: skip the input quantizer, ``x`` went through it already)."""
    w, b = module.weight, module.bias
    if not (linear_fusable(module, input_quantized) and x.dim() >= 2
            and _fast_path_allowed(x, w) and (b is None or b.dtype == torch.float32)):
        return None
    iq, wq = (None if input_quantized else module.input_quantizer), module.weight_quantizer
    sx = sw = cx = cw = None
    if iq is not None:  # the reference order: the input quantizer's forward, then the weight's
        iq.ensure_initialized(x)
        sx, g = iq.ste_step(x)
        cx = _cfg(iq, g)
    if wq is not None:
        wq.ensure_initialized(w)
        sw, g = wq.ste_step(w)
        cw = _cfg(wq, g)
    y = _QuantLinearFn.apply(x, w, b, sx if sx is not None else w.new_empty(0),
                             sw if sw is not None else w.new_empty(0), cx, cw)
    if iq is not None:
        iq.record_statistics(x)
    if wq is not None:
        wq.record_statistics(w)
    return y


def quant_embedding(module, ids: torch.Tensor) -> Optional[torch.Tensor]:
    """``F.embedding(ids, Q(W), padding_idx)`` quantizing only the looked-up rows, or None
    when the reference path must run (see the module docstring)."""
    q = module.weight_quantizer
    w = module.weight
    if not (_enabled[0] and q is not None and q.uniform and not _observed(q)
            and "weight_mask" not in module._buffers
            and not module.scale_grad_by_freq and not module.sparse
            and ids.numel() < module.num_embeddings and _fast_path_allowed(w)
            and not torch.is_floating_point(ids)):
        return None
    q.ensure_initialized(w)
    s, grad_scale = q.ste_step(w)  # the full table's step, range and gradient scale
    pad = module.padding_idx
    rows = F.embedding(ids, w, pad)
    if s.numel() == 1:
        y = _quantize_rows(rows, s, q, grad_scale)
    else:  # one step per table row: each looked-up row with its own step
        s_rows = F.embedding(ids.reshape(-1), s, pad)
        y = _quantize_rows(rows.reshape(-1, w.shape[1]), s_rows, q, grad_scale).view(rows.shape)
    if pad is not None and module.training and torch.is_grad_enabled():
        # no gradient from padding positions (the reference's F.embedding gives the padding
        # row of Q(W) none, so it adds nothing to the step's gradient either)
        y = torch.where((ids == pad).unsqueeze(-1), y.detach(), y)
    q.record_statistics(w)
    return y


def _quantize_rows(rows: torch.Tensor, s: torch.Tensor, q: Quantizer, grad_scale: float
                   ) -> torch.Tensor:
    return fake_quant_ste(rows, s, q.qmin, q.qmax, grad_scale=grad_scale,
                          inside_step_grad=q._inside_step_grad, tol=q._range_tol)
