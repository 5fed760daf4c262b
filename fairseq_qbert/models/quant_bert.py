"""``quant_bert*``: BERT (and MiniLM-style BERT shapes) as a ``quant_roberta`` encoder layout.

BERT differs from fairseq's RoBERTa only in its embeddings and LayerNorm epsilon:

* absolute positions 0..T-1 (no padding offset; fairseq pads on the right),
* token-type (segment) embeddings, summed with tokens and positions before the embedding
  LayerNorm; the segment ids are derived from the tokens with BERT's pair layout
  ``[CLS] A [SEP] B [SEP]``: 0 up to and including the first ``[SEP]`` (fairseq's eos), 1
  after it -- exactly what the HF tokenizer's ``token_type_ids`` are for that layout, so the
  stock ``sentence_prediction`` task (``--init-token 0``, no ``--separator-token``) and every
  criterion work unchanged.
* LayerNorm eps 1e-12.

BERT's pooler (dense + tanh on [CLS]) + classifier is fairseq's classification head
(dense, tanh, out_proj), so heads, KD, QAT and export are shared with ``quant_roberta``.
The EMB group quantizes token, position and token-type tables. The archs register on the
``quant_roberta`` model and store ``encoder_layout="bert"`` in the checkpoint's arguments,
so any code that rebuilds a ``quant_roberta`` from those arguments (the KD teacher) gets
BERT's embeddings.
"""
from typing import Optional

import torch
from fairseq.models import register_model_architecture
from fairseq.models.roberta.model import base_architecture as roberta_base_architecture
from fairseq.utils import safe_getattr
from torch import nn

from qbert.quant.modules import QuantEmbedding

from .quant_config import QuantSettings
from .quant_roberta import (
    ENCODER_LAYOUTS,
    QuantRobertaEncoder,
    QuantTransformerEncoder,
    _validated,
    quant_roberta_tiny_architecture,
)


def _table(quant: QuantSettings, rows: int, dim: int) -> nn.Embedding:
    if not quant.quantizes("EMB"):
        return nn.Embedding(rows, dim)
    return QuantEmbedding(rows, dim, None, weight_quantizer=quant.weight_quantizer_for("EMB", rows))


def bert_segments(tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """0 up to and including the first eos ([SEP]) of each row, 1 after it."""
    is_eos = tokens.eq(eos).long()
    return (is_eos.cumsum(dim=1) - is_eos).clamp(max=1)


class QuantBertTransformerEncoder(QuantTransformerEncoder):
    def __init__(self, args, dictionary, embed_tokens, quant: QuantSettings):
        super().__init__(args, dictionary, embed_tokens, quant)
        dim = embed_tokens.embedding_dim
        max_positions = args.max_positions
        self.embed_positions = _table(quant, max_positions, dim)
        self.embed_positions.max_positions = max_positions  # read by TransformerEncoder.max_positions
        self.embed_token_types = _table(quant, safe_getattr(args, "type_vocab_size", 2), dim)
        self.eos_idx = dictionary.eos()

    def forward_embedding(self, src_tokens, token_embedding: Optional[torch.Tensor] = None):
        if token_embedding is None:
            token_embedding = self.embed_tokens(src_tokens)
        segment_labels = bert_segments(src_tokens, self.eos_idx)
        positions = torch.arange(src_tokens.size(1), device=src_tokens.device).unsqueeze(0)
        x = embed = self.embed_scale * token_embedding
        x = x + self.embed_positions(positions) + self.embed_token_types(segment_labels)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = self.dropout_module(x)
        if self.quant_noise is not None:
            x = self.quant_noise(x)
        return x, embed


class QuantBertEncoder(QuantRobertaEncoder):
    def build_encoder(self, args, dictionary, embed_tokens):
        from fairseq.modules.transformer_sentence_encoder import init_bert_params

        encoder = QuantBertTransformerEncoder(args, dictionary, embed_tokens, self.quant)
        encoder.apply(init_bert_params)
        return encoder


ENCODER_LAYOUTS["bert"] = QuantBertEncoder


def _bert_defaults(args):
    args.encoder_layout = "bert"
    for name, default in (("type_vocab_size", 2), ("layer_norm_eps", 1e-12)):
        if getattr(args, name, None) is None:
            setattr(args, name, default)
    args.max_positions = safe_getattr(args, "max_positions", 512)
    roberta_base_architecture(args)


@register_model_architecture("quant_roberta", "quant_bert_base")
@_validated
def quant_bert_base_architecture(args):
    """bert-base shape (12 x 768, 12 heads, 512 positions, 2 token types, eps 1e-12)."""
    _bert_defaults(args)


@register_model_architecture("quant_roberta", "quant_bert_tiny")
@_validated
def quant_bert_tiny_architecture(args):
    """A 2 x 64 BERT for CPU tests (quant_roberta_tiny's shape)."""
    quant_roberta_tiny_architecture(args)
    _bert_defaults(args)
