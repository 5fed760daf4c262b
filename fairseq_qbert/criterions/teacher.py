"""Load and run the frozen full-precision teacher of knowledge distillation.

The teacher is a fairseq checkpoint of a fine-tuned RoBERTa-family model (``roberta``
with any dimensions, or ``quant_roberta*`` trained without ``--quant-groups``). It is
rebuilt as a ``quant_roberta`` model with *no* quantized groups, whatever the student's
quantization flags, because only our attention (``QuantMultiheadAttention``) can hand out
the pre-softmax scores; a plain ``roberta`` state dict loads into it strictly and computes
the same function.

:class:`Teacher` is deliberately *not* an ``nn.Module``: the criterion keeps it outside
module registration, so the trainer never optimizes, casts, moves, saves, restores or
switches it to train mode. It is frozen (``requires_grad=False``), in ``eval()``, runs
under ``torch.no_grad()`` and follows the student's device and dtype on first use.

Every problem found in the file is a one-line :class:`~qbert.errors.CheckpointError`
(a missing flag: :class:`~qbert.errors.ConfigError`) raised while the criterion is built,
i.e. before training; the criterion turns it into the command line's one-line error.
"""
import contextlib
import logging
import os
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from fairseq_qbert.models.quant_config import full_precision_args
from qbert.checkpoint_state import first_line, head_shapes, is_quantizer_key, model_args
from qbert.errors import CheckpointError, ConfigError, QBertError

logger = logging.getLogger(__name__)

EMBED_KEY = "encoder.sentence_encoder.embed_tokens.weight"

#: quant_roberta flags forced to full precision for the teacher (never the student's):
#: the defaults of every quantization flag, quantizer options included (see quant_config)
FP_OVERRIDES = full_precision_args()


def _stored_regression_target(state) -> Optional[bool]:
    """Whether the teacher was trained for regression, if the checkpoint says so."""
    cfg = state.get("cfg")
    if cfg is not None:
        for section in ("criterion", "task"):
            node = cfg.get(section)
            try:
                value = node.get("regression_target") if node is not None else None
            except Exception:  # unresolvable interpolation
                value = None
            if isinstance(value, bool):
                return value
    args = state.get("args")
    value = getattr(args, "regression_target", None) if args is not None else None
    return value if isinstance(value, bool) else None


class Teacher:
    """A frozen ``quant_roberta`` (no quant groups) that computes logits, hidden states, scores."""

    def __init__(self, model, path: str, head_name: str):
        self.model = model
        self.path = path
        self.head_name = head_name
        encoder = model.encoder.sentence_encoder
        self.num_layers = len(encoder.layers)
        self.embed_dim = encoder.embed_tokens.embedding_dim
        self.num_heads = encoder.layers[0].self_attn.num_heads if self.num_layers else 0
        self.num_classes = model.classification_heads[head_name].out_proj.out_features
        positions = encoder.embed_positions
        self.max_positions = getattr(positions, "max_positions", None) if positions is not None else None

    def describe(self) -> str:
        return (f"{self.num_layers} layers x {self.embed_dim}, {self.num_heads} heads, "
                f"{self.num_classes} outputs")

    def follow(self, student) -> None:
        """Move/cast the teacher to the student's device and parameter dtype (no-op when there).

        The student's *parameters* decide, not its outputs: under ``--amp`` the student
        keeps fp32 weights and so does the teacher (autocast covers both forwards).
        """
        like = next(p for p in student.parameters() if p.is_floating_point())
        param = next(self.model.parameters())
        if param.device != like.device or param.dtype != like.dtype:
            self.model.to(device=like.device, dtype=like.dtype)

    def __call__(self, net_input, need_hidden: bool, need_attn: bool
                 ) -> Tuple[Tensor, Optional[List[Tensor]], Optional[List[Tensor]]]:
        """(logits, inner_states or None, per-layer pre-softmax scores or None)."""
        from fairseq_qbert.models.quant_attention import capture_attention_scores

        if self.model.training:
            self.model.eval()
        length = net_input["src_tokens"].size(1)
        if self.max_positions is not None and length > self.max_positions:
            raise ConfigError(f"--teacher-path {self.path}: a batch has sentences of {length} tokens "
                              f"but the teacher has only {self.max_positions} positions; "
                              f"use --max-positions {self.max_positions} --shorten-method truncate "
                              "or a teacher trained with more positions")
        kwargs = {"return_all_hiddens": True} if need_hidden else {}
        capture = capture_attention_scores(self.model) if need_attn else contextlib.nullcontext()
        with torch.no_grad(), capture as scores:
            logits, extra = self.model(**net_input, features_only=True,
                                       classification_head_name=self.head_name, **kwargs)
        hidden = extra.get("inner_states") if need_hidden else None
        return logits, hidden, (list(scores) if need_attn else None)


