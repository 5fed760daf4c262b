"""The loss of each knowledge-distillation part, as small pure functions (no fairseq).

Follows TernaryBERT (Zhang et al. 2020, "TernaryBERT: Distillation-aware Ultra-low Bit
BERT", arXiv 2009.12812, Sec. 3.3 and the released ``TernaryBERT/quant_task_glue.py``):

    loss = l_pred + l_trm
    l_trm  = sum_{l=0..L} MSE(H_l^S, H_l^T) + sum_{l=1..L} MSE(A_l^S, A_l^T)
    l_pred = SCE(z^S, z^T)  (soft cross-entropy; MSE for regression)

with ``H_0`` the embedding output, ``H_l`` the output of layer ``l`` and ``A_l`` layer
``l``'s attention scores *before* the softmax, per head.

Normalisation (all functions here). fairseq divides the summed loss by ``sample_size``,
which for ``sentence_prediction`` is the number of sentences ``B``. So every function
returns a *per-sentence quantity summed over the batch*: the loss of a batch is the sum of
the losses of its sentences, and after fairseq's division one gets the per-sentence mean.
Padding never enters: a sentence's loss depends only on its ``n_b`` real tokens
(``<s>`` and ``</s>`` included), so adding pad columns to a batch cannot change it.
TernaryBERT's ``nn.MSELoss()`` takes one mean over the padded ``B x T x C`` tensor instead,
which weighs padded positions (hidden) or zeros (attention) in; with equal-length
sentences and no padding both agree up to the factor ``B``, which fairseq divides out.

All arithmetic is done in float32 whatever the input dtype.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def logits_kd_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Soft cross-entropy of the student against the teacher's tempered softmax, summed over the batch.

    For class logits ``z^S, z^T`` of shape (B, K) and temperature ``T``::

        p^T = softmax(z^T / T),   log q^S = log_softmax(z^S / T)
        loss = T^2 * sum_b sum_k p^T_bk (log p^T_bk - log q^S_bk)
             = T^2 * sum_b [SCE(z^S_b, z^T_b) - H(p^T_b)]

    i.e. TernaryBERT's soft cross-entropy ``SCE = -sum_k p^T_k log q^S_k`` minus the
    teacher's entropy ``H(p^T)`` (= the KL divergence KL(p^T || q^S)). The subtracted
    term does not depend on the student, so the gradient is exactly that of the soft
    cross-entropy, but the value is 0 when the student reproduces the teacher, which makes
    it readable in logs. ``T^2`` keeps the gradient's scale independent of ``T``
    (Hinton et al. 2015); with ``T = 1`` (TernaryBERT's setting) it is 1.
    """
    s = student.float() / temperature
    t = teacher.float() / temperature
    log_p_t = F.log_softmax(t, dim=-1)
    log_q_s = F.log_softmax(s, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_q_s)).sum()
    return kl * (temperature ** 2)


def regression_kd_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Squared error between student and teacher predictions, summed over the batch.

    For regression (e.g. STS-B, one output): ``loss = sum_b ||y^S_b - y^T_b||^2``, the
    per-sentence version of TernaryBERT's ``MSELoss(student_logits, teacher_logits)``.
    """
    return F.mse_loss(student.float().reshape(student.size(0), -1),
                      teacher.float().reshape(teacher.size(0), -1), reduction="sum")


def label_loss(logits: Tensor, targets: Tensor, regression: bool,
               rows: Optional[Tensor] = None) -> Tensor:
    """The ground-truth loss of fairseq's ``sentence_prediction``, summed over the batch.

    Classification: ``sum_b m_b * -log softmax(z^S_b)[y_b]``; regression:
    ``sum_b m_b * (y^S_b - y_b)^2``, with ``m_b = rows[b]`` (bool, (B,)) or 1 for every
    sentence when ``rows`` is None. ``rows`` marks the original sentences of data augmented
    as in TinyBERT (arXiv 1909.10351, Sec. 3.3): an augmented sentence's label is only a
    copy of its source sentence's, so it gets no ground-truth loss (only the KD parts).
    """
    if regression:
        per_row = F.mse_loss(logits.view(-1).float(), targets.view(-1).float(), reduction="none")
    else:
        per_row = F.nll_loss(F.log_softmax(logits, dim=-1, dtype=torch.float32), targets.view(-1),
                             reduction="none")
    if rows is None:
        return per_row.sum()
    return torch.where(rows.view(-1).to(per_row.device).bool(), per_row,
                       per_row.new_zeros(())).sum()


def hidden_kd_loss(student: Tensor, teacher: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
    """Masked mean squared error between one pair of hidden states, summed over sentences.

    ``student``, ``teacher``: (T, B, C) as fairseq's ``inner_states``; ``padding_mask``:
    (B, T), True at padding (or None). With ``V_b`` the ``n_b`` real positions of
    sentence ``b``::

        loss = sum_b 1 / (n_b * C) * sum_{t in V_b} ||H^S_tb - H^T_tb||^2

    i.e. the MSE of TernaryBERT's ``l_trm`` hidden term, per sentence, over real tokens only.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"hidden states differ in shape: student {tuple(student.shape)}, "
                         f"teacher {tuple(teacher.shape)}")
    diff2 = (student.float() - teacher.float()).pow(2).sum(dim=-1)  # (T, B)
    channels = student.size(-1)
    if padding_mask is None:
        per_sentence = diff2.mean(dim=0) / channels
    else:
        keep = (~padding_mask).t().to(diff2.dtype)  # (T, B)
        per_sentence = (diff2 * keep).sum(dim=0) / (keep.sum(dim=0).clamp(min=1) * channels)
    return per_sentence.sum()


def attention_kd_loss(student: Tensor, teacher: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
    """Masked mean squared error between one pair of pre-softmax attention scores, summed over sentences.

    ``student``, ``teacher``: (B, H, T, T) scores ``A = Q K^T / sqrt(d) + mask`` (``-inf``
    at padded keys); ``padding_mask``: (B, T), True at padding (or None). Entries whose
    query *or* key is padding are set to 0 in both tensors (as TernaryBERT zeroes the
    masked ``-10000`` entries) and excluded from the mean::

        loss = sum_b 1 / (H * n_b^2) * sum_h sum_{i, j in V_b} (A^S_bhij - A^T_bhij)^2

    Why the scores *before* the softmax (TernaryBERT, TinyBERT): the probabilities of a
    peaked softmax saturate, so their MSE is tiny and its gradient vanishes exactly where
    the student is most wrong; the scores carry the full, unsquashed signal of the (fake-
    quantized) ``Q K^T`` product that quantization disturbs. The price is that the
    scores are only defined up to a per-row constant (softmax ignores it) and the MSE
    penalises such shifts too; with a teacher that the student starts from this is harmless.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"attention scores differ in shape: student {tuple(student.shape)}, "
                         f"teacher {tuple(teacher.shape)}")
    bsz, heads, tgt_len, src_len = student.shape
    if padding_mask is None:
        keep = torch.ones(bsz, tgt_len, dtype=torch.bool, device=student.device)
    else:
        keep = ~padding_mask
    pair = keep[:, None, :, None] & keep[:, None, None, :]  # (B, 1, T, T)
    zero = student.new_zeros((), dtype=torch.float32)
    s = torch.where(pair, student.float(), zero)
    t = torch.where(pair, teacher.float(), zero)
    diff2 = (s - t).pow(2).sum(dim=(1, 2, 3))  # (B,)
    n = keep.sum(dim=1).to(diff2.dtype)
    return (diff2 / (heads * (n * n).clamp(min=1))).sum()
