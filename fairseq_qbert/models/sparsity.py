"""2:4 structured sparsity of ``quant_roberta`` (NVIDIA ASP recipe): flags and wiring.

* ``--sparse-groups QKV,FFN[,EMB,HEAD]``: every Linear of those groups (EMB: the token
  embedding table, i.e. the tied LM output projection) gets a bool ``weight_mask`` buffer
  unless ASP's size rule skips it (out % 8 or in % 16 non-zero; logged with the reason).
* Masks are computed from the weights of the dense checkpoint when it is loaded
  (``upgrade_state_dict_named``, before any forward), and the pruned weights are set to 0, so
  quantizer initialisation and PTQ calibration see the pruned weights; a checkpoint that
  already has masks restores them exactly. A model that loads nothing computes them from its
  initial weights at the first training forward.
* The forward uses ``weight * mask`` before the weight quantizer (pruned weights get no
  gradient); after every update the stored weights are multiplied by the mask (ASP's
  ``p *= mask``), and ``--sparse-recompute-every N`` recomputes the masks every N updates.
* ``--sparse-permute``: ASP's offline input-channel permutation search when masks are first
  computed, for the pairs whose producer can follow: fc1 -> fc2, and v_proj -> out_proj
  within each head.
"""
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

import torch
from fairseq import metrics

from qbert.errors import CheckpointError, ConfigError
from qbert.groups import module_group
from qbert.sparse import FLAG, MASK_SUFFIX, SparsityReport, parse_sparse_groups, size_rule_violation, sparsify

logger = logging.getLogger(__name__)


def add_sparse_args(parser):
    parser.add_argument(FLAG, type=str, default="", metavar="GROUPS",
                        help="2:4-sparse layer groups, e.g. 'QKV,FFN' (QKV, FFN, EMB, HEAD); empty = dense")
    parser.add_argument("--sparse-recompute-every", type=int, default=None, metavar="N",
                        help="recompute the 2:4 masks every N updates (default: computed once)")
    parser.add_argument("--sparse-permute", action="store_true",
                        help="search input-channel permutations (fc1->fc2, v_proj->out_proj per head) "
                             "that keep more magnitude before computing the masks")


@dataclass(frozen=True)
class SparseSettings:
    groups: Tuple[str, ...] = ()
    recompute_every: Optional[int] = None
    permute: bool = False

    @classmethod
    def from_args(cls, args) -> "SparseSettings":
        groups = parse_sparse_groups(getattr(args, "sparse_groups", "") or "")
        every = getattr(args, "sparse_recompute_every", None)
        if every is not None and (isinstance(every, bool) or int(every) < 1):
            raise ConfigError(f"--sparse-recompute-every must be an integer >= 1, got {every}")
        permute = bool(getattr(args, "sparse_permute", False))
        if (every is not None or permute) and not groups:
            flag = "--sparse-permute" if permute else "--sparse-recompute-every"
            raise ConfigError(f"{flag} needs {FLAG} (e.g. {FLAG} QKV,FFN)")
        return cls(groups, every, permute)

    def masks(self, group: str) -> bool:
        return group in self.groups

    def prepare(self, module, group: str):
        """``module`` (QuantLinear / QuantEmbedding) with a mask buffer when it is to be pruned."""
        if self.masks(group) and size_rule_violation(*module.weight.shape) is None:
            module.add_weight_mask()
        return module

    def describe(self) -> str:
        if not self.groups:
            return "dense"
        extra = (", permuted" if self.permute else "") + (
            f", recomputed every {self.recompute_every} updates" if self.recompute_every else "")
        return f"2:4 {','.join(self.groups)}{extra}"


