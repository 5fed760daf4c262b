"""Real fairseq-train QAT runs on mini-GLUE SST-2, started from a real FP teacher checkpoint.

The teacher is conftest's ``mini_teacher`` (scripts/train_teacher.sh, plain fairseq
``roberta``, shared with the KD and ablation tests); every QAT run restores it into
``quant_roberta_tiny`` with ``--finetune-from-model``. Beyond "the run completes and stays
accurate": the saved weights' effective values lie on their quantizer's grid, 2-bit PTQ
of the teacher changes its predictions, and the per-group quantizer statistics in the log
are the quantizers' own values (recorded during the run by tests/train_probe.py).
"""
import json
import re
import sys
from pathlib import Path

import kd_fixtures as F
import pytest
import torch
from ablation_fixtures import run, workdir
from train_probe import group_means

from qbert.data.glue_tasks import task_train_args
from qbert.quant import LSQQuantizer
from qbert.quant.base import EPS

FAIRSEQ_TRAIN = str(Path(sys.executable).parent / "fairseq-train")
PROBE = str(Path(__file__).resolve().parents[1] / "train_probe.py")
W2A8 = ["--quant-groups", "EMB:2,QKV:2,FFN:2", "--act-bits", "8", "--act-quantizer", "pact",
        "--pact-init-clip", "4"]


def qat(teacher, run_dir, *flags, updates=80, lr="2e-4", check=True, probe=None):
    """fairseq-train QAT from ``teacher`` (a MiniTeacher); with ``probe`` (a folder) through
    tests/train_probe.py. Returns the log (stdout + stderr)."""
    launcher = [sys.executable, PROBE, probe] if probe else [FAIRSEQ_TRAIN]
    cmd = [*launcher, teacher.data_bin, "--user-dir", F.USER_DIR, "--task", "sentence_prediction",
           *task_train_args(teacher.task),
           "--criterion", "sentence_prediction", "--arch", "quant_roberta_tiny",
           "--finetune-from-model", teacher.checkpoint, "--cpu", "--optimizer", "adam", "--lr", lr,
           "--lr-scheduler", "polynomial_decay", "--total-num-update", str(updates), "--warmup-updates", "6",
           "--max-update", str(updates), "--batch-size", "32", "--max-epoch", "0",
           "--save-dir", run_dir / "ckpt", "--no-epoch-checkpoints", "--tensorboard-logdir", run_dir / "tb",
           "--log-format", "simple", "--log-interval", "10", "--seed", "3", *flags]
    proc = run(cmd, check=check)
    return proc.stdout + proc.stderr


def best_accuracy(log):
    return max(float(a) for a in re.findall(r"valid on 'valid' subset .*?\| accuracy ([\d.]+)", log))


def train_inner(log):
    """The train_inner lines of fairseq's simple log as {key: float}."""
    return [{k: float(v) for k, v in re.findall(r"(\w+)=(-?[\d.]+(?:e[-+]?\d+)?)", line)}
            for line in log.splitlines() if "| train_inner |" in line]


def load_student(checkpoint, data_bin):
    """The QAT student as fairseq rebuilds it from its checkpoint (its own cfg and state)."""
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data_bin)})
    return models[0].eval()


def assert_weights_on_grid(model, bits):
    """Every quantized weight's effective value (what the forward multiplies by) is k * step
    with integer k in the quantizer's range -- at most 2^bits levels per step -- and is not
    the stored FP weight. ``bits``: {group: bits}."""
    found = {}
    for group, entries in model.quantizers_by_group().items():
        found[group] = sum(role == "weight" for role, _ in entries)
    assert found == {"EMB": 2, "QKV": 8, "FFN": 4}, found
    n = 0
    for name, module in model.named_modules():
        q = getattr(module, "weight_quantizer", None)
        if q is None:
            continue
        n += 1
        group = "EMB" if ".embed_" in name else "QKV" if ".self_attn." in name else "FFN"
        assert isinstance(q, LSQQuantizer) and int(q.bits) == bits[group], name
        with torch.no_grad():
            w = module.weight
            effective = q(w)
            step = q.step.detach().float().clamp_min(EPS).reshape(-1, 1)
            codes = effective.reshape(step.shape[0], -1) / step
        assert torch.allclose(codes, codes.round(), atol=1e-3), name
        k = codes.round()
        assert k.min() >= q.qmin and k.max() <= q.qmax, name
        assert k.unique().numel() <= 2 ** bits[group], name
        assert (effective - w).abs().max() > 0.1 * step.min(), name  # the FP weights are off the grid
    assert n == 14


@pytest.mark.parametrize("name, flags, bits", [
    ("w4_lsq_all", ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4"], 4),
    ("w8a8_lsq_all", ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "8", "--act-bits", "8"], 8),
])
def test_qat_from_fp_teacher_stays_within_one_point(name, flags, bits, mini_teacher):
    fp_acc = mini_teacher.best_accuracy
    log = qat(mini_teacher, workdir() / name, *flags, "--validate-interval-updates", "40")
    assert "quant_roberta quantization: weights lsq EMB:" in log
    assert best_accuracy(log) >= fp_acc - 1.0, f"{name}: {best_accuracy(log)} vs FP {fp_acc}"
    student = load_student(workdir() / name / "ckpt" / "checkpoint_best.pt", mini_teacher.data_bin)
    assert_weights_on_grid(student, dict.fromkeys(("EMB", "QKV", "FFN"), bits))


