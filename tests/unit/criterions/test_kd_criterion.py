"""kd_sentence_prediction in-process: values, padding, frozen teacher, capture, errors."""
import itertools

import pytest
import torch

import kd_fixtures as F
from fairseq_qbert.criterions import kd_losses
from fairseq_qbert.criterions.kd_sentence_prediction import KDSentencePredictionCriterion
from qbert.errors import UsageError
from fairseq_qbert.models.quant_attention import QuantMultiheadAttention, capture_attention_scores

STUDENT = ["--arch", "quant_roberta_tiny"]
QSTUDENT = [*STUDENT, "--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4"]


def build_kd(teacher, parts="trm,logits", student=STUDENT, kind="cls", more=()):
    return F.build(F.data_dir(kind), [*F.task_flags(kind), *student,
                                      *F.kd_flags(teacher, parts, *more)])


def kd_values(log):
    return {k: float(v) for k, v in log.items() if k.startswith("kd_")}


# ---------------------------------------------------------------------------- values
def test_student_equal_to_teacher_gives_zero_loss():
    """FP student with the teacher's weights: every KD part is ~0 (so is the total loss)."""
    teacher = F.trained_teacher()
    _, task, model, crit = build_kd(teacher, "trm,logits")
    F.load_teacher_weights(model, teacher).eval()
    loss, sample_size, log = crit(model, F.batch(task, n=16))
    assert sample_size == 16
    values = kd_values(log)
    assert set(values) == {"kd_logits", "kd_hidden", "kd_attn", "kd_label"}
    for key in ("kd_logits", "kd_hidden", "kd_attn"):
        assert abs(values[key]) < 1e-6, (key, values)
    assert abs(loss.item()) < 1e-6
    assert values["kd_label"] > 1.0  # the ground-truth term is computed (weight 0)


