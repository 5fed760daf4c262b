"""Checkpoint loading without ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` (real fairseq commands).

Legitimate checkpoints written by fairseq-train / fairseq-hydra-train load through every
entry point with torch's restricted unpickler:

* A: FP ``roberta``, argparse path, plain fairseq (``kd_fixtures.trained_teacher``);
* S: a ``roberta.base``-style file made from A (only ``args``, ``model``, old history);
* C: FP ``roberta``, hydra path (fairseq-hydra-train, with the plugin);
* B: 4-bit ``quant_roberta_tiny`` + KD, argparse path: fine-tuned from S, teacher A;
  then resumed (B2); D: the same on the hydra path: fine-tuned from A, teacher C; resumed
  (D2, hydra again). fairseq-validate of A, C, B and D.

A crafted checkpoint whose pickle calls ``os.system`` is refused -- one line naming
``posix.system``, exit status 1, the marker file never written -- through train resume,
``--finetune-from-model``, ``--teacher-path`` and ``fairseq-validate --path``. A legitimate
file with an extra type (``datetime``) is refused without the opt-in and loads with
``--trust-checkpoint PATH`` or ``QBERT_TRUST_CHECKPOINT=PATH``. (2-rank DDP, whose broadcast
of the loaded checkpoint goes through the same allow-list: test_kd_train.py.)
"""
import concurrent.futures
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import kd_fixtures as F
import pytest
import torch

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
FAIRSEQ_VALIDATE = str(BIN / "fairseq-validate")
FAIRSEQ_HYDRA_TRAIN = str(BIN / "fairseq-hydra-train")
TRUST_ENV = "QBERT_TRUST_CHECKPOINT"
ERROR = "fairseq-qbert: error: "
_CACHE = {}


def env(**overrides):
    """The subprocess environment without any trust override of the caller's shell."""
    return F.subprocess_env(drop=("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD",
                                  TRUST_ENV), **overrides)


def run_all(jobs):
    """Run ``{name: (cmd, env, cwd)}`` two at a time; ``{name: (returncode, output)}``."""
    def one(item):
        cmd, environ, cwd = item
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=environ,
                              cwd=cwd, timeout=400)
        return proc.returncode, proc.stdout + proc.stderr

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(one, item) for name, item in jobs.items()}
        return {name: fut.result() for name, fut in futures.items()}


def root() -> Path:
    return F.workdir() / "safe_loading"


def train_cmd(save, *extra, max_update=2):
    """A 4-bit quant_roberta_tiny fine-tune on the tiny cls data (argparse path); ``extra``
    may name another criterion (the last --criterion wins)."""
    return [F.FAIRSEQ_TRAIN, F.data_dir("cls"), "--user-dir", F.USER_DIR, *F.SP, "--num-classes", "2",
            "--arch", "quant_roberta_tiny", "--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4",
            "--criterion", "sentence_prediction", "--optimizer", "adam", "--lr", "1e-4",
            "--batch-size", "16", "--max-update", str(max_update),
            "--cpu", "--num-workers", "0", "--save-dir", save, "--no-epoch-checkpoints",
            "--log-format", "simple", "--seed", "1", *extra]


def validate_cmd(path, *extra):
    return [FAIRSEQ_VALIDATE, F.data_dir("cls"), "--user-dir", F.USER_DIR, *F.SP, "--num-classes", "2",
            "--criterion", "sentence_prediction", "--path", path, "--valid-subset", "valid",
            "--batch-size", "16", "--cpu", "--num-workers", "0", "--log-format", "simple", *extra]


HYDRA_YAML = """\
# @package _group_
common: {{cpu: true, seed: 1, log_format: simple, log_interval: 1, user_dir: {user_dir}}}
checkpoint: {{save_dir: {save}, no_epoch_checkpoints: true{finetune}}}
dataset: {{batch_size: 16, num_workers: 0}}
task: {{_name: sentence_prediction, data: {data}, num_classes: 2, init_token: 0,
        separator_token: 2, max_positions: 128}}
model: {model}
criterion: {criterion}
optimizer: {{_name: adam}}
lr_scheduler: {{_name: fixed}}
optimization: {{max_update: {max_update}, lr: [{lr}]}}
"""


def hydra_cmd(name, save, model, criterion, max_update, lr, finetune=None):
    """fairseq-hydra-train with a config written to ROOT/hydra/NAME.yaml (run in ROOT/hydra)."""
    conf = root() / "hydra"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / f"{name}.yaml").write_text(HYDRA_YAML.format(
        user_dir=F.USER_DIR, save=save, data=F.data_dir("cls"), model=model, criterion=criterion,
        max_update=max_update, lr=lr, finetune=f", finetune_from_model: {finetune}" if finetune else ""))
    return ([FAIRSEQ_HYDRA_TRAIN, "--config-dir", conf, "--config-name", name,
             f"hydra.run.dir={conf / ('out_' + name)}"], conf)


