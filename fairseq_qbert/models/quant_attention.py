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

``shared_qkv_input=True`` (``--shared-qkv-input-quantizer``): q, k and v read the same
tensor x, so one input quantizer Q serves all three, x_q = Q(x) is computed once and the
projections are q_proj(x_q), k_proj(x_q), v_proj(x_q) (one step size s instead of three;
its gradient is the sum of the three projections' contributions, as for any shared
parameter). The three ``input_quantizer`` attributes are the same module, so export and
calibration, which read ``<proj>.input_quantizer``, see it on each projection; the
checkpoint holds its state under each of the three names (equal values). A checkpoint of
separate quantizers (different values) is refused when loaded into a shared model; a shared
one loads into a separate model as three quantizers that start equal.
"""
import contextlib
from typing import List, Optional

import torch
from fairseq.modules import MultiheadAttention
from torch import Tensor, nn

from qbert.errors import CheckpointError
from qbert.nn.attention import self_attention

_QKV = ("q_proj", "k_proj", "v_proj")


class QuantMultiheadAttention(MultiheadAttention):
    """Encoder self-attention on the module path; projections may be ``QuantLinear``."""

    def __init__(self, *args, projections: Optional[dict] = None, shared_qkv_input: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if projections:
            for name, module in projections.items():  # q_proj/k_proj/v_proj/out_proj
                setattr(self, name, module)
            self.reset_parameters()
        #: the one input quantizer of q/k/v (--shared-qkv-input-quantizer), or None
        self.shared_input_quantizer = None
        if shared_qkv_input:
            q = getattr(self.q_proj, "input_quantizer", None)
            if q is None or any(not hasattr(getattr(self, n), "input_quantizer") for n in _QKV):
                raise ValueError("shared_qkv_input needs q/k/v projections with input quantizers")
            self.k_proj.input_quantizer = q
            self.v_proj.input_quantizer = q
            self.__dict__["shared_input_quantizer"] = q  # not a submodule of its own
        #: a list that receives (B, H, T, S) pre-softmax scores per forward, or None
        self.score_sink: Optional[List[Tensor]] = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.shared_input_quantizer is not None:
            first = {k[len(prefix + "q_proj."):]: v for k, v in state_dict.items()
                     if k.startswith(prefix + "q_proj.input_quantizer.")}
            for name in _QKV[1:]:
                for key, value in first.items():
                    other = state_dict.get(prefix + name + "." + key)
                    if other is not None and not torch.equal(other, value):
                        raise CheckpointError(
                            f"the checkpoint has separate q/k/v input quantizers ({prefix}q_proj."
                            f"{key} differs from {prefix}{name}.{key}) but this run shares one "
                            "(--shared-qkv-input-quantizer); drop the flag to continue it, or start "
                            "from a full-precision checkpoint")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        q_proj, k_proj, v_proj = self.q_proj, self.k_proj, self.v_proj
        if self.shared_input_quantizer is not None:  # quantize x once for q, k and v
            query = self.shared_input_quantizer(query)
            q_proj, k_proj, v_proj = (lambda t, m=m: m(t, input_quantized=True)
                                      for m in (q_proj, k_proj, v_proj))
        attn, scores, probs_float = self_attention(
            query, q_proj, k_proj, v_proj, heads, self.scaling,
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
