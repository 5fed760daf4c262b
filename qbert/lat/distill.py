"""In-place distillation of the sandwich rule (Yu & Huang 2019, universally slimmable
networks; used by the Length-Adaptive Transformer).

Each sub-model learns from the full model's prediction of the same batch, with the full
model detached (the teacher is not moved towards its students)::

    classification:  KL(p_full || p_sub) = sum_c p_full,c (log p_full,c - log p_sub,c)
    regression:      (y_sub - y_full)^2        (softmax over one output is constant: KL = 0)

summed over the batch (fairseq divides by the number of sentences). The reference computes
``KLDivLoss(log_softmax(full), softmax(sub))`` = KL(p_sub || p_full) with the gradient
flowing through the *target*; here the direction is the usual distillation one.
"""
from torch import Tensor
from torch.nn import functional as F


def inplace_distillation_loss(sub: Tensor, full: Tensor, regression: bool = False) -> Tensor:
    """Summed KL(full || sub) of (B, C) logits (or summed squared error for regression)."""
    full = full.detach().float()
    sub = sub.float()
    if regression:
        return ((sub - full) ** 2).sum()
    return F.kl_div(F.log_softmax(sub, dim=-1), F.log_softmax(full, dim=-1),
                    reduction="sum", log_target=True)
