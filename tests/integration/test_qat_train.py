"""Real fairseq-train QAT runs on mini-GLUE SST-2, started from a real FP teacher checkpoint.

The teacher is fine-tuned by scripts/train_teacher.sh (plain fairseq ``roberta``); every
QAT run restores it into ``quant_roberta_tiny`` with ``--finetune-from-model``.
"""
import re
import subprocess
import sys

import pytest
import torch

from ablation_fixtures import SCRIPTS, run, workdir

FAIRSEQ_TRAIN = str(__import__("pathlib").Path(sys.executable).parent / "fairseq-train")
_CACHE = {}


def sst2_with_teacher():
    """(data-bin, teacher checkpoint, teacher's best dev accuracy); built once per session."""
    if "t" not in _CACHE:
        root = workdir() / "qat"
        run([SCRIPTS / "prepare_mini_glue.sh", root / "data", "SST-2"], TRAIN_SIZE=2000, DEV_SIZE=400, TEST_SIZE=10)
        data = root / "data" / "SST-2-bin"
        run([SCRIPTS / "train_teacher.sh", "SST-2", data, root / "teacher"], TOTAL_NUM_UPDATES=600, WARMUP_UPDATES=36)
        log = (root / "teacher" / "train.log").read_text()
        fp_acc = max(float(a) for a in re.findall(r"valid on 'valid' subset .*?\| accuracy ([\d.]+)", log))
        assert fp_acc > 80, "the teacher must learn mini-GLUE SST-2 (majority class is ~50%)"
        _CACHE["t"] = (data, root / "teacher" / "checkpoint_best.pt", fp_acc)
    return _CACHE["t"]


def qat(run_dir, *flags, updates=80, lr="2e-4", check=True):
    data, teacher, _ = sst2_with_teacher()
    task_args = subprocess.run([sys.executable, "qbert/data/glue_tasks.py", "train-args", "SST-2"],
                               capture_output=True, text=True, check=True, cwd=str(SCRIPTS.parent)).stdout.split()
    cmd = [FAIRSEQ_TRAIN, data, "--user-dir", "fairseq_qbert", "--task", "sentence_prediction", *task_args,
           "--criterion", "sentence_prediction", "--arch", "quant_roberta_tiny",
           "--finetune-from-model", teacher, "--cpu", "--optimizer", "adam", "--lr", lr,
           "--lr-scheduler", "polynomial_decay", "--total-num-update", str(updates), "--warmup-updates", "6",
           "--max-update", str(updates), "--batch-size", "32", "--max-epoch", "0",
           "--save-dir", run_dir / "ckpt", "--no-epoch-checkpoints", "--tensorboard-logdir", run_dir / "tb",
           "--log-format", "simple", "--log-interval", "10", "--seed", "3", *flags]
    proc = run(cmd, check=check)
    return proc.stdout + proc.stderr


def best_accuracy(log):
    return max(float(a) for a in re.findall(r"valid on 'valid' subset .*?\| accuracy ([\d.]+)", log))


@pytest.mark.parametrize("name, flags", [
    ("w4_lsq_all", ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4"]),
    ("w8a8_lsq_all", ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "8", "--act-bits", "8"]),
])
def test_qat_from_fp_teacher_stays_within_one_point(name, flags):
    _, _, fp_acc = sst2_with_teacher()
    log = qat(workdir() / name, *flags, "--validate-interval-updates", "40")
    assert "quant_roberta quantization: weights lsq EMB:" in log
    assert best_accuracy(log) >= fp_acc - 1.0, f"{name}: {best_accuracy(log)} vs FP {fp_acc}"


def test_two_bit_run_completes_and_logs_quantizer_stats_to_tensorboard():
    run_dir = workdir() / "w2a8"
    log = qat(run_dir, "--quant-groups", "EMB:2,QKV:2,FFN:2", "--act-bits", "8", "--act-quantizer", "pact",
              "--pact-init-clip", "4", updates=20)
    inner = [line for line in log.splitlines() if "| train_inner |" in line]
    assert inner and all(f"qw_scale_{g}=" in inner[-1] for g in ("EMB", "QKV", "FFN"))
    assert "qa_clipped_FFN=" in inner[-1] and "qa_scale_QKV=" in inner[-1]
    events = list((run_dir / "tb" / "train_inner").glob("events.out.tfevents.*"))
    assert events and b"qw_scale_FFN" in events[0].read_bytes()
    assert best_accuracy(log) > 0


def _quant_state(ckpt):
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return state["model"], state["extra_state"]["train_iterator"]


def test_resume_restores_quantizer_state_exactly():
    """6 updates straight == 3 updates, stop, resume for 3 more: bit-identical model state."""
    flags = ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4", "--act-bits", "8", "--act-quantizer", "ema",
             "--save-interval-updates", "3", "--lr", "1e-3"]
    straight, resumed = workdir() / "straight", workdir() / "resumed"
    qat(straight, *flags, updates=6)
    first_half = qat(resumed, *flags, "--max-update", "3", updates=6)  # the last --max-update wins
    assert "num_updates=3" in first_half or "num_updates 3" in first_half
    log = qat(resumed, *flags, updates=6)
    assert "(epoch 1 @ 3 updates)" in log  # resumed from the interrupted run
    a, it_a = _quant_state(straight / "ckpt" / "checkpoint_last.pt")
    b, it_b = _quant_state(resumed / "ckpt" / "checkpoint_last.pt")
    assert set(a) == set(b)
    quant_keys = [k for k in a if "_quantizer." in k]
    assert any(k.endswith("running_max") for k in quant_keys) and any(k.endswith("step") for k in quant_keys)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert it_a == it_b
