"""Per-quantizer configuration as validated dataclasses.

Each registered quantizer (see :mod:`qbert.quant.registry`) has a config dataclass whose
fields are its options. A field is declared with :func:`option`: its default, a one-line
description (``doc``, may contain ``{default}``), an optional :class:`Check` (the allowed
values, as data) and whether a user sets it (``user=True``) or the training setup derives
it (``user=False``, e.g. PACT's optimizer kind). Front ends (the fairseq flags in
``fairseq_qbert.models.quant_config``) derive their options, help texts, defaults and
validation messages from these fields; nothing here knows about a command line.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from qbert.errors import ConfigError

#: name of the config field a front end sets from its optimizer ("adaptive" or "linear")
OPTIMIZER_KIND = "optimizer_kind"
OPTIMIZER_KINDS = ("adaptive", "linear")


class Check:
    """An allowed set of values; ``str(check)`` completes "must be ..." (e.g. "> 0")."""

    def ok(self, value) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Greater(Check):
    bound: float

    def ok(self, value) -> bool:
        return value > self.bound

    def __str__(self):
        return f"> {self.bound:g}"


@dataclass(frozen=True)
class AtLeast(Check):
    bound: float

    def ok(self, value) -> bool:
        return value >= self.bound

    def __str__(self):
        return f">= {self.bound:g}"


@dataclass(frozen=True)
class HalfOpen(Check):
    """lo <= value < hi."""

    lo: float
    hi: float

    def ok(self, value) -> bool:
        return self.lo <= value < self.hi

    def __str__(self):
        return f"in [{self.lo:g}, {self.hi:g})"


@dataclass(frozen=True)
class OneOf(Check):
    choices: Tuple[str, ...]

    def ok(self, value) -> bool:
        return value in self.choices

    def __str__(self):
        return f"one of {', '.join(self.choices)}"


def option(default, doc: str, check: Optional[Check] = None, user: bool = True, **extra):
    """A config field: ``default``, description ``doc``, allowed values ``check``.

    Annotate the field with its real type (float, int or str; front ends parse values
    with it), so no ``from __future__ import annotations`` in config modules. ``extra``
    is more metadata (PACT's ``realises``: the option its optimizer kind serves).
    """
    return dataclasses.field(default=default,
                             metadata=dict(doc=doc, check=check, user=user, **extra))


#: one failed check: (field name, check, value)
Violation = Tuple[str, Check, Any]


@dataclass(frozen=True)
class QuantizerConfig:
    """Base of the per-quantizer configs (itself the config of a quantizer without options).

    ``quantizer`` is the registered name, set by :func:`~qbert.quant.registry.register_quantizer`;
    it prefixes the option names in messages and the legacy keyword names
    (``ema_decay`` = option ``decay`` of ``ema``).
    """

    quantizer: ClassVar[str] = ""

    @classmethod
    def options(cls) -> Tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def user_options(cls) -> Tuple[dataclasses.Field, ...]:
        """The options a user sets (the rest are derived by the training setup)."""
        return tuple(f for f in cls.options() if f.metadata.get("user", True))

    @classmethod
    def from_options(cls, values: Mapping[str, Any], quantizer: str = "") -> "QuantizerConfig":
        """The config from ``values`` keyed by option name or by ``<quantizer>_<option>``."""
        quantizer = quantizer or cls.quantizer
        known = {f.name for f in cls.options()}
        prefix = quantizer + "_"
        kwargs: Dict[str, Any] = {}
        for key, value in values.items():
            name = key[len(prefix):] if key.startswith(prefix) and key not in known else key
            if name not in known:
                have = ", ".join(sorted(known)) or "none"
                raise ConfigError(f"quantizer {quantizer} has no option {key!r}; "
                                  f"its options: {have}")
            if name in kwargs:
                raise ConfigError(f"quantizer {quantizer}: option {name!r} given twice "
                                  f"(as {name!r} and {prefix + name!r})")
            kwargs[name] = value
        return cls(**kwargs)

    def violations(self) -> List[Violation]:
        """The failed checks, in field order (empty when the config is valid)."""
        out = []
        for f in self.options():
            check = f.metadata.get("check")
            value = getattr(self, f.name)
            if check is not None and not check.ok(value):
                out.append((f.name, check, value))
        return out

    def invalid_message(self, violations: Sequence[Violation]) -> str:
        """The one-line message for failed checks (default: "<quantizer>_<option> must be ...")."""
        name, check, value = violations[0]
        return f"{self.quantizer}_{name} must be {check}, got {value}"

    def validate(self) -> "QuantizerConfig":
        """Return self, or raise :class:`ConfigError` naming the first invalid option."""
        bad = self.violations()
        if bad:
            raise ConfigError(self.invalid_message(bad))
        return self

    def as_kwargs(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.options()}
