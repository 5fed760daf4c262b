"""A pure-torch rebuild of the exported encoder + classification head (no fairseq).

It computes what fairseq's ``quant_roberta`` computes in eval mode, op for op and in the
same T x B x C layout (embeddings -- RoBERTa's padding-offset positions, or BERT's
absolute positions 0..T-1 plus token-type rows of the segment ids --, padding, post- or
pre-LayerNorm layers, self-attention as ``QuantMultiheadAttention``, the sentence
classification head), with the dequantized weights ``codes * scale`` and each quantized
Linear input passed through the reference :func:`qbert.quant.qparams.fake_quant` of its
exported grid. So its logits equal the fake-quant model's exactly: this module is the proof
that the export holds the model.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from qbert.errors import ConfigError
from qbert.nn.attention import self_attention
from qbert.quant.qparams import fake_quant

from .format import ExportedModel
from .length import arch_length_config, reducing_layers, torch_layer

ENCODER = "encoder.sentence_encoder."


def head_prefix(arch) -> str:
    return f"classification_heads.{arch['head_name']}."


def activation(name: str):
    """fairseq's ``utils.get_activation_fn`` for the names RoBERTa uses (fp32 math)."""
    if name == "gelu":
        return lambda x: F.gelu(x.float()).type_as(x)
    if name == "gelu_accurate":
        return lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))
    if name == "relu":
        return F.relu
    if name == "tanh":
        return torch.tanh
    if name == "linear":
        return lambda x: x
    raise ConfigError(f"activation function {name!r} is not supported by the export "
                      "(gelu, gelu_accurate, relu, tanh, linear)")


class ExportLinear(nn.Module):
    def __init__(self, export: ExportedModel, name: str):
        super().__init__()
        self.register_buffer("weight", export.weight(name + ".weight"))
        bias = name + ".bias"
        self.register_buffer("bias", export.weight(bias) if export.has(bias) else None)
        q = export.inputs.get(name)
        self.input_qparams = q.qparams() if q is not None else None

    def forward(self, x):
        if self.input_qparams is not None:
            x = fake_quant(x, self.input_qparams).to(x.dtype)
        return F.linear(x, self.weight, self.bias)


class ExportLayerNorm(nn.LayerNorm):
    def __init__(self, export: ExportedModel, name: str, eps: float):
        weight = export.weight(name + ".weight")
        super().__init__(weight.numel(), eps=eps)
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(export.weight(name + ".bias"))


class ExportLayer(nn.Module):
    """fairseq's TransformerEncoderLayerBase (eval) with QuantMultiheadAttention's math."""

    def __init__(self, export: ExportedModel, prefix: str):
        super().__init__()
        arch = export.arch
        eps = arch["layer_norm_eps"]
        self.heads = arch["heads"]
        self.head_dim = arch["embed_dim"] // self.heads
        self.scaling = self.head_dim ** -0.5
        self.normalize_before = arch["normalize_before"]
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, ExportLinear(export, f"{prefix}self_attn.{name}"))
        self.fc1 = ExportLinear(export, prefix + "fc1")
        self.fc2 = ExportLinear(export, prefix + "fc2")
        self.self_attn_layer_norm = ExportLayerNorm(export, prefix + "self_attn_layer_norm", eps)
        self.final_layer_norm = ExportLayerNorm(export, prefix + "final_layer_norm", eps)
        self.activation_fn = activation(arch["activation_fn"])

    def attention(self, x, key_padding_mask: Optional[torch.Tensor]):
        attn, _, _ = self_attention(x, self.q_proj, self.k_proj, self.v_proj, self.heads,
                                    self.scaling, key_padding_mask=key_padding_mask)
        return self.out_proj(attn)

    def forward(self, x, key_padding_mask):
        residual = x
        if self.normalize_before:
            x = self.self_attn_layer_norm(x)
        x = residual + self.attention(x, key_padding_mask)
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)
        residual = x
        if self.normalize_before:
            x = self.final_layer_norm(x)
        x = self.fc2(self.activation_fn(self.fc1(x)))
        x = residual + x
        if not self.normalize_before:
            x = self.final_layer_norm(x)
        return x


class ExportedRoberta(nn.Module):
    """Encoder + sentence classification head of an export; ``forward(src_tokens) -> logits``."""

    def __init__(self, export: ExportedModel):
        super().__init__()
        arch = export.arch
        self.arch = arch
        self.padding_idx = arch["padding_idx"]
        self.embed_scale = arch["embed_scale"]
        self.register_buffer("embed_tokens", export.weight(ENCODER + "embed_tokens.weight"))
        self.register_buffer("embed_positions", export.weight(ENCODER + "embed_positions.weight"))
        self.bert = arch.get("family", "roberta") == "bert"
        if self.bert:
            self.eos_idx = int(arch["eos_idx"])
            self.register_buffer("embed_token_types", export.weight(ENCODER + "embed_token_types.weight"))
        eps = arch["layer_norm_eps"]
        self.layernorm_embedding = (ExportLayerNorm(export, ENCODER + "layernorm_embedding", eps)
                                    if arch["layernorm_embedding"] else None)
        self.layer_norm = (ExportLayerNorm(export, ENCODER + "layer_norm", eps)
                           if arch["final_layer_norm"] else None)
        self.layers = nn.ModuleList(ExportLayer(export, f"{ENCODER}layers.{i}.")
                                    for i in range(arch["layers"]))
        head = head_prefix(arch)
        self.dense = ExportLinear(export, head + "dense")
        self.out_proj = ExportLinear(export, head + "out_proj")
        self.pooler_fn = activation(arch["pooler_activation_fn"])
        self.length_keep = reducing_layers(arch_length_config(arch), int(arch["max_positions"]))

    def features(self, src_tokens: torch.Tensor) -> torch.Tensor:
        """Last layer's output, B x T x C."""
        pad = src_tokens.eq(self.padding_idx)
        x = self.embed_scale * F.embedding(src_tokens, self.embed_tokens)
        if self.bert:
            positions = torch.arange(src_tokens.size(1), device=src_tokens.device).unsqueeze(0)
            x = x + F.embedding(positions, self.embed_positions) + F.embedding(
                bert_segments(src_tokens, self.eos_idx), self.embed_token_types)
        else:
            mask = src_tokens.ne(self.padding_idx).int()
            positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + self.padding_idx
            x = x + F.embedding(positions, self.embed_positions)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        has_pads = pad.any()
        x = x * (1 - pad.unsqueeze(-1).type_as(x) * has_pads.type_as(x))
        x = x.transpose(0, 1)
        mask = pad if has_pads else None
        for i, layer in enumerate(self.layers):
            if i in self.length_keep:  # a length configuration drops tokens here (qbert.export.length)
                x, mask = torch_layer(layer, x, mask, self.length_keep[i])
            else:
                x = layer(x, mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return x.transpose(0, 1)

    def forward(self, src_tokens: torch.Tensor) -> torch.Tensor:
        x = self.features(src_tokens)[:, 0, :]
        return self.out_proj(self.pooler_fn(self.dense(x)))


def bert_segments(tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """BERT's segment ids of ``[CLS] A [SEP] B [SEP]``: s_t = min(1, #eos in tokens[:t]) --
    0 up to and including the first eos, 1 after (as ``quant_bert`` derives them)."""
    is_eos = tokens.eq(eos).long()
    return (is_eos.cumsum(dim=1) - is_eos).clamp(max=1)


def build_torch_model(export: ExportedModel) -> ExportedRoberta:
    """The pure-torch model of an export, in eval mode."""
    return ExportedRoberta(export).eval()
