"""Command-line quantization settings of ``quant_roberta``: flags, validation, factories.

This module turns the ``--quant-*`` / ``--weight-*`` / ``--act-*`` / ``--pact-*`` /
``--lsq-*`` flags into a :class:`QuantSettings` that the model asks, per layer group,
for a weight quantizer and an input (activation) quantizer. Every check runs when the
arguments are read, i.e. before the model is built and long before training starts,
and fails with a one-line message naming the flag and the allowed values.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional

from qbert.quant import ACT_QUANTIZERS, WEIGHT_QUANTIZERS, build_quantizer
from qbert.errors import ConfigError
from qbert.groups import GROUPS, parse_quant_groups, validate_bits

# How an optimizer's update depends on the gradient's scale decides how PACT's clip is
# reparametrized (alpha = c * clip_raw) to realise --pact-lr-scale (see quant/pact.py).
ADAPTIVE_OPTIMIZERS = ("adam", "adamax", "adagrad", "adadelta", "adafactor", "lamb", "cpu_adam")
LINEAR_OPTIMIZERS = ("sgd", "nag")

PACT_DEFAULTS = {"pact_init_clip": 1.0, "pact_lr_scale": 1000.0, "pact_weight_decay": 0.5}


def add_quant_args(parser):
    """Register the quantization flags (fairseq ``add_args`` style)."""
    g = parser  # fairseq passes the model-specific argument group
    g.add_argument("--quant-groups", type=str, default="", metavar="SPEC",
                   help="layer groups to fake-quantize, e.g. 'EMB,QKV,FFN' or 'EMB:2,QKV:4,FFN:4' "
                        f"(groups: {', '.join(GROUPS)}); empty = full precision")
    g.add_argument("--weight-bits", type=int, default=8, metavar="N",
                   help="default weight bits (2..8) of the listed groups")
    g.add_argument("--weight-quantizer", type=str, default="lsq",
                   help=f"weight quantizer: {', '.join(WEIGHT_QUANTIZERS)}")
    g.add_argument("--act-bits", type=int, default=0, metavar="N",
                   help="bits (2..8) of the inputs of every quantized Linear; 0 = activations stay FP")
    g.add_argument("--act-quantizer", type=str, default=None,
                   help=f"activation quantizer: {', '.join(ACT_QUANTIZERS)} (default lsq; needs --act-bits)")
    g.add_argument("--lsq-per-channel", action="store_true",
                   help="LSQ: one step size per output channel (row) of each weight")
    g.add_argument("--pact-init-clip", type=float, default=None,
                   help=f"PACT: initial clip value alpha (default {PACT_DEFAULTS['pact_init_clip']})")
    g.add_argument("--pact-lr-scale", type=float, default=None,
                   help="PACT: multiplier on the clip parameters' learning rate "
                        f"(default {PACT_DEFAULTS['pact_lr_scale']:g})")
    g.add_argument("--pact-weight-decay", type=float, default=None,
                   help="PACT: L2 weight decay on the clip parameters only "
                        f"(default {PACT_DEFAULTS['pact_weight_decay']})")


@dataclass
class QuantSettings:
    """Validated quantization settings; the single source of truth for the model."""

    group_bits: Dict[str, int] = field(default_factory=dict)
    weight_quantizer: str = "lsq"
    act_bits: int = 0
    act_quantizer: str = "lsq"
    lsq_per_channel: bool = False
    pact_init_clip: float = PACT_DEFAULTS["pact_init_clip"]
    pact_lr_scale: float = PACT_DEFAULTS["pact_lr_scale"]
    pact_weight_decay: float = PACT_DEFAULTS["pact_weight_decay"]
    optimizer_kind: str = "adaptive"

    @classmethod
    def from_args(cls, args) -> "QuantSettings":
        """Read and check the flags on a fairseq args namespace; raise :class:`ConfigError`."""
        get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
        weight_q = get("weight_quantizer", "lsq")
        if weight_q not in WEIGHT_QUANTIZERS:
            raise ConfigError(f"--weight-quantizer: unknown quantizer '{weight_q}'; allowed: {', '.join(WEIGHT_QUANTIZERS)}")
        default_bits = get("weight_bits", 8)
        validate_bits("--weight-bits", default_bits)
        group_bits = parse_quant_groups(get("quant_groups", "") or "", default_bits)
        act_bits = get("act_bits", 0) or 0
        act_q = get("act_quantizer", None)
        if act_bits:
            validate_bits("--act-bits", act_bits)
            act_q = act_q or "lsq"
            if act_q not in ACT_QUANTIZERS:
                raise ConfigError(f"--act-quantizer: unknown quantizer '{act_q}'; allowed: {', '.join(ACT_QUANTIZERS)}")
        elif act_q is not None:
            raise ConfigError(f"--act-quantizer {act_q} needs --act-bits N (N in 2..8); --act-bits is 0 (activations full precision)")
        if act_bits and not group_bits:
            raise ConfigError("--act-bits needs --quant-groups: activations are quantized at the inputs of the quantized groups' Linears")
        if weight_q == "twn" and any(b != 2 for b in group_bits.values()):
            group_bits = {g: 2 for g in group_bits}  # ternary has no bit width: 3 levels

        uses_pact = (weight_q == "pact" and group_bits) or (act_bits and act_q == "pact")
        pact = {}
        for name, default in PACT_DEFAULTS.items():
            value = get(name, None)
            if value is not None and not uses_pact:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} is a PACT flag but PACT is not used; pass --weight-quantizer pact or --act-quantizer pact")
            pact[name] = default if value is None else value
        if pact["pact_init_clip"] <= 0:
            raise ConfigError(f"--pact-init-clip must be > 0, got {pact['pact_init_clip']}")
        if pact["pact_lr_scale"] <= 0:
            raise ConfigError(f"--pact-lr-scale must be > 0, got {pact['pact_lr_scale']}")
        if pact["pact_weight_decay"] < 0:
            raise ConfigError(f"--pact-weight-decay must be >= 0, got {pact['pact_weight_decay']}")

        optimizer_kind = "adaptive"
        if uses_pact:
            optimizer = get("optimizer", "adam")
            optimizer = getattr(optimizer, "_name", optimizer)  # hydra node or plain string
            if optimizer in LINEAR_OPTIMIZERS:
                optimizer_kind = "linear"
            elif optimizer not in ADAPTIVE_OPTIMIZERS:
                raise ConfigError(
                    f"--pact-lr-scale: do not know how --optimizer {optimizer} scales updates; "
                    f"supported: {', '.join(ADAPTIVE_OPTIMIZERS + LINEAR_OPTIMIZERS)}")
        return cls(group_bits=group_bits, weight_quantizer=weight_q, act_bits=act_bits,
                   act_quantizer=act_q or "lsq", lsq_per_channel=bool(get("lsq_per_channel", False)),
                   optimizer_kind=optimizer_kind, **pact)

    # ------------------------------------------------------------------ queries
    def quantizes(self, group: str) -> bool:
        return group in self.group_bits

    def describe(self) -> str:
        if not self.group_bits:
            return "full precision (no --quant-groups)"
        groups = ",".join(f"{g}:{b}" for g, b in self.group_bits.items())
        acts = f"A{self.act_bits} {self.act_quantizer}" if self.act_bits else "activations FP"
        return f"weights {self.weight_quantizer} {groups}; {acts}"

    def _kwargs(self, name: str) -> dict:
        if name != "pact":
            return {}
        return dict(pact_init_clip=self.pact_init_clip, pact_lr_scale=self.pact_lr_scale,
                    pact_weight_decay=self.pact_weight_decay, optimizer_kind=self.optimizer_kind)

    def weight_quantizer_for(self, group: str, num_rows: int):
        """The weight quantizer of one module of ``group`` (None when the group stays FP)."""
        if not self.quantizes(group):
            return None
        per_channel = self.lsq_per_channel and self.weight_quantizer == "lsq"
        return build_quantizer(self.weight_quantizer, self.group_bits[group], signed=True,
                               per_channel=per_channel, num_channels=num_rows if per_channel else 1,
                               **self._kwargs(self.weight_quantizer))

    def input_quantizer_for(self, group: str, signed: bool = True) -> Optional[object]:
        """The input quantizer of one Linear of ``group`` (None when activations stay FP)."""
        if not (self.act_bits and self.quantizes(group)):
            return None
        return build_quantizer(self.act_quantizer, self.act_bits, signed=signed,
                               **self._kwargs(self.act_quantizer))
