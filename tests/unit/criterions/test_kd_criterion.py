"""kd_sentence_prediction in-process: values, padding, frozen teacher, capture, errors.

The trained teacher is conftest's ``mini_teacher`` (mini-GLUE SST-2, a real fairseq-train
run shared with the QAT and ablation tests); students are built on its data.
"""
import itertools
import math

import kd_fixtures as F
import pytest
import torch
import torch.nn.functional as nnf

from fairseq_qbert.criterions import kd_losses
from fairseq_qbert.criterions.kd_sentence_prediction import KDSentencePredictionCriterion
from fairseq_qbert.models.quant_attention import QuantMultiheadAttention, capture_attention_scores
from qbert.errors import UsageError

HEAD = "sentence_classification_head"
STUDENT = ["--arch", "quant_roberta_tiny"]
QSTUDENT = [*STUDENT, "--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4"]


class KD:
    """Builders on the shared teacher's data (``cls``) or on the toy sentence pairs (``reg``)."""

    def __init__(self, mini_teacher):
        self.data = str(mini_teacher.data_bin)
        self.teacher = str(mini_teacher.checkpoint)  # trained FP roberta (fairseq-train)

    def data_for(self, kind):
        return self.data if kind == "cls" else F.data_dir("reg_pairs")

    def build(self, teacher, parts="trm,logits", student=STUDENT, kind="cls", more=()):
        """(cfg, task, model, criterion) from a fairseq-train command line."""
        return F.build(self.data_for(kind), [*F.task_flags(kind), *student,
                                             *F.kd_flags(teacher, parts, *more)])

    def random_teacher(self, name, extra, kind="cls"):
        """A randomly initialised teacher checkpoint on ``kind``'s data."""
        return F.make_teacher(name, extra, kind, data=self.data_for(kind))


@pytest.fixture(scope="module")
def kd(mini_teacher):
    return KD(mini_teacher)


def kd_values(log):
    return {k: float(v) for k, v in log.items() if k.startswith("kd_")}


# ---------------------------------------------------------------------------- values
def test_student_equal_to_teacher_gives_zero_loss(kd):
    """FP student with the teacher's weights: every KD part is ~0 (so is the total loss)."""
    teacher = kd.teacher
    _, task, model, crit = kd.build(teacher, "trm,logits")
    F.load_teacher_weights(model, teacher).eval()
    sample = F.batch(task, n=16)
    loss, sample_size, log = crit(model, sample)
    assert sample_size == 16
    values = kd_values(log)
    assert set(values) == {"kd_logits", "kd_hidden", "kd_attn", "kd_label"}
    for key in ("kd_logits", "kd_hidden", "kd_attn"):
        assert abs(values[key]) < 1e-6, (key, values)
    assert abs(loss.item()) < 1e-6
    # the ground-truth term is computed (weight 0): the cross-entropy of the teacher's logits
    with torch.no_grad():
        logits, _ = model(**sample["net_input"], features_only=True, classification_head_name=HEAD)
    expected = nnf.cross_entropy(logits.float(), sample["target"].view(-1), reduction="sum")
    assert values["kd_label"] == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > 1e-3  # not trivially 0


def test_parts_equal_independent_computation_with_uniform_layer_map(kd):
    """2-layer quantized student, 4-layer teacher: kd_* = the pure functions on the layers
    1->2, 2->4 (uniform map), computed here from the models directly."""
    teacher_path = kd.random_teacher("deep", [*F.ROBERTA_TINY, "--encoder-layers", "4"])
    _, task, model, crit = kd.build(teacher_path, "trm,logits", QSTUDENT,
                                    more=["--kd-label-weight", "0.5", "--kd-temperature", "2"])
    model.eval()
    sample = F.batch(task, n=8)
    loss, _, log = crit(model, sample)
    values = kd_values(log)

    teacher = crit.teacher.model
    net_input = sample["net_input"]
    pad = net_input["src_tokens"].eq(task.source_dictionary.pad())
    head = "sentence_classification_head"
    with torch.no_grad():
        with capture_attention_scores(model) as s_att:
            s_logits, s_extra = model(**net_input, features_only=True, return_all_hiddens=True,
                                      classification_head_name=head)
        with capture_attention_scores(teacher) as t_att:
            t_logits, t_extra = teacher(**net_input, features_only=True, return_all_hiddens=True,
                                        classification_head_name=head)
    assert len(t_att) == 4 and len(t_extra["inner_states"]) == 5
    sh, th = s_extra["inner_states"], t_extra["inner_states"]
    hidden = sum(kd_losses.hidden_kd_loss(sh[s], th[t], pad) for s, t in ((0, 0), (1, 2), (2, 4)))
    attn = sum(kd_losses.attention_kd_loss(s_att[s - 1], t_att[t - 1], pad)
               for s, t in ((1, 2), (2, 4)))
    logits = kd_losses.logits_kd_loss(s_logits, t_logits, 2.0)
    label = kd_losses.label_loss(s_logits, sample["target"].view(-1), False)
    assert values["kd_hidden"] == pytest.approx(hidden.item(), rel=1e-5)
    assert values["kd_attn"] == pytest.approx(attn.item(), rel=1e-5)
    assert values["kd_logits"] == pytest.approx(logits.item(), rel=1e-5)
    assert values["kd_label"] == pytest.approx(label.item(), rel=1e-5)
    assert loss.item() == pytest.approx((hidden + attn + logits + 0.5 * label).item(), rel=1e-5)
    assert min(values.values()) > 0


