"""``--criterion kd_sentence_prediction``: fairseq's ``sentence_prediction`` plus TernaryBERT KD.

Knowledge distillation from a frozen full-precision teacher (TernaryBERT, Zhang et al.
2020, arXiv 2009.12812) for fairseq's stock ``sentence_prediction`` task: classification
and regression, single sentences and pairs. It subclasses fairseq's
``SentencePredictionCriterion``/``SentencePredictionConfig``, so accuracy,
``--report-mcc``, ``--report-acc-and-f1`` and ``--report-pearson-and-spearman`` work as
there (they are computed from the student's predictions).

The loss of a batch (fairseq then divides it by ``sample_size`` = number of sentences)::

    loss = w_logits * L_logits + w_hidden * L_hidden + w_attn * L_attn + w_label * L_label

* ``L_logits`` (part ``logits``): soft cross-entropy against the teacher's
  ``softmax(z^T / T)`` reported as KL (see :func:`kd_losses.logits_kd_loss`); squared
  error on the prediction for regression.
* ``L_hidden`` (part ``hidden``): masked MSE of the embedding output and every layer's
  output, summed over layer pairs; part ``output``: the last layer's output only (logged
  as ``kd_hidden`` and weighted by ``--kd-hidden-weight``).
* ``L_attn`` (part ``attn``): masked MSE of every layer's pre-softmax scores per head.
* ``L_label``: the usual ground-truth loss of ``sentence_prediction`` (default weight 0,
  as TernaryBERT).

**KD with augmented data** (TinyBERT, arXiv 1909.10351, Sec. 3.3; TernaryBERT distils on
the augmented GLUE sets). With ``--task sentence_prediction_aug`` on a ``qbert-augment``
folder every batch carries ``sample["original"]`` (``m_b = 1`` for an original sentence, 0
for an augmented one, whose label slot is a placeholder), and the label term becomes
``w_label * sum_b m_b * l_label(b)``: ground truth on original sentences only, the KD
parts on all ``B`` sentences. fairseq still divides by ``B``, so each sentence contributes
``KD(b) + m_b * w_label * l_label(b)``; ``kd_label`` is logged per *original* sentence.
Without that task (or on folders ``qbert-augment`` did not write) every row is original
and nothing changes. Training on an augmented folder under plain ``sentence_prediction``
with ``--kd-label-weight > 0`` is refused (it would fit the placeholder labels).

Each ``L`` is a per-sentence quantity summed over the batch (see
:mod:`fairseq_qbert.criterions.kd_losses`), so after fairseq's division it is the mean per
sentence and padding cannot change it. ``kd_logits``, ``kd_hidden``, ``kd_attn`` and
``kd_label`` are logged *unweighted*, per sentence, in nats (``loss`` keeps fairseq's
convention: the weighted total per sentence, divided by ln 2). During validation the
same loss is computed (the teacher runs on the validation batches too).

Flags: ``--teacher-path``, ``--kd-parts`` (``logits``, ``hidden``, ``attn``, ``output``;
``trm`` = ``hidden,attn``; default ``trm,logits``), ``--kd-logits-weight``,
``--kd-hidden-weight``, ``--kd-attn-weight`` (1.0), ``--kd-label-weight`` (0.0),
``--kd-temperature`` (1.0), ``--kd-layer-map`` (student:teacher layer pairs, 1-based, 0 =
embedding output; default identity for equal depths, student ``l`` -> teacher
``ceil(l * Lt / Ls)`` otherwise).

Only what a part needs is captured: ``return_all_hiddens`` only for ``hidden``/``output``,
attention scores only for ``attn``; with ``--kd-parts logits`` the student runs exactly
as under ``sentence_prediction``.
"""
import contextlib
import logging
from dataclasses import dataclass, field

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.sentence_prediction import (
    SentencePredictionConfig,
    SentencePredictionCriterion,
)
from fairseq.logging import metrics

from qbert.errors import ConfigError, entry_point

from . import kd_losses
from .kd_options import check_layer_map, layer_pairs, parse_kd_parts, parse_layer_map
from .teacher import load_teacher

logger = logging.getLogger(__name__)

#: logging keys of the parts (per-sentence sums in logging outputs)
KD_KEYS = ("kd_logits", "kd_hidden", "kd_attn", "kd_label")


