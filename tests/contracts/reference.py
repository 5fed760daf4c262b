"""Reference gradients of the fake-quantization STE, written elementwise from the papers
(LSQ, Esser et al. 2020, eq. 3; PACT, Choi et al. 2018, eq. 3) and summed in float64.

    dy/dx = 1 where qmin (1 + tol) <= x/s <= qmax (1 + tol), else 0
    dy/ds = round(c) - x/s inside (0 for PACT), round(c) outside, c = clamp(x/s, qmin, qmax)

and the step gradient is multiplied by ``grad_scale``.
"""
import torch

from qbert.quant import EPS


def reference_ste_grads(x, s, qmin, qmax, gy, grad_scale=1.0, inside_step_grad=True, tol=0.0):
    """(dL/dx as fp32, dL/ds as float64 of s's shape) for upstream gradient ``gy``."""
    s = s.detach().float().clamp_min(EPS)
    v = x.detach().float() / s  # the ratio in fp32, as the forward computes it
    inside = (v >= qmin * (1 + tol)) & (v <= qmax * (1 + tol))
    v64, gy64 = v.double(), gy.double()
    r = v64.clamp(qmin, qmax).round()
    dyds = torch.where(inside, (r - v64) if inside_step_grad else torch.zeros_like(r), r)
    gs = (gy64 * dyds).sum_to_size(s.shape) * grad_scale
    return gy * inside, gs
