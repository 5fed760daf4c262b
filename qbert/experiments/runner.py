#!/usr/bin/env python3
"""The one runner behind every ablation script: QAT fine-tunes, FP baselines, families.

Runs with the standard library and :mod:`qbert` only: it starts ``fairseq-train`` /
``fairseq-validate`` as subprocesses and reads their logs; the GLUE task table comes from
:mod:`qbert.data.glue_tasks` (no fairseq import, so a cell that is already finished is
skipped in well under a second). ``scripts/lib/qat_runner.py`` is its command line.

Subcommands::

    qat_runner.py run TASK DATA_BIN TEACHER RUN_DIR [DEVICE] [-- EXTRA_FLAGS...]
        One QAT fine-tune of quant_roberta, started from the FP checkpoint TEACHER with
        --finetune-from-model. Skipped when RUN_DIR/DONE exists; an interrupted run
        resumes from RUN_DIR/checkpoints/checkpoint_last.pt (fairseq ignores
        --finetune-from-model once that file exists). Writes RUN_DIR/train.log,
        RUN_DIR/tb (tensorboard), RUN_DIR/result.json, then RUN_DIR/DONE.

    qat_runner.py baseline TASK DATA_BIN TEACHER RUN_DIR [DEVICE]
        The FP baseline: fairseq-validate of TEACHER on DATA_BIN's dev set, recorded in
        RUN_DIR/result.json (+ DONE) like a QAT cell.

    qat_runner.py aug-pretrained TEACHER
        Prints the masked LM a KD + aug cell augments with (AUG_PRETRAINED, else the
        pretrained model.pt TEACHER was fine-tuned from); prints nothing when there is none
        (the family scripts then leave the KD + aug column out).

    qat_runner.py family --family F --task T --data-bin D --teacher X --out-dir O
                         [--device cpu|gpu] --cells CELLS.tsv
        One experiment family for one task (what scripts/<family>.sh calls): writes the
        plan O/plans/F[_VARIANT]__T.json (the table layout: which run fills which cell), records the
        FP baseline in O/fp/T/..., then runs every cell (O/runs/T/NAME-HASH) and the FP
        control (O/runs/T/fp_recipe-HASH: the same recipe with no quantizer and no KD;
        FP_CONTROL=0 skips it). Cells that are finished are skipped (a run shared by two
        families runs once); failures do not stop the other cells (exit 1 at the end).
        CELLS.tsv: one cell a line, ``ROW<TAB>COL<TAB>NAME<TAB>FLAGS[<TAB>MODE CALIB]``
        (FLAGS split on spaces; no flag value may contain a space). The optional fifth
        column makes a post-training-quantization cell (``scripts/ptq.sh``): CALIB are
        qbert-calibrate flags (--calibrator, --percentile, --weight-calibrator,
        --num-calib-batches, --batch-size) and MODE is ``ptq`` (qbert-calibrate TEACHER with
        FLAGS' quantization flags -> RUN_DIR/ptq.pt, then fairseq-validate of ptq.pt: the
        PTQ metric) or ``qat`` (the same calibration, then the QAT fine-tune started from
        ptq.pt with --finetune-from-model instead of from TEACHER).

Hyperparameters use the variable names of fairseq's RoBERTa GLUE recipe
(examples/roberta/README.glue.md) and are read from the environment:

    ARCH (quant_bert_tiny / quant_bert_base for a BERT teacher, e.g. one imported with
    qbert-import-hf: BERT's pair layout, no --separator-token; MAX_POSITIONS then defaults to
    the teacher's) LR TOTAL_NUM_UPDATES WARMUP_UPDATES MAX_SENTENCES  (+ MAX_EPOCH MAX_POSITIONS
    MAX_TOKENS SEED (or SEEDS="1 2 3": every cell and the control once per seed; tables
    show the mean) LOG_INTERVAL FP16 KEEP_CHECKPOINTS DATA_KIND JOBS FAIRSEQ_TRAIN
    FAIRSEQ_VALIDATE EXTRA_ARGS)

Defaults depend on DATA_KIND (``mini`` for mini-GLUE, ``real`` for GLUE; auto-detected from
the size of DATA_BIN/input0/dict.txt when unset): mini = quant_roberta_tiny, 250 updates of
batch 32 at LR 5e-4 (15-30 s a cell on one CPU core); real = quant_roberta_base with
fairseq's per-task recipe (see RECIPES below; max 10 epochs, --max-tokens 4400).

KD with augmented data (the "KD + aug" column of kd_effect / kd_parts): a cell whose flags hold
``--train-subset train_aug`` trains on the task's train split plus its TinyBERT-style augmented
rows (``qbert-augment --out-split``; with QAT_TRAIN_SIZE=N the split ``trainN`` is augmented).
The runner writes that split into DATA_BIN once per task and parameter set (split
``SOURCE_aug_nN_kK_pP_sSEED``; skipped when present) before the cell trains. Its parameters:
AUG_N (variants per sentence, default 4), AUG_TOP_K (MLM candidates per word, 15), AUG_P
(replacement probability, 0.4), AUG_SEED (1), AUG_PRETRAINED (the masked LM; default: the
pretrained model.pt the teacher was fine-tuned from, its --restore-file), AUG_BATCH_SIZE (256).
TinyBERT's N 20, K 15, P 0.4 with N scaled down: a mini QAT run (250 updates of 32) sees about
one pass over train, so the augmented split is kept at ~5-9x train rather than ~20x.

FP16=1 (DEVICE=gpu only) adds fairseq's recipe fp16 flags. KEEP_CHECKPOINTS: best (default;
checkpoint_last.pt is deleted once a run is DONE), all, or none (also drop checkpoint_best.pt:
sweeps of roberta.base runs need ~0.5 GB a kept checkpoint). JOBS: cells run in parallel
by ``family`` (on CPU each gets cpus/JOBS threads). Every run's fairseq-train gets
OMP_NUM_THREADS=1 unless set (the tiny model gains nothing from more).

fairseq checkpoints are pickles: only load checkpoints you trust.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as _dt
import fcntl
import functools
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from qbert.data import glue_tasks as _glue_tasks
from qbert.errors import QBertError

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER_DIR = os.path.join(REPO_DIR, "fairseq_qbert")
RESULT_VERSION = 1
DONE = "DONE"
RESULT = "result.json"
SPEC = "run.json"

def glue_tasks():
    """The GLUE task table (:mod:`qbert.data.glue_tasks`; no fairseq import)."""
    return _glue_tasks


class RunnerError(QBertError):
    """A one-line, user-facing problem (bad arguments, stale run dir, failed run)."""


# ----------------------------------------------------------------------------------------
# hyperparameters
# ----------------------------------------------------------------------------------------

# fairseq's examples/roberta/README.glue.md (roberta.base/large fine-tuning recipe):
# task -> (TOTAL_NUM_UPDATES, WARMUP_UPDATES, LR, MAX_SENTENCES)
RECIPES: Dict[str, Tuple[int, int, str, int]] = {
    "MNLI": (123873, 7432, "1e-05", 32),
    "QNLI": (33112, 1986, "1e-05", 32),
    "QQP": (113272, 28318, "1e-05", 32),
    "RTE": (2036, 122, "2e-05", 16),
    "SST-2": (20935, 1256, "1e-05", 32),
    "MRPC": (2296, 137, "1e-05", 16),
    "CoLA": (5336, 320, "1e-05", 16),
    "STS-B": (3598, 214, "2e-05", 16),
}

# mini-GLUE on CPU: the tiny model (2 x 64 unless the teacher is deeper), QAT for one epoch of
# the 8000-row train set.
MINI_DEFAULTS = {
    "ARCH": "quant_roberta_tiny",
    "LR": "5e-04",
    "TOTAL_NUM_UPDATES": "250",
    "WARMUP_UPDATES": "15",
    "MAX_SENTENCES": "32",
    "MAX_EPOCH": "0",
    "MAX_POSITIONS": "128",
    "MAX_TOKENS": "",
    "LOG_INTERVAL": "25",
}

HPARAM_NAMES = ("ARCH", "LR", "TOTAL_NUM_UPDATES", "WARMUP_UPDATES", "MAX_SENTENCES", "MAX_EPOCH",
                "MAX_POSITIONS", "MAX_TOKENS", "SEED", "FP16")


def is_bert_arch(arch: str) -> bool:
    """``quant_bert*`` (fairseq_qbert/models/quant_bert.py): BERT's layout, ``[CLS] A [SEP] B [SEP]``
    (``--init-token 0``, no ``--separator-token``), positions without offset, token types."""
    return arch.startswith("quant_bert")


def hparams(task: str, data_kind: str, device: str, env=None) -> Dict[str, str]:
    """The recipe variables of one run: defaults for the data kind, overridden by ``env``."""
    env = os.environ if env is None else env
    if data_kind == "mini":
        h = dict(MINI_DEFAULTS)
    else:
        total, warmup, lr, bsz = RECIPES[task]
        h = {"ARCH": "quant_roberta_base", "LR": lr, "TOTAL_NUM_UPDATES": str(total),
             "WARMUP_UPDATES": str(warmup), "MAX_SENTENCES": str(bsz), "MAX_EPOCH": "10",
             "MAX_POSITIONS": "512", "MAX_TOKENS": "4400", "LOG_INTERVAL": "100"}
    h["SEED"] = "1"
    h["FP16"] = "0"
    for name in list(h) + ["LOG_INTERVAL"]:
        if env.get(name, "") != "":
            h[name] = env[name]
    if is_bert_arch(h["ARCH"]) and env.get("MAX_POSITIONS", "") == "":
        h["MAX_POSITIONS"] = ""  # BERT's position table has exactly max_positions rows: the teacher's
    if env.get("KEEP_CHECKPOINTS", "best") not in ("all", "best", "none"):
        raise RunnerError(f"KEEP_CHECKPOINTS={env['KEEP_CHECKPOINTS']}: expected all, best (default: drop "
                          "checkpoint_last.pt once the run is done) or none")
    if device != "gpu" and h["FP16"] not in ("0", ""):
        raise RunnerError("FP16=1 needs DEVICE=gpu (fairseq has no fp16 training on CPU)")
    return h


# ----------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def git_info() -> Dict[str, object]:
    """HEAD commit of this repository and whether tracked files (outside results/) differ."""
    def git(*args):
        return subprocess.run(["git", "-C", REPO_DIR, *args], capture_output=True, text=True, timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": "unknown", "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def detect_data_kind(data_bin: str, env=None) -> Tuple[str, str]:
    """(``mini`` | ``real``, how it was decided). DATA_KIND wins; else the dictionary size:
    mini-GLUE's whitespace dictionaries have a few hundred words, RoBERTa's GPT-2 one 50k."""
    env = os.environ if env is None else env
    kind = env.get("DATA_KIND", "")
    if kind:
        if kind not in ("mini", "real"):
            raise RunnerError(f"DATA_KIND={kind}: expected mini or real")
        return kind, "DATA_KIND"
    path = os.path.join(data_bin, "input0", "dict.txt")
    with open(path, encoding="utf-8") as f:
        n = sum(1 for _ in f)
    return ("mini" if n < 5000 else "real"), f"auto: {n} words in input0/dict.txt"


def check_data_bin(task: str, data_bin: str) -> None:
    needed = ["input0"] + (["input1"] if glue_tasks().get_task(task).num_inputs > 1 else [])
    needed.append("label")
    for sub in needed:
        if not os.path.isdir(os.path.join(data_bin, sub)):
            raise RunnerError(f"{data_bin}/{sub} not found: DATA_BIN must be the output of "
                              f"qbert-preprocess-glue for {task}")


def _find_tool(env_name: str, tool: str) -> str:
    if os.environ.get(env_name):
        return os.environ[env_name]
    here = os.path.join(os.path.dirname(sys.executable), tool)
    return here if os.path.exists(here) else tool


def spec_hash(spec: Dict) -> str:
    """Short hash of what determines a run's result (task, data, teacher, flags, hparams)."""
    key = {k: spec[k] for k in ("kind", "task", "data_bin", "teacher", "device", "flags")}
    key["hparams"] = {k: v for k, v in spec["hparams"].items() if k != "LOG_INTERVAL"}  # logging only
    if spec.get("calib") is not None:  # calibrated cells (absent: the hashes of older runs stay)
        key["calib"] = spec["calib"]
    if spec.get("augment") is not None:  # KD + aug cells: the augmented split's making
        key["augment"] = spec["augment"]
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------------------
# fairseq log parsing
# ----------------------------------------------------------------------------------------