ROBERTA_HYDRA = ("{_name: roberta, encoder_layers: 2, encoder_embed_dim: 64, encoder_ffn_embed_dim: 128, "
                 "encoder_attention_heads: 4, max_positions: 128}")
QUANT_HYDRA = "{_name: quant_roberta_tiny, quant_groups: 'EMB,QKV,FFN', weight_bits: 4}"
# the plugin is imported after hydra composed the config: the KD criterion's node is untyped,
# so the keys that fairseq's task interpolates must be given
KD_HYDRA = ("{{_name: kd_sentence_prediction, teacher_path: {teacher}, kd_parts: logits, "
            "regression_target: false, classification_head_name: sentence_classification_head}}")


def roberta_base_style(src: str, dst: Path) -> str:
    """A pre-hydra checkpoint like roberta.base's model.pt: ``args`` (a Namespace), no cfg."""
    state = torch.load(src, map_location="cpu", weights_only=False)
    torch.save({"args": state["cfg"]["model"], "model": state["model"],
                "optimizer_history": [{"criterion_name": "MaskedLmLoss", "optimizer_name": "FairseqAdam",
                                       "lr_scheduler_state": {"best": 1.5}, "num_updates": 1000}],
                "extra_state": {"epoch": 3, "train_iterator": {"epoch": 3, "iterations_in_epoch": 0},
                                "val_loss": 1.5},
                "last_optimizer_state": None}, dst)
    return str(dst)


