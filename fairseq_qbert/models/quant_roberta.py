"""``quant_roberta``: fairseq's RoBERTa with fake-quantized layer groups.

Same parameter names as fairseq's ``roberta`` (so ``roberta.base/model.pt`` or any FP
fine-tuned checkpoint loads into it); quantizers are extra submodules
(``...weight_quantizer.*``, ``...input_quantizer.*``). This file only decides *where*
quantizers go; the quantizer math lives in :mod:`qbert.quant`.

Layer groups (command line ``--quant-groups``):

* ``EMB``  token and learned position embeddings
* ``QKV``  attention q/k/v and output projections
* ``FFN``  fc1, fc2
* ``HEAD`` the sentence classification head (optional; TernaryBERT keeps it FP)
"""
import logging
from typing import Dict, List, Tuple

import torch
from fairseq import metrics, utils
from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta.model import (
    RobertaEncoder,
    RobertaModel,
    roberta_large_architecture,
)
from fairseq.models.roberta.model import (
    base_architecture as roberta_base_architecture,
)
from fairseq.models.transformer import TransformerConfig, TransformerEncoder
from fairseq.modules import LearnedPositionalEmbedding
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from fairseq.modules.transformer_layer import TransformerEncoderLayerBase
from fairseq.modules.transformer_sentence_encoder import init_bert_params
from fairseq.utils import safe_getattr
from torch import nn
from torch.nn import functional as F

from qbert.checkpoint_state import is_quantizer_key
from qbert.errors import CheckpointError, ConfigError, entry_point
from qbert.groups import group_parameter_counts, module_group
from qbert.quant.base import BitsMismatchError, Quantizer
from qbert.quant.modules import QuantEmbedding, QuantLinear

from .length_adaptive import LengthAdaptiveEncoderMixin, add_length_adaptive_args
from .quant_attention import QuantMultiheadAttention
from .quant_config import QuantSettings, add_quant_args
from .sparsity import Sparsity, add_sparse_args

logger = logging.getLogger(__name__)