def load_teacher(path: str, task, head_name: str, regression_target: bool) -> Teacher:
    """Read ``path`` (a fairseq checkpoint) and return the frozen teacher for ``task``.

    Checks, each a one-line CheckpointError: the file exists and is a readable fairseq
    checkpoint of a RoBERTa-family model; it holds no quantizer state (the teacher must be
    full precision); its vocabulary size equals the task dictionary's; it has the head
    ``head_name`` with the task's number of outputs and the same classification/regression
    kind. Head shapes are read from the state dict itself, because
    ``RobertaModel.upgrade_state_dict_named`` would silently drop a head of the wrong
    shape and keep a random one.
    """
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.models.roberta import RobertaModel

    from fairseq_qbert.checkpoint_loading import load_checkpoint_to_cpu
    from fairseq_qbert.models.quant_roberta import QuantRobertaModel

    if not path:
        raise ConfigError("--criterion kd_sentence_prediction needs --teacher-path "
                          "(a fairseq checkpoint of the fine-tuned full-precision model)")
    if not os.path.isfile(path):
        raise CheckpointError(f"--teacher-path {path}: no such file")
    try:  # fairseq's loader with torch's restricted unpickler (fairseq_qbert.checkpoint_loading)
        state = load_checkpoint_to_cpu(path)
    except CheckpointError as e:  # refused: needs a type that may run code when unpickled
        raise CheckpointError(f"--teacher-path {path}: {e.message}") from None
    except Exception as e:  # unreadable, truncated, not a pickle, ...
        raise CheckpointError(f"--teacher-path {path}: cannot read it as a fairseq checkpoint "
                              f"({first_line(e)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"--teacher-path {path}: not a fairseq checkpoint (no 'model' state dict)")
    args = model_args(state, f"--teacher-path {path}")
    arch = getattr(args, "arch", None) or getattr(args, "_name", None)
    model_cls = ARCH_MODEL_REGISTRY.get(arch)
    if model_cls is None or not issubclass(model_cls, RobertaModel):
        raise CheckpointError(f"--teacher-path {path}: the teacher's arch is '{arch}'; a RoBERTa-family "
                              "model (roberta*, quant_roberta*) is needed")

    state_dict = state["model"]
    for key in list(state_dict):  # as RobertaModel.upgrade_state_dict_named does
        if key.startswith("decoder."):
            state_dict["encoder." + key[len("decoder."):]] = state_dict.pop(key)
    quantized = [k for k in state_dict if is_quantizer_key(k)]
    if quantized:
        module = quantized[0].split("_quantizer.")[0].rsplit(".", 1)[0]
        raise CheckpointError(f"--teacher-path {path}: the teacher is quantized (quantizer state for "
                              f"'{module}' and {len(quantized) - 1} more keys); give the "
                              "full-precision fine-tuned model")
    if EMBED_KEY not in state_dict:
        raise CheckpointError(f"--teacher-path {path}: no '{EMBED_KEY}' in the checkpoint; "
                              "is it a RoBERTa checkpoint?")
    vocab = state_dict[EMBED_KEY].size(0)
    if vocab != len(task.source_dictionary):
        raise CheckpointError(f"--teacher-path {path}: teacher vocabulary has {vocab} entries but the "
                              f"task dictionary has {len(task.source_dictionary)}; the teacher must be "
                              "fine-tuned on the same binarized data (same dict.txt)")
    heads = head_shapes(state_dict)
    if head_name not in heads:
        have = ", ".join(sorted(heads)) or "none"
        raise CheckpointError(f"--teacher-path {path}: the teacher has no classification head "
                              f"'{head_name}' (it has: {have}); see --classification-head-name")
    num_classes = task.cfg.num_classes
    teacher_classes = heads[head_name][0]
    if teacher_classes != num_classes:
        raise CheckpointError(f"--teacher-path {path}: the teacher's head '{head_name}' has "
                              f"{teacher_classes} outputs but the task has --num-classes {num_classes}")
    teacher_regression = _stored_regression_target(state)
    if teacher_regression is not None and teacher_regression != bool(regression_target):
        kind = lambda r: "regression" if r else "classification"  # noqa: E731
        raise CheckpointError(f"--teacher-path {path}: the teacher was trained for "
                              f"{kind(teacher_regression)} but this run does {kind(regression_target)} "
                              "(--regression-target)")

    for name, value in FP_OVERRIDES.items():
        setattr(args, name, value)
    args.arch = args._name = "quant_roberta"
    args.load_checkpoint_heads = False
    for name in ("encoder_layers_to_keep", "checkpoint_activations", "offload_activations"):
        if hasattr(args, name):
            setattr(args, name, None if name == "encoder_layers_to_keep" else False)
    model_logger = logging.getLogger(QuantRobertaModel.__module__)
    level = model_logger.level
    model_logger.setLevel(logging.WARNING)  # its group summary is about the student
    try:
        model = QuantRobertaModel.build_checked_model(args, task)
        for name, (classes, inner_dim) in heads.items():
            model.register_classification_head(name, num_classes=classes, inner_dim=inner_dim)
        model.load_checked_state_dict(state_dict, strict=True, model_cfg=None)
    except QBertError as e:
        raise CheckpointError(f"--teacher-path {path}: {e.message}") from None
    except Exception as e:
        raise CheckpointError(f"--teacher-path {path}: cannot build the teacher from it "
                              f"({first_line(e)})") from None
    finally:
        model_logger.setLevel(level)
    model.requires_grad_(False)
    model.eval()
    teacher = Teacher(model, path, head_name)
    logger.info(f"KD teacher {path}: arch {arch} loaded as full-precision quant_roberta, "
                f"{teacher.describe()}")
    return teacher
