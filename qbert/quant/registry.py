"""The one registry of quantizer kinds: class, config dataclass and roles per name.

Adding a quantizer is one decorator on its class::

    @register_quantizer("pact", config=PACTConfig, roles=("weight", "activation"))
    class PACTQuantizer(Quantizer): ...

and an import in ``qbert/quant/__init__.py`` (the registration order is the order users
see in "allowed: ..." lists). :func:`build_quantizer` builds any of them from a name, the
grid arguments and the config's options; the front ends derive their options, defaults,
validation messages and full-precision settings from :data:`QUANTIZER_REGISTRY`.
"""
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple, Type

from qbert.errors import ConfigError

from .base import Quantizer
from .config import QuantizerConfig

ROLES = ("weight", "activation")


@dataclass(frozen=True)
class QuantizerSpec:
    """A registered quantizer kind: ``cls(bits, ...)`` configured by ``config``."""

    name: str
    cls: Type[Quantizer]
    config: Type[QuantizerConfig]
    roles: Tuple[str, ...]


#: name -> spec, in registration order
QUANTIZER_REGISTRY: Dict[str, QuantizerSpec] = {}


def register_quantizer(name: str, config: Type[QuantizerConfig] = QuantizerConfig,
                       roles: Tuple[str, ...] = ROLES):
    """Class decorator: register a :class:`Quantizer` subclass as ``name`` (lower case)."""
    key = name.lower()
    bad_roles = [r for r in roles if r not in ROLES]
    if bad_roles or not roles:
        raise ValueError(f"quantizer {key}: roles must be among {', '.join(ROLES)}, got {roles!r}")
    if config.options():
        if config.quantizer and config.quantizer != key:
            raise ValueError(f"config {config.__name__} is already the config of {config.quantizer}")
        config.quantizer = key

    def decorate(cls: Type[Quantizer]) -> Type[Quantizer]:
        if key in QUANTIZER_REGISTRY and QUANTIZER_REGISTRY[key].cls is not cls:
            raise ValueError(f"quantizer {key} is already registered "
                             f"({QUANTIZER_REGISTRY[key].cls.__name__})")
        cls.kind = key
        QUANTIZER_REGISTRY[key] = QuantizerSpec(key, cls, config, tuple(roles))
        return cls

    return decorate


def quantizer_spec(name: str) -> QuantizerSpec:
    """The spec registered as ``name`` (case-insensitive), or a :class:`ConfigError`."""
    spec = QUANTIZER_REGISTRY.get(str(name).lower())
    if spec is None:
        raise ConfigError(f"unknown quantizer {name!r}; allowed: {', '.join(QUANTIZER_REGISTRY)}")
    return spec


def build_quantizer(name: str, bits: int, *, signed: bool = True, per_channel: bool = False,
                    num_channels: int = 1, **options) -> Quantizer:
    """Build the quantizer registered as ``name``.

    ``options`` are fields of its config (``init_clip=2.0``; the legacy prefixed form
    ``pact_init_clip=2.0`` is accepted too); the others take the config's defaults. The
    config is validated (one-line :class:`ConfigError`) before the quantizer is built.
    """
    spec = quantizer_spec(name)
    config = spec.config.from_options(options, spec.name).validate()
    return spec.cls.from_config(bits, config, signed=signed, per_channel=per_channel,
                                num_channels=num_channels)


class RoleView(Mapping):
    """Read-only live mapping name -> class of the registered quantizers with ``role``
    (all of them when ``role`` is None), in registration order."""

    def __init__(self, role: Optional[str] = None):
        self.role = role

    def _names(self):
        return [n for n, s in QUANTIZER_REGISTRY.items() if self.role is None or self.role in s.roles]

    def __getitem__(self, name: str) -> Type[Quantizer]:
        if name not in self._names():
            raise KeyError(name)
        return QUANTIZER_REGISTRY[name].cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self):
        return f"RoleView({self.role!r}: {', '.join(self)})"
