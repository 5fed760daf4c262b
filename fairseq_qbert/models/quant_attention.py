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

from fairseq.modules import MultiheadAttention
from torch import Tensor, nn

from qbert.nn.attention import self_attention


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
        tgt_len, bsz, _ = query.size()
        heads = self.num_heads
        attn, scores, probs_float = self_attention(
            query, self.q_proj, self.k_proj, self.v_proj, heads, self.scaling,
            key_padding_mask=key_padding_mask, attn_mask=attn_mask, dropout=self.dropout_module)
        src_len = scores.size(-1)
        if self.score_sink is not None:
            self.score_sink.append(scores)
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