class Sparsity:
    """The per-model state: whether masks exist, the report to log, the update hook."""

    def __init__(self, settings: SparseSettings):
        self.settings = settings
        self.ready = False
        self.report: Optional[SparsityReport] = None
        #: the masked modules, listed once at the first update (heads are registered by then)
        self._updated_modules: Optional[List[torch.nn.Module]] = None

    # -------------------------------------------------------------- which modules
    def targets(self, model) -> Dict[str, str]:
        """{module name: group} of every Linear (and token embedding) of the sparse groups."""
        out = {}
        for name, module in model.named_modules():
            group = module_group(name)
            if group is None or not self.settings.masks(group) or name.endswith("embed_positions"):
                continue
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() == 2:
                out[name] = group
        return out

    @staticmethod
    def pairs(model) -> List[Tuple[str, str, Optional[int]]]:
        """(producer, consumer, block) whose channels may be permuted together."""
        out = []
        for name, _ in model.named_modules():
            if name.endswith(".fc2"):
                out.append((name[:-len("fc2")] + "fc1", name, None))
            elif name.endswith(".self_attn.out_proj"):
                attn = model.get_submodule(name[:-len(".out_proj")])
                out.append((name[:-len("out_proj")] + "v_proj", name, attn.head_dim))
        return out

    def masked(self, model) -> Dict[str, torch.nn.Module]:
        return {n: m for n, m in model.named_modules() if m._buffers.get("weight_mask") is not None}

    # -------------------------------------------------------------- checkpoints
    @staticmethod
    def saved_masks(state_dict, prefix: str) -> Set[str]:
        """Names of the modules whose masks a checkpoint's state dict holds."""
        return {k[len(prefix):-len(MASK_SUFFIX)] for k in state_dict
                if k.startswith(prefix) and k.endswith(MASK_SUFFIX)}

    def upgrade_state_dict(self, model, state_dict, prefix: str, saved: Set[str]):
        """Compute masks for a dense checkpoint (``saved``: the modules whose masks it had
        before fairseq copied new heads in); check a sparse one's masks match this run."""
        own = set(self.masked(model))
        if saved and saved != own:
            groups = sorted({module_group(n) or n for n in saved})
            raise CheckpointError(
                f"the checkpoint has 2:4 masks for groups {','.join(groups)} ({len(saved)} weights) but this "
                f"run has {FLAG} {','.join(self.settings.groups) or '(none)'}: pass {FLAG} "
                f"{','.join(groups)}, or start from a dense checkpoint")
        if saved or not own:
            self.ready = bool(saved)
            return
        params = {k[len(prefix):]: v for k, v in state_dict.items()
                  if k.startswith(prefix) and not k.endswith(MASK_SUFFIX)}
        self.report = sparsify(params, self._loaded_targets(model, params),
                               self.pairs(model), permute=self.settings.permute)
        for key, value in params.items():
            state_dict[prefix + key] = value
        self.ready = True
        self._log_report("from the checkpoint's weights")

    def _loaded_targets(self, model, params):
        return {n: g for n, g in self.targets(model).items() if n + ".weight" in params}

    # -------------------------------------------------------------- training
    @torch.no_grad()
    def compute_from_model(self, model, permute: bool):
        params = model.state_dict()  # tensors share storage with the model
        self.report = sparsify(params, self.targets(model), self.pairs(model), permute=permute)
        self.ready = True

    def before_forward(self, model):
        if not self.ready and model.training and self.settings.groups:
            self.compute_from_model(model, permute=self.settings.permute)
            self._log_report("from the initial weights (no checkpoint loaded)")

    @torch.no_grad()
    def after_update(self, model, num_updates: int):
        if not self.settings.groups or not self.ready:
            return
        every = self.settings.recompute_every
        if every and num_updates > 0 and num_updates % every == 0:
            self.compute_from_model(model, permute=False)
            logger.info(f"2:4 masks recomputed at update {num_updates}: {self.report.describe()}")
        if self._updated_modules is None:
            self._updated_modules = list(self.masked(model).values())
        for module in self._updated_modules:
            module.weight.mul_(module.weight_mask)

    def log_stats(self, model):
        """Tensorboard: sparsity per group (from the masks) and the kept-magnitude fraction
        at the start (with and without the permutation)."""
        if not self.settings.groups:
            return
        totals: Dict[str, List[int]] = {}
        for name, group in self.targets(model).items():
            module = model.get_submodule(name)
            mask = module._buffers.get("weight_mask")
            t = totals.setdefault(group, [0, 0])
            t[0] += 0 if mask is None else int((~mask).sum())
            t[1] += module.weight.numel()
        for group, (zeros, total) in totals.items():
            metrics.log_scalar(f"sparsity_{group}", zeros / max(total, 1), weight=0, round=4)
        if self.report is not None:
            for group, values in self.report.by_group().items():
                metrics.log_scalar(f"sparse_kept_{group}", values["kept"], weight=0, round=4)
                metrics.log_scalar(f"sparse_kept_unpermuted_{group}", values["kept_unpermuted"], weight=0, round=4)

    def _log_report(self, source: str):
        logger.info(f"2:4 masks computed {source}: {self.report.describe()}")
        for m in self.report.skipped():
            logger.info(f"2:4 sparsity skips {m.name} {m.shape[0]}x{m.shape[1]} ({m.skipped})")
