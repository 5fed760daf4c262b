"""Length-adaptive forward of the ``quant_roberta`` encoder (QuaLA / Length-Adaptive Transformer).

A *length configuration* ``(l_1, ..., l_N)`` (Kim & Cho 2021, arXiv 2010.07003; QuaLA-MiniLM,
Guskin et al. 2022, arXiv 2210.17114) makes layer ``i``, after its attention block
(self-attention, residual, LayerNorm), keep ``<s>`` and the ``l_i - 1`` tokens that received
the most attention (PoWER-BERT significance ``sum_h sum_i A[h, i, j]`` over heads and
non-padding queries, padding first to go; see :mod:`qbert.lat.selection`), and run its FFN and
every following layer on those only. The encoder output is *restored* to the input length as
the reference does: each position holds the output of the last layer that processed it
(``<s>``, which the sentence head reads, goes through every layer). A batch shorter than
``l_i`` keeps all its tokens at that layer.

Flags (``quant_roberta`` model flags, saved with the model):

* ``--length-config "(96,80,64,...)"``: one token count per layer, non-increasing, 1 to
  ``--max-positions``; overridable at evaluation (``fairseq-validate --model-overrides
  "{'length_config': '(..)'}"``, :func:`set_length_config`).
* ``--layer-dropout-prob P``: LayerDrop (Fan et al. 2020) in training as the reference samples
  it: every forward in training mode skips each layer with probability ``P``.

Without a configuration and without LayerDrop the encoder runs fairseq's own forward,
unchanged (no attention probabilities are computed for selection then).
"""
import contextlib
import random
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.utils import safe_getattr
from torch import Tensor, nn

from qbert.errors import ConfigError
from qbert.lat import parse_length_config, sample_layer_config, select_tokens, significance


def add_length_adaptive_args(parser) -> None:
    parser.add_argument("--length-config", type=str, default=None, metavar="(L1,...,LN)",
                        help="tokens kept after each layer's attention block, one per layer, "
                             "non-increasing (Length-Adaptive Transformer); default: all")
    parser.add_argument("--layer-dropout-prob", type=float, default=0.0, metavar="P",
                        help="LayerDrop in training: skip each layer with probability P "
                             "(default 0)")


def numpy_seeded_rng() -> random.Random:
    """A ``random.Random`` drawn from numpy's global RNG, which fairseq seeds with ``--seed``."""
    return random.Random(int(np.random.randint(0, 2 ** 31 - 1)))


def layer_forward(layer, x: Tensor, padding_mask: Optional[Tensor], keep: Optional[int]):
    """fairseq's ``TransformerEncoderLayerBase.forward`` with token selection between the
    attention block and the FFN: ``(x, kept positions (B, k) or None, padding mask)``."""
    select = keep is not None and keep < x.size(0)
    residual = x
    if layer.normalize_before:
        x = layer.self_attn_layer_norm(x)
    x, probs = layer.self_attn(query=x, key=x, value=x, key_padding_mask=padding_mask,
                               need_weights=select, attn_mask=None)
    x = layer.dropout_module(x)
    x = layer.residual_connection(x, residual)
    if not layer.normalize_before:
        x = layer.self_attn_layer_norm(x)
    kept = None
    if select:
        kept = select_tokens(significance(probs, padding_mask), keep, padding_mask)
        x = x.gather(0, kept.t().unsqueeze(-1).expand(-1, -1, x.size(-1)))
        if padding_mask is not None:
            padding_mask = padding_mask.gather(1, kept)
    residual = x
    if layer.normalize_before:
        x = layer.final_layer_norm(x)
    x = layer.activation_dropout_module(layer.activation_fn(layer.fc1(x)))
    x = layer.dropout_module(layer.fc2(x))
    x = layer.residual_connection(x, residual)
    if not layer.normalize_before:
        x = layer.final_layer_norm(x)
    return x, kept, padding_mask