@dataclass
class KDSentencePredictionConfig(SentencePredictionConfig):
    # Must inherit SentencePredictionConfig: the task reads criterion.regression_target.
    teacher_path: str = field(
        default="",
        metadata={"help": "fairseq checkpoint of the fine-tuned full-precision teacher "
                          "(roberta or quant_roberta without --quant-groups)"})
    kd_parts: str = field(
        default="trm,logits",
        metadata={"help": "comma list of parts to distil: logits, hidden (embedding output + "
                          "every layer's output), attn (pre-softmax attention scores), output "
                          "(last layer's output only), trm (= hidden,attn)"})
    kd_logits_weight: float = field(default=1.0, metadata={"help": "weight of the logits part"})
    kd_hidden_weight: float = field(
        default=1.0, metadata={"help": "weight of the hidden (or output) part"})
    kd_attn_weight: float = field(default=1.0, metadata={"help": "weight of the attn part"})
    kd_label_weight: float = field(
        default=0.0, metadata={"help": "weight of the ground-truth loss (TernaryBERT: 0)"})
    kd_temperature: float = field(
        default=1.0, metadata={"help": "softmax temperature of the logits part (classification)"})
    kd_layer_map: str = field(
        default="",
        metadata={"help": "student:teacher layer pairs, 1-based, 0 = embedding output, e.g. "
                          "'0:0,1:2,2:4'; default identity (equal depths) or uniform "
                          "(student l -> teacher ceil(l*Lt/Ls))"})