class QuantLearnedPositionalEmbedding(LearnedPositionalEmbedding):
    """fairseq's learned positions, looked up in a fake-quantized table."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx, weight_quantizer):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.weight_quantizer = weight_quantizer

    def forward(self, input, incremental_state=None, positions=None):
        if positions is None:
            if incremental_state is not None:
                raise RuntimeError("quant_roberta is an encoder: no incremental decoding")
            positions = utils.make_positions(input, self.padding_idx, onnx_trace=self.onnx_trace)
        return F.embedding(positions, self.weight_quantizer(self.weight), self.padding_idx,
                           self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse)


def build_linear(quant: QuantSettings, group: str, in_dim: int, out_dim: int, input_signed=True):
    """nn.Linear when ``group`` stays full precision and dense, else a QuantLinear for it."""
    if not quant.quantizes(group) and not quant.sparse.masks(group):
        return nn.Linear(in_dim, out_dim)
    return quant.sparse.prepare(QuantLinear(
        in_dim, out_dim, weight_quantizer=quant.weight_quantizer_for(group, out_dim),
        input_quantizer=quant.input_quantizer_for(group, signed=input_signed)), group)


class QuantTransformerEncoderLayer(TransformerEncoderLayerBase):
    """Encoder layer whose fc1/fc2 and attention projections are built per ``QuantSettings``."""

    def __init__(self, cfg, quant: QuantSettings):
        self.quant = quant  # read by the build_* hooks that run inside super().__init__
        super().__init__(cfg)

    def build_fc1(self, input_dim, output_dim, q_noise, qn_block_size):
        return build_linear(self.quant, "FFN", input_dim, output_dim)

    def build_fc2(self, input_dim, output_dim, q_noise, qn_block_size):
        # fc2's input is the activation output: unsigned only after ReLU (GELU dips to -0.17)
        unsigned = self.cfg.activation_fn == "relu"
        return build_linear(self.quant, "FFN", input_dim, output_dim, input_signed=not unsigned)

    def build_self_attention(self, embed_dim, cfg):
        projections = {name: build_linear(self.quant, "QKV", embed_dim, embed_dim)
                       for name in ("q_proj", "k_proj", "v_proj", "out_proj")}
        return QuantMultiheadAttention(embed_dim, cfg.encoder.attention_heads,
                                       dropout=cfg.attention_dropout, self_attention=True,
                                       projections=projections,
                                       shared_qkv_input=self.quant.shared_qkv_input_quantizer)


class QuantTransformerEncoder(LengthAdaptiveEncoderMixin, TransformerEncoder):
    def __init__(self, args, dictionary, embed_tokens, quant: QuantSettings):
        self.quant = quant
        super().__init__(args, dictionary, embed_tokens)
        positions = self.embed_positions
        if quant.quantizes("EMB") and positions is not None:
            if not isinstance(positions, LearnedPositionalEmbedding):
                raise ConfigError("--quant-groups EMB needs learned positional embeddings")
            self.embed_positions = QuantLearnedPositionalEmbedding(
                positions.num_embeddings, positions.embedding_dim, positions.padding_idx,
                quant.weight_quantizer_for("EMB", positions.num_embeddings))
            self.embed_positions.weight.data.copy_(positions.weight.data)

    def build_encoder_layer(self, cfg):
        cfg = TransformerConfig.from_namespace(cfg)
        layer = QuantTransformerEncoderLayer(cfg, self.quant)
        if cfg.checkpoint_activations:
            layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
        return fsdp_wrap(layer, min_num_params=0 if cfg.checkpoint_activations else cfg.min_params_to_wrap)


class QuantRobertaEncoder(RobertaEncoder):
    def __init__(self, args, dictionary, quant: QuantSettings):
        self.quant = quant
        super().__init__(args, dictionary)
        eps = safe_getattr(args, "layer_norm_eps", None)
        if eps is not None:  # --layer-norm-eps (imported HF models); fairseq's default otherwise
            for module in self.modules():  # the encoder's and the LM head's
                if isinstance(module, nn.LayerNorm):
                    module.eps = eps

    def build_embedding(self, vocab_size, embedding_dim, padding_idx):
        if not self.quant.quantizes("EMB") and not self.quant.sparse.masks("EMB"):
            return nn.Embedding(vocab_size, embedding_dim, padding_idx)
        return self.quant.sparse.prepare(QuantEmbedding(
            vocab_size, embedding_dim, padding_idx,
            weight_quantizer=self.quant.weight_quantizer_for("EMB", vocab_size)), "EMB")

    def build_encoder(self, args, dictionary, embed_tokens):
        encoder = QuantTransformerEncoder(args, dictionary, embed_tokens, self.quant)
        encoder.apply(init_bert_params)
        return encoder


#: encoder class per ``args.encoder_layout``; a checkpoint's stored args pick its layout,
#: so a BERT teacher rebuilt as ``quant_roberta`` still gets BERT's embeddings
ENCODER_LAYOUTS = {"roberta": QuantRobertaEncoder}


@register_model("quant_roberta")
class QuantRobertaModel(RobertaModel):
    """RoBERTa with fake-quantized EMB / QKV / FFN (/ HEAD) groups (see module docstring)."""

    def __init__(self, args, encoder, quant: QuantSettings):
        super().__init__(args, encoder)
        self.quant = quant
        self._quantizer_index = None  # group -> [(role, quantizer)], built lazily
        self._record_stats = True  # log quantizer statistics in this update's forwards
        self.sparsity = Sparsity(quant.sparse)  # 2:4 masks: computed on load / first forward

    @staticmethod
    def add_args(parser):
        RobertaModel.add_args(parser)
        add_quant_args(parser)
        add_sparse_args(parser)
        add_length_adaptive_args(parser)
        parser.add_argument("--layer-norm-eps", type=float, default=None, metavar="EPS",
                            help="epsilon of every encoder LayerNorm (default: fairseq's 1e-5; "
                                 "quant_bert*: 1e-12; imported HF models: their layer_norm_eps)")

    @classmethod
    @entry_point  # fairseq calls it: a bad flag is one line and exit 1
    def build_model(cls, args, task):
        return cls.build_checked_model(args, task)

    @classmethod
    def build_checked_model(cls, args, task):
        """:meth:`build_model` raising :class:`ConfigError` (library form, for API callers)."""
        from omegaconf import OmegaConf

        if OmegaConf.is_config(args):
            OmegaConf.set_struct(args, False)
        roberta_base_architecture(args)  # base_architecture without its one-line-exit check
        quant = QuantSettings.from_args(args)
        if not hasattr(args, "max_positions"):
            args.max_positions = getattr(args, "tokens_per_sample", task.max_positions())
        encoder = cls.build_quant_encoder(args, task.source_dictionary, quant)
        if OmegaConf.is_config(args):
            OmegaConf.set_struct(args, True)
        model = cls(args, encoder, quant)
        model.log_groups()
        return model

    @classmethod
    def build_quant_encoder(cls, args, dictionary, quant: QuantSettings):
        """The encoder of ``args.encoder_layout`` (default "roberta"; quant_bert.py adds "bert")."""
        layout = safe_getattr(args, "encoder_layout", None) or "roberta"
        if layout not in ENCODER_LAYOUTS:
            raise ConfigError(f"encoder_layout {layout!r} unknown; allowed: {', '.join(ENCODER_LAYOUTS)}")
        return ENCODER_LAYOUTS[layout](args, dictionary, quant)

    # ------------------------------------------------------------------ groups
    def log_groups(self):
        counts = group_parameter_counts(self)
        total = counts["total"]
        shares = ", ".join(f"{g} {counts[g] / 1e6:.3f}M ({100.0 * counts[g] / total:.1f}%)"
                           for g in ("EMB", "QKV", "FFN"))
        logger.info(f"quant_roberta parameters: {total / 1e6:.3f}M; groups: {shares}")
        logger.info(f"quant_roberta quantization: {self.quant.describe()}")
        if self.quant.sparse.groups:
            logger.info(f"quant_roberta sparsity: {self.quant.sparse.describe()}")

    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        super().register_classification_head(name, num_classes, inner_dim, **kwargs)
        if self.quant.quantizes("HEAD") or self.quant.sparse.masks("HEAD"):
            head = self.classification_heads[name]
            head.dense = self.quant.sparse.prepare(QuantLinear.from_linear(
                head.dense, self.quant.weight_quantizer_for("HEAD", head.dense.out_features),
                self.quant.input_quantizer_for("HEAD")), "HEAD")
            head.out_proj = self.quant.sparse.prepare(QuantLinear.from_linear(
                head.out_proj, self.quant.weight_quantizer_for("HEAD", head.out_proj.out_features),
                self.quant.input_quantizer_for("HEAD")), "HEAD")
        self._quantizer_index = None

    def quantizers_by_group(self) -> Dict[str, List[Tuple[str, Quantizer]]]:
        """{group: [("weight"|"input", quantizer), ...]} for every quantized module."""
        if self._quantizer_index is None:
            index: Dict[str, List[Tuple[str, Quantizer]]] = {}
            for name, module in self.named_modules():
                group = module_group(name)
                for role in ("weight", "input"):
                    q = getattr(module, role + "_quantizer", None) if group else None
                    if isinstance(q, Quantizer):
                        index.setdefault(group, []).append((role, q))
            self._quantizer_index = index
        return self._quantizer_index

    # ------------------------------------------------------------------ forward
    def set_num_updates(self, num_updates):
        """Statistics cost an extra pass per quantizer: record them only for the updates
        whose train_inner line fairseq logs (every --log-interval updates)."""
        super().set_num_updates(num_updates)
        self.sparsity.after_update(self, num_updates)  # ASP's p *= mask; --sparse-recompute-every
        interval = max(1, int(safe_getattr(self.args, "log_interval", 100) or 100))
        self._record_stats = (num_updates + 1) % interval == 0
        for entries in self.quantizers_by_group().values():
            for _, q in entries:
                q.record_stats = self._record_stats

    def forward(self, src_tokens, *args, **kwargs):
        self.sparsity.before_forward(self)  # masks before quantizer init (NVIDIA's order)
        index = self.quantizers_by_group()
        if self.training and index:
            batch_size = float(src_tokens.size(0))
            for entries in index.values():
                for _, q in entries:
                    # PACT's clip weight decay is added to the clip's gradient; fairseq divides
                    # gradients by the number of sentences, so scale by the batch size.
                    if hasattr(q, "decay_grad_multiplier"):
                        q.decay_grad_multiplier = batch_size
        out = super().forward(src_tokens, *args, **kwargs)
        if self.training and index and self._record_stats:
            self._log_quantizer_stats(index)
        if self.training and self._record_stats:
            self.sparsity.log_stats(self)
        return out

    @staticmethod
    def _log_quantizer_stats(index):
        """Per group: mean step size / clip and fraction of clipped values (tensorboard)."""
        for group, entries in index.items():
            for role, tag in (("weight", "w"), ("input", "a")):
                qs = [q for r, q in entries if r == role]
                if not qs:
                    continue
                with torch.no_grad():
                    scale = torch.stack([q.scale_summary().float().reshape(()) for q in qs]).mean()
                    metrics.log_scalar(f"q{tag}_scale_{group}", scale, weight=0, round=4)
                    clipped = [q.last_clip_fraction for q in qs if getattr(q, "last_clip_fraction", None) is not None]
                    if clipped:
                        frac = torch.stack([c.float().reshape(()) for c in clipped]).mean()
                        metrics.log_scalar(f"q{tag}_clipped_{group}", frac, weight=0, round=4)

    # ------------------------------------------------------------------ checkpoints
    def upgrade_state_dict_named(self, state_dict, name):
        """Add missing quantizer state (FP checkpoints) and refuse mismatched quantizers.

        Missing keys get this model's fresh, *uninitialised* quantizer state, so step sizes
        and clips are initialised from the loaded weights / first batch, not from zeros.
        """
        prefix = name + "." if name else ""
        saved_masks = self.sparsity.saved_masks(state_dict, prefix)  # before heads are copied in
        super().upgrade_state_dict_named(state_dict, name)
        own = {k: v for k, v in self.state_dict().items() if is_quantizer_key(k)}
        saved = {k[len(prefix):] for k in state_dict if k.startswith(prefix) and is_quantizer_key(k)}
        extra = sorted(saved - set(own))
        if extra:
            module = extra[0].split("_quantizer.")[0].rsplit(".", 1)[0]
            raise CheckpointError(
                f"the checkpoint has quantizer state for '{module}' (and {len(extra) - 1} more keys) "
                f"that this run does not quantize ({self.quant.describe()}); pass the checkpoint's "
                "--quant-groups/--act-bits, or start from a full-precision checkpoint")
        for key in sorted(set(own) - saved):
            state_dict[prefix + key] = own[key].clone()
        self.sparsity.upgrade_state_dict(self, state_dict, prefix, saved_masks)  # 2:4 masks

    @entry_point  # fairseq's Trainer calls it: a mismatch is one line, not "Cannot load model parameters"
    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        return self.load_checked_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    def load_checked_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """fairseq's ``load_state_dict``, raising :class:`CheckpointError` on a quantizer
        mismatch (library form; :meth:`load_state_dict` is the command-line form)."""
        try:
            return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)
        except BitsMismatchError as e:
            raise CheckpointError(
                f"checkpoint quantizer '{e.module}' was trained with {e.saved_bits} bits but this "
                f"run asks for {e.bits} ({self.quant.describe()}); use the checkpoint's "
                "--weight-bits/--act-bits/--quant-groups, or start from a full-precision "
                "checkpoint with --finetune-from-model") from None


def _validated(arch_fn):
    """Architecture functions also check the quant flags, so bad flags fail at parse time."""

    @entry_point
    def wrapper(args):
        arch_fn(args)
        QuantSettings.from_args(args)

    wrapper.__name__ = arch_fn.__name__
    wrapper.__doc__ = arch_fn.__doc__
    return wrapper


@register_model_architecture("quant_roberta", "quant_roberta")
@_validated
def base_architecture(args):
    """roberta-base shape (12 x 768, 12 heads)."""
    roberta_base_architecture(args)


@register_model_architecture("quant_roberta", "quant_roberta_base")
@_validated
def quant_roberta_base_architecture(args):
    roberta_base_architecture(args)


@register_model_architecture("quant_roberta", "quant_roberta_large")
@_validated
def quant_roberta_large_architecture(args):
    roberta_large_architecture(args)


@register_model_architecture("quant_roberta", "quant_roberta_tiny")
@_validated
def quant_roberta_tiny_architecture(args):
    """A 2 x 64 RoBERTa for CPU tests and mini-GLUE (same shape as scripts/train_teacher.sh)."""
    args.encoder_layers = safe_getattr(args, "encoder_layers", 2)
    args.encoder_embed_dim = safe_getattr(args, "encoder_embed_dim", 64)
    args.encoder_ffn_embed_dim = safe_getattr(args, "encoder_ffn_embed_dim", 128)
    args.encoder_attention_heads = safe_getattr(args, "encoder_attention_heads", 4)
    args.max_positions = safe_getattr(args, "max_positions", 128)
    roberta_base_architecture(args)
