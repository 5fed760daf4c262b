"""``fairseq-train`` with probes, for tests that need what neither the log nor the checkpoint
holds::

    python tests/train_probe.py PROBE_DIR [fairseq-train arguments ...]

runs fairseq's own ``fairseq_cli.train.cli_main`` (exactly what the ``fairseq-train`` entry
point runs) in this process and writes, per data-parallel rank R:

* ``PROBE_DIR/params_rank{R}.pt``: the rank's final model state dict (fairseq saves
  checkpoints on rank 0 only);
* ``PROBE_DIR/quantizers_rank{R}.json``: for every training forward of a quant_roberta
  model, keyed by its update number (the forward of update u runs after u - 1 updates),
  every quantizer's group, role and :func:`quantizer_stats` -- its scale read from its
  own parameters and the fraction of the tensor it received that lies outside its grid,
  computed here from that tensor, not from the quantizer's own statistics.

The helpers are also imported by the in-process tests (tests/ is on sys.path).
"""
import json
import os
import sys

import torch

from qbert.quant import EMAQuantizer, LSQQuantizer, MinMaxQuantizer, PACTQuantizer
from qbert.quant.base import EPS, Quantizer


def group_of(name: str) -> str:
    """The layer group of a quantizer of quant_roberta, from its module path (README's table)."""
    if name.startswith("classification_heads."):
        return "HEAD"
    if ".embed_tokens." in name or ".embed_positions." in name:
        return "EMB"
    if ".self_attn." in name:
        return "QKV"
    if ".fc1." in name or ".fc2." in name:
        return "FFN"
    raise AssertionError(f"quantizer outside every group: {name}")


def role_of(name: str) -> str:
    """``w`` for a weight quantizer, ``a`` for an input (activation) quantizer."""
    return "w" if name.endswith("weight_quantizer") else "a"


def quantizer_stats(q: Quantizer, x: torch.Tensor):
    """(scale, clipped fraction) of quantizer ``q`` for the tensor ``x`` it just quantized,
    from its parameters: LSQ's step; PACT's clip alpha (step alpha / Qp); EMA's running max
    / Qp (after the update of this forward); min-max's max|x| / Qp. The scale is what the
    README says is logged (step size, or PACT's clip)."""
    x = x.detach().float()
    tol = 0.0
    if isinstance(q, LSQQuantizer):
        step = q.step.detach().float().clamp_min(EPS)
        scale = step.mean()
    elif isinstance(q, PACTQuantizer):
        alpha = q.alpha()
        step, scale = alpha / q.Qp, alpha.mean()
    elif isinstance(q, EMAQuantizer):
        step = (q.running_max.detach().float() / q.Qp).clamp_min(EPS)
        scale, tol = step.mean(), 1e-5  # max|x| / s may exceed Qp by an ulp
    elif isinstance(q, MinMaxQuantizer):
        rows = x.reshape(q.num_channels, -1)
        step = (rows.abs().amax(dim=1, keepdim=True) / q.Qp).clamp_min(EPS)
        scale, tol = step.mean(), 1e-5
    else:
        raise AssertionError(f"no reference statistics for {type(q).__name__}")
    v = x.reshape(step.shape[0], -1) / step.reshape(step.shape[0], 1)
    clipped = ((v < q.qmin * (1 + tol)) | (v > q.qmax * (1 + tol))).float().mean()
    return scale.item(), clipped.item()


def group_means(records):
    """{"q{w|a}_{scale|clipped}_{GROUP}": mean over that group's quantizers} of one forward's
    records ``{name: {"group", "role", "scale", "clipped"}}``."""
    values = {}
    for r in records.values():
        for stat in ("scale", "clipped"):
            values.setdefault(f"q{r['role']}_{stat}_{r['group']}", []).append(r[stat])
    return {k: sum(v) / len(v) for k, v in values.items()}


def main(probe_dir, argv):
    # isort: off
    from fairseq_cli import train  # first: it sets up fairseq-train's log format
    from fairseq import trainer as fairseq_trainer
    # isort: on

    os.makedirs(probe_dir, exist_ok=True)
    trainers, forwards = [], {}
    init = fairseq_trainer.Trainer.__init__

    def record(tr, name):
        def hook(q, inputs, output):
            if q.training:
                scale, clipped = quantizer_stats(q, inputs[0])
                forwards.setdefault(tr.get_num_updates() + 1, {})[name] = dict(
                    group=group_of(name), role=role_of(name), scale=scale, clipped=clipped)
        return hook

    def probed_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        trainers.append(self)
        for name, module in self.get_model().named_modules():
            if isinstance(module, Quantizer):
                module.register_forward_hook(record(self, name))

    fairseq_trainer.Trainer.__init__ = probed_init
    sys.argv = ["fairseq-train", *argv]
    train.cli_main()
    (tr,) = trainers
    rank = tr.data_parallel_rank
    torch.save(tr.get_model().state_dict(), os.path.join(probe_dir, f"params_rank{rank}.pt"))
    with open(os.path.join(probe_dir, f"quantizers_rank{rank}.json"), "w") as f:
        json.dump({str(k): v for k, v in sorted(forwards.items())}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
