"""Self-attention that always runs through its projection modules and can hand out scores.

fairseq's ``MultiheadAttention.forward`` takes a fused fast path
(``F.multi_head_attention_forward`` with ``self.q_proj.weight`` etc.) that never calls
``q_proj.forward``: a quantized Linear swapped in there would be silently ignored. This
subclass always computes

    scores = (x W_q^T / sqrt(d_head)) (x W_k^T)^T + attn_mask,  -inf at padded keys
    out    = W_o (softmax(scores) x W_v^T)

through ``self.q_proj(...)``, ``self.k_proj(...)``, ``self.v_proj(...)`` and
``self.out_proj(...)`` (exactly fairseq's slow path for encoder self-attention), so
whatever module sits there (``QuantLinear``) is what the attention uses.

For knowledge distillation (TernaryBERT) the pre-softmax scores can be captured with
:func:`capture_attention_scores`; when nothing captures, nothing is stored.
"""
import contextlib
from typing import List, Optional

import torch
from fairseq import utils
from fairseq.modules import MultiheadAttention
from torch import Tensor, nn


class QuantMultiheadAttention(MultiheadAttention):
    """Encoder self-attention on the module path; projections may be ``QuantLinear``."""

    def __init__(self, *args, projections: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        if projections:
            for name, module in projections.items():  # q_proj/k_proj/v_proj/out_proj
                setattr(self, name, module)
            self.reset_parameters()
        #: a list that receives (B, H, T, S) pre-softmax scores per forward, or None
        self.score_sink: Optional[List[Tensor]] = None

    def forward(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor],
                key_padding_mask: Optional[Tensor] = None, incremental_state=None,
                need_weights: bool = True, static_kv: bool = False,
                attn_mask: Optional[Tensor] = None, before_softmax: bool = False,
                need_head_weights: bool = False):
        if incremental_state is not None or not self.self_attention or self.bias_k is not None \
                or self.add_zero_attn or before_softmax:
            raise RuntimeError(
                "QuantMultiheadAttention covers encoder self-attention only "
                "(no incremental state, bias_kv, add_zero_attn or before_softmax)")
        tgt_len, bsz, embed_dim = query.size()
        heads, head_dim = self.num_heads, self.head_dim

        q = self.q_proj(query) * self.scaling
        k = self.k_proj(query)
        v = self.v_proj(query)
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
        if self.score_sink is not None:
            self.score_sink.append(scores)

        probs_float = utils.softmax(scores.view(bsz * heads, tgt_len, src_len), dim=-1)
        probs = self.dropout_module(probs_float.type_as(scores))
        attn = torch.bmm(probs, v).transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
        attn = self.out_proj(attn)

        weights = None
        if need_weights or need_head_weights:
            weights = probs_float.view(bsz, heads, tgt_len, src_len).transpose(1, 0)
            if not need_head_weights:
                weights = weights.mean(dim=0)
        return attn, weights


@contextlib.contextmanager
def capture_attention_scores(model: nn.Module):
    """Collect every layer's pre-softmax attention scores during forwards inside the block.

    Yields a list that receives, layer by layer, tensors of shape (B, heads, T, T) with
    ``-inf`` at padded keys. Outside the block no module stores anything.
    """
    modules = [m for m in model.modules() if isinstance(m, QuantMultiheadAttention)]
    if not modules:
        raise ValueError(
            "attention scores can only be captured from a quant_roberta model "
            "(its attention runs on the module path); got " + type(model).__name__)
    sink: List[Tensor] = []
    for m in modules:
        m.score_sink = sink
    try:
        yield sink
    finally:
        for m in modules:
            m.score_sink = None
