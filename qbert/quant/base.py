"""Base class and shared straight-through-estimator (STE) code for all fake quantizers.

A fake quantizer maps a float tensor to the nearest point of a scaled integer grid and
back, so the forward pass sees quantized values while the weights stay float. Integer grid
for ``bits`` = b:

* signed:   Qn = 2^(b-1),  Qp = 2^(b-1) - 1   (full two's-complement grid [-Qn, Qp], 2^b levels)
* unsigned: Qn = 0,        Qp = 2^b - 1       ([0, Qp], 2^b levels)

Quantizers with ``restricted = True`` (PACT signed, Q8BERT min-max/EMA, TWN) use the
symmetric grid [-Qp, Qp] when signed (2^b - 1 levels), as Q8BERT (Zafrir et al. 2019) does.

All quantizer math runs in fp32 (``x.float()`` in, ``.to(x.dtype)`` out), so fp16
training does not round the step sizes or the grid.

Every quantizer also exposes its grid as data (:mod:`qbert.quant.qparams`):
``qparams(x)`` (scale, zero point, [qmin, qmax], axis, bits), ``integer_codes(w)`` for
export, and ``set_amax(amax)`` for calibration (scale = amax / Qp).
"""
from typing import Callable, ClassVar, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn

from qbert.errors import CheckpointError, ConfigError, QBertError

from . import kernels
from .qparams import QParams, quantize

EPS = 1e-8  # smallest step size / clip value: keeps learned scales strictly positive


class _FakeQuantSTE(torch.autograd.Function):
    """y = round(clamp(x / s, qmin, qmax)) * s with straight-through gradients.

    Gradients (Esser et al. 2020, LSQ, eq. 3; with ``inside_step_grad=False`` they are the
    PACT ones, Choi et al. 2018, eq. 3, expressed through s = alpha / Qp):

    * dy/dx = 1 where qmin <= x/s <= qmax, else 0 (round is passed straight through);
    * dy/ds = round(x/s) - x/s inside (0 if ``inside_step_grad`` is False),
      qmin below the range, qmax above it; the step gradient is multiplied by ``grad_scale``.

    ``tol`` widens the "inside" test by a relative tolerance (for scales computed as
    max|x|/Qp, where x_max/s can exceed Qp by one ulp). ``s`` is clamped to EPS in the
    forward and the clamp is passed straight through, so a learned scale never gets stuck.
    Saves only ``x`` and ``s`` for backward (memory: no elementwise temporaries are kept).
    The passes over the tensor are :func:`qbert.quant.kernels.ste_forward` /
    :func:`~qbert.quant.kernels.ste_backward` (fused when compiled, see there).
    """

    @staticmethod
    def forward(ctx, x, s, qmin, qmax, grad_scale, inside_step_grad, tol):
        s = s.clamp_min(EPS)
        ctx.save_for_backward(x, s)
        ctx.cfg = (qmin, qmax, grad_scale, inside_step_grad, tol)
        return kernels.ste_forward(x, s, qmin, qmax)

    @staticmethod
    def backward(ctx, gy):
        x, s = ctx.saved_tensors
        qmin, qmax, grad_scale, inside_step_grad, tol = ctx.cfg
        gx, gs = kernels.ste_backward(x, s, gy, qmin, qmax, inside_step_grad, tol,
                                      need_gs=ctx.needs_input_grad[1])
        if gs is not None:
            gs = gs * grad_scale
        if not ctx.needs_input_grad[0]:
            gx = None
        return gx, gs, None, None, None, None, None


def fake_quant_ste(x, s, qmin: int, qmax: int, grad_scale: float = 1.0,
                   inside_step_grad: bool = True, tol: float = 0.0):
    """Uniform fake quantization with STE; see :class:`_FakeQuantSTE`."""
    return _FakeQuantSTE.apply(x, s, qmin, qmax, grad_scale, inside_step_grad, tol)


