"""Reusable parametrization of the quantizer contract: one case per registered quantizer
kind x grid it allows (signed / unsigned, per tensor / per channel, bits).

Later subsystems (calibration, export, fast kernels) parametrize their own contract tests
with ``@pytest.mark.parametrize("case", case_params())`` and get every kind, including
kinds registered after them, for free.
"""
from dataclasses import dataclass
from typing import Iterable, List, Optional

import pytest
import torch

from qbert.quant import QUANTIZER_REGISTRY, Quantizer, QuantizerSpec, build_quantizer

ROWS, COLS = 6, 16  # the sample tensors: a small weight, or a batch of activations
BITS = (2, 4, 8)


@dataclass(frozen=True)
class QuantizerCase:
    name: str
    bits: int
    signed: bool
    per_channel: bool

    @property
    def spec(self) -> QuantizerSpec:
        return QUANTIZER_REGISTRY[self.name]

    @property
    def id(self) -> str:
        return (f"{self.name}-{'s' if self.signed else 'u'}{self.bits}-"
                f"{'channel' if self.per_channel else 'tensor'}")

    @property
    def calibratable(self) -> bool:
        """Whether the scale is state that ``set_amax`` sets (not computed from the tensor)."""
        return not self.spec.cls.scale_from_tensor

    def build(self, **options) -> Quantizer:
        return build_quantizer(self.name, self.bits, signed=self.signed,
                               per_channel=self.per_channel,
                               num_channels=ROWS if self.per_channel else 1, **options)

    def sample(self, seed: int = 0, spread: float = 1.0) -> torch.Tensor:
        """A seeded [ROWS, COLS] fp32 tensor with both signs, rows of different ranges."""
        g = torch.Generator().manual_seed(seed)
        rows = torch.linspace(0.5, 2.0, ROWS).unsqueeze(1)
        return torch.randn(ROWS, COLS, generator=g) * rows * spread

    def ready(self, seed: int = 0, **options) -> Quantizer:
        """A quantizer initialised by one training forward on ``sample(seed)``, in eval mode."""
        q = self.build(**options).train()
        q(self.sample(seed))
        return q.eval()


def quantizer_cases(bits: Iterable[int] = BITS, names: Optional[Iterable[str]] = None
                    ) -> List[QuantizerCase]:
    """Every registered kind (or ``names``) x signedness x granularity x ``bits`` it allows."""
    cases = []
    for name, spec in QUANTIZER_REGISTRY.items():
        if names is not None and name not in names:
            continue
        cls = spec.cls
        signs = (True, False) if cls.allows_unsigned else (True,)
        allowed = [b for b in bits if cls.allowed_bits is None or b in cls.allowed_bits]
        for signed in signs:
            for per_channel in (False, True):
                cases.extend(QuantizerCase(name, b, signed, per_channel) for b in allowed)
    return cases


def case_params(**kwargs) -> list:
    """:func:`quantizer_cases` as pytest params with readable ids."""
    return [pytest.param(c, id=c.id) for c in quantizer_cases(**kwargs)]


#: quant_roberta flag sets whose export must reproduce the fake-quant model (tests/integration/
#: test_export.py): every quantizer kind as weights and as activations, per-channel, groups, bits
EXPORT_MODEL_CASES = {
    "fp": [],
    "lsq-w8a8": ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "8", "--act-bits", "8"],
    "lsq-w4a8-head": ["--quant-groups", "EMB,QKV,FFN,HEAD", "--weight-bits", "4", "--act-bits", "8"],
    "lsq-w2a8-pact": ["--quant-groups", "QKV,FFN", "--weight-bits", "2", "--act-bits", "8",
                      "--act-quantizer", "pact", "--optimizer", "adam"],
    "lsq-channel-w3a4": ["--quant-groups", "EMB:4,QKV:3,FFN:4", "--lsq-per-channel", "--act-bits", "4"],
    "lsq-w4": ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4"],
    "lsq-w2-ffn": ["--quant-groups", "FFN", "--weight-bits", "2"],
    "twn": ["--quant-groups", "EMB,QKV,FFN", "--weight-quantizer", "twn"],
    "pact-w8a8": ["--quant-groups", "QKV,FFN,HEAD", "--weight-quantizer", "pact", "--act-bits", "8",
                  "--act-quantizer", "pact", "--optimizer", "adam"],
    "minmax-w8a8-ema": ["--quant-groups", "QKV,FFN", "--weight-quantizer", "minmax", "--act-bits", "8",
                        "--act-quantizer", "ema"],
    "ema-w4": ["--quant-groups", "EMB,FFN", "--weight-quantizer", "ema", "--weight-bits", "4"],
}
