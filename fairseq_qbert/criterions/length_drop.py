"""``--criterion length_drop_sentence_prediction``: LengthDrop training with the sandwich rule.

Length-Adaptive Transformer (Kim & Cho 2021, arXiv 2010.07003, Sec. 3.1; QuaLA-MiniLM, Guskin
et al. 2022): every training update runs, on the same batch,

* the full model (all lengths; ``--layer-dropout-prob`` LayerDrop applies as in any training
  forward), with the task loss ``L_full`` of ``sentence_prediction``, or of
  ``kd_sentence_prediction`` when ``--teacher-path`` is given (the external teacher teaches
  the full model, with all ``--kd-*`` flags);
* the smallest sub-model (``l_i = ceil(l_{i-1} (1 - b))`` at every layer it runs) and
  ``--num-sandwich`` random sub-models (``l_i ~ U{ceil(l_{i-1} (1 - b)), ..., l_{i-1}}``),
  each with its own LayerDrop sample, ``l_0`` = the batch's padded length, ``b`` =
  ``--length-drop-ratio-bound`` (see :mod:`qbert.lat.config`);

and minimises, as the reference (``trainer.py``)::

    loss = (L_full + sum_{s in sub-models} D(full || s)) / (num_sandwich + 2)

with the in-place distillation ``D`` = KL(p_full || p_sub), the full model detached (the
reference has the direction reversed), or the squared error of the predictions for
regression (see :mod:`qbert.lat.distill`). Validation runs the full model only, so the dev
metric is the full model's. Logged: ``ld_full`` (the task/KD loss), ``ld_smallest`` and
``ld_sub`` (mean over the random sub-models), per sentence, in nats.

Needs a ``quant_roberta*`` model (quantized or not); the reference recipe starts from a
fine-tuned checkpoint (``--finetune-from-model``) with ``--num-sandwich 2
--length-drop-ratio-bound 0.2 --layer-dropout-prob 0.2``.
"""
import contextlib
from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.criterions.sentence_prediction import SentencePredictionCriterion
from fairseq.logging import metrics

from qbert.errors import ConfigError, entry_point
from qbert.lat import inplace_distillation_loss, sample_layer_config, sample_length_config

from ..models.length_adaptive import length_override, numpy_seeded_rng, the_encoder
from .kd_sentence_prediction import KDSentencePredictionConfig, KDSentencePredictionCriterion

LD_KEYS = ("ld_full", "ld_smallest", "ld_sub")
NAME = "length_drop_sentence_prediction"


@dataclass
class LengthDropConfig(KDSentencePredictionConfig):
    num_sandwich: int = field(
        default=2, metadata={"help": "random sub-models per update, besides the full and the "
                                     "smallest one (sandwich rule; reference: 2)"})
    length_drop_ratio_bound: float = field(
        default=0.2, metadata={"help": "LengthDrop bound b: each layer keeps between "
                                       "ceil(l*(1-b)) and l of the previous layer's l tokens"})


@contextlib.contextmanager
def _captured_logits(model, head: str):
    """The outputs of classification head ``head`` during the block (a forward hook)."""
    heads = getattr(model, "classification_heads", None)
    if heads is None or head not in heads:
        raise ConfigError(f"the model has no classification head '{head}' (--classification-head-name)")
    out = []
    handle = heads[head].register_forward_hook(
        lambda _module, _inputs, output: out.append(output))
    try:
        yield out
    finally:
        handle.remove()


@register_criterion(NAME, dataclass=LengthDropConfig)
class LengthDropCriterion(SentencePredictionCriterion):
    """LengthDrop + sandwich rule + in-place distillation (see module docstring)."""

    @entry_point
    def __init__(self, cfg: LengthDropConfig, task):
        super().__init__(cfg, task)
        if cfg.num_sandwich < 0:
            raise ConfigError(f"--num-sandwich must be >= 0, got {cfg.num_sandwich}")
        if not 0 < cfg.length_drop_ratio_bound < 1:
            raise ConfigError("--length-drop-ratio-bound must be in (0, 1), got "
                              f"{cfg.length_drop_ratio_bound}")
        self.num_sandwich = int(cfg.num_sandwich)
        self.ratio_bound = float(cfg.length_drop_ratio_bound)
        # the full model's loss: KD from --teacher-path, else sentence_prediction's own;
        # unregistered (it holds no parameters and must not be cast/saved as a submodule)
        self.__dict__["kd"] = KDSentencePredictionCriterion(cfg, task) if cfg.teacher_path else None
        self._checked = False

    def _check(self, model):
        encoder = the_encoder(model, f"--criterion {NAME}")
        if (getattr(getattr(model, "args", None), "encoder_layerdrop", 0) or 0) > 0:
            raise ConfigError(f"--criterion {NAME} samples its own LayerDrop: use "
                              "--layer-dropout-prob instead of --encoder-layerdrop")
        if self.kd is not None and encoder.layer_dropout_prob > 0 \
                and (self.kd.need_hidden or self.kd.need_attn):
            raise ConfigError("--kd-parts hidden/attn/output need every layer of the full model: "
                              "use --layer-dropout-prob 0 or --kd-parts logits")
        self._checked = True
        return encoder

    @entry_point
    def forward(self, model, sample, reduce=True):
        head = self.classification_head_name
        encoder = self._check(model) if not self._checked else the_encoder(model)
        with _captured_logits(model, head) as captured:
            if self.kd is not None:
                loss, sample_size, log = self.kd(model, sample, reduce=reduce)
            else:
                loss, sample_size, log = super().forward(model, sample, reduce=reduce)
        if not model.training:
            return loss, sample_size, log

        full = captured[-1].detach()
        net_input = sample["net_input"]
        num_layers, max_length = len(encoder.layers), net_input["src_tokens"].size(1)
        rng = numpy_seeded_rng()
        terms = []
        for i in range(self.num_sandwich + 1):  # i = 0: the smallest sub-model
            kept = sample_layer_config(num_layers, encoder.layer_dropout_prob, rng)
            bound = dict(ratio=self.ratio_bound) if i == 0 else dict(ratio_bound=self.ratio_bound)
            lengths = sample_length_config(max_length, num_layers, rng, kept_layers=kept, **bound)
            with length_override(model, lengths, kept):
                sub, _ = model(**net_input, features_only=True, classification_head_name=head)
            terms.append(inplace_distillation_loss(sub, full, self.regression_target))

        total = (loss + sum(terms)) / (self.num_sandwich + 2)
        log["ld_full"] = loss.data
        log["ld_smallest"] = terms[0].data
        if len(terms) > 1:
            log["ld_sub"] = (sum(terms[1:]) / (len(terms) - 1)).data
        log["loss"] = total.data
        return total, sample_size, log

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        """kd_sentence_prediction's metrics (sentence_prediction's and kd_*) plus ld_*."""
        KDSentencePredictionCriterion.reduce_metrics(logging_outputs)
        sentences = sum(log.get("sample_size", 0) for log in logging_outputs) or 1
        for key in LD_KEYS:
            values = [log[key] for log in logging_outputs if key in log]
            if values:
                metrics.log_scalar(key, sum(values) / sentences, sentences, round=4)