_VALID_RE = re.compile(r"valid on '([^']+)' subset")


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def parse_valid_lines(lines: Iterable[str], subset: str = "valid") -> List[Dict[str, float]]:
    """Every "valid on 'SUBSET' subset | k v | k v ..." line of a fairseq simple log
    (fairseq-train's end-of-epoch / interval validations, fairseq-validate's output),
    as {key: number}; 'epoch' is included when the line has it."""
    out = []
    for line in lines:
        m = _VALID_RE.search(line)
        if not m or m.group(1) != subset:
            continue
        entry: Dict[str, float] = {}
        for field in line.rstrip("\n").split(" | "):
            parts = field.strip().rsplit(" ", 1)
            if len(parts) == 2:
                value = _number(parts[1])
                if value is not None and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", parts[0]):
                    entry[parts[0]] = value
        out.append(entry)
    return out


def best_from_log(log_path: str, metric: str, subset: str = "valid") -> Dict[str, object]:
    """Best dev ``metric`` of a fairseq-train log (higher is better for every GLUE metric).

    The value is fairseq's own ``best_<metric>`` on the last validation line (it survives
    restarts, as it is stored in checkpoint_last.pt); it must equal the best of the
    metric over the validation lines of the log, else the log is incomplete.
    """
    with open(log_path, encoding="utf-8", errors="replace") as f:
        entries = parse_valid_lines(f, subset)
    entries = [e for e in entries if metric in e]
    if not entries:
        raise RunnerError(f"{log_path}: no '{metric}' on a \"valid on '{subset}' subset\" line")
    best_entry = max(entries, key=lambda e: e[metric])
    fairseq_best = entries[-1].get("best_" + metric)
    if fairseq_best is not None and abs(fairseq_best - best_entry[metric]) > 1e-9:
        raise RunnerError(f"{log_path}: fairseq's best_{metric} {fairseq_best:g} is not the best "
                          f"{metric} of the logged validations ({best_entry[metric]:g}); the log is "
                          "incomplete (a restart lost its first part?)")
    return {
        "value": best_entry[metric],
        "best_num_updates": best_entry.get("num_updates"),
        "best_epoch": best_entry.get("epoch"),
        "final_value": entries[-1][metric],
        "num_updates": entries[-1].get("num_updates"),
        "num_validations": len(entries),
        "other_metrics_at_best": {k: v for k, v in best_entry.items()
                                  if k not in ("epoch", "num_updates", "wps", "wpb", "bsz")
                                  and not k.startswith("best_")},
    }


