"""``sparsify``: 2:4 masks (and optional channel permutations) for named weights.

Works on a state-dict-like mapping (``NAME.weight``, ``NAME.bias``, ``NAME.weight_mask``), so
the same call prunes a loaded checkpoint before it reaches a model and a live model's
``state_dict()`` (whose tensors share storage with the model: it is updated in place).
"""
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, MutableMapping, Optional, Tuple

import torch

from qbert.errors import ConfigError
from qbert.groups import GROUPS

from .masks import kept_magnitude, mask_2to4, size_rule_violation
from .permute import permute_pair, search_permutation

FLAG = "--sparse-groups"
MASK_SUFFIX = ".weight_mask"


def parse_sparse_groups(spec: Optional[str]) -> Tuple[str, ...]:
    """"QKV,FFN" -> ("QKV", "FFN") (case-insensitive); "" or None -> ()."""
    out: List[str] = []
    for item in (spec or "").split(","):
        name = item.strip()
        if not name:
            continue
        group = name.upper()
        if group not in GROUPS:
            raise ConfigError(f"{FLAG}: unknown group {name!r}; allowed: {', '.join(GROUPS)}")
        if group in out:
            raise ConfigError(f"{FLAG}: group {group} given more than once")
        out.append(group)
    return tuple(out)


@dataclass
class ModuleSparsity:
    name: str
    group: str
    shape: Tuple[int, int]
    skipped: Optional[str] = None       # ASP size rule violation
    kept: float = 1.0                   # kept-magnitude fraction under the mask
    kept_unpermuted: float = 1.0        # the same without the channel permutation
    permuted: bool = False


@dataclass
class SparsityReport:
    modules: List[ModuleSparsity] = field(default_factory=list)

    def skipped(self) -> List[ModuleSparsity]:
        return [m for m in self.modules if m.skipped]

    def by_group(self) -> Dict[str, Dict[str, float]]:
        """{group: {sparsity, kept, kept_unpermuted}}, weighted by the weights' sizes; the
        sparsity counts skipped (dense) weights of the group too."""
        out: Dict[str, Dict[str, float]] = {}
        for group in dict.fromkeys(m.group for m in self.modules):
            ms = [m for m in self.modules if m.group == group]
            total = sum(m.shape[0] * m.shape[1] for m in ms)
            pruned = [m for m in ms if not m.skipped]
            n = sum(m.shape[0] * m.shape[1] for m in pruned)
            out[group] = {
                "sparsity": 0.5 * n / total if total else 0.0,
                "kept": sum(m.kept * m.shape[0] * m.shape[1] for m in pruned) / n if n else 1.0,
                "kept_unpermuted": sum(m.kept_unpermuted * m.shape[0] * m.shape[1] for m in pruned) / n if n else 1.0,
            }
        return out

    def describe(self) -> str:
        parts = [f"{g} sparsity {v['sparsity']:.3f} kept magnitude {v['kept']:.4f}"
                 + (f" (unpermuted {v['kept_unpermuted']:.4f})" if v["kept"] != v["kept_unpermuted"] else "")
                 for g, v in self.by_group().items()]
        return "; ".join(parts)

    def as_dict(self) -> Dict:
        return {"groups": self.by_group(), "modules": [asdict(m) for m in self.modules]}


def _put(params: MutableMapping[str, torch.Tensor], key: str, value: torch.Tensor):
    old = params.get(key)
    if old is not None and old.shape == value.shape:
        with torch.no_grad():
            old.copy_(value.to(old.dtype))
    else:
        params[key] = value


def sparsify(params: MutableMapping[str, torch.Tensor], targets: Dict[str, str],
             pairs: Iterable[Tuple[str, str, Optional[int]]] = (), permute: bool = False,
             max_rounds: int = 100) -> SparsityReport:
    """Prune the weights of ``targets`` ({module name: group}) in ``params`` to 2:4.

    For every target whose shape passes ASP's size rule: ``NAME.weight_mask`` (bool) is the
    2:4 mask of ``NAME.weight`` and the pruned weights are set to 0. With ``permute``, each
    ``(producer, consumer, block)`` of ``pairs`` whose consumer is pruned first gets the
    input-channel permutation of :func:`search_permutation` (within blocks of ``block``
    channels), applied to the producer's rows and bias and the consumer's columns, so the
    function is unchanged before pruning. Skipped targets are reported with the reason.
    """
    report = SparsityReport()
    infos: Dict[str, ModuleSparsity] = {}
    for name, group in targets.items():
        w = params[name + ".weight"]
        info = ModuleSparsity(name, group, (int(w.size(0)), int(w.size(1))),
                              skipped=size_rule_violation(w.size(0), w.size(1)))
        infos[name] = info
        report.modules.append(info)
    if permute:
        for producer, consumer, block in pairs:
            if consumer not in infos or infos[consumer].skipped:
                continue
            w = params[consumer + ".weight"]
            perm = search_permutation(w, block=block, max_rounds=max_rounds)
            infos[consumer].kept_unpermuted = kept_magnitude(w)
            if torch.equal(perm, torch.arange(w.size(1))):
                continue
            bias_key = producer + ".bias"
            pw, pb, cw = permute_pair(params[producer + ".weight"], params.get(bias_key), w, perm)
            _put(params, producer + ".weight", pw)
            if pb is not None:
                _put(params, bias_key, pb)
            _put(params, consumer + ".weight", cw)
            _permute_row_state(params, producer, pw.size(0), perm)
            infos[consumer].permuted = True
    for name, info in infos.items():
        if info.skipped:
            continue
        w = params[name + ".weight"]
        mask = mask_2to4(w)
        info.kept = kept_magnitude(w, mask)
        if not info.permuted:
            info.kept_unpermuted = info.kept
        _put(params, name + MASK_SUFFIX, mask)
        _put(params, name + ".weight", w.detach() * mask)
    return report


def _permute_row_state(params, producer: str, rows: int, perm: torch.Tensor):
    """Per-output-row weight-quantizer state of the producer (per-channel LSQ steps) follows
    its rows."""
    prefix = producer + ".weight_quantizer."
    for key in [k for k in params if k.startswith(prefix)]:
        t = params[key]
        if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.size(0) == rows and t.numel() > 1:
            _put(params, key, t[perm].clone())
