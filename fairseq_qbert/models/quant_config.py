"""Command-line quantization settings of ``quant_roberta``: flags, validation, factories.

This module turns the ``--quant-*`` / ``--weight-*`` / ``--act-*`` / ``--lsq-*`` flags and
the quantizers' own options into a :class:`QuantSettings` that the model asks, per layer
group, for a weight quantizer and an input (activation) quantizer. Every check runs when
the arguments are read, i.e. before the model is built and long before training starts,
and fails with a one-line message naming the flag and the allowed values.

The quantizers' options come from the registry (:data:`qbert.quant.QUANTIZER_REGISTRY`):
every user option ``F`` of the config of quantizer ``NAME`` is the flag ``--NAME-F``
(``--pact-init-clip``) with the config's default, description and checks, unless fairseq
owns that name (:data:`FAIRSEQ_OWNED`); :func:`full_precision_args` (the KD teacher's
settings) is the flags' defaults.
"""
import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional, Tuple

from qbert.errors import ConfigError
from qbert.groups import GROUPS, parse_quant_groups, validate_bits
from qbert.quant import (
    ACT_QUANTIZERS,
    OPTIMIZER_KIND,
    QUANTIZER_REGISTRY,
    WEIGHT_QUANTIZERS,
    QuantizerConfig,
    QuantizerSpec,
    build_quantizer,
)

from .sparsity import SparseSettings

# How an optimizer's update depends on the gradient's scale decides how PACT's clip is
# reparametrized (alpha = c * clip_raw) to realise --pact-lr-scale (see quant/pact.py).
ADAPTIVE_OPTIMIZERS = ("adam", "adamax", "adagrad", "adadelta", "adafactor", "lamb", "cpu_adam")
LINEAR_OPTIMIZERS = ("sgd", "nag")

#: the flag choosing the quantizer of each role
ROLE_FLAGS = {"weight": "--weight-quantizer", "activation": "--act-quantizer"}

#: quantizer options without a flag because fairseq already has one of that name
#: (``--ema-decay`` is the decay of fairseq's checkpoint EMA, ``--store-ema``): they keep
#: their config default
FAIRSEQ_OWNED = frozenset({"ema_decay"})


def _dest(spec: QuantizerSpec, option: str) -> str:
    """The args attribute of a quantizer option: ``pact_init_clip``."""
    return f"{spec.name}_{option}"


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def flag_options(spec: QuantizerSpec) -> Iterator[Tuple[str, dataclasses.Field]]:
    """(args attribute, config field) of each option of ``spec`` that is a flag."""
    for f in spec.config.user_options():
        if _dest(spec, f.name) not in FAIRSEQ_OWNED:
            yield _dest(spec, f.name), f


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
    g.add_argument("--shared-qkv-input-quantizer", action="store_true",
                   help="one input quantizer for q/k/v of each attention layer (they read the same "
                        "tensor): quantized once, one step; needs --act-bits and QKV in --quant-groups")
    for spec in QUANTIZER_REGISTRY.values():
        for dest, f in flag_options(spec):  # default None = not given (see _read_config)
            g.add_argument(_flag(dest), type=f.type, default=None,
                           help=f"{spec.name.upper()}: " + f.metadata["doc"].format(default=f.default))