def evaluate(mini_teacher, quant_flags):
    """(dev accuracy in %, mean dev cross-entropy, logits) of the teacher's weights in
    quant_roberta_tiny with ``quant_flags``, no training (post-training quantization)."""
    _, task, model, _ = F.build(str(mini_teacher.data_bin), [
        *F.task_flags(), "--criterion", "sentence_prediction",
        "--arch", "quant_roberta_tiny", *quant_flags], criterion=False)
    F.load_teacher_weights(model, str(mini_teacher.checkpoint)).eval()
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    logits, targets = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), 64):
            sample = dataset.collater([dataset[i] for i in range(start, min(start + 64, len(dataset)))])
            out, _ = model(**sample["net_input"], features_only=True,
                           classification_head_name="sentence_classification_head")
            logits.append(out)
            targets.append(sample["target"].view(-1))
    logits, targets = torch.cat(logits), torch.cat(targets)
    accuracy = 100.0 * (logits.argmax(-1) == targets).float().mean().item()
    return accuracy, torch.nn.functional.cross_entropy(logits, targets).item(), logits


def test_two_bit_ptq_of_the_teacher_changes_its_outputs(mini_teacher):
    """Weights at 2 bits on EMB, QKV and FFN, no training: the dev logits and loss move away
    from FP. (The same evaluation without quantization gives fairseq's own validation
    accuracy of the teacher.) The accuracy is not asserted: this teacher's dev decisions
    survive 2-bit PTQ of every group but the (FP) head."""
    fp_acc, fp_loss, fp_logits = evaluate(mini_teacher, [])
    assert fp_acc == pytest.approx(mini_teacher.best_accuracy, abs=0.051)
    ptq_acc, ptq_loss, ptq_logits = evaluate(mini_teacher, ["--quant-groups", "EMB:2,QKV:2,FFN:2"])
    assert (ptq_logits - fp_logits).abs().mean() > 0.02 * fp_logits.abs().mean()
    assert abs(ptq_loss - fp_loss) > 1e-3 * fp_loss, (fp_loss, ptq_loss, fp_acc, ptq_acc)


def test_two_bit_run_logs_the_quantizers_own_statistics(mini_teacher):
    """2-bit weights, 8-bit PACT inputs: each train_inner line's qw_scale_* / qw_clipped_* /
    qa_scale_* / qa_clipped_* is the group mean that the probe recorded from the quantizers
    in that update's forward; the saved weights lie on their 2-bit grids."""
    run_dir = workdir() / "w2a8"
    log = qat(mini_teacher, run_dir, *W2A8, updates=20, probe=run_dir / "probe")
    inner = train_inner(log)
    assert [int(line["num_updates"]) for line in inner] == [10, 20]
    recorded = json.loads((run_dir / "probe" / "quantizers_rank0.json").read_text())
    for line in inner:
        expected = group_means(recorded[str(int(line["num_updates"]))])
        assert set(expected) == {f"q{r}_{s}_{g}" for r, groups in (("w", ("EMB", "QKV", "FFN")),
                                                                   ("a", ("QKV", "FFN")))
                                 for g in groups for s in ("scale", "clipped")}
        for key, value in expected.items():
            assert line[key] == pytest.approx(value, abs=5.1e-5), (line["num_updates"], key)
        assert line["qw_clipped_EMB"] > 0.01  # 2 bits: a real share of the weights is clipped
    events = list((run_dir / "tb" / "train_inner").glob("events.out.tfevents.*"))
    assert events and b"qw_scale_FFN" in events[0].read_bytes()
    student = load_student(run_dir / "ckpt" / "checkpoint_last.pt", mini_teacher.data_bin)
    assert_weights_on_grid(student, dict.fromkeys(("EMB", "QKV", "FFN"), 2))


def _quant_state(ckpt):
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return state["model"], state["extra_state"]["train_iterator"]


def test_resume_restores_quantizer_state_exactly(mini_teacher):
    """6 updates straight == 3 updates, stop, resume for 3 more: bit-identical model state."""
    flags = ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4", "--act-bits", "8", "--act-quantizer", "ema",
             "--save-interval-updates", "3", "--lr", "1e-3"]
    straight, resumed = workdir() / "straight", workdir() / "resumed"
    qat(mini_teacher, straight, *flags, updates=6)
    first_half = qat(mini_teacher, resumed, *flags, "--max-update", "3", updates=6)  # the last --max-update wins
    assert "num_updates=3" in first_half or "num_updates 3" in first_half
    log = qat(mini_teacher, resumed, *flags, updates=6)
    assert "(epoch 1 @ 3 updates)" in log  # resumed from the interrupted run
    a, it_a = _quant_state(straight / "ckpt" / "checkpoint_last.pt")
    b, it_b = _quant_state(resumed / "ckpt" / "checkpoint_last.pt")
    assert set(a) == set(b)
    quant_keys = [k for k in a if "_quantizer." in k]
    assert any(k.endswith("running_max") for k in quant_keys) and any(k.endswith("step") for k in quant_keys)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert it_a == it_b