_ARCH_KEYS = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
              "max_positions")


def model_config_from_log(log_path: str) -> Dict[str, object]:
    """Model shape from fairseq's config dump / parameter-count lines (best effort)."""
    cfg: Dict[str, object] = {}
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not cfg.get("encoder_layers") and "'model':" in line and "encoder_layers" in line:
                    model_part = line[line.index("'model':"):]
                    for key in _ARCH_KEYS:
                        m = re.search(r"\b%s[=']+:?\s*(\d+)" % key, model_part)
                        if m:
                            cfg[key] = int(m.group(1))
                m = re.search(r"num\. shared model params: ([\d,]+)", line)
                if m:
                    cfg["num_params"] = int(m.group(1).replace(",", ""))
                m = re.search(r"quant_roberta quantization: (.*)$", line)
                if m:
                    cfg["quantization"] = m.group(1).strip()
    except OSError:
        pass
    return cfg


# ----------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------


def seed_list(env) -> List[str]:
    """The seeds to run every cell with: SEEDS="1 2 3" (or "1,2,3"), else SEED, else 1."""
    name = "SEEDS" if env.get("SEEDS", "").strip() else "SEED"
    seeds = env.get("SEEDS", "").replace(",", " ").split() or [env.get("SEED", "") or "1"]
    if not all(seed.isdigit() for seed in seeds):
        raise RunnerError(f"{name}={env.get(name, '')!r}: expected non-negative integers"
                          + (" separated by spaces" if name == "SEEDS" else ""))
    return list(dict.fromkeys(seeds))