@register_criterion("kd_sentence_prediction", dataclass=KDSentencePredictionConfig)
class KDSentencePredictionCriterion(SentencePredictionCriterion):
    """``sentence_prediction`` with TernaryBERT knowledge distillation (see module docstring)."""

    @entry_point  # a fairseq hook: a bad flag or teacher is one line and exit 1
    def __init__(self, cfg: KDSentencePredictionConfig, task):
        super().__init__(cfg, task)
        self.parts = parse_kd_parts(cfg.kd_parts)
        self.weights = {"logits": cfg.kd_logits_weight, "hidden": cfg.kd_hidden_weight,
                        "attn": cfg.kd_attn_weight, "label": cfg.kd_label_weight}
        for name, value in self.weights.items():
            if not value >= 0:
                raise ConfigError(f"--kd-{name}-weight must be >= 0, got {value}")
        if not cfg.kd_temperature > 0:
            raise ConfigError(f"--kd-temperature must be > 0, got {cfg.kd_temperature}")
        self.temperature = float(cfg.kd_temperature)
        used = {"output": "hidden"}
        if not any(self.weights[used.get(p, p)] > 0 for p in self.parts) \
                and self.weights["label"] == 0:
            raise ConfigError("every loss weight of --kd-parts "
                              f"{cfg.kd_parts} and --kd-label-weight is 0: nothing to train")
        if self.regression_target and "logits" in self.parts and self.temperature != 1.0:
            logger.warning("--kd-temperature is ignored for regression (--regression-target)")
        self.layer_map = parse_layer_map(cfg.kd_layer_map)
        self.padding_idx = task.source_dictionary.pad()
        self.need_hidden = bool(self.parts & {"hidden", "output"})
        self.need_attn = "attn" in self.parts

        teacher = load_teacher(cfg.teacher_path, task, self.classification_head_name,
                               self.regression_target)
        check_layer_map(self.layer_map, None, teacher.num_layers)
        # Not a registered submodule: the trainer must never optimize, cast, move, save,
        # restore or train() the teacher (see teacher.py).
        self.__dict__["teacher"] = teacher
        self.pairs = None  # {part: [(student layer, teacher layer)]}, set on the first forward
        self._check_augmented_data(task)

    # ------------------------------------------------------------------ checks
    def _check_augmented_data(self, task):
        """Refuse labels on an augmented folder whose original rows the task cannot mark."""
        from fairseq_qbert.augment.task import SentencePredictionAugTask
        from qbert.augment.layout import read_meta

        if self.weights["label"] == 0 or isinstance(task, SentencePredictionAugTask):
            return
        data = str(getattr(task.cfg, "data", "") or "").split(":")[0]
        meta = read_meta(data) if data else None
        # "train" (qbert-augment --out); a split added with --out-split is only used through
        # --train-subset, which the criterion cannot see: the README says to use the aug task
        if meta is not None and "train" in meta.splits:
            raise ConfigError(f"{data} holds augmented rows (qbert-augment) whose labels are "
                              "placeholders; with --kd-label-weight > 0 use --task "
                              "sentence_prediction_aug (ground truth on original rows only)")

    def _check_student(self, model):
        """Student-dependent checks, once (the criterion is built without the model)."""
        from fairseq_qbert.models.quant_attention import QuantMultiheadAttention

        teacher = self.teacher
        try:
            encoder = model.encoder.sentence_encoder
            layers = len(encoder.layers)
            embed_dim = encoder.embed_tokens.embedding_dim
        except AttributeError:
            raise ConfigError("--criterion kd_sentence_prediction needs a RoBERTa-family student "
                              f"(roberta*, quant_roberta*), got {type(model).__name__}") from None
        args = getattr(model, "args", None)
        if self.need_hidden and embed_dim != teacher.embed_dim:
            part = "hidden" if "hidden" in self.parts else "output"
            raise ConfigError(f"--kd-parts {part}: teacher hidden size {teacher.embed_dim} != "
                              f"student hidden size {embed_dim}; use --kd-parts logits or attn, "
                              "or a teacher of the student's width")
        if self.need_attn:
            attentions = [m for m in model.modules() if isinstance(m, QuantMultiheadAttention)]
            if not attentions:
                raise ConfigError("--kd-parts attn needs a quant_roberta student (its attention "
                                  f"exposes the scores); got {type(model).__name__}")
            heads = attentions[0].num_heads
            if heads != teacher.num_heads:
                raise ConfigError(f"--kd-parts attn: teacher has {teacher.num_heads} attention "
                                  f"heads per layer but the student has {heads}")
            if getattr(args, "checkpoint_activations", False):
                raise ConfigError("--kd-parts attn does not work with --checkpoint-activations "
                                  "(the scores of the recomputed forward are not captured)")
        if (self.need_hidden or self.need_attn) and (getattr(args, "encoder_layerdrop", 0) or 0) > 0:
            raise ConfigError("--kd-parts hidden/attn/output need every layer: "
                              "--encoder-layerdrop must be 0")
        check_layer_map(self.layer_map, layers, teacher.num_layers)
        pairs = {p: layer_pairs(p, self.layer_map, layers, teacher.num_layers)
                 for p in self.parts if p != "logits"}
        if "attn" in pairs and not pairs["attn"]:
            raise ConfigError("--kd-layer-map maps no transformer layer (only 0:0), "
                              "so --kd-parts attn has nothing to compare")
        if self.layer_map is None and layers != teacher.num_layers:
            logger.info(f"KD: student has {layers} layers, teacher {teacher.num_layers}; "
                        "uniform layer map (see --kd-layer-map)")
        for part, p in pairs.items():
            logger.info(f"KD {part} layer pairs (student:teacher): "
                        + ",".join(f"{s}:{t}" for s, t in p))
        self.pairs = pairs

    # ------------------------------------------------------------------ forward
    @entry_point
    def forward(self, model, sample, reduce=True):
        """Loss, sample size (= number of sentences) and logging outputs of one batch."""
        head = self.classification_head_name
        if not (hasattr(model, "classification_heads") and head in model.classification_heads):
            raise ConfigError(f"the model has no classification head '{head}' "
                              "(--classification-head-name)")
        if self.pairs is None:
            self._check_student(model)

        net_input = sample["net_input"]
        kwargs = {"return_all_hiddens": True} if self.need_hidden else {}
        capture = self._capture(model) if self.need_attn else contextlib.nullcontext()
        with capture as student_scores:
            logits, extra = model(**net_input, features_only=True,
                                  classification_head_name=head, **kwargs)
        targets = model.get_targets(sample, [logits]).view(-1)
        sample_size = targets.numel()

        teacher = self.teacher
        teacher.follow(model)
        t_logits, t_hidden, t_scores = teacher(net_input, self.need_hidden, self.need_attn)
        padding_mask = net_input["src_tokens"].eq(self.padding_idx)

        parts = {}
        if "logits" in self.parts:
            if self.regression_target:
                parts["logits"] = kd_losses.regression_kd_loss(logits, t_logits)
            else:
                parts["logits"] = kd_losses.logits_kd_loss(logits, t_logits, self.temperature)
        for part in ("hidden", "output"):
            if part in self.parts:
                s_hidden = extra["inner_states"]
                parts["hidden"] = sum(
                    kd_losses.hidden_kd_loss(s_hidden[s], t_hidden[t], padding_mask)
                    for s, t in self.pairs[part])
        if "attn" in self.parts:
            parts["attn"] = sum(
                kd_losses.attention_kd_loss(student_scores[s - 1], t_scores[t - 1], padding_mask)
                for s, t in self.pairs["attn"])
        original = sample.get("original")  # --task sentence_prediction_aug
        if original is not None:
            original = original.to(logits.device).view(-1).bool()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.weights["label"] > 0):
            parts["label"] = kd_losses.label_loss(logits, targets, self.regression_target,
                                                  rows=original)

        loss = sum(self.weights[name] * value for name, value in parts.items()
                   if self.weights[name] > 0)
        if not torch.is_tensor(loss):  # all weights zero for the computed parts
            loss = logits.new_zeros((), dtype=torch.float32)
        logging_output = {}
        loss = self._add_adaptive_regularizers(model, loss, logging_output)

        logging_output.update({
            "loss": loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample_size,
            "sample_size": sample_size,
        })
        for name, value in parts.items():
            logging_output["kd_" + name] = value.data
        if original is not None:
            logging_output["noriginal"] = int(original.sum())
        self._add_predictions(model, logits, targets, logging_output)
        return loss, sample_size, logging_output

    @staticmethod
    def _capture(model):
        from fairseq_qbert.models.quant_attention import capture_attention_scores

        return capture_attention_scores(model)

    @staticmethod
    def _add_adaptive_regularizers(model, loss, logging_output):
        """fairseq's optional head/FFN regularizers, exactly as ``sentence_prediction``."""
        args = getattr(model, "args", None)
        if getattr(args, "mha_reg_scale_factor", 0.0):
            mha_reg_loss = model._get_adaptive_head_loss()
            loss = loss + mha_reg_loss
            logging_output["mha_reg_loss"] = mha_reg_loss
        if getattr(args, "ffn_reg_scale_factor", 0.0):
            ffn_reg_loss = model._get_adaptive_ffn_loss()
            loss = loss + ffn_reg_loss
            logging_output["ffn_reg_loss"] = ffn_reg_loss
        return loss

    def _add_predictions(self, model, logits, targets, logging_output):
        """ncorrect / pred / targ, exactly as ``sentence_prediction`` logs them."""
        if not self.regression_target:
            preds = logits.argmax(dim=1)
            logging_output["ncorrect"] = (preds == targets).sum()
        if self.keep_pred_and_targ and not model.training:
            if self.regression_target:
                logging_output["pred"] = logits.detach().view(-1).float().cpu().tolist()
                logging_output["targ"] = targets.detach().float().cpu().tolist()
            else:
                # remove offset `self.label_dict.nspecial` from OffsetTokensDataset
                preds = self.label_dict.string(preds + self.label_dict.nspecial).split()
                targs = self.label_dict.string(targets + self.label_dict.nspecial).split()
                logging_output["pred"] = list(map(int, preds))
                logging_output["targ"] = list(map(int, targs))
            if self.report_mcc:
                logging_output["report_mcc"] = True
            if self.report_acc_and_f1:
                logging_output["report_acc_and_f1"] = True
            if self.report_pearson_and_spearman:
                logging_output["report_pearson_and_spearman"] = True

    # ------------------------------------------------------------------ metrics
    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        """sentence_prediction's metrics plus kd_* (unweighted, per sentence, nats;
        ``kd_label`` per original sentence when batches mark them)."""
        SentencePredictionCriterion.reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        if not sample_size:
            return
        for key in KD_KEYS:
            if any(key in log for log in logging_outputs):
                total = sum(log.get(key, 0) for log in logging_outputs)
                count = sample_size
                if key == "kd_label" and any("noriginal" in log for log in logging_outputs):
                    count = sum(log.get("noriginal", log.get("sample_size", 0))
                                for log in logging_outputs)
                    if not count:
                        continue
                metrics.log_scalar(key, total / count, count, round=4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
