"""Encoder self-attention through its projection modules: the one implementation of the math.

Used by fairseq_qbert's ``QuantMultiheadAttention`` (training, KD score capture) and by the
pure-torch rebuild of an export (``qbert.export.torch_model``), so that both compute the
same values step for step (Vaswani et al. 2017, fairseq's slow path)::

    scores = (x W_q^T * d_head^-1/2) (x W_k^T)^T + attn_mask,   -inf at padded keys
    probs  = softmax(scores) (in fp32)
    attn   = probs (x W_v^T), heads concatenated   (out_proj is applied by the caller)
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def self_attention(x: Tensor, q_proj: Callable, k_proj: Callable, v_proj: Callable, heads: int,
                   scaling: float, key_padding_mask: Optional[Tensor] = None,
                   attn_mask: Optional[Tensor] = None,
                   dropout: Optional[Callable[[Tensor], Tensor]] = None
                   ) -> Tuple[Tensor, Tensor, Tensor]:
    """(attention output before out_proj [T, B, C], scores [B, H, T, S], fp32 probs [B*H, T, S]).

    ``x`` is T x B x C; ``dropout`` (if given) is applied to the probabilities.
    """
    tgt_len, bsz, embed_dim = x.size()
    head_dim = embed_dim // heads
    q = q_proj(x) * scaling
    k = k_proj(x)
    v = v_proj(x)
    q = q.contiguous().view(tgt_len, bsz * heads, head_dim).transpose(0, 1)
    k = k.contiguous().view(-1, bsz * heads, head_dim).transpose(0, 1)
    v = v.contiguous().view(-1, bsz * heads, head_dim).transpose(0, 1)
    src_len = k.size(1)

    scores = torch.bmm(q, k.transpose(1, 2))
    if attn_mask is not None:
        scores = scores + attn_mask.unsqueeze(0)
    scores = scores.view(bsz, heads, tgt_len, src_len)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask.unsqueeze(1).unsqueeze(2).to(torch.bool),
                                    float("-inf"))
    probs_float = F.softmax(scores.view(bsz * heads, tgt_len, src_len), dim=-1, dtype=torch.float32)
    probs = probs_float.type_as(scores)
    if dropout is not None:
        probs = dropout(probs)
    attn = torch.bmm(probs, v).transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
    return attn, scores, probs_float
