"""Real fairseq-train runs with --criterion kd_sentence_prediction (subprocesses). The
student is a 4-bit quant_roberta_tiny started from the shared FP teacher (conftest's
``mini_teacher``: mini-GLUE SST-2, a real fairseq-train run).

* each single part alone (logits, hidden, attn, output): the run completes, kd_* reach the
  log (train_inner, train, valid) and tensorboard, the checkpoint holds no teacher, and the
  part's KD loss on the dev set, computed in-process with the criterion, is lower after the
  run than at its start (the teacher's weights, quantized) -- the value after the run being
  the one fairseq's own validation logged. The students train without dropout: with
  roberta's 0.1 the train-time KD compares a dropout-perturbed student with the eval-mode
  teacher, and over the first updates the dev KD loss rises (attn 0.106 -> 0.295 in 6
  updates at lr 1e-4) although training does what it should;
* a resumed run, on a copy of the logits run (no test changes a folder another one reads);
* 2-process CPU data-parallel training (gloo, legacy_ddp, one process per rank): both ranks
  end with identical parameters (each rank's are saved by tests/train_probe.py).
"""
import re
import shutil
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import kd_fixtures as F
import pytest
import torch

PART_KEY = {"logits": "kd_logits", "hidden": "kd_hidden", "attn": "kd_attn", "output": "kd_hidden"}
UPDATES = 6
STUDENT = ["--arch", "quant_roberta_tiny", "--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4"]
NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0"]
PROBE = str(Path(__file__).resolve().parents[1] / "train_probe.py")


def train_cmd(teacher, save: Path, parts: str, max_update: int = UPDATES, extra=(), probe=None):
    launcher = [sys.executable, PROBE, str(probe)] if probe else [F.FAIRSEQ_TRAIN]
    checkpoint = str(teacher.checkpoint)
    return [*launcher, str(teacher.data_bin), "--user-dir", F.USER_DIR, *F.SP,
            "--num-classes", "2", *STUDENT, *F.kd_flags(checkpoint, parts),
            "--finetune-from-model", checkpoint,
            "--optimizer", "adam", "--lr", "1e-4", "--batch-size", "16",
            "--max-update", str(max_update), "--cpu", "--num-workers", "0", "--save-dir", str(save),
            "--no-epoch-checkpoints", "--tensorboard-logdir", str(save / "tb"),
            "--log-format", "simple", "--log-interval", "1", "--seed", "1", *NO_DROPOUT, *extra]


def tb_tags(logdir: Path):
    """{subdir: set of scalar tags} read from tensorboardX event files."""
    from tensorboardX.proto import event_pb2

    tags = {}
    for path in logdir.glob("*/events.out.tfevents.*"):
        data, i, found = path.read_bytes(), 0, set()
        while i < len(data):
            (n,) = struct.unpack("Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            found.update(v.tag for v in event.summary.value)
            i += 12 + n + 4
        tags.setdefault(path.parent.name, set()).update(found)
    return tags


@dataclass
class Run:
    save: Path
    returncode: int
    log: str


@pytest.fixture(scope="module")
def part_runs(mini_teacher, tmp_path_factory):
    """The four single-part runs, started together, each in its own folder: {part: Run}.
    Tests read them and never write into them."""
    root = tmp_path_factory.mktemp("kd_parts")
    procs = {}
    for part in PART_KEY:
        save = root / f"run_{part}"
        procs[part] = (save, subprocess.Popen(
            train_cmd(mini_teacher, save, part), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=F.subprocess_env()))
    runs = {}
    for part, (save, proc) in procs.items():
        out, _ = proc.communicate(timeout=400)
        runs[part] = Run(save, proc.returncode, out)
    return runs


def metric_lines(log: str, kind: str):
    return [line for line in log.splitlines() if re.search(rf"\| {kind} \|", line)]


def kd_student(mini_teacher, part):
    """(task, student, criterion) of a part's run, built in-process from its command line."""
    checkpoint = str(mini_teacher.checkpoint)
    _, task, model, crit = F.build(str(mini_teacher.data_bin), [*F.task_flags(), *STUDENT,
                                                                *F.kd_flags(checkpoint, part)])
    return task, model, crit


def dev_kd_loss(task, model, crit, part):
    """The part's KD loss (its kd_* value per sentence) over the whole dev set, computed by
    the criterion in eval mode."""
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(dataset), 100):
            sample = dataset.collater([dataset[i] for i in range(start, min(start + 100, len(dataset)))])
            total += float(crit(model, sample)[2][PART_KEY[part]])
    return total / len(dataset)