class LengthAdaptiveEncoderMixin:
    """Mixed into ``QuantTransformerEncoder`` (before fairseq's ``TransformerEncoder``)."""

    def __init__(self, args, *rest, **kwargs):
        super().__init__(args, *rest, **kwargs)
        prob = safe_getattr(args, "layer_dropout_prob", 0.0) or 0.0
        if not 0 <= prob < 1:
            raise ConfigError(f"--layer-dropout-prob must be in [0, 1), got {prob}")
        if prob and (safe_getattr(args, "encoder_layerdrop", 0) or 0) > 0:
            raise ConfigError("--layer-dropout-prob and --encoder-layerdrop are two LayerDrops: "
                              "give only one")
        self.layer_dropout_prob = float(prob)
        self.length_config = None
        self.set_length_config(safe_getattr(args, "length_config", None))
        #: (lengths, kept layers) forced by :func:`length_override` (sub-models in training)
        self.length_override: Optional[Tuple] = None

    def set_length_config(self, config) -> None:
        """Text or sequence (checked: one per layer, non-increasing, 1..max positions) or None."""
        self.length_config = parse_length_config(config, len(self.layers), self.max_positions())

    def _length_plan(self):
        if self.length_override is not None:
            return self.length_override
        kept = None
        if self.training and self.layer_dropout_prob > 0:
            kept = sample_layer_config(len(self.layers), self.layer_dropout_prob, numpy_seeded_rng())
        if self.length_config is None and kept is None:
            return None
        return self.length_config, kept

    def forward_scriptable(self, src_tokens, src_lengths: Optional[Tensor] = None,
                           return_all_hiddens: bool = False,
                           token_embeddings: Optional[Tensor] = None):
        plan = self._length_plan()
        if plan is None:
            return super().forward_scriptable(src_tokens, src_lengths, return_all_hiddens,
                                              token_embeddings)
        return self._forward_length_adaptive(src_tokens, return_all_hiddens, token_embeddings, *plan)

    def _forward_length_adaptive(self, src_tokens, return_all_hiddens, token_embeddings,
                                 lengths: Optional[Sequence[int]], kept_layers):
        """fairseq's ``forward_scriptable`` with selection (``lengths``) and skipped layers
        (those not in ``kept_layers``; their hidden state, when returned, is the input's)."""
        padding_mask = src_tokens.eq(self.padding_idx)
        has_pads = padding_mask.any()
        x, encoder_embedding = self.forward_embedding(src_tokens, token_embeddings)
        x = x * (1 - padding_mask.unsqueeze(-1).type_as(x) * has_pads.type_as(x))
        x = x.transpose(0, 1)
        mask = padding_mask if has_pads else None
        restored, positions = x, None  # positions: (B, k) original index of each current token
        states: List[Tensor] = [x] if return_all_hiddens else []
        kept_layers = None if kept_layers is None else set(kept_layers)
        for i, layer in enumerate(nn.ModuleList.__iter__(self.layers)):
            if kept_layers is None or i in kept_layers:
                keep = None if lengths is None else int(lengths[i])
                x, kept, mask = layer_forward(layer, x, mask, keep)
                if kept is not None:
                    positions = kept if positions is None else positions.gather(1, kept)
                if positions is None:
                    restored = x
                else:
                    index = positions.t().unsqueeze(-1).expand(-1, -1, x.size(-1))
                    restored = restored.scatter(0, index, x)
            if return_all_hiddens:
                states.append(restored)
        if self.layer_norm is not None:
            restored = self.layer_norm(restored)
        src_lengths = src_tokens.ne(self.padding_idx).sum(dim=1, dtype=torch.int32).reshape(-1, 1)
        return {
            "encoder_out": [restored],
            "encoder_padding_mask": [padding_mask],
            "encoder_embedding": [encoder_embedding],
            "encoder_states": states,
            "fc_results": [],
            "src_tokens": [],
            "src_lengths": [src_lengths],
        }


def length_adaptive_encoders(model: nn.Module) -> List[LengthAdaptiveEncoderMixin]:
    return [m for m in model.modules() if isinstance(m, LengthAdaptiveEncoderMixin)]


def the_encoder(model: nn.Module, what: str = "a length configuration") -> LengthAdaptiveEncoderMixin:
    encoders = length_adaptive_encoders(model)
    if len(encoders) != 1:
        raise ConfigError(f"{what} needs a quant_roberta model (arch quant_roberta*); got "
                          f"{type(model).__name__}")
    return encoders[0]


def set_length_config(model: nn.Module, config) -> None:
    """Apply (or clear, with None) a length configuration on ``model``'s encoder."""
    the_encoder(model).set_length_config(config)


@contextlib.contextmanager
def length_override(model: nn.Module, lengths: Optional[Sequence[int]],
                    kept_layers: Optional[Sequence[int]] = None):
    """Forwards inside the block use ``lengths`` and run only ``kept_layers`` (None: all),
    whatever the model's own configuration and LayerDrop."""
    encoder = the_encoder(model, "LengthDrop")
    previous = encoder.length_override
    encoder.length_override = (None if lengths is None else tuple(int(v) for v in lengths),
                               None if kept_layers is None else tuple(kept_layers))
    try:
        yield encoder
    finally:
        encoder.length_override = previous