class _StraightThrough(torch.autograd.Function):
    """y = fn(x) in the forward, dy/dx = 1 (identity STE) in the backward; saves nothing."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, gy):
        return gy, None


def straight_through(x, fn: Callable[[torch.Tensor], torch.Tensor]):
    """Apply ``fn`` (no autograd inside) with an identity gradient to ``x``."""
    return _StraightThrough.apply(x, fn)


class BitsMismatchError(CheckpointError):
    """A state dict holds quantizer state saved with other bits than the quantizer has."""

    def __init__(self, module: str, saved_bits: int, bits: int):
        super().__init__(f"checkpoint quantizer {module} was trained with {saved_bits} bits "
                         f"but this quantizer has {bits}")
        self.module, self.saved_bits, self.bits = module, saved_bits, bits


class QuantizerStateError(QBertError, RuntimeError):
    """A quantizer's state is asked for before it exists (not initialised yet)."""


class Quantizer(nn.Module):
    """Fake quantizer base: lazy data-dependent init, fp32 math, statistics, checkpoint checks.

    A uniform quantizer implements :meth:`_step` (the step s, fp32, shape [1] or [C, 1];
    grid point k means k * s) and the base class runs the STE of :func:`fake_quant_ste`
    with it; others (TWN) override :meth:`fake_quant` and :meth:`_scale_and_threshold`.
    Either stores the step it used in ``self._last_step`` (statistics). A quantizer may
    implement :meth:`initialize` (called once, on the first tensor seen, under no_grad)
    listing the parameters/buffers it sets in ``_init_state`` (averaged over data-parallel
    workers), and :meth:`_set_amax` (calibration). Per-channel means one scale per row
    (dim 0) of a 2-D weight, shape [C, 1].
    """

    kind: ClassVar[str] = ""    # registered name (set by register_quantizer)
    restricted = False          # signed grid [-Qp, Qp] instead of [-Qn, Qp]
    scale_from_tensor = False   # True: the scale is computed from each tensor (min-max, TWN)
    allowed_bits: ClassVar[Optional[Tuple[int, ...]]] = None  # None: any bits >= 2
    allows_unsigned = True
    _init_state: Tuple[str, ...] = ()  # names set by initialize(); all-reduced when distributed
    _range_tol = 0.0            # relative tolerance of the clip test (see _FakeQuantSTE)
    _inside_step_grad = True    # dy/ds = round(v) - v inside the range (LSQ); False: 0 (PACT)

    def __init__(self, bits: int, signed: bool = True, per_channel: bool = False,
                 num_channels: int = 1):
        super().__init__()
        if not isinstance(bits, int) or bits < 2:
            raise ConfigError(f"quantizer bits must be an integer >= 2, got {bits!r}")
        if per_channel and num_channels < 1:
            raise ConfigError("per_channel quantizer needs num_channels >= 1")
        self.signed = bool(signed)
        self.per_channel = bool(per_channel)
        self.num_channels = int(num_channels) if per_channel else 1
        self.Qn = 2 ** (bits - 1) if signed else 0
        self.Qp = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
        self.qmin = -self.Qp if (signed and self.restricted) else -self.Qn
        self.qmax = self.Qp
        self.register_buffer("bits", torch.tensor(bits, dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self._init_known = False  # python cache of `initialized` (avoids a device sync per call)
        self._last_step: Optional[torch.Tensor] = None
        self.last_clip_fraction: Optional[torch.Tensor] = None
        #: compute ``last_clip_fraction`` in training forwards (an extra pass over the
        #: tensor; the model turns it on only for the updates whose statistics are logged)
        self.record_stats = True

    @classmethod
    def from_config(cls, bits: int, config, **grid) -> "Quantizer":
        """Build from a validated config (see :mod:`qbert.quant.config`); ``grid`` holds
        ``signed``, ``per_channel``, ``num_channels``. Override when the constructor's
        keyword names differ from the config's fields."""
        return cls(bits, **grid, **config.as_kwargs())

    # ----------------------------------------------------------------- helpers
    @property
    def param_shape(self) -> Tuple[int, ...]:
        return (self.num_channels, 1) if self.per_channel else (1,)

    @property
    def is_initialized(self) -> bool:
        return self._init_known or bool(self.initialized)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """x as [C, -1] (per channel, one row per output channel) or [1, -1]."""
        if self.per_channel:
            if x.dim() != 2 or x.shape[0] != self.num_channels:
                raise ValueError(
                    f"per-channel quantizer expects a 2-D weight with {self.num_channels} rows, "
                    f"got shape {tuple(x.shape)}")
            return x
        return x.reshape(1, -1)

    def _group_size(self, x: torch.Tensor) -> int:
        """Number of elements sharing one scale."""
        return x.numel() // self.num_channels

    # ------------------------------------------------------------ subclass API
    def initialize(self, x: torch.Tensor) -> None:  # pragma: no cover - default no-op
        """Set data-dependent parameters from the first tensor seen (fp32, detached)."""

    def _step(self, x: Optional[torch.Tensor]) -> torch.Tensor:
        """The step s the forward uses for fp32 ``x`` (shape [1] or [C, 1]; may carry a
        gradient; ``x`` is None when it does not depend on the tensor)."""
        raise NotImplementedError(f"{type(self).__name__} has no uniform step")

    def _grad_scale(self, x: torch.Tensor) -> float:
        """Multiplier of the step's gradient (LSQ's g)."""
        return 1.0

    def _set_amax(self, amax: torch.Tensor) -> None:
        """Set the state from a calibrated range ``amax`` (fp32, shape param_shape)."""
        raise ConfigError(f"{self.kind or type(self).__name__} quantizer: its scale is "
                          "computed from each tensor itself, there is no range to set (set_amax)")

    def _scale_and_threshold(self, x: Optional[torch.Tensor]
                             ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(scale, dead-zone threshold or None) of :meth:`qparams`, under no_grad."""
        return self._step(x).clamp_min(EPS), None

    def ste_step(self, x: torch.Tensor) -> Tuple[torch.Tensor, float]:
        """(step s, its gradient multiplier) for one forward of a uniform quantizer on fp32
        ``x``, after this forward's state updates (EMA's running max); sets ``_last_step``.
        ``fake_quant`` and the fused layers (:mod:`qbert.quant.fused`) both go through it."""
        s = self._step(x)
        self._last_step = s.detach().clamp_min(EPS)
        return s, self._grad_scale(x)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        """The fake-quantized x (fp32 in, fp32 out); sets ``self._last_step``."""
        s, grad_scale = self.ste_step(x)
        return fake_quant_ste(x, s, self.qmin, self.qmax, grad_scale=grad_scale,
                              inside_step_grad=self._inside_step_grad, tol=self._range_tol)

    @property
    def uniform(self) -> bool:
        """Whether the forward is the uniform STE of :meth:`ste_step` (False: TWN)."""
        cls = type(self)
        return cls.fake_quant is Quantizer.fake_quant and cls.forward is Quantizer.forward

    def scale_summary(self) -> torch.Tensor:
        """Mean step size (0-dim, detached) for logging; 0 before the first forward of a
        quantizer whose scale is computed from the tensor."""
        if not self.scale_from_tensor:
            with torch.no_grad():
                return self._step(None).detach().float().clamp_min(EPS).mean()
        if self._last_step is None:
            return torch.zeros(())
        return self._last_step.detach().float().mean()

    # ------------------------------------------------------- parameters as data
    def qparams(self, x: Optional[torch.Tensor] = None) -> QParams:
        """The grid the eval forward uses (for ``x`` when the scale depends on the tensor).

        ``fake_quant(x, q.qparams(x))`` equals ``q(x)`` in eval mode. Quantizers whose
        scale is state (LSQ, PACT, EMA) read it (``x`` is only shape-checked); min-max and
        TWN need ``x``.
        """
        name = self.kind or type(self).__name__
        if x is None and self.scale_from_tensor:
            raise ConfigError(f"{name} quantizer: qparams() needs the tensor: its scale is "
                              "computed from the tensor itself")
        if self._init_state and not self.is_initialized:
            raise QuantizerStateError(f"{name} quantizer is not initialised yet: run a forward "
                                      "pass or set_amax() first")
        with torch.no_grad():
            if x is not None:
                x = x.detach().float()
                self._rows(x)  # shape check
            scale, threshold = self._scale_and_threshold(x)
            scale = scale.detach().float().reshape(self.param_shape)
        return QParams(scale=scale, zero_point=torch.zeros_like(scale, dtype=torch.int32),
                       qmin=self.qmin, qmax=self.qmax, axis=0 if self.per_channel else None,
                       bits=int(self.bits), signed=self.signed, restricted=self.restricted,
                       threshold=threshold)

    def integer_codes(self, w: torch.Tensor) -> torch.Tensor:
        """The integer codes of ``w`` on this quantizer's grid (for export)."""
        return quantize(w, self.qparams(w))

    def set_amax(self, amax) -> None:
        """Calibration: set the state from a range ``amax`` >= 0 (shape [], [1] or [C, 1])
        so that the scale is amax / Qp; the quantizer then counts as initialised."""
        like = self.initialized.device
        a = torch.as_tensor(amax, dtype=torch.float32, device=like).detach()
        if a.numel() == 1:
            a = a.reshape(1).expand(self.param_shape)
        elif tuple(a.shape) != self.param_shape:
            raise ConfigError(f"set_amax: amax of shape {tuple(a.shape)} does not fit a quantizer "
                              f"with scale shape {self.param_shape}")
        if not bool(torch.isfinite(a).all()) or bool((a < 0).any()):
            raise ConfigError("set_amax: amax must be finite and >= 0")
        with torch.no_grad():
            self._set_amax(a.clone())
        self.initialized.fill_(1)
        self._init_known = True

    # ----------------------------------------------------------------- forward
    def ensure_initialized(self, xf: torch.Tensor) -> None:
        """Initialise from fp32 ``xf`` unless already initialised (lazy, data-dependent)."""
        if not self._init_known:
            if not bool(self.initialized):
                with torch.no_grad():
                    self.initialize(xf.detach())
                    self._sync_initial_state()
                    self.initialized.fill_(1)
            self._init_known = True

    def record_statistics(self, xf: torch.Tensor) -> None:
        """In training with ``record_stats``: the fraction of ``xf`` outside the range."""
        if self.training and self.record_stats and self._last_step is not None:
            with torch.no_grad():
                v = xf.detach() / self._last_step
                tol = 1 + self._range_tol
                outside = (v < self.qmin * tol) | (v > self.qmax * tol)
                self.last_clip_fraction = outside.float().mean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        self.ensure_initialized(xf)
        y = self.fake_quant(xf)
        self.record_statistics(xf)
        return y.to(x.dtype)

    def reset_initialization(self) -> None:
        """Re-initialise from the next tensor seen (use this, not ``initialized.fill_(0)``)."""
        self.initialized.fill_(0)
        self._init_known = False

    def _sync_initial_state(self) -> None:
        """Average the freshly initialised state over data-parallel workers."""
        if not (self._init_state and dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size()
        for name in self._init_state:
            t = getattr(self, name).data
            dist.all_reduce(t)
            t.div_(world)

    # -------------------------------------------------------------- checkpoint
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        key = prefix + "bits"
        if key in state_dict and int(state_dict[key]) != int(self.bits):
            raise BitsMismatchError(prefix.rstrip(".") or "<root>", int(state_dict[key]),
                                    int(self.bits))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        self._init_known = False

    def extra_repr(self) -> str:
        return (f"bits={int(self.bits)}, signed={self.signed}, per_channel={self.per_channel}"
                + (f", num_channels={self.num_channels}" if self.per_channel else ""))
