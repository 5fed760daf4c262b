"""Length configurations: parsing, validation and the samplers of LengthDrop.

A *length configuration* (Kim & Cho 2021, "Length-Adaptive Transformer: Train Once with
Length Drop, Use Anytime with Search", arXiv 2010.07003) gives every encoder layer ``i`` the
number of tokens ``l_i`` it passes on: after layer ``i``'s attention block only ``l_i``
tokens (``<s>`` and the ``l_i - 1`` most significant others) go through its FFN and the
following layers. It is non-increasing: ``L >= l_1 >= l_2 >= ... >= l_N >= 1``.

LengthDrop samples, for a maximum length ``L`` and bound ``b`` (``--length-drop-ratio-bound``),
``l_i ~ U{ceil(l_{i-1} (1 - b)), ..., l_{i-1}}`` with ``l_0 = L`` and ``l_i >= 2``; layers
that LayerDrop skips (each with probability ``p``, ``--layer-dropout-prob``) keep the
previous length. The smallest sub-model of the sandwich rule uses
``l_i = ceil(l_{i-1} (1 - b))`` at every layer. This is the reference's
``sample_length_configuration`` / ``sample_layer_configuration``
(clovaai/length-adaptive-transformer, ``drop_and_restore_utils.py``).
"""
import math
import random
from typing import Iterable, Optional, Sequence, Tuple

from qbert.errors import ConfigError

#: the shortest length the samplers produce (``<s>`` and one more token), as the reference
MIN_LENGTH = 2

LengthConfig = Tuple[int, ...]


def parse_length_config(text, num_layers: Optional[int] = None, max_length: Optional[int] = None,
                        flag: str = "--length-config") -> Optional[LengthConfig]:
    """``"(96,80,64)"`` / ``"96,80,64"`` / a sequence -> ``(96, 80, 64)``; ``None``/``""`` -> None.

    Raises :class:`ConfigError` naming ``flag`` for a wrong number of layers, an increasing
    configuration, values below 1 or above ``max_length``.
    """
    if text is None:
        return None
    if isinstance(text, str):
        body = text.strip().strip("()[]").strip()
        if not body:
            return None
        try:
            values = tuple(int(v) for v in body.replace(" ", "").split(",") if v != "")
        except ValueError:
            raise ConfigError(f"{flag} {text!r}: expected comma-separated token counts, "
                              "one per layer, e.g. '(96,80,64)'") from None
    else:
        values = tuple(int(v) for v in text)
    return check_length_config(values, num_layers, max_length, flag)


def check_length_config(config: Sequence[int], num_layers: Optional[int] = None,
                        max_length: Optional[int] = None, flag: str = "--length-config") -> LengthConfig:
    """``config`` as a tuple, after the checks of :func:`parse_length_config`."""
    config = tuple(int(v) for v in config)
    shown = "(" + ",".join(str(v) for v in config) + ")"
    if num_layers is not None and len(config) != num_layers:
        raise ConfigError(f"{flag} {shown}: {len(config)} values for a model with {num_layers} "
                          "layers (one token count per layer)")
    if not config:
        raise ConfigError(f"{flag} {shown}: empty")
    if min(config) < 1:
        raise ConfigError(f"{flag} {shown}: token counts must be >= 1")
    if max_length is not None and max(config) > max_length:
        raise ConfigError(f"{flag} {shown}: {max(config)} tokens is above the model's "
                          f"maximum of {max_length} positions")
    for i in range(1, len(config)):
        if config[i] > config[i - 1]:
            raise ConfigError(f"{flag} {shown}: increasing at layer {i + 1} ({config[i - 1]} -> "
                              f"{config[i]}); token counts must be non-increasing")
    return config


def format_length_config(config: Sequence[int]) -> str:
    return "(" + ",".join(str(int(v)) for v in config) + ")"


def sample_layer_config(num_layers: int, layer_dropout_prob: float,
                        rng: random.Random) -> Tuple[int, ...]:
    """LayerDrop (Fan et al. 2020): the indices of the layers kept, each with prob. ``1 - p``."""
    if not layer_dropout_prob:
        return tuple(range(num_layers))
    return tuple(i for i in range(num_layers) if rng.random() >= layer_dropout_prob)


def sample_length_config(max_length: int, num_layers: int, rng: Optional[random.Random] = None, *,
                         ratio: Optional[float] = None, ratio_bound: Optional[float] = None,
                         kept_layers: Optional[Iterable[int]] = None,
                         min_length: int = MIN_LENGTH) -> LengthConfig:
    """One length per layer: the constant ``ratio`` (``l_i = ceil(l_{i-1} (1 - ratio))``) or
    random within ``ratio_bound`` (``l_i ~ U{ceil(l_{i-1} (1 - b)), ..., l_{i-1}}``, needs
    ``rng``); layers not in ``kept_layers`` keep the previous length; never below
    ``min_length`` (nor above ``max_length``)."""
    if (ratio is None) == (ratio_bound is None):
        raise ConfigError("sample_length_config: give exactly one of ratio, ratio_bound")
    kept = None if kept_layers is None else set(kept_layers)
    length, out = int(max_length), []
    for i in range(num_layers):
        if kept is None or i in kept:
            if ratio is not None:
                length = int(math.ceil(length * (1 - ratio)))
            else:
                length = rng.randint(int(math.ceil(length * (1 - ratio_bound))), length)
        length = min(max(length, min_length), int(max_length))
        out.append(length)
    return tuple(out)


def approx_ratio(ratio: float, num_layers: int, max_length: int) -> float:
    """Mean kept fraction of a constant-``ratio`` configuration (the reference's ``approx_ratio``,
    with the model's layers and length instead of its constants 12 and 384)."""
    total, length = 0, max_length
    for _ in range(num_layers):
        length = int(math.ceil(length * (1 - ratio)))
        total += length
    return total / (num_layers * max_length)


def inverse_approx_ratio(target: float, num_layers: int, max_length: int) -> float:
    """The ratio whose :func:`approx_ratio` is ``target`` (bisection, as the reference)."""
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-12:
        mid = (lo + hi) / 2
        if target <= approx_ratio(mid, num_layers, max_length):
            lo = mid
        else:
            hi = mid
    return lo