def test_parts_equal_independent_computation_with_uniform_layer_map():
    """2-layer quantized student, 4-layer teacher: kd_* = the pure functions on the layers
    1->2, 2->4 (uniform map), computed here from the models directly."""
    teacher_path = F.make_teacher("deep", [*F.ROBERTA_TINY, "--encoder-layers", "4"])
    _, task, model, crit = build_kd(teacher_path, "trm,logits", QSTUDENT,
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


def test_explicit_layer_map_and_output_part():
    teacher_path = F.make_teacher("deep", [*F.ROBERTA_TINY, "--encoder-layers", "4"])
    _, task, model, crit = build_kd(teacher_path, "hidden", QSTUDENT,
                                    more=["--kd-layer-map", "1:1,2:3"])
    _, _, _, crit_out = build_kd(teacher_path, "output", QSTUDENT)
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


def test_padding_cannot_change_the_loss():
    """Extra pad columns, and batching sentences of different lengths together, leave every
    part unchanged (quantized student, weight quantization only)."""
    teacher = F.trained_teacher()
    _, task, model, crit = build_kd(teacher, "trm,logits", QSTUDENT,
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


def test_regression_pairs_and_glue_metrics():
    """STS-B-like: sentence pairs, regression target, --report-pearson-and-spearman."""
    from fairseq.logging import metrics

    teacher = F.make_teacher("reg", F.ROBERTA_TINY, "reg")
    _, task, model, crit = build_kd(teacher, "trm,logits", QSTUDENT, kind="reg",
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


def test_classification_metrics_kept():
    teacher = F.trained_teacher()
    _, task, model, crit = build_kd(teacher, "logits", QSTUDENT,
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
def test_teacher_frozen_unregistered_and_following_the_student():
    teacher_path = F.trained_teacher()
    _, task, model, crit = build_kd(teacher_path, "trm,logits", QSTUDENT)
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


def test_teacher_ignores_the_students_quant_flags():
    teacher_path = F.trained_teacher()
    _, _, model, crit = build_kd(teacher_path, "logits",
                                 [*QSTUDENT, "--act-bits", "8", "--act-quantizer", "lsq"])
    teacher = crit.teacher.model
    names = [n for n, _ in teacher.named_modules() if n.endswith("_quantizer")]
    assert names == [] and teacher.quant.group_bits == {}
    assert any(n.endswith("weight_quantizer") for n, _ in model.named_modules())
    attn = [m for m in teacher.modules() if isinstance(m, QuantMultiheadAttention)]
    assert len(attn) == 2


def test_teacher_equals_a_plain_fairseq_roberta():
    """The teacher rebuilt as quant_roberta computes what fairseq's roberta computes."""
    from fairseq import checkpoint_utils

    teacher_path = F.trained_teacher()
    _, task, _, crit = build_kd(teacher_path, "logits")
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
def test_capture_only_what_parts_need():
    teacher = F.trained_teacher()
    calls = []

    def spy(module, args, kwargs):
        calls.append(dict(return_all_hiddens=kwargs.get("return_all_hiddens", False),
                          sinks=[m.score_sink is not None for m in module.modules()
                                 if isinstance(m, QuantMultiheadAttention)]))

    expected = {"logits": (False, False), "output": (True, False), "hidden": (True, False),
                "attn": (False, True), "trm,logits": (True, True)}
    for parts, (hidden, attn) in expected.items():
        _, task, model, crit = build_kd(teacher, parts, QSTUDENT)
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


def _corrupt(name, edit):
    """A copy of the trained teacher with its state dict edited by ``edit``."""
    from fairseq import checkpoint_utils

    path = F.workdir() / f"teacher_{name}.pt"
    if not path.exists():
        state = checkpoint_utils.load_checkpoint_to_cpu(F.trained_teacher())
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
def test_errors_before_training(case):
    bad = F.workdir() / "garbage.pt"
    bad.write_bytes(b"this is not a checkpoint")
    trained = F.trained_teacher
    cases = {
        "missing": (lambda: build_kd(str(F.workdir() / "nope.pt")), ["no such file"]),
        "garbage": (lambda: build_kd(str(bad)), ["cannot read it as a fairseq checkpoint"]),
        "directory": (lambda: build_kd(str(F.workdir())), ["no such file"]),
        "vocab": (lambda: build_kd(_corrupt("vocab", _drop_vocab_row)),
                  ["vocabulary has", "task dictionary has"]),
        "classes": (lambda: build_kd(F.make_teacher("3cls", [*F.ROBERTA_TINY, "--num-classes", "3"])),
                    ["3 outputs", "--num-classes 2"]),
        "regression": (lambda: build_kd(F.make_teacher("reg2", [*F.ROBERTA_TINY, "--regression-target"])),
                       ["trained for regression", "does classification"]),
        "head": (lambda: build_kd(F.make_teacher("otherhead", [
            *F.ROBERTA_TINY, "--classification-head-name", "other"])),
                 ["no classification head 'sentence_classification_head'", "other"]),
        "quantized": (lambda: build_kd(F.make_teacher("quant", [
            "--arch", "quant_roberta_tiny", "--quant-groups", "FFN"])), ["teacher is quantized"]),
        "unknown_part": (lambda: build_kd(trained(), "logits,atention"),
                         ["unknown part 'atention'", "logits, hidden, attn, output, trm"]),
        "bad_map": (lambda: build_kd(trained(), more=["--kd-layer-map", "1=2"]), ["--kd-layer-map"]),
        "map_range_teacher": (lambda: build_kd(trained(), more=["--kd-layer-map", "1:1,2:5"]),
                              ["teacher layer 5 does not exist", "2 layers"]),
        "negative_weight": (lambda: build_kd(trained(), more=["--kd-attn-weight", "-1"]),
                            ["--kd-attn-weight must be >= 0"]),
        "zero_weights": (lambda: build_kd(trained(), "logits", more=["--kd-logits-weight", "0"]),
                         ["nothing to train"]),
        "temperature": (lambda: build_kd(trained(), more=["--kd-temperature", "0"]),
                        ["--kd-temperature must be > 0"]),
        "no_teacher_path": (lambda: build_kd(""), ["needs --teacher-path"]),
    }
    fn, words = cases[case]
    _one_line_error(fn, *words)


def _first_forward(teacher, parts, student, more=()):
    _, task, model, crit = build_kd(teacher, parts, student, more=more)
    return lambda: crit(model, F.batch(task, n=2))


@pytest.mark.parametrize("case", ["hidden_size", "output_size", "heads", "plain_roberta_attn",
                                  "map_range_student", "layerdrop", "positions"])
def test_errors_on_student_mismatch(case):
    """Student-dependent checks run once, at the first forward, before any update."""
    wide = lambda: F.make_teacher("wide", [*F.ROBERTA_TINY, "--encoder-embed-dim", "96"])  # noqa: E731
    trained = F.trained_teacher
    cases = {
        "hidden_size": (lambda: _first_forward(wide(), "hidden", QSTUDENT),
                        ["--kd-parts hidden", "teacher hidden size 96", "student hidden size 64"]),
        "output_size": (lambda: _first_forward(wide(), "output,logits", QSTUDENT),
                        ["--kd-parts output", "teacher hidden size 96"]),
        "heads": (lambda: _first_forward(F.make_teacher("2heads", [
            *F.ROBERTA_TINY, "--encoder-attention-heads", "2"]), "attn", QSTUDENT),
                  ["--kd-parts attn", "2 attention heads", "student has 4"]),
        "plain_roberta_attn": (lambda: _first_forward(trained(), "attn", F.ROBERTA_TINY),
                               ["needs a quant_roberta student"]),
        "map_range_student": (lambda: _first_forward(trained(), "hidden", QSTUDENT,
                                                     ["--kd-layer-map", "3:2"]),
                              ["student layer 3 does not exist"]),
        "layerdrop": (lambda: _first_forward(trained(), "trm", [*QSTUDENT, "--encoder-layerdrop", "0.1"]),
                      ["--encoder-layerdrop must be 0"]),
        "positions": (lambda: _first_forward(F.make_teacher("short", [
            *F.ROBERTA_TINY, "--max-positions", "8"]), "logits", QSTUDENT),
                      ["the teacher has only 8 positions"]),
    }
    make, words = cases[case]
    _one_line_error(make(), *words)


def test_wider_teacher_is_fine_for_logits_and_attention():
    """Logits and attention scores do not depend on the hidden size (same heads)."""
    teacher = F.make_teacher("wide", [*F.ROBERTA_TINY, "--encoder-embed-dim", "96"])
    _, task, model, crit = build_kd(teacher, "attn,logits", QSTUDENT)
    values = kd_values(crit(model, F.batch(task, n=4))[2])
    assert values["kd_attn"] > 0 and values["kd_logits"] > 0


def test_plain_roberta_student_with_logits_and_hidden():
    teacher = F.trained_teacher()
    _, task, model, crit = build_kd(teacher, "hidden,logits", F.ROBERTA_TINY)
    F.load_teacher_weights(model, teacher).eval()
    loss, _, log = crit(model, F.batch(task, n=4))
    assert abs(loss.item()) < 1e-6 and "kd_hidden" in log


def test_quant_roberta_teacher_without_groups():
    """A quant_roberta(_tiny) FP checkpoint is a valid teacher; a student equal to it gives 0."""
    teacher = F.make_teacher("qfp", ["--arch", "quant_roberta_tiny"])
    _, task, model, crit = build_kd(teacher, "trm,logits", STUDENT)
    F.load_teacher_weights(model, teacher).eval()
    loss, _, log = crit(model, F.batch(task, n=8))
    assert abs(loss.item()) < 1e-6
    assert all(abs(v) < 1e-6 for k, v in kd_values(log).items() if k != "kd_label")
