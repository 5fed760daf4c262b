"""PACT: Parameterized Clipping Activation (Choi et al. 2018, arXiv:1805.06085).

Unsigned (activations):  y = clip(x, 0, alpha),      y_q = round(y / s) * s,  s = alpha / Qp,
                         Qp = 2^b - 1 (2^b levels on [0, alpha]).
Signed (weights):        y = clip(x, -alpha, alpha),  s = alpha / Qp,  Qp = 2^(b-1) - 1,
                         i.e. the restricted symmetric grid [-Qp, Qp] (2^b - 1 levels, as in
                         Q8BERT), so that the grid is symmetric around 0 and reaches +-alpha.

Gradients: the paper's STE (eq. 3), d y_q / d x = 1 inside the clip range, 0 outside;
d y_q / d alpha = 1 where x >= alpha, -1 where x <= -alpha (signed), 0 otherwise (the
quantization-error term inside the range is dropped, as in the paper). alpha is regularized
with L2 (lambda * alpha^2 / 2 in the paper) applied to alpha alone.

fairseq gives every parameter the same learning rate, so the clip's LR scale is realised by
reparametrization: the stored parameter is ``clip_raw`` and alpha = c * clip_raw, with

* c = lr_scale        for scale-invariant ("adaptive", Adam-family) optimizers: the update
                      lr * m / sqrt(v) of clip_raw does not depend on the gradient's scale,
                      so alpha moves c = lr_scale times faster;
* c = sqrt(lr_scale)  for "linear" optimizers (SGD/NAG): d alpha = c * lr * (c * g)
                      = lr_scale * lr * g.

The L2 term is added to alpha's gradient by a tensor hook: weight_decay * alpha *
``decay_grad_multiplier``; the model sets the multiplier to the batch size each forward
because fairseq divides all gradients by the number of sentences, so the per-update decay
is lambda * alpha. (The hook fires once per forward call of this quantizer.)
Calibration (:meth:`~qbert.quant.base.Quantizer.set_amax`) sets alpha = amax.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .base import EPS, Quantizer
from .config import OPTIMIZER_KINDS, AtLeast, Greater, OneOf, QuantizerConfig, option
from .registry import register_quantizer


@dataclass(frozen=True)
class PACTConfig(QuantizerConfig):
    """PACT's options; the defaults are the training recipe of the README (the constructor
    of :class:`PACTQuantizer` defaults to no LR scaling and no decay)."""

    init_clip: float = option(1.0, "initial clip value alpha (default {default})", Greater(0))
    lr_scale: float = option(1000.0, "multiplier on the clip parameters' learning rate "
                             "(default {default:g})", Greater(0))
    weight_decay: float = option(0.5, "L2 weight decay on the clip parameters only "
                                 "(default {default})", AtLeast(0))
    optimizer_kind: str = option("adaptive", "how the optimizer's update scales with the "
                                 "gradient: adaptive (Adam family) or linear (SGD); realises "
                                 "lr_scale", OneOf(OPTIMIZER_KINDS), user=False,
                                 realises="lr_scale")

    def invalid_message(self, violations) -> str:
        choice = [v for v in violations if isinstance(v[1], OneOf)]
        if choice:
            name, check, value = choice[0]
            return f"PACT {name} must be {check}, got {value!r}"
        bounds = [f"{f.name} {f.metadata['check']}" for f in self.options()
                  if isinstance(f.metadata.get("check"), (Greater, AtLeast))]
        return "PACT needs " + ", ".join(bounds[:-1]) + " and " + bounds[-1]


@register_quantizer("pact", config=PACTConfig, roles=("weight", "activation"))
class PACTQuantizer(Quantizer):
    restricted = True
    _inside_step_grad = False  # the paper's STE: no quantization-error term inside the range

    def __init__(self, bits: int, signed: bool = True, per_channel: bool = False,
                 num_channels: int = 1, init_clip: float = 1.0, lr_scale: float = 1.0,
                 weight_decay: float = 0.0, optimizer_kind: str = "adaptive"):
        super().__init__(bits, signed, per_channel, num_channels)
        PACTConfig(init_clip=init_clip, lr_scale=lr_scale, weight_decay=weight_decay,
                   optimizer_kind=optimizer_kind).validate()
        self.optimizer_kind = optimizer_kind
        self.lr_scale = float(lr_scale)
        self.weight_decay = float(weight_decay)
        self.decay_grad_multiplier = 1.0
        self.reparam = lr_scale if optimizer_kind == "adaptive" else math.sqrt(lr_scale)
        self.register_buffer("reparam_factor", torch.tensor(float(self.reparam)))
        self.clip_raw = nn.Parameter(torch.full(self.param_shape, init_clip / self.reparam))

    def alpha(self) -> torch.Tensor:
        """Current clip value(s), detached, shape [1] or [C, 1]."""
        return (self.clip_raw.detach().float() * self.reparam).clamp_min(EPS)

    def _step(self, x):
        alpha = self.clip_raw.float() * self.reparam
        if self.weight_decay > 0 and alpha.requires_grad and torch.is_grad_enabled():
            decay = alpha.detach() * (self.weight_decay * float(self.decay_grad_multiplier))
            alpha.register_hook(lambda g: g + decay)
        return alpha / self.Qp

    def _set_amax(self, amax: torch.Tensor) -> None:
        """alpha = amax, i.e. clip_raw = amax / c."""
        self.clip_raw.data.copy_(amax / self.reparam)

    def scale_summary(self) -> torch.Tensor:
        return self.alpha().mean()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        kc, kr = prefix + "reparam_factor", prefix + "clip_raw"
        if kc in state_dict and kr in state_dict:
            c_old = float(state_dict[kc])
            # saved with another lr_scale/optimizer kind: keep alpha = c * clip_raw unchanged
            # (the tolerance ignores the rounding of the buffer under --fp16)
            if abs(c_old - self.reparam) > 1e-3 * self.reparam:
                state_dict[kr] = state_dict[kr] * (c_old / self.reparam)
                state_dict[kc] = self.reparam_factor.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", lr_scale={self.lr_scale}, "
                f"optimizer_kind={self.optimizer_kind}, weight_decay={self.weight_decay}")