@pytest.mark.parametrize("part", list(PART_KEY))
def test_single_part_run_logs_and_tensorboard(part, part_runs, mini_teacher):
    run = part_runs[part]
    save, out = run.save, run.log
    assert run.returncode == 0, out[-4000:]
    key = PART_KEY[part]
    inner = metric_lines(out, "train_inner")
    assert len(inner) == UPDATES and all(f"{key}=" in line for line in inner), out[-3000:]
    for kind in ("train", "valid"):
        lines = metric_lines(out, kind)
        assert lines and all(f"{key} " in line for line in lines), (kind, out[-3000:])
    absent = {"kd_logits", "kd_hidden", "kd_attn"} - {key}
    assert not any(a in line for a in absent for line in inner)
    assert "kd_label" in inner[0] and "accuracy" in inner[0]
    tags = tb_tags(save / "tb")
    for sub in ("train_inner", "train", "valid"):
        assert key in tags.get(sub, set()), (sub, tags)
        assert "kd_label" in tags[sub]
    # the checkpoint holds the student only: no criterion state, same keys as the student
    state = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == UPDATES  # the run as it finished
    assert state["criterion"] is None
    task, student, crit = kd_student(mini_teacher, part)
    assert set(state["model"]) == set(student.state_dict())
    assert out.count("KD teacher") == 1
    # distillation worked: the part's loss on the dev set fell over the run, from the
    # teacher's weights (quantized: where the run starts) to the checkpoint's
    F.load_teacher_weights(student, str(mini_teacher.checkpoint))
    before = dev_kd_loss(task, student, crit, part)
    student.load_state_dict(state["model"], strict=True)
    after = dev_kd_loss(task, student, crit, part)
    (valid,) = metric_lines(out, "valid")
    logged = float(re.search(rf"\| {key} (-?[\d.e+-]+)", valid).group(1))
    assert logged == pytest.approx(after, rel=1e-3, abs=1e-4)  # fairseq's validation of that model
    assert after < 0.95 * before, (part, before, after)


def test_resume_keeps_distilling(part_runs, mini_teacher, tmp_path):
    run = part_runs["logits"]
    assert run.returncode == 0, run.log[-3000:]
    save = tmp_path / "run_logits"
    shutil.copytree(run.save, save)  # resume a copy: the logits run stays as it finished
    proc = subprocess.run(train_cmd(mini_teacher, save, "logits", max_update=UPDATES + 2),
                          capture_output=True, text=True, env=F.subprocess_env(), timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert re.search(rf"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ {UPDATES} updates\)", log), \
        log[-3000:]
    inner = metric_lines(log, "train_inner")
    assert len(inner) == 2 and all("kd_logits=" in line for line in inner)
    assert log.count("KD teacher") == 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_data_parallel(mini_teacher, tmp_path):
    """Two ranks, 8-bit LSQ inputs too (initialised from each rank's first batch, then
    averaged): both ranks end with the same parameters and quantizer state."""
    save, probe = tmp_path / "run_ddp", tmp_path / "probe"
    port = _free_port()
    procs = []
    for rank in range(2):
        cmd = train_cmd(mini_teacher, save, "trm,logits", max_update=3, probe=probe, extra=[
            "--act-bits", "8", "--act-quantizer", "lsq",
            "--distributed-world-size", "2", "--distributed-rank", str(rank),
            "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
            "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp", "--batch-size", "8"])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=F.subprocess_env()))
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=400)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, (proc, out) in enumerate(zip(procs, outs, strict=True)):
        assert proc.returncode == 0, (rank, out[-4000:])
    log0 = outs[0]  # fairseq silences INFO logging on ranks > 0
    assert log0.count("KD teacher") == 1
    assert "distributed init (rank 0)" in log0 and "distributed init (rank 1)" in outs[1]
    assert re.search(r"training on 2 devices", log0), log0[-3000:]
    inner = metric_lines(log0, "train_inner")
    assert len(inner) == 3
    for key in ("kd_logits", "kd_hidden", "kd_attn", "kd_label"):
        assert all(f"{key}=" in line for line in inner), key
    # 2 workers x batch 8 = 16 sentences per update
    assert all("bsz=16" in line for line in inner), inner
    assert "kd_attn" in tb_tags(save / "tb").get("train_inner", set())
    # the ranks end identical: every parameter and quantizer buffer, bit for bit
    p0, p1 = (torch.load(probe / f"params_rank{r}.pt", map_location="cpu") for r in range(2))
    assert set(p0) == set(p1) and any(k.endswith("input_quantizer.step") for k in p0)
    for key in p0:
        assert torch.equal(p0[key], p1[key]), key
    # ... and they trained: not the teacher's weights any more; rank 0's are what it saved
    saved = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    teacher = torch.load(mini_teacher.checkpoint, map_location="cpu", weights_only=False)["model"]
    fc1 = "encoder.sentence_encoder.layers.0.fc1.weight"
    assert not torch.equal(p0[fc1], teacher[fc1])
    for key in saved:
        assert torch.equal(saved[key], p0[key]), key