def build_spec(kind: str, task: str, data_bin: str, teacher: str, device: str,
               flags: Sequence[str], env=None, calib: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Everything that determines a run (and its hash): checked before anything is started.

    ``kind``: qat (fairseq-train), fp (fairseq-validate of the teacher) or ptq
    (qbert-calibrate + fairseq-validate); ``calib``: qbert-calibrate flags (ptq, or qat
    started from the calibrated model)."""
    gt = glue_tasks()
    try:
        task = gt.get_task(task).name
    except gt.UnknownTaskError as e:
        raise RunnerError(str(e)) from None
    if device not in ("cpu", "gpu"):
        raise RunnerError(f"DEVICE={device}: expected cpu or gpu")
    check_data_bin(task, data_bin)
    if not os.path.isfile(teacher):
        raise RunnerError(f"teacher checkpoint {teacher} not found")
    data_kind, how = detect_data_kind(data_bin, env)
    h = hparams(task, data_kind, device, env)
    if kind == "fp":  # fairseq-validate of the teacher: nothing else matters
        h = {k: h[k] for k in ("MAX_SENTENCES", "MAX_TOKENS", "FP16") if k in h}
    elif kind == "ptq":  # calibration (its batches are shuffled with SEED) + fairseq-validate
        h = {k: h[k] for k in ("MAX_SENTENCES", "MAX_TOKENS", "FP16", "SEED") if k in h}
    elif kind != "qat":
        raise RunnerError(f"unknown run kind {kind!r}")
    if kind == "ptq" and calib is None:
        raise RunnerError("a ptq run needs qbert-calibrate flags")
    extra = shlex.split((os.environ if env is None else env).get("EXTRA_ARGS", ""))
    # QAT_TRAIN_SIZE=N (low-resource QAT): the student trains on the first N train rows only
    # (split train<N>, written by fairseq_qbert.augment.subset); the teacher had all of them.
    # A cell's own --train-subset (e.g. an augmented split) wins.
    qat_size = (os.environ if env is None else env).get("QAT_TRAIN_SIZE", "").strip()
    if kind == "qat" and qat_size and "--train-subset" not in flags:
        if not qat_size.isdigit() or int(qat_size) < 1:
            raise RunnerError(f"QAT_TRAIN_SIZE={qat_size!r}: expected a number of train rows >= 1")
        extra = ["--train-subset", f"train{int(qat_size)}", *extra]
    flags = list(flags)
    augment = None
    if kind == "qat" and AUG_SPLIT in _flag_values(flags, "--train-subset"):
        flags, augment = augment_flags(flags, teacher, qat_size, os.environ if env is None else env)
    spec = {
        "kind": kind,
        "task": task,
        "data_bin": os.path.abspath(data_bin),
        "teacher": os.path.abspath(teacher),
        "device": device,
        "flags": list(flags) + extra,
        "hparams": h,
        "data_kind": data_kind,
        "data_kind_source": how,
        "metric": gt.headline_metric(task),
    }
    if calib is not None:
        spec["calib"] = list(calib)
    if augment is not None:
        spec["augment"] = augment
    return spec


# ----------------------------------------------------------------------------------------
# KD with augmented data
# ----------------------------------------------------------------------------------------

AUG_SPLIT = "train_aug"  # what a cell's --train-subset says; the runner names the real split
# TinyBERT (arXiv 1909.10351, data_augmentation.py): N 20, K 15, P 0.4; N scaled to mini-GLUE
AUG_DEFAULTS = {"AUG_N": "4", "AUG_TOP_K": "15", "AUG_P": "0.4", "AUG_SEED": "1"}


def _flag_values(flags: Sequence[str], name: str) -> List[str]:
    return [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == name]


def aug_pretrained(teacher: str, env=None) -> str:
    """The masked LM of the augmentation: AUG_PRETRAINED, else the pretrained checkpoint the
    teacher was fine-tuned from (its --restore-file), else "" (none known)."""
    env = os.environ if env is None else env
    if env.get("AUG_PRETRAINED", ""):
        return os.path.abspath(env["AUG_PRETRAINED"])
    init = teacher_init(teacher)
    return os.path.abspath(init) if init != "scratch" and os.path.isfile(init) else ""


def aug_params(env) -> Dict[str, object]:
    """AUG_N, AUG_TOP_K, AUG_P, AUG_SEED (defaults AUG_DEFAULTS), checked."""
    v = {k: (env.get(k, "") or d) for k, d in AUG_DEFAULTS.items()}
    try:
        out = {"n_aug": int(v["AUG_N"]), "top_k": int(v["AUG_TOP_K"]), "replace_prob": float(v["AUG_P"]),
               "seed": int(v["AUG_SEED"])}
    except ValueError:
        raise RunnerError(f"AUG_N={v['AUG_N']} AUG_TOP_K={v['AUG_TOP_K']} AUG_P={v['AUG_P']} "
                          f"AUG_SEED={v['AUG_SEED']}: expected integers (AUG_P a probability)") from None
    if out["n_aug"] < 1 or out["top_k"] < 1 or not 0 <= out["replace_prob"] <= 1 or out["seed"] < 0:
        raise RunnerError(f"AUG_N={out['n_aug']} AUG_TOP_K={out['top_k']} AUG_P={out['replace_prob']:g} "
                          f"AUG_SEED={out['seed']}: need N, K >= 1, 0 <= P <= 1, seed >= 0")
    return out


def augment_flags(flags: Sequence[str], teacher: str, qat_size: str, env) -> Tuple[List[str], Dict]:
    """A KD + aug cell's flags with ``--train-subset train_aug`` replaced by the augmented
    split's real name, and the ``augment`` part of its spec (what makes that split)."""
    params = aug_params(env)
    pretrained = aug_pretrained(teacher, env)
    if not pretrained:
        raise RunnerError(f"KD + aug needs a pretrained masked LM with the data's dictionary: the teacher "
                          f"{teacher} was not fine-tuned from one that exists; set AUG_PRETRAINED")
    if not os.path.isfile(pretrained):
        raise RunnerError(f"AUG_PRETRAINED={pretrained}: not found")
    source = f"train{int(qat_size)}" if qat_size else "train"
    split = (f"{source}_aug_n{params['n_aug']}_k{params['top_k']}_p{params['replace_prob']:g}"
             f"_s{params['seed']}")
    out = list(flags)
    for i, f in enumerate(out[:-1]):
        if f == "--train-subset" and out[i + 1] == AUG_SPLIT:
            out[i + 1] = split
    return out, dict(params, source=source, split=split, pretrained=pretrained)


PTQ_CHECKPOINT = "ptq.pt"
# quant_roberta's flags (fairseq_qbert/models/quant_config.py, sparsity.py) that qbert-calibrate
# takes from a cell's FLAGS; the value-less ones are --lsq-per-channel and --sparse-permute
# (2:4 masks are made before calibration, and the QAT run keeps the same --sparse-groups)
QUANT_FLAGS = ("--quant-groups", "--weight-bits", "--weight-quantizer", "--act-bits", "--act-quantizer",
               "--pact-init-clip", "--pact-lr-scale", "--pact-weight-decay", "--sparse-groups")
QUANT_SWITCHES = ("--lsq-per-channel", "--sparse-permute")


def quant_flags(flags: Sequence[str]) -> List[str]:
    """The quantization flags among ``flags`` (what qbert-calibrate needs of a cell)."""
    out, it = [], iter(flags)
    for flag in it:
        name = flag.split("=", 1)[0]
        if name in QUANT_SWITCHES:
            out.append(flag)
        elif name in QUANT_FLAGS:
            out += [flag] if "=" in flag else [flag, next(it, "")]
    return out


def calibrate_command(spec: Dict, run_dir: str) -> List[str]:
    """qbert-calibrate of the teacher with the cell's quantization flags -> RUN_DIR/ptq.pt."""
    calib = list(spec["calib"])
    cmd = [sys.executable, "-m", "fairseq_qbert.calib.cli", spec["data_bin"], "--path", spec["teacher"],
           *quant_flags(spec["flags"]), *calib, "--out", os.path.join(run_dir, PTQ_CHECKPOINT),
           "--summary", os.path.join(run_dir, "ptq.json"), "--seed", spec["hparams"]["SEED"],
           "--no-fp-eval"]
    if "--batch-size" not in calib:
        cmd += ["--batch-size", spec["hparams"]["MAX_SENTENCES"]]
    if spec["device"] == "cpu":
        cmd += ["--cpu"]
    return cmd


def train_command(spec: Dict, run_dir: str) -> List[str]:
    gt = glue_tasks()
    h = spec["hparams"]
    flags = list(spec["flags"])
    cmd = [_find_tool("FAIRSEQ_TRAIN", "fairseq-train"), spec["data_bin"],
           "--user-dir", USER_DIR, *([] if "--task" in flags else ["--task", "sentence_prediction"]),
           "--arch", h["ARCH"], "--finetune-from-model",
           os.path.join(run_dir, PTQ_CHECKPOINT) if spec.get("calib") is not None else spec["teacher"]]
    cmd += teacher_shape_args(spec["teacher"])
    task_args = gt.task_train_args(spec["task"])
    if is_bert_arch(h["ARCH"]):  # BERT's pair layout [CLS] A [SEP] B [SEP]: no extra separator
        i = task_args.index("--separator-token")
        del task_args[i:i + 2]
        if not h.get("MAX_POSITIONS"):
            cmd += ["--max-positions", str(_teacher_cfg(spec["teacher"])["model"].get("max_positions", 512))]
    cmd += task_args
    if "--criterion" not in flags:
        cmd += ["--criterion", "sentence_prediction"]
    if h.get("MAX_POSITIONS"):
        cmd += ["--max-positions", h["MAX_POSITIONS"]]
    if h.get("MAX_TOKENS"):
        cmd += ["--max-tokens", h["MAX_TOKENS"]]
    cmd += ["--batch-size", h["MAX_SENTENCES"], "--required-batch-size-multiple", "1",
            "--dropout", "0.1", "--attention-dropout", "0.1",
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-06",
            "--weight-decay", "0.1", "--clip-norm", "0.0",
            "--lr-scheduler", "polynomial_decay", "--lr", h["LR"],
            "--total-num-update", h["TOTAL_NUM_UPDATES"], "--warmup-updates", h["WARMUP_UPDATES"],
            "--max-update", h["TOTAL_NUM_UPDATES"], "--max-epoch", h["MAX_EPOCH"],
            "--seed", h["SEED"],
            "--save-dir", os.path.join(run_dir, "checkpoints"), "--no-epoch-checkpoints",
            "--tensorboard-logdir", os.path.join(run_dir, "tb"),
            "--log-format", "simple", "--log-interval", h["LOG_INTERVAL"]]
    if spec["device"] == "cpu":
        cmd += ["--cpu", "--num-workers", "0"]
    elif h["FP16"] not in ("0", ""):
        cmd += ["--fp16", "--fp16-init-scale", "4", "--threshold-loss-scale", "1", "--fp16-scale-window", "128"]
    return cmd + flags


def validate_command(spec: Dict, path: Optional[str] = None) -> List[str]:
    """fairseq-validate of ``path`` (default: the teacher) on the dev set."""
    h = spec["hparams"]
    task = glue_tasks().get_task(spec["task"])
    overrides = {"data": spec["data_bin"]}
    # fairseq-validate replaces the saved criterion config by the defaults of the one named
    # on the command line (fairseq.dataclass.utils.overwrite_args_by_name), so the task's
    # --report-* / --regression-target flags have to be given again.
    cmd = [_find_tool("FAIRSEQ_VALIDATE", "fairseq-validate"), spec["data_bin"],
           "--user-dir", USER_DIR, "--task", "sentence_prediction", "--path", path or spec["teacher"],
           "--criterion", "sentence_prediction", *task.report_flags,
           *(["--regression-target"] if task.regression else []),
           "--num-classes", str(task.num_classes),
           "--valid-subset", "valid", "--batch-size", h["MAX_SENTENCES"],
           "--model-overrides", repr(overrides), "--log-format", "simple"]
    if h.get("MAX_TOKENS"):
        cmd += ["--max-tokens", h["MAX_TOKENS"]]
    if spec["device"] == "cpu":
        cmd += ["--cpu", "--num-workers", "0"]
    elif h["FP16"] not in ("0", ""):
        cmd += ["--fp16"]
    return cmd


def is_done(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, DONE)) and os.path.isfile(os.path.join(run_dir, RESULT))


