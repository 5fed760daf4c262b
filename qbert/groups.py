"""Layer groups of RoBERTa: which module belongs to which group, and the group/bits spec.

Groups: EMB (token, position and -- BERT -- token-type embeddings), QKV (attention q/k/v/out projections), FFN
(fc1/fc2), HEAD (classification head). :data:`GROUP_PATTERNS` is the one table mapping a
module's name in a fairseq RoBERTa to its group; the fairseq build hooks, the statistics
and the parameter counts all read it. ``--quant-groups`` reads "EMB,QKV,FFN" (each at the
default bits) or "EMB:2,QKV:4,FFN:4" (names case-insensitive, whitespace ignored).
"""
import re
from typing import Dict, Optional, Tuple

import torch.nn as nn

from qbert.errors import ConfigError

GROUPS = ("EMB", "QKV", "FFN", "HEAD")
MIN_BITS, MAX_BITS = 2, 8

#: (group, pattern on the module's qualified name in a fairseq RoBERTa), first match wins
GROUP_PATTERNS: Tuple[Tuple[str, "re.Pattern[str]"], ...] = (
    ("EMB", re.compile(r"(^|\.)(embed_tokens|embed_positions|embed_token_types)$")),
    ("QKV", re.compile(r"(^|\.)self_attn\.(q_proj|k_proj|v_proj|out_proj)$")),
    ("FFN", re.compile(r"(^|\.)(fc1|fc2)$")),
    ("HEAD", re.compile(r"(^|\.)classification_heads\.[^.]+\.(dense|out_proj)$")),
)


def module_group(name: str) -> Optional[str]:
    """The layer group of the module called ``name`` in the model, or None."""
    for group, pattern in GROUP_PATTERNS:
        if pattern.search(name):
            return group
    return None


def group_parameter_counts(model: nn.Module) -> Dict[str, int]:
    """Parameters (weights and biases) per layer group, plus ``total`` (tied weights once)."""
    counts = {group: 0 for group, _ in GROUP_PATTERNS}
    for name, module in model.named_modules():
        group = module_group(name)
        if group is not None:
            counts[group] += sum(p.numel() for p in module.parameters(recurse=False))
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def validate_bits(flag: str, bits) -> int:
    """Return ``bits`` if it is an integer in 2..8, else raise a one-line ConfigError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{flag} must be in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return bits


def parse_quant_groups(spec: Optional[str], default_bits: int) -> Dict[str, int]:
    """Parse "EMB:2,QKV:4" / "EMB,QKV" into {"EMB": 2, "QKV": 4}; "" or None -> {}."""
    flag = "--quant-groups"
    out: Dict[str, int] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, bits_s = (p.strip() for p in item.partition(":"))
        group = name.upper()
        if group not in GROUPS:
            raise ConfigError(f"{flag}: unknown group {name!r}; allowed: {', '.join(GROUPS)}")
        if group in out:
            raise ConfigError(f"{flag}: group {group} given more than once")
        if sep:
            try:
                bits = int(bits_s)
            except ValueError:
                raise ConfigError(f"{flag}: bits for {group} must be an integer in "
                                  f"{MIN_BITS}..{MAX_BITS}, got {bits_s!r}") from None
        else:
            bits = default_bits
        out[group] = validate_bits(f"{flag}: bits for {group}", bits)
    return out