class RunsCommand:
    """Unpickling it runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def with_extra(src: str, dst: Path, key: str, value) -> str:
    """A copy of checkpoint ``src`` with ``extra_state[key] = value``."""
    state = torch.load(src, map_location="cpu", weights_only=False)
    state["extra_state"][key] = value
    torch.save(state, dst)
    return str(dst)


def legit_runs():
    """Write A, S, C; train B, D; resume B2, D2; validate A, C, B, D (cached per process)."""
    if "legit" in _CACHE:
        return _CACHE["legit"]
    base = root()
    base.mkdir(parents=True, exist_ok=True)
    out = {}
    c_save = base / "C"
    c_cmd, c_cwd = hydra_cmd("C", c_save, ROBERTA_HYDRA, "{_name: sentence_prediction}", 20, 0.001)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # C alongside A
        c_future = pool.submit(run_all, {"C": (c_cmd, env(), c_cwd)})
        a_path = F.trained_teacher()
        out.update(c_future.result())
    c_path = str(c_save / "checkpoint_last.pt")
    s_path = roberta_base_style(a_path, base / "roberta_base_style.pt")

    b_save, d_save = base / "B", base / "D"
    b_cmd = train_cmd(b_save, *F.kd_flags(a_path, "logits"), "--finetune-from-model", s_path)
    d_cmd, d_cwd = hydra_cmd("D", d_save, QUANT_HYDRA,
                             KD_HYDRA.format(teacher=c_path),
                             2, 0.0001, finetune=a_path)
    out.update(run_all({"B": (b_cmd, env(), None), "D": (d_cmd, env(), d_cwd)}))
    b2_cmd = train_cmd(b_save, *F.kd_flags(a_path, "logits"), "--finetune-from-model", s_path, max_update=4)
    d2_cmd, _ = hydra_cmd("D2", d_save, QUANT_HYDRA,
                          KD_HYDRA.format(teacher=c_path),
                          4, 0.0001, finetune=a_path)
    out.update(run_all({"B2": (b2_cmd, env(), None), "D2": (d2_cmd, env(), d_cwd)}))
    out.update(run_all({f"validate {name}": (validate_cmd(path), env(), None) for name, path in (
        ("A", a_path), ("C", c_path), ("B", b_save / "checkpoint_last.pt"),
        ("D", d_save / "checkpoint_last.pt"))}))
    _CACHE["legit"] = out
    _CACHE["paths"] = {"A": a_path, "C": c_path, "S": s_path}
    return out


def assert_ok(name):
    rc, log = legit_runs()[name]
    assert rc == 0, f"{name}:\n{log[-4000:]}"
    assert ERROR not in log and "Traceback" not in log, log[-4000:]
    return log


def error_lines(log):
    return [line for line in log.splitlines() if ERROR in line]


# ---------------------------------------------------------------------------- legitimate files
def test_writes_every_checkpoint_kind():
    for name in ("C", "B", "D"):
        assert_ok(name)
    paths = _CACHE["paths"]
    # the argparse path pickles argparse.Namespace (cfg.model), the hydra path nothing extra
    assert torch.serialization.get_unsafe_globals_in_checkpoint(paths["A"]) == ["argparse.Namespace"]
    assert torch.serialization.get_unsafe_globals_in_checkpoint(paths["S"]) == ["argparse.Namespace"]
    assert torch.serialization.get_unsafe_globals_in_checkpoint(paths["C"]) == []
    for name in ("B", "D"):
        ckpt = root() / name / "checkpoint_last.pt"
        expected = ["argparse.Namespace"] if name == "B" else []
        assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == expected


@pytest.mark.parametrize("name", ["B", "D"])
def test_finetune_from_model_and_teacher(name):
    log = assert_ok(name)
    assert "KD teacher" in log
    # fairseq's message when --finetune-from-model is loaded
    assert re.search(r"loading pretrained model from .*: optimizer, lr scheduler, meters, "
                     r"dataloader will be reset", log), log[-3000:]


@pytest.mark.parametrize("name", ["B2", "D2"])
def test_resume(name):
    log = assert_ok(name)
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 2 updates\)", log), log[-3000:]
    assert re.search(r"num_updates[ =]4\b", log), log[-3000:]


@pytest.mark.parametrize("name", ["A", "C", "B", "D"])
def test_validate(name):
    log = assert_ok(f"validate {name}")
    assert re.search(r"valid on 'valid' subset .*accuracy", log), log[-3000:]


# ---------------------------------------------------------------------------- a malicious file
def malicious_runs():
    """The crafted checkpoint through each entry point (cached per process)."""
    if "evil" in _CACHE:
        return _CACHE["evil"]
    base = root() / "evil"
    base.mkdir(parents=True, exist_ok=True)
    teacher = F.trained_teacher()
    jobs, markers = {}, {}
    for entry in ("resume", "finetune", "teacher", "validate"):
        marker = base / f"MARKER_{entry}"
        markers[entry] = marker
        evil = with_extra(teacher, base / f"evil_{entry}.pt", "payload", RunsCommand(f"touch {marker}"))
        save = base / f"save_{entry}"
        save.mkdir(exist_ok=True)
        if entry == "resume":
            os.replace(evil, save / "checkpoint_last.pt")
            cmd = train_cmd(save)
        elif entry == "finetune":
            cmd = train_cmd(save, "--finetune-from-model", evil)
        elif entry == "teacher":
            cmd = train_cmd(save, *F.kd_flags(evil, "logits"), "--finetune-from-model", teacher)
        else:
            cmd = validate_cmd(evil)
        jobs[entry] = (cmd, env(), None)
    _CACHE["evil"] = (run_all(jobs), markers)
    return _CACHE["evil"]


@pytest.mark.parametrize("entry", ["resume", "finetune", "teacher", "validate"])
def test_malicious_checkpoint_is_refused(entry):
    results, markers = malicious_runs()
    rc, log = results[entry]
    assert rc == 1, log[-3000:]
    assert not markers[entry].exists(), "the checkpoint's code ran"
    assert "Traceback" not in log, log[-3000:]
    lines = error_lines(log)
    assert len(lines) == 1, log[-3000:]
    line = lines[0]
    assert line.startswith(ERROR)
    assert "refused to unpickle global 'posix.system'" in line
    assert "may run arbitrary code" in line
    assert f"--trust-checkpoint {root() / 'evil'}" in line and TRUST_ENV in line
    if entry == "teacher":
        assert line.startswith(f"{ERROR}--teacher-path {root() / 'evil' / 'evil_teacher.pt'}: ")
    # never a silent fallback to full pickle: training or validation never started
    assert "begin training" not in log and "valid on 'valid' subset" not in log


# ---------------------------------------------------------------------------- the opt-in
def test_opt_in_loads_a_trusted_file_with_an_extra_type():
    base = root() / "trusted"
    base.mkdir(parents=True, exist_ok=True)
    path = with_extra(F.trained_teacher(), base / "with_datetime.pt", "saved_at",
                      datetime.datetime(2024, 5, 1, 12, 0))
    results = run_all({
        "refused": (validate_cmd(path), env(), None),
        "flag": (validate_cmd(path, "--trust-checkpoint", path), env(), None),
        "env": (train_cmd(base / "save", "--finetune-from-model", path, max_update=1),
                env(**{TRUST_ENV: path}), None),
    })
    rc, log = results["refused"]
    assert rc == 1 and len(error_lines(log)) == 1, log[-3000:]
    assert f"refused to unpickle global 'datetime.datetime' from {path}" in error_lines(log)[0]
    for name in ("flag", "env"):
        rc, log = results[name]
        assert rc == 0 and ERROR not in log, f"{name}:\n{log[-3000:]}"
        assert f"loading {path} with full pickle" in log, log[-3000:]
    assert re.search(r"valid on 'valid' subset .*accuracy", results["flag"][1])
    assert "loading pretrained model from" in results["env"][1]