def test_explicit_layer_map_and_output_part(kd):
    teacher_path = kd.random_teacher("deep", [*F.ROBERTA_TINY, "--encoder-layers", "4"])
    _, task, model, crit = kd.build(teacher_path, "hidden", QSTUDENT,
                                    more=["--kd-layer-map", "1:1,2:3"])
    _, _, _, crit_out = kd.build(teacher_path, "output", QSTUDENT)
    model.eval()
    sample = F.batch(task, n=4)
    net_input = sample["net_input"]
    pad = net_input["src_tokens"].eq(task.source_dictionary.pad())
    with torch.no_grad():
        _, s_extra = model(**net_input, features_only=True, return_all_hiddens=True,
                           classification_head_name="sentence_classification_head")
        _, t_extra = crit.teacher.model(**net_input, features_only=True, return_all_hiddens=True,
                                        classification_head_name="sentence_classification_head")
    sh, th = s_extra["inner_states"], t_extra["inner_states"]
    mapped = kd_losses.hidden_kd_loss(sh[1], th[1], pad) + kd_losses.hidden_kd_loss(sh[2], th[3], pad)
    assert kd_values(crit(model, sample)[2])["kd_hidden"] == pytest.approx(mapped.item(), rel=1e-5)
    last = kd_losses.hidden_kd_loss(sh[2], th[4], pad)
    out = kd_values(crit_out(model, sample)[2])
    assert out["kd_hidden"] == pytest.approx(last.item(), rel=1e-5)
    assert "kd_attn" not in out and "kd_logits" not in out