def full_precision_args() -> Dict[str, Any]:
    """The flags' defaults: the settings of a full-precision model (the KD teacher's)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_quant_args(parser)
    return vars(parser.parse_args([]))


def default_configs() -> Dict[str, QuantizerConfig]:
    return {name: spec.config() for name, spec in QUANTIZER_REGISTRY.items()}


def _known(flag: str, name: str, allowed) -> str:
    """``name`` if it is one of ``allowed`` (a registry view), else a ConfigError."""
    if name not in allowed:
        raise ConfigError(f"{flag}: unknown quantizer '{name}'; allowed: {', '.join(allowed)}")
    return name


def _read_config(get, spec: QuantizerSpec, used: bool) -> QuantizerConfig:
    """The validated config of ``spec`` from its flags (None = the config's default)."""
    label = spec.name.upper()
    values = {}
    for dest, f in flag_options(spec):
        value = get(dest, None)
        if value is not None and not used:
            how = " or ".join(f"{ROLE_FLAGS[role]} {spec.name}" for role in spec.roles)
            raise ConfigError(f"{_flag(dest)} is a {label} flag but {label} is not used; pass {how}")
        if value is not None:
            values[f.name] = value
    config = spec.config(**values)
    bad = config.violations()
    if bad:
        name, check, value = bad[0]
        raise ConfigError(f"{_flag(_dest(spec, name))} must be {check}, got {value}")
    return config


def _with_optimizer_kind(get, spec: QuantizerSpec, config: QuantizerConfig) -> QuantizerConfig:
    """``config`` with its optimizer kind set from --optimizer (when it has that option)."""
    kind_field = next((f for f in config.options() if f.name == OPTIMIZER_KIND), None)
    if kind_field is None:
        return config
    optimizer = get("optimizer", "adam")
    optimizer = getattr(optimizer, "_name", optimizer)  # hydra node or plain string
    if optimizer in LINEAR_OPTIMIZERS:
        return dataclasses.replace(config, **{OPTIMIZER_KIND: "linear"})
    if optimizer not in ADAPTIVE_OPTIMIZERS:
        flag = _flag(_dest(spec, kind_field.metadata.get("realises", OPTIMIZER_KIND)))
        raise ConfigError(
            f"{flag}: do not know how --optimizer {optimizer} scales updates; "
            f"supported: {', '.join(ADAPTIVE_OPTIMIZERS + LINEAR_OPTIMIZERS)}")
    return dataclasses.replace(config, **{OPTIMIZER_KIND: "adaptive"})


@dataclass
class QuantSettings:
    """Validated quantization settings; the single source of truth for the model."""

    group_bits: Dict[str, int] = field(default_factory=dict)
    weight_quantizer: str = "lsq"
    act_bits: int = 0
    act_quantizer: str = "lsq"
    lsq_per_channel: bool = False
    #: q/k/v share one input quantizer (--shared-qkv-input-quantizer)
    shared_qkv_input_quantizer: bool = False
    #: quantizer name -> its validated config (options of the quantizers in use)
    configs: Dict[str, QuantizerConfig] = field(default_factory=default_configs)
    #: 2:4 sparsity (--sparse-*), see sparsity.py
    sparse: SparseSettings = field(default_factory=SparseSettings)

    @classmethod
    def from_args(cls, args) -> "QuantSettings":
        """Read and check the flags on a fairseq args namespace; raise :class:`ConfigError`."""
        get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
        weight_q = _known("--weight-quantizer", get("weight_quantizer", "lsq"), WEIGHT_QUANTIZERS)
        default_bits = get("weight_bits", 8)
        validate_bits("--weight-bits", default_bits)
        group_bits = parse_quant_groups(get("quant_groups", "") or "", default_bits)
        act_bits = get("act_bits", 0) or 0
        act_q = get("act_quantizer", None)
        if act_bits:
            validate_bits("--act-bits", act_bits)
            act_q = _known("--act-quantizer", act_q or "lsq", ACT_QUANTIZERS)
        elif act_q is not None:
            raise ConfigError(f"--act-quantizer {act_q} needs --act-bits N (N in 2..8); "
                              "--act-bits is 0 (activations full precision)")
        if act_bits and not group_bits:
            raise ConfigError("--act-bits needs --quant-groups: activations are quantized at the "
                              "inputs of the quantized groups' Linears")
        shared_qkv = bool(get("shared_qkv_input_quantizer", False))
        if shared_qkv and not (act_bits and "QKV" in group_bits):
            raise ConfigError("--shared-qkv-input-quantizer needs --act-bits N and QKV in "
                              "--quant-groups (it shares the q/k/v input quantizer)")
        if weight_q == "twn" and any(b != 2 for b in group_bits.values()):
            group_bits = {g: 2 for g in group_bits}  # ternary has no bit width: 3 levels

        used = {weight_q} if group_bits else set()
        if act_bits:
            used.add(act_q)
        configs = {name: _read_config(get, spec, name in used)
                   for name, spec in QUANTIZER_REGISTRY.items()}
        for name, spec in QUANTIZER_REGISTRY.items():
            if name in used:
                configs[name] = _with_optimizer_kind(get, spec, configs[name])
        return cls(group_bits=group_bits, weight_quantizer=weight_q, act_bits=act_bits,
                   act_quantizer=act_q or "lsq", lsq_per_channel=bool(get("lsq_per_channel", False)),
                   shared_qkv_input_quantizer=shared_qkv,
                   configs=configs, sparse=SparseSettings.from_args(args))

    # ------------------------------------------------------------------ queries
    def quantizes(self, group: str) -> bool:
        return group in self.group_bits

    def describe(self) -> str:
        if not self.group_bits:
            return "full precision (no --quant-groups)"
        groups = ",".join(f"{g}:{b}" for g, b in self.group_bits.items())
        acts = f"A{self.act_bits} {self.act_quantizer}" if self.act_bits else "activations FP"
        if self.shared_qkv_input_quantizer:
            acts += " (q/k/v input quantizer shared)"
        return f"weights {self.weight_quantizer} {groups}; {acts}"

    def _kwargs(self, name: str) -> dict:
        """The options of quantizer ``name`` for :func:`build_quantizer`."""
        config = self.configs.get(name)
        return config.as_kwargs() if config is not None else {}

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