def _same_spec(a: Dict, b: Dict) -> bool:
    return spec_hash(a) == spec_hash(b)


def _check_existing(run_dir: str, spec: Dict) -> None:
    """A run dir may only be reused (skipped or resumed) for the very same run."""
    for name in (SPEC, RESULT):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            old = read_json(path).get("spec")
            if old is not None and not _same_spec(old, spec):
                changed = [k for k in ("task", "data_bin", "teacher", "device", "flags", "hparams")
                           if old.get(k) != spec.get(k)] or ["?"]
                raise RunnerError(f"{run_dir} holds a different run (changed: {', '.join(changed)}); "
                                  "remove it or pick another run dir")
            return


def _log_tail(path: str, n: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f.readlines() if line.strip()][-n:]
        return "".join(line if len(line) < 400 else line[:400] + " ...\n" for line in lines)
    except OSError:
        return ""


def _child_env(threads: Optional[int]) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    elif "OMP_NUM_THREADS" not in env:
        # the tiny model gains nothing from more threads, and OpenMP spinning collapses
        # throughput when other processes share the cores
        env["OMP_NUM_THREADS"] = "1"
    return env


def _ensure_train_subset(spec: Dict) -> None:
    """Write the split a ``--train-subset trainN`` flag names (QAT_TRAIN_SIZE), if missing."""
    flags = list(spec["flags"])
    if "--train-subset" not in flags:
        return
    split = flags[flags.index("--train-subset") + 1]
    size = split[len("train"):]
    if not (split.startswith("train") and size.isdigit()):
        return  # a split the user binarized
    proc = subprocess.run([sys.executable, "-m", "fairseq_qbert.augment.subset", spec["data_bin"],
                           "--size", size], capture_output=True, text=True, env=_child_env(None))
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise RunnerError(f"QAT_TRAIN_SIZE={size}: {lines[-1] if lines else 'subset failed'}")


def _aug_split_present(data_bin: str, aug: Dict) -> bool:
    path = os.path.join(data_bin, "augment", "augment.json")
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(data_bin, "input0", aug["split"] + ".bin"))):
        return False
    entry = read_json(path).get("splits", {}).get(aug["split"])
    if entry is None:
        return False
    made = {k: entry.get(k) for k in ("n_aug", "top_k", "replace_prob", "seed", "source_split")}
    want = {k: aug[k] for k in ("n_aug", "top_k", "replace_prob", "seed")}
    if made != dict(want, source_split=aug["source"]):
        raise RunnerError(f"{data_bin}: split {aug['split']} was made with {made}, not {want}; remove its "
                          "files (input*/, label/, augment/) or use other AUG_* values")
    return True


