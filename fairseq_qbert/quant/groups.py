"""Quantization groups and the validation of the bit-width flags.

Groups (which submodules belong to each is decided by the model):
EMB (token embedding), QKV (attention q/k/v/out projections), FFN (fc1/fc2),
HEAD (classification head). ``--quant-groups`` reads "EMB,QKV,FFN" (each at the default
bits) or "EMB:2,QKV:4,FFN:4" (names case-insensitive, whitespace ignored).
"""
from typing import Dict, Optional

GROUPS = ("EMB", "QKV", "FFN", "HEAD")
MIN_BITS, MAX_BITS = 2, 8


def validate_bits(flag: str, bits) -> int:
    """Return ``bits`` if it is an integer in 2..8, else raise a one-line ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{flag} must be in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
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
            raise ValueError(f"{flag}: unknown group {name!r}; allowed: {', '.join(GROUPS)}")
        if group in out:
            raise ValueError(f"{flag}: group {group} given more than once")
        if sep:
            try:
                bits = int(bits_s)
            except ValueError:
                raise ValueError(f"{flag}: bits for {group} must be an integer in "
                                 f"{MIN_BITS}..{MAX_BITS}, got {bits_s!r}") from None
        else:
            bits = default_bits
        out[group] = validate_bits(f"{flag}: bits for {group}", bits)
    return out