def test_padding_cannot_change_the_loss(kd):
    """Extra pad columns, and batching sentences of different lengths together, leave every
    part unchanged (quantized student, weight quantization only)."""
    teacher = kd.teacher
    _, task, model, crit = kd.build(teacher, "trm,logits", QSTUDENT,
                                    more=["--kd-label-weight", "1"])
    model.eval()
    sample = F.batch(task, n=6)
    crit(model, sample)  # initialise data-dependent quantizer state, if any
    loss, _, log = crit(model, sample)
    padded = F.add_padding(sample, task.source_dictionary.pad(), 7)
    loss_p, _, log_p = crit(model, padded)
    assert loss_p.item() == pytest.approx(loss.item(), rel=1e-5)
    for key, value in kd_values(log).items():
        assert kd_values(log_p)[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    # one sentence alone (no padding) vs. inside the batch: losses add up
    lengths = sample["net_input"]["src_lengths"]
    singles = 0.0
    for i in range(6):
        singles += crit(model, F.batch(task, indices=[sample["id"][i].item()]))[0].item()
    assert lengths.min() < lengths.max()  # the batch really had padding
    assert loss.item() == pytest.approx(singles, rel=1e-4)


def test_regression_pairs_and_glue_metrics(kd):
    """STS-B-like: sentence pairs, regression target, --report-pearson-and-spearman."""
    from fairseq.logging import metrics

    teacher = kd.random_teacher("reg", F.ROBERTA_TINY, "reg")
    _, task, model, crit = kd.build(teacher, "trm,logits", QSTUDENT, kind="reg",
                                    more=["--report-pearson-and-spearman"])
    model.eval()
    sample = F.batch(task, n=8)
    assert sample["net_input"]["src_tokens"].eq(2).sum(dim=1).min() >= 3  # pairs: </s></s>
    loss, _, log = crit(model, sample)
    with torch.no_grad():
        s_logits, _ = model(**sample["net_input"], features_only=True,
                            classification_head_name="sentence_classification_head")
        t_logits, _ = crit.teacher.model(**sample["net_input"], features_only=True,
                                         classification_head_name="sentence_classification_head")
    assert kd_values(log)["kd_logits"] == pytest.approx(((s_logits - t_logits) ** 2).sum().item(),
                                                        rel=1e-5)
    assert len(log["pred"]) == 8 and "ncorrect" not in log
    with metrics.aggregate() as agg:
        KDSentencePredictionCriterion.reduce_metrics([log])
    smoothed = agg.get_smoothed_values()
    for key in ("pearson", "spearman", "kd_logits", "kd_hidden", "kd_attn", "kd_label", "loss"):
        assert key in smoothed, key
    assert smoothed["kd_hidden"] == pytest.approx(float(log["kd_hidden"]) / 8, abs=1e-4)


def test_classification_metrics_kept(kd):
    teacher = kd.teacher
    _, task, model, crit = kd.build(teacher, "logits", QSTUDENT,
                                    more=["--report-mcc", "--report-acc-and-f1"])
    model.eval()
    log = crit(model, F.batch(task, n=8))[2]
    from fairseq.logging import metrics

    with metrics.aggregate() as agg:
        crit.reduce_metrics([log, log])
    smoothed = agg.get_smoothed_values()
    for key in ("accuracy", "mcc", "f1", "acc_and_f1", "kd_logits", "kd_label"):
        assert key in smoothed, key
    assert "kd_hidden" not in smoothed and "kd_attn" not in smoothed


# ---------------------------------------------------------------------------- teacher
def test_teacher_frozen_unregistered_and_following_the_student(kd):
    teacher_path = kd.teacher
    _, task, model, crit = kd.build(teacher_path, "trm,logits", QSTUDENT)
    teacher = crit.teacher.model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert list(crit.parameters()) == [] and crit.state_dict() == {}
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    # what fairseq's trainer optimizes: chain(model.parameters(), criterion.parameters())
    trained = {id(p) for p in itertools.chain(model.parameters(), crit.parameters())}
    assert not trained & {id(p) for p in teacher.parameters()}

    crit.train()
    crit.to(torch.float64)  # the trainer casts/moves the criterion: must not reach the teacher
    assert not teacher.training
    assert next(teacher.parameters()).dtype == torch.float32

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        loss, _, _ = crit(model, F.batch(task, split="train", n=8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert crit.state_dict() == {}

    model.double()  # the teacher follows the student's dtype on first use
    crit(model, F.batch(task, n=2))
    assert next(teacher.parameters()).dtype == torch.float64


def test_teacher_ignores_the_students_quant_flags(kd):
    teacher_path = kd.teacher
    _, _, model, crit = kd.build(teacher_path, "logits",
                                 [*QSTUDENT, "--act-bits", "8", "--act-quantizer", "lsq"])
    teacher = crit.teacher.model
    names = [n for n, _ in teacher.named_modules() if n.endswith("_quantizer")]
    assert names == [] and teacher.quant.group_bits == {}
    assert any(n.endswith("weight_quantizer") for n, _ in model.named_modules())
    attn = [m for m in teacher.modules() if isinstance(m, QuantMultiheadAttention)]
    assert len(attn) == 2


def test_teacher_equals_a_plain_fairseq_roberta(kd):
    """The teacher rebuilt as quant_roberta computes what fairseq's roberta computes."""
    from fairseq import checkpoint_utils

    teacher_path = kd.teacher
    _, task, _, crit = kd.build(teacher_path, "logits")
    models, _ = checkpoint_utils.load_model_ensemble([teacher_path], task=task)
    reference = models[0].eval()
    assert type(reference).__name__ == "RobertaModel"
    sample = F.batch(task, n=8)
    with torch.no_grad():
        ref, _ = reference(**sample["net_input"], features_only=True,
                           classification_head_name="sentence_classification_head")
    ours, _, _ = crit.teacher(sample["net_input"], need_hidden=False, need_attn=False)
    assert torch.allclose(ref, ours, atol=1e-5)


# ---------------------------------------------------------------------------- capture
def test_capture_only_what_parts_need(kd):
    teacher = kd.teacher
    calls = []

    def spy(module, args, kwargs):
        calls.append(dict(return_all_hiddens=kwargs.get("return_all_hiddens", False),
                          sinks=[m.score_sink is not None for m in module.modules()
                                 if isinstance(m, QuantMultiheadAttention)]))

    expected = {"logits": (False, False), "output": (True, False), "hidden": (True, False),
                "attn": (False, True), "trm,logits": (True, True)}
    for parts, (hidden, attn) in expected.items():
        _, task, model, crit = kd.build(teacher, parts, QSTUDENT)
        model.eval()
        sample = F.batch(task, n=4)
        with torch.no_grad():
            plain, _ = model(**sample["net_input"], features_only=True,
                             classification_head_name="sentence_classification_head")
        calls.clear()
        handle = model.register_forward_pre_hook(spy, with_kwargs=True)
        teacher_handle = crit.teacher.model.register_forward_pre_hook(spy, with_kwargs=True)
        try:
            crit(model, sample)
        finally:
            handle.remove()
            teacher_handle.remove()
        assert len(calls) == 2  # student, teacher
        for call in calls:
            assert call["return_all_hiddens"] == hidden, parts
            assert all(call["sinks"]) == attn and (any(call["sinks"]) == attn), parts
        # nothing stays attached after the forward
        assert all(m.score_sink is None for m in model.modules()
                   if isinstance(m, QuantMultiheadAttention))
        # capturing does not change what the student computes
        with torch.no_grad(), capture_attention_scores(model):
            captured, _ = model(**sample["net_input"], features_only=True, return_all_hiddens=True,
                                classification_head_name="sentence_classification_head")
        assert torch.equal(plain, captured)


@pytest.mark.parametrize("student", [QSTUDENT, [*QSTUDENT, "--act-bits", "8"]],
                         ids=["w4", "w4a8"])
def test_captured_scores_are_qk_over_sqrt_d_of_the_quantized_projections(kd, student):
    """What KD's attention part compares, recomputed here from each layer's input:
    (x Wq^T + bq)(x Wk^T + bk)^T / sqrt(d_head) per head, with the fake-quantized weights
    (and inputs) of q_proj / k_proj, -inf at padded keys."""
    _, task, model, _ = kd.build(kd.teacher, "attn", student)
    F.load_teacher_weights(model, kd.teacher).eval()
    sample = F.batch(task, n=6)
    tokens = sample["net_input"]["src_tokens"]
    pad = tokens.eq(task.source_dictionary.pad())
    assert pad.any() and not pad.all(dim=1).any()
    with torch.no_grad(), capture_attention_scores(model) as scores:
        _, extra = model(**sample["net_input"], features_only=True, return_all_hiddens=True,
                         classification_head_name=HEAD)
    layers = model.encoder.sentence_encoder.layers
    assert len(scores) == len(layers) == 2

    def project(linear, x, quantized=True):
        w = linear.weight
        if quantized:
            x = linear.input_quantizer(x) if linear.input_quantizer is not None else x
            w = linear.weight_quantizer(w)
        return x @ w.t() + linear.bias

    def qk(attn, x, quantized):
        """Per-head (x Wq^T + bq)(x Wk^T + bk)^T / sqrt(d), -inf at padded keys: (B, H, T, T)."""
        length, bsz, _ = x.shape
        heads, d = attn.num_heads, attn.head_dim
        with torch.no_grad():
            q = project(attn.q_proj, x, quantized).view(length, bsz, heads, d).permute(1, 2, 0, 3)
            k = project(attn.k_proj, x, quantized).view(length, bsz, heads, d).permute(1, 2, 0, 3)
        s = q @ k.transpose(-1, -2) / math.sqrt(d)
        return s.masked_fill(pad[:, None, None, :], float("-inf"))

    for i, layer in enumerate(layers):
        x = extra["inner_states"][i]  # (T, B, C): layer i's input (post-LN encoder)
        expected = qk(layer.self_attn, x, quantized=True)
        got = scores[i]
        assert got.shape == expected.shape == (tokens.shape[0], 4, tokens.shape[1], tokens.shape[1])
        assert torch.equal(torch.isinf(got), pad[:, None, None, :].expand_as(got)), i
        keep = ~torch.isinf(expected)
        assert torch.allclose(got[keep], expected[keep], rtol=1e-4, atol=1e-4), \
            (i, (got[keep] - expected[keep]).abs().max())
        # the full-precision projections would give other scores: quantization is in there
        fp = qk(layer.self_attn, x, quantized=False)
        assert not torch.allclose(got[keep], fp[keep], rtol=1e-3, atol=1e-3), i


# ---------------------------------------------------------------------------- errors
def _one_line_error(fn, *words):
    with pytest.raises(UsageError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    for w in words:
        assert w in message, (w, message)
    assert isinstance(info.value, SystemExit)
    return message


def _corrupt(kd, name, edit):
    """A copy of the trained teacher with its state dict edited by ``edit``."""
    from fairseq import checkpoint_utils

    path = F.workdir() / f"corrupt_teacher_{name}.pt"
    if not path.exists():
        state = checkpoint_utils.load_checkpoint_to_cpu(kd.teacher)
        edit(state["model"])
        checkpoint_utils.torch_persistent_save(state, str(path))
    return str(path)


def _drop_vocab_row(sd):
    for key in ("encoder.sentence_encoder.embed_tokens.weight", "encoder.lm_head.weight",
                "encoder.lm_head.bias"):
        sd[key] = sd[key][:-1].clone()


@pytest.mark.parametrize("case", [
    "missing", "garbage", "directory", "vocab", "classes", "regression", "head", "quantized",
    "unknown_part", "bad_map", "map_range_teacher", "negative_weight", "zero_weights",
    "temperature", "no_teacher_path"])
def test_errors_before_training(case, kd):
    bad = F.workdir() / "garbage.pt"
    bad.write_bytes(b"this is not a checkpoint")
    trained = lambda: kd.teacher  # noqa: E731
    cases = {
        "missing": (lambda: kd.build(str(F.workdir() / "nope.pt")), ["no such file"]),
        "garbage": (lambda: kd.build(str(bad)), ["cannot read it as a fairseq checkpoint"]),
        "directory": (lambda: kd.build(str(F.workdir())), ["no such file"]),
        "vocab": (lambda: kd.build(_corrupt(kd, "vocab", _drop_vocab_row)),
                  ["vocabulary has", "task dictionary has"]),
        "classes": (lambda: kd.build(kd.random_teacher("3cls", [*F.ROBERTA_TINY, "--num-classes", "3"])),
                    ["3 outputs", "--num-classes 2"]),
        "regression": (lambda: kd.build(kd.random_teacher("reg2", [*F.ROBERTA_TINY, "--regression-target"])),
                       ["trained for regression", "does classification"]),
        "head": (lambda: kd.build(kd.random_teacher("otherhead", [
            *F.ROBERTA_TINY, "--classification-head-name", "other"])),
                 ["no classification head 'sentence_classification_head'", "other"]),
        "quantized": (lambda: kd.build(kd.random_teacher("quant", [
            "--arch", "quant_roberta_tiny", "--quant-groups", "FFN"])), ["teacher is quantized"]),
        "unknown_part": (lambda: kd.build(trained(), "logits,atention"),
                         ["unknown part 'atention'", "logits, hidden, attn, output, trm"]),
        "bad_map": (lambda: kd.build(trained(), more=["--kd-layer-map", "1=2"]), ["--kd-layer-map"]),
        "map_range_teacher": (lambda: kd.build(trained(), more=["--kd-layer-map", "1:1,2:5"]),
                              ["teacher layer 5 does not exist", "2 layers"]),
        "negative_weight": (lambda: kd.build(trained(), more=["--kd-attn-weight", "-1"]),
                            ["--kd-attn-weight must be >= 0"]),
        "zero_weights": (lambda: kd.build(trained(), "logits", more=["--kd-logits-weight", "0"]),
                         ["nothing to train"]),
        "temperature": (lambda: kd.build(trained(), more=["--kd-temperature", "0"]),
                        ["--kd-temperature must be > 0"]),
        "no_teacher_path": (lambda: kd.build(""), ["needs --teacher-path"]),
    }
    fn, words = cases[case]
    _one_line_error(fn, *words)


def _first_forward(kd, teacher, parts, student, more=()):
    _, task, model, crit = kd.build(teacher, parts, student, more=more)
    return lambda: crit(model, F.batch(task, n=2))


@pytest.mark.parametrize("case", ["hidden_size", "output_size", "heads", "plain_roberta_attn",
                                  "map_range_student", "layerdrop", "positions"])
def test_errors_on_student_mismatch(case, kd):
    """Student-dependent checks run once, at the first forward, before any update."""
    wide = lambda: kd.random_teacher("wide", [*F.ROBERTA_TINY, "--encoder-embed-dim", "96"])  # noqa: E731
    trained = lambda: kd.teacher  # noqa: E731
    cases = {
        "hidden_size": (lambda: _first_forward(kd, wide(), "hidden", QSTUDENT),
                        ["--kd-parts hidden", "teacher hidden size 96", "student hidden size 64"]),
        "output_size": (lambda: _first_forward(kd, wide(), "output,logits", QSTUDENT),
                        ["--kd-parts output", "teacher hidden size 96"]),
        "heads": (lambda: _first_forward(kd, kd.random_teacher("2heads", [
            *F.ROBERTA_TINY, "--encoder-attention-heads", "2"]), "attn", QSTUDENT),
                  ["--kd-parts attn", "2 attention heads", "student has 4"]),
        "plain_roberta_attn": (lambda: _first_forward(kd, trained(), "attn", F.ROBERTA_TINY),
                               ["needs a quant_roberta student"]),
        "map_range_student": (lambda: _first_forward(kd, trained(), "hidden", QSTUDENT,
                                                     ["--kd-layer-map", "3:2"]),
                              ["student layer 3 does not exist"]),
        "layerdrop": (lambda: _first_forward(kd, trained(), "trm", [*QSTUDENT, "--encoder-layerdrop", "0.1"]),
                      ["--encoder-layerdrop must be 0"]),
        "positions": (lambda: _first_forward(kd, kd.random_teacher("short", [
            *F.ROBERTA_TINY, "--max-positions", "8"]), "logits", QSTUDENT),
                      ["the teacher has only 8 positions"]),
    }
    make, words = cases[case]
    _one_line_error(make(), *words)


def test_wider_teacher_is_fine_for_logits_and_attention(kd):
    """Logits and attention scores do not depend on the hidden size (same heads): a 96-wide
    teacher gives a 64-wide student exactly the layer-by-layer attention and logits losses."""
    teacher = kd.random_teacher("wide", [*F.ROBERTA_TINY, "--encoder-embed-dim", "96"])
    _, task, model, crit = kd.build(teacher, "attn,logits", QSTUDENT)
    model.eval()
    sample = F.batch(task, n=4)
    values = kd_values(crit(model, sample)[2])
    assert set(values) == {"kd_attn", "kd_logits", "kd_label"}

    net_input = sample["net_input"]
    pad = net_input["src_tokens"].eq(task.source_dictionary.pad())
    with torch.no_grad():
        with capture_attention_scores(model) as s_att:
            s_logits, _ = model(**net_input, features_only=True, classification_head_name=HEAD)
        with capture_attention_scores(crit.teacher.model) as t_att:
            t_logits, _ = crit.teacher.model(**net_input, features_only=True,
                                             classification_head_name=HEAD)
    assert [a.shape[-1] for a in s_att] == [a.shape[-1] for a in t_att] and len(t_att) == 2
    attn = sum(kd_losses.attention_kd_loss(s, t, pad) for s, t in zip(s_att, t_att, strict=True))
    assert values["kd_attn"] == pytest.approx(attn.item(), rel=1e-5)
    assert values["kd_logits"] == pytest.approx(kd_losses.logits_kd_loss(s_logits, t_logits).item(), rel=1e-5)
    assert attn.item() > 1e-3 and values["kd_logits"] > 1e-6  # a random teacher: far from the student


def test_plain_roberta_student_with_logits_and_hidden(kd):
    teacher = kd.teacher
    _, task, model, crit = kd.build(teacher, "hidden,logits", F.ROBERTA_TINY)
    F.load_teacher_weights(model, teacher).eval()
    loss, _, log = crit(model, F.batch(task, n=4))
    assert abs(loss.item()) < 1e-6 and "kd_hidden" in log


def test_quant_roberta_teacher_without_groups(kd):
    """A quant_roberta(_tiny) FP checkpoint is a valid teacher; a student equal to it gives 0."""
    teacher = kd.random_teacher("qfp", ["--arch", "quant_roberta_tiny"])
    _, task, model, crit = kd.build(teacher, "trm,logits", STUDENT)
    F.load_teacher_weights(model, teacher).eval()
    loss, _, log = crit(model, F.batch(task, n=8))
    assert abs(loss.item()) < 1e-6
    assert all(abs(v) < 1e-6 for k, v in kd_values(log).items() if k != "kd_label")