def ensure_aug_split(spec: Dict, quiet: bool = False) -> Optional[float]:
    """Write the augmented split a KD + aug cell trains on into DATA_BIN (qbert-augment
    --out-split), once: skipped when present. Returns the seconds it took (None: skipped)."""
    aug = spec.get("augment")
    if aug is None:
        return None
    data_bin = spec["data_bin"]
    with open(os.path.join(data_bin, ".augment.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one augmentation of a split at a time
        if _aug_split_present(data_bin, aug):
            return None
        if aug["source"] != "train":  # QAT_TRAIN_SIZE: the subset first
            _ensure_train_subset({"data_bin": data_bin, "flags": ["--train-subset", aug["source"]]})
        cmd = [sys.executable, "-m", "fairseq_qbert.augment.cli", "--data", data_bin,
               "--pretrained", aug["pretrained"], "--n-aug", str(aug["n_aug"]), "--top-k", str(aug["top_k"]),
               "--replace-prob", repr(aug["replace_prob"]), "--seed", str(aug["seed"]),
               "--split", aug["source"], "--out-split", aug["split"],
               "--batch-size", os.environ.get("AUG_BATCH_SIZE", "") or "256"]
        if spec["device"] == "gpu":
            cmd += ["--device", "cuda"]
        if not quiet:
            print(f"[augment] {spec['task']}: {aug['source']} -> {aug['split']} "
                  f"(N {aug['n_aug']}, K {aug['top_k']}, P {aug['replace_prob']:g}, seed {aug['seed']}, "
                  f"{aug['pretrained']})", flush=True)
        log_path = os.path.join(data_bin, "augment", aug["split"] + ".log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        start = time.time()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"# qat_runner {_now()}: {shlex.join(cmd)}\n")
            log.flush()
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(None))
        if proc.returncode != 0:
            raise RunnerError(f"qbert-augment exited with {proc.returncode} for {data_bin}; see {log_path}:\n"
                              + _log_tail(log_path, 3))
        seconds = time.time() - start
        if not quiet:
            print(f"[augment] {spec['task']}: {aug['split']} written ({seconds:.0f} s)", flush=True)
        return seconds


def execute(spec: Dict, run_dir: str, quiet: bool = False, threads: Optional[int] = None) -> Dict:
    """Run (or skip, or resume) one spec in ``run_dir``; returns its result.json content."""
    run_dir = os.path.abspath(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second runner on the same dir waits, then skips
        _check_existing(run_dir, spec)
        if is_done(run_dir):
            result = read_json(os.path.join(run_dir, RESULT))
            if not quiet:
                print(f"[skip] {run_dir}: finished ({result['metric']} {result['best']})", flush=True)
            result["skipped"] = True
            return result
        _write_json(os.path.join(run_dir, SPEC), {"spec": spec, "hash": spec_hash(spec)})
        log_path = os.path.join(run_dir, "train.log")
        resume = os.path.isfile(os.path.join(run_dir, "checkpoints", "checkpoint_last.pt"))
        ptq_path = os.path.join(run_dir, PTQ_CHECKPOINT)
        cmds = []
        if spec.get("calib") is not None and not resume and not os.path.isfile(ptq_path):
            cmds.append(calibrate_command(spec, run_dir))  # ptq.pt is written atomically
        if spec["kind"] == "qat":
            check_teacher_arch(spec)
            _ensure_train_subset(spec)
            ensure_aug_split(spec, quiet)
            cmds.append(train_command(spec, run_dir))
        else:
            cmds.append(validate_command(spec, ptq_path if spec["kind"] == "ptq" else None))
        cmd = cmds[-1]
        if not quiet:
            what = "resume" if resume else "start"
            flags = " ".join(spec["flags"]) or ("(teacher)" if spec["kind"] == "fp" else "(no quantizer, no KD)")
            calibrated = " calibrated: " + " ".join(spec["calib"]) if spec.get("calib") is not None else ""
            print(f"[{what}] {spec['task']} {spec['kind']} {flags}{calibrated} -> {run_dir}", flush=True)
        start = time.time()
        for step in cmds:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"# qat_runner {_now()} {'resume' if resume else 'start'}: {shlex.join(step)}\n")
                log.flush()
                # run from the caller's directory: relative paths in the flags mean what they say
                proc = subprocess.run(step, stdout=log, stderr=subprocess.STDOUT, env=_child_env(threads))
            if proc.returncode != 0:
                tool = "qbert-calibrate" if step[0] == sys.executable else step[0]
                raise RunnerError(f"{tool} exited with {proc.returncode} in {run_dir}; see {log_path}:\n"
                                  + _log_tail(log_path))
        seconds = time.time() - start
        best = best_from_log(log_path, spec["metric"])
        if spec["kind"] == "qat" and best["num_updates"] is not None and \
                int(best["num_updates"]) < int(spec["hparams"]["TOTAL_NUM_UPDATES"]) and \
                spec["hparams"]["MAX_EPOCH"] in ("0", ""):
            raise RunnerError(f"{run_dir}: training stopped at update {int(best['num_updates'])} "
                              f"of {spec['hparams']['TOTAL_NUM_UPDATES']}; see {log_path}")
        result_path = os.path.join(run_dir, RESULT)
        git = git_info()
        # fairseq-validate logs the teacher's saved config: its shape and arch
        model_cfg = model_config_from_log(log_path) if spec["kind"] == "qat" else _teacher_model_config(log_path)
        arch = spec["hparams"]["ARCH"] if spec["kind"] == "qat" else model_cfg.get("arch", "teacher")
        result = {
            "version": RESULT_VERSION,
            "kind": spec["kind"],
            "task": spec["task"],
            "flags": spec["flags"],
            "metric": spec["metric"],
            "best": best["value"],
            "log": best,
            "arch": arch,
            "model_config": model_cfg,
            "teacher_init": teacher_init(spec["teacher"]) if spec["kind"] == "fp" else None,
            "data_kind": spec["data_kind"],
            "data_bin": spec["data_bin"],
            "teacher": spec["teacher"],
            "device": spec["device"],
            "hparams": spec["hparams"],
            "git_commit": git["commit"],
            "git_dirty": git["dirty"],
            "command": cmd,
            "calibrate_command": calibrate_command(spec, run_dir) if spec.get("calib") is not None else None,
            "calib": spec.get("calib"),
            "seconds": round(seconds, 1),
            "finished": _now(),
            "spec": spec,
            "hash": spec_hash(spec),
        }
        _write_json(result_path, result)
        if spec["kind"] == "qat" and os.environ.get("KEEP_CHECKPOINTS", "best") != "all":
            # resume is no longer needed once DONE is written; checkpoint_best.pt is the result
            keep = os.environ.get("KEEP_CHECKPOINTS", "best")
            for name in ("checkpoint_last.pt",) + (("checkpoint_best.pt",) if keep == "none" else ()):
                p = os.path.join(run_dir, "checkpoints", name)
                if os.path.exists(p):
                    os.remove(p)
        keep = os.environ.get("KEEP_CHECKPOINTS", "best")
        if os.path.exists(ptq_path) and (keep == "none" or (spec["kind"] == "qat" and keep != "all")):
            os.remove(ptq_path)  # a QAT cell's result is its checkpoint_best.pt, not its start
        with open(os.path.join(run_dir, DONE), "w") as f:
            f.write(_now() + "\n")
        if not quiet:
            print(f"[done] {run_dir}: {spec['metric']} {best['value']} ({seconds:.0f} s)", flush=True)
        return result


# ----------------------------------------------------------------------------------------
# the teacher's own description (for the baseline's model config)
# ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _teacher_cfg(teacher: str) -> Dict[str, Dict]:
    """The ``cfg`` saved in a fairseq checkpoint (``model`` and ``checkpoint`` sections)."""
    from qbert.errors import CheckpointError
    from qbert.safe_load import safe_load  # only here: the runner itself does not need torch

    try:  # torch's restricted unpickler + fairseq's types; QBERT_TRUST_CHECKPOINT opts out
        state = safe_load(teacher, map_location="cpu")
    except CheckpointError as e:
        raise RunnerError(f"teacher {teacher}: {e.message}") from None
    cfg = state.get("cfg")
    if cfg is None and state.get("args") is not None:  # pre-hydra checkpoints
        args = vars(state["args"])
        return {"model": args, "checkpoint": args}

    def as_dict(section):  # a dict, or an argparse.Namespace for legacy (non-dataclass) models
        return dict(vars(section) if isinstance(section, argparse.Namespace) else (section or {}))

    return {"model": as_dict(cfg.get("model")), "checkpoint": as_dict(cfg.get("checkpoint"))}


def teacher_init(teacher: str) -> str:
    """Where the teacher's fine-tuning started: the ``--restore-file`` it was trained with
    (a pretrained ``model.pt``), or ``"scratch"``."""
    restore = _teacher_cfg(teacher)["checkpoint"].get("restore_file")
    if not restore or os.path.basename(restore) == "checkpoint_last.pt":
        return "scratch"
    return restore


# the student is initialized from the teacher (--finetune-from-model): it takes its shape
SHAPE_FLAGS = (("encoder_layers", "--encoder-layers"), ("encoder_embed_dim", "--encoder-embed-dim"),
               ("encoder_ffn_embed_dim", "--encoder-ffn-embed-dim"),
               ("encoder_attention_heads", "--encoder-attention-heads"))


def teacher_shape_args(teacher: str) -> List[str]:
    """``--encoder-layers L --encoder-embed-dim D ...`` of the teacher checkpoint (and its
    ``--layer-norm-eps`` when it has one: imported HF models)."""
    model = _teacher_cfg(teacher)["model"]
    out = []
    for key, flag in SHAPE_FLAGS:
        if model.get(key) is not None:
            out += [flag, str(model[key])]
    if model.get("layer_norm_eps") is not None:
        out += ["--layer-norm-eps", repr(float(model["layer_norm_eps"]))]
    return out


def teacher_layout(teacher: str) -> str:
    """``bert`` when the teacher checkpoint is a BERT (``encoder_layout`` bert: quant_bert*,
    qbert-import-hf of a BERT), else ``roberta``."""
    model = _teacher_cfg(teacher)["model"]
    arch = str(model.get("arch") or model.get("_name") or "")
    return "bert" if model.get("encoder_layout") == "bert" or is_bert_arch(arch) else "roberta"


def check_teacher_arch(spec: Dict) -> None:
    """ARCH must have the teacher's layout: the student starts from its weights."""
    arch = spec["hparams"]["ARCH"]
    layout = teacher_layout(spec["teacher"])
    if (layout == "bert") != is_bert_arch(arch):
        want = "quant_bert_tiny or quant_bert_base" if layout == "bert" else "quant_roberta_tiny or quant_roberta_base"
        raise RunnerError(f"ARCH={arch} but the teacher {spec['teacher']} is a {layout.upper()} model: "
                          f"set ARCH to {want}")


def _teacher_model_config(log_path: str) -> Dict[str, object]:
    cfg = model_config_from_log(log_path)
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.search(r"'arch': '([^']+)'", line) or re.search(r"\barch='([^']+)'", line)
            if m:
                cfg["arch"] = m.group(1)
                break
    return cfg


# ----------------------------------------------------------------------------------------
# families
# ----------------------------------------------------------------------------------------


def read_cells(path: str) -> List[Dict[str, object]]:
    cells = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) < 3:
                raise RunnerError(f"{path}:{n}: expected ROW<TAB>COL<TAB>NAME<TAB>FLAGS, got {line!r}")
            row, col, name = fields[:3]
            flags = fields[3].split() if len(fields) > 3 else []
            if not re.fullmatch(r"[A-Za-z0-9_.+=-]+", name):
                raise RunnerError(f"{path}:{n}: run name {name!r} may hold only letters, digits and _.+=-")
            cell = {"row": row, "col": col, "name": name, "flags": flags}
            if len(fields) > 4 and fields[4].strip():
                mode, *calib = fields[4].split()
                if mode not in ("ptq", "qat"):
                    raise RunnerError(f"{path}:{n}: calibration column must start with ptq or qat, got {mode!r}")
                cell.update(kind=mode, calib=calib)
            cells.append(cell)
    if not cells:
        raise RunnerError(f"{path}: no cells")
    seen = set()
    for c in cells:
        if (c["row"], c["col"]) in seen:
            raise RunnerError(f"{path}: cell ({c['row']}, {c['col']}) given twice")
        seen.add((c["row"], c["col"]))
    return cells


def run_family(family: str, task: str, data_bin: str, teacher: str, out_dir: str, device: str,
               cells: List[Dict], jobs: int = 1, title: str = "", meta: Optional[Dict] = None,
               variant: str = "") -> int:
    out_dir = os.path.abspath(out_dir)
    base_spec = build_spec("fp", task, data_bin, teacher, device, [])
    task = base_spec["task"]
    base_dir = os.path.join(out_dir, "fp", task, "teacher-" + spec_hash(base_spec))
    seeds = seed_list(os.environ)

    def seeded(name: str, flags: Sequence[str], kind: str = "qat", calib=None) -> List[Tuple[Dict, str]]:
        """One (spec, run dir) per seed: the seed is part of the hash, so each has its own dir."""
        out = []
        for seed in seeds:
            spec = build_spec(kind, task, data_bin, teacher, device, flags, env=dict(os.environ, SEED=seed),
                              calib=calib)
            out.append((spec, os.path.join(out_dir, "runs", task, f"{name}-{spec_hash(spec)}")))
        return out

    planned = [(c, seeded(c["name"], c["flags"], c.get("kind", "qat"), c.get("calib"))) for c in cells]
    # the control: the same recipe without quantizers or KD, so that a table can tell the
    # effect of quantization from that of fine-tuning the teacher once more
    control = None
    if os.environ.get("FP_CONTROL", "1") != "0":
        control = ({"row": "control", "col": "FP, same recipe"}, seeded("fp_recipe", []))
    rel = lambda d: os.path.relpath(d, out_dir)  # noqa: E731
    plan = {
        "family": family,
        "variant": variant,
        "task": task,
        "title": title,
        "meta": meta or {},
        "device": device,
        "data_kind": base_spec["data_kind"],
        "metric": base_spec["metric"],
        "baseline": rel(base_dir),
        "seeds": seeds,
        "control": rel(control[1][0][1]) if control else None,
        "control_runs": [rel(d) for _, d in control[1]] if control else [],
        "rows": list(dict.fromkeys(c["row"] for c in cells)),
        "cols": list(dict.fromkeys(c["col"] for c in cells)),
        "cells": [dict({"row": c["row"], "col": c["col"], "run": rel(runs[0][1]), "runs": [rel(d) for _, d in runs],
                        "flags": runs[0][0]["flags"]},
                       **({"kind": c["kind"], "calib": c["calib"]} if c.get("calib") is not None else {}),
                       **({"augment": runs[0][0]["augment"]} if runs[0][0].get("augment") else {}))
                  for c, runs in planned],
        "written": _now(),
    }
    os.makedirs(os.path.join(out_dir, "plans"), exist_ok=True)
    table = f"{family}_{variant}" if variant else family
    if not re.fullmatch(r"[A-Za-z0-9_.+=-]+", table):
        raise RunnerError(f"family/variant {table!r} may hold only letters, digits and _.+=-")
    _write_json(os.path.join(out_dir, "plans", f"{table}__{task}.json"), plan)

    failures = []
    t0 = time.time()
    try:
        execute_baseline(base_spec, base_dir)
    except RunnerError as e:
        failures.append(("FP baseline", str(e)))
    # KD + aug cells: their augmented split, once per task (skipped when DATA_BIN has it)
    for spec in {s["augment"]["split"]: s for _, runs in planned for s, _ in runs if s.get("augment")}.values():
        try:
            ensure_aug_split(spec)
        except RunnerError as e:
            failures.append(("augmentation", str(e)))
            print(f"[fail] augmentation: {str(e).splitlines()[0]}", file=sys.stderr, flush=True)
    # one run per distinct dir (two cells may share a run, e.g. identical settings)
    every = [(c, spec, d) for c, runs in planned + ([control] if control else []) for spec, d in runs]
    unique = list({item[2]: item for item in every}.values())  # run dir -> (cell, spec, dir)
    cpus = os.cpu_count() or 1
    threads = max(1, cpus // max(1, jobs)) if device == "cpu" else None

    def one(item):
        c, s, d = item
        return execute(s, d, threads=threads if jobs > 1 else None)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(one, item): item for item in unique}
        for fut in concurrent.futures.as_completed(futures):
            c, _, d = futures[fut]
            try:
                fut.result()
            except RunnerError as e:
                failures.append((f"{c['row']} / {c['col']}", str(e)))
                print(f"[fail] {d}: {str(e).splitlines()[0]}", file=sys.stderr, flush=True)
    print(f"[{family} {task}] {len(unique)} runs, {len(failures)} failed, {time.time() - t0:.0f} s", flush=True)
    for what, msg in failures:
        print(f"error: {family} {task} {what}: {msg}", file=sys.stderr)
    return 1 if failures else 0


def execute_baseline(spec: Dict, run_dir: str) -> Dict:
    return execute(spec, run_dir)


# ----------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------


def _split_extra(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = _split_extra(argv)
    parser = argparse.ArgumentParser(prog="qat_runner.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("run", "one QAT fine-tune (extra fairseq-train flags after --)"),
                        ("baseline", "FP baseline: fairseq-validate of the teacher")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("task")
        p.add_argument("data_bin")
        p.add_argument("teacher")
        p.add_argument("run_dir")
        p.add_argument("device", nargs="?", default=os.environ.get("DEVICE", "cpu"), choices=("cpu", "gpu"))
    p = sub.add_parser("aug-pretrained", help="print the masked LM a KD + aug cell would augment with "
                       "(AUG_PRETRAINED, else the teacher's --restore-file); nothing when none exists")
    p.add_argument("teacher")
    p = sub.add_parser("family", help="plan + FP baseline + every cell of one family for one task")
    p.add_argument("--family", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--data-bin", required=True)
    p.add_argument("--teacher", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--cells", required=True, help="ROW<TAB>COL<TAB>NAME<TAB>FLAGS per line")
    p.add_argument("--variant", default="", help="tag of the grid when a family has several tables")
    p.add_argument("--title", default="")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="extra facts for the table header (repeatable)")
    p.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", "1") or 1))
    args = parser.parse_args(own)
    try:
        if args.cmd == "run":
            spec = build_spec("qat", args.task, args.data_bin, args.teacher, args.device, extra)
            execute(spec, args.run_dir)
        elif args.cmd == "aug-pretrained":
            path = aug_pretrained(args.teacher)
            if path:
                print(path)
        elif args.cmd == "baseline":
            if extra:
                raise RunnerError("baseline takes no extra flags")
            spec = build_spec("fp", args.task, args.data_bin, args.teacher, args.device, [])
            execute_baseline(spec, args.run_dir)
        else:
            if extra:
                raise RunnerError("family takes its flags from --cells")
            meta = {}
            for item in args.meta:
                key, _, value = item.partition("=")
                meta[key] = value
            return run_family(args.family, args.task, args.data_bin, args.teacher, args.out_dir,
                              args.device, read_cells(args.cells), jobs=args.jobs, title=args.title,
                              meta=meta, variant=args.variant)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
