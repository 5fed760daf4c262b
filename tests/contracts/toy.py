"""A throwaway quantizer kind for tests that check what registering a kind gives."""
import contextlib
from dataclasses import dataclass

from qbert.quant import QUANTIZER_REGISTRY, LSQQuantizer, QuantizerConfig, register_quantizer
from qbert.quant.config import Greater, option


@dataclass(frozen=True)
class ToyConfig(QuantizerConfig):
    gain: float = option(2.0, "step multiplier (default {default})", Greater(0))


class ToyQuantizer(LSQQuantizer):
    """LSQ with one option (``gain``, stored only), weights only."""

    def __init__(self, bits, signed=True, per_channel=False, num_channels=1, gain=2.0):
        super().__init__(bits, signed, per_channel, num_channels)
        ToyConfig(gain=gain).validate()
        self.gain = gain


@contextlib.contextmanager
def registered_toy():
    """Register ``toy`` (config :class:`ToyConfig`, role weight) for the block."""
    register_quantizer("toy", config=ToyConfig, roles=("weight",))(ToyQuantizer)
    try:
        yield ToyQuantizer
    finally:
        QUANTIZER_REGISTRY.pop("toy")
