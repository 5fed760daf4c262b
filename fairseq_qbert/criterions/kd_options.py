"""Parsing and checking of the ``--kd-parts`` and ``--kd-layer-map`` flags (no fairseq).

Every error is a :class:`qbert.errors.ConfigError` with a one-line message that
names the flag.
"""
from typing import Dict, FrozenSet, List, Optional, Tuple

from qbert.errors import ConfigError

#: the parts one can distil (``output`` = last layer's hidden state only)
PARTS = ("logits", "hidden", "attn", "output")
#: shorthands accepted by ``--kd-parts``
SHORTHANDS = {"trm": ("hidden", "attn")}

LayerPairs = List[Tuple[int, int]]


def parse_kd_parts(spec: str) -> FrozenSet[str]:
    """``"trm,logits"`` -> ``{"hidden", "attn", "logits"}``; unknown names are an error."""
    names = [p.strip().lower() for p in str(spec or "").split(",") if p.strip()]
    allowed = ", ".join(PARTS + tuple(SHORTHANDS))
    if not names:
        raise ConfigError(f"--kd-parts is empty; give a comma list of: {allowed}")
    parts = set()
    for name in names:
        if name in SHORTHANDS:
            parts.update(SHORTHANDS[name])
        elif name in PARTS:
            parts.add(name)
        else:
            raise ConfigError(f"--kd-parts: unknown part '{name}'; allowed: {allowed}")
    if "output" in parts and "hidden" in parts:
        raise ConfigError("--kd-parts: 'output' (last layer's hidden state) is already part of "
                          "'hidden' (or 'trm'); give one of them")
    return frozenset(parts)


def parse_layer_map(spec: Optional[str]) -> Optional[Dict[int, int]]:
    """``"1:2,2:4"`` -> ``{1: 2, 2: 4}`` (student layer -> teacher layer); empty -> None.

    Layers are 1-based; 0 is the embedding output and may only map to 0.
    """
    if spec is None or not str(spec).strip():
        return None
    mapping: Dict[int, int] = {}
    for item in str(spec).split(","):
        item = item.strip()
        fields = item.split(":")
        try:
            if len(fields) != 2:
                raise ValueError
            s, t = int(fields[0]), int(fields[1])
        except ValueError:
            raise ConfigError(f"--kd-layer-map: bad entry '{item}'; expected STUDENT:TEACHER layer "
                              "numbers, e.g. '1:2,2:4' (0 = embedding output)") from None
        if s < 0 or t < 0:
            raise ConfigError(f"--kd-layer-map: negative layer in '{item}'")
        if s in mapping:
            raise ConfigError(f"--kd-layer-map: student layer {s} is mapped twice")
        if (s == 0) != (t == 0):
            raise ConfigError(f"--kd-layer-map: '{item}' maps an embedding output (layer 0) to a "
                              "transformer layer; 0 may only map to 0")
        mapping[s] = t
    return mapping


def check_layer_map(mapping: Optional[Dict[int, int]], student_layers: Optional[int],
                    teacher_layers: Optional[int]) -> None:
    """Layer numbers must exist in the student (``0..student_layers``) and teacher."""
    if mapping is None:
        return
    for s, t in sorted(mapping.items()):
        if student_layers is not None and s > student_layers:
            raise ConfigError(f"--kd-layer-map: student layer {s} does not exist; the student "
                              f"has {student_layers} layers (0 = embedding output)")
        if teacher_layers is not None and t > teacher_layers:
            raise ConfigError(f"--kd-layer-map: teacher layer {t} does not exist; the teacher "
                              f"has {teacher_layers} layers (0 = embedding output)")


def default_layer_map(student_layers: int, teacher_layers: int) -> Dict[int, int]:
    """Identity for equal depths; otherwise student ``l`` -> teacher ``ceil(l * Lt / Ls)``.

    With ``Lt`` a multiple of ``Ls`` this is exactly ``l * Lt / Ls`` (every k-th teacher
    layer, the last layer to the last layer, as TinyBERT's uniform strategy); rounding up
    otherwise keeps layer ``Ls`` -> ``Lt`` and never maps a layer to the embedding output.
    The embedding output (0) maps to 0.
    """
    mapping = {0: 0}
    for layer in range(1, student_layers + 1):
        mapping[layer] = -(-layer * teacher_layers // student_layers)
    return mapping


def layer_pairs(part: str, mapping: Optional[Dict[int, int]], student_layers: int,
                teacher_layers: int) -> LayerPairs:
    """The (student, teacher) layer pairs compared by ``part`` (sorted by student layer).

    * ``hidden``: every pair of the map (default map: embedding output + every layer).
    * ``output``: the student's last layer with its mapped teacher layer (default: last).
    * ``attn``: every pair of the map except the embedding (it has no attention).
    """
    explicit = mapping is not None
    if mapping is None:
        mapping = default_layer_map(student_layers, teacher_layers)
    if part == "hidden":
        return sorted(mapping.items())
    if part == "output":
        return [(student_layers, mapping.get(student_layers, teacher_layers) if explicit
                 else mapping[student_layers])]
    if part == "attn":
        return [(s, t) for s, t in sorted(mapping.items()) if s > 0]
    raise ValueError(f"no layer pairs for part {part!r}")
