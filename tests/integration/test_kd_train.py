"""Real fairseq-train runs with --criterion kd_sentence_prediction (subprocesses).

* each single part alone (logits, hidden, attn, output) on a 4-bit quant_roberta_tiny
  student started from a real FP roberta teacher: the run completes, kd_* reach the log
  (train_inner, train, valid) and tensorboard, the checkpoint holds no teacher;
* a resumed run;
* 2-process CPU data-parallel training (gloo, legacy_ddp, one process per rank).
"""
import re
import socket
import struct
import subprocess
from pathlib import Path

import pytest
import torch

import kd_fixtures as F

PART_KEY = {"logits": "kd_logits", "hidden": "kd_hidden", "attn": "kd_attn", "output": "kd_hidden"}
_RUNS = {}


def train_cmd(save: Path, parts: str, max_update: int = 4, extra=()):
    teacher = F.trained_teacher()
    return [F.FAIRSEQ_TRAIN, F.data_dir("cls"), "--user-dir", F.USER_DIR, *F.SP,
            "--num-classes", "2", "--arch", "quant_roberta_tiny", "--quant-groups", "EMB,QKV,FFN",
            "--weight-bits", "4", *F.kd_flags(teacher, parts), "--finetune-from-model", teacher,
            "--optimizer", "adam", "--lr", "1e-4", "--batch-size", "16",
            "--max-update", str(max_update), "--cpu", "--num-workers", "0", "--save-dir", str(save),
            "--no-epoch-checkpoints", "--tensorboard-logdir", str(save / "tb"),
            "--log-format", "simple", "--log-interval", "1", "--seed", "1", *extra]


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


def part_runs():
    """Start the four single-part runs together, wait for all (cached per process)."""
    if not _RUNS:
        procs = {}
        for part in PART_KEY:
            save = F.workdir() / f"run_{part}"
            procs[part] = (save, subprocess.Popen(
                train_cmd(save, part), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, env=F.subprocess_env()))
        for part, (save, proc) in procs.items():
            out, _ = proc.communicate(timeout=400)
            _RUNS[part] = (save, proc.returncode, out)
    return _RUNS


def metric_lines(log: str, kind: str):
    return [line for line in log.splitlines() if re.search(rf"\| {kind} \|", line)]


@pytest.mark.parametrize("part", list(PART_KEY))
def test_single_part_run_logs_and_tensorboard(part):
    save, rc, out = part_runs()[part]
    assert rc == 0, out[-4000:]
    key = PART_KEY[part]
    inner = metric_lines(out, "train_inner")
    assert len(inner) == 4 and all(f"{key}=" in line for line in inner), out[-3000:]
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
    assert state["criterion"] is None
    _, _, student, _ = F.build(F.data_dir("cls"), [*F.task_flags(), "--criterion", "sentence_prediction",
                                                   "--arch", "quant_roberta_tiny",
                                                   "--quant-groups", "EMB,QKV,FFN",
                                                   "--weight-bits", "4"], criterion=False)
    assert set(state["model"]) == set(student.state_dict())
    assert out.count("KD teacher") == 1


def test_resume_keeps_distilling():
    save, rc, out = part_runs()["logits"]
    assert rc == 0, out[-3000:]
    proc = subprocess.run(train_cmd(save, "logits", max_update=6), capture_output=True,
                          text=True, env=F.subprocess_env(), timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 4 updates\)", log), log[-3000:]
    inner = metric_lines(log, "train_inner")
    assert len(inner) == 2 and all("kd_logits=" in line for line in inner)
    assert log.count("KD teacher") == 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_data_parallel():
    save = F.workdir() / "run_ddp"
    port = _free_port()
    procs = []
    for rank in range(2):
        cmd = train_cmd(save, "trm,logits", max_update=3, extra=[
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
    for rank, (proc, out) in enumerate(zip(procs, outs)):
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
