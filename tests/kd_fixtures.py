"""Tiny data, teachers and students for the knowledge-distillation tests.

The trained teacher of the KD tests is conftest's session fixture ``mini_teacher`` (mini-GLUE
SST-2, one real fairseq-train run shared with the QAT and ablation tests). Here, built once
per pytest process and cached in a temporary directory:

* ``data_dir("cls")``: toy single-sentence 2-class ``sentence_prediction`` data, binarized
  with fairseq's own preprocessing (in-process); ``data_dir("reg_pairs")``: sentence
  pairs with a float regression target (STS-B layout).
* ``trained_teacher()``: a 2 x 64 FP ``roberta`` fine-tuned on ``cls`` by a short plain
  fairseq-train run (30 updates; test_safe_loading.py's plugin-free checkpoint).
* ``make_teacher(name, extra, kind, data)``: randomly initialised teachers built in-process
  (shapes, heads, classes that the error tests need) for any data folder.
* ``build(data, extra)``: task, model and criterion built in-process from a fairseq
  command line; ``save_checkpoint`` writes a model the way fairseq's trainer does.
"""
import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import torch
from scratch import scratch_dir, subprocess_env  # noqa: F401  (subprocess_env: used by tests)

import fairseq_qbert  # noqa: F401  (registers quant_roberta and kd_sentence_prediction)

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "fairseq_qbert")
FAIRSEQ_TRAIN = str(Path(sys.executable).parent / "fairseq-train")
TINY = ["--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
        "--encoder-attention-heads", "4", "--max-positions", "128"]
ROBERTA_TINY = ["--arch", "roberta", *TINY]
SP = ["--task", "sentence_prediction", "--init-token", "0", "--separator-token", "2"]

_CACHE = {}


def workdir() -> Path:
    return scratch_dir("kd")


# ---------------------------------------------------------------------------- data
def _write_raw(raw: Path, kind: str, seed: int = 0):
    """Deterministic toy sentences: label = parity of the word ids (needs every token)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(24)]
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 96), ("valid", 32)):
        lines0, lines1, labels = [], [], []
        for _ in range(n):
            a = [rng.choice(words) for _ in range(rng.randint(2, 12))]
            b = [rng.choice(words) for _ in range(rng.randint(2, 8))]
            lines0.append(" ".join(a))
            lines1.append(" ".join(b))
            if kind == "cls":
                labels.append(str(sum(int(w[1:]) for w in a) % 2))
            else:
                labels.append(f"{len(set(a) & set(b)) / 4:.3f}")
        (raw / f"{split}.input0").write_text("\n".join(lines0) + "\n")
        (raw / f"{split}.input1").write_text("\n".join(lines1) + "\n")
        (raw / f"{split}.label").write_text("\n".join(labels) + "\n")


def _preprocess(argv):
    from fairseq import options
    from fairseq_cli import preprocess

    parser = options.get_preprocessing_parser()
    preprocess.main(parser.parse_args(argv))


def data_dir(kind: str = "cls") -> str:
    """Binarized sentence_prediction data: ``cls`` (single sentences) or ``reg_pairs``."""
    key = "data_" + kind
    if key not in _CACHE:
        raw = workdir() / f"raw_{kind}"
        out = workdir() / f"bin_{kind}"
        _write_raw(raw, kind, seed=0 if kind == "cls" else 1)
        common = ["--only-source", "--workers", "1"]
        _preprocess([*common, "--trainpref", str(raw / "train.input0"), "--validpref",
                     str(raw / "valid.input0"), "--destdir", str(out / "input0")])
        if kind == "cls":
            _preprocess([*common, "--trainpref", str(raw / "train.label"), "--validpref",
                         str(raw / "valid.label"), "--destdir", str(out / "label")])
        else:
            _preprocess([*common, "--trainpref", str(raw / "train.input1"), "--validpref",
                         str(raw / "valid.input1"), "--destdir", str(out / "input1"),
                         "--srcdict", str(out / "input0" / "dict.txt")])
            (out / "label").mkdir(exist_ok=True)
            for split in ("train", "valid"):
                shutil.copy(raw / f"{split}.label", out / "label" / f"{split}.label")
        _CACHE[key] = str(out)
    return _CACHE[key]


def task_flags(kind: str = "cls"):
    if kind == "cls":
        return [*SP, "--num-classes", "2"]
    return [*SP, "--num-classes", "1", "--regression-target"]


# ---------------------------------------------------------------------------- in-process models
def parse(data: str, extra):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [data, "--cpu", *extra])
    return convert_namespace_to_omegaconf(args)


def build(data: str, extra, criterion: bool = True):
    """(cfg, task, model, criterion or None) built from a fairseq-train command line."""
    from fairseq import tasks

    cfg = parse(data, extra)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    crit = task.build_criterion(cfg.criterion) if criterion else None
    return cfg, task, model, crit


def save_checkpoint(path, cfg, model):
    """Write ``model`` as fairseq's trainer does (cfg as a container, model state dict)."""
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    state = {"args": None,
             "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
             "model": model.state_dict(), "criterion": None,
             "optimizer_history": [{"criterion_name": "SentencePredictionCriterion",
                                    "optimizer_name": "FairseqAdam",
                                    "lr_scheduler_state": {"best": None}, "num_updates": 0}],
             "task_state": {}, "extra_state": {"train_iterator": {"epoch": 1}}}
    checkpoint_utils.torch_persistent_save(state, str(path))
    return str(path)


def make_teacher(name: str, extra, kind: str = "cls", data=None) -> str:
    """A randomly initialised teacher checkpoint built in-process for ``data`` (default:
    ``data_dir(kind)``), cached by ``name`` and ``data``."""
    data = str(data) if data is not None else data_dir(kind)
    key = f"teacher_{name}:{data}"
    if key not in _CACHE:
        torch.manual_seed(zlib.crc32(name.encode()) % 1000)
        cfg, _, model, _ = build(data, [*task_flags(kind), "--criterion",
                                        "sentence_prediction", *extra], criterion=False)
        path = workdir() / f"teacher_{name}_{zlib.crc32(data.encode()):08x}.pt"
        _CACHE[key] = save_checkpoint(path, cfg, model)
    return _CACHE[key]


def trained_teacher() -> str:
    """A tiny FP roberta fine-tuned by a real fairseq-train run (plain fairseq, no plugin)."""
    if "trained_teacher" not in _CACHE:
        save = workdir() / "trained_teacher"
        cmd = [FAIRSEQ_TRAIN, data_dir("cls"), *SP, "--num-classes", "2", *ROBERTA_TINY,
               "--criterion", "sentence_prediction", "--optimizer", "adam", "--lr", "1e-3",
               "--batch-size", "16", "--max-update", "30", "--cpu", "--save-dir", str(save),
               "--no-epoch-checkpoints", "--disable-validation",
               "--log-format", "simple", "--seed", "1", "--num-workers", "0"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(),
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        _CACHE["trained_teacher"] = str(save / "checkpoint_last.pt")
    return _CACHE["trained_teacher"]


def kd_flags(teacher: str, parts: str = "trm,logits", *more):
    return ["--criterion", "kd_sentence_prediction", "--teacher-path", teacher,
            "--kd-parts", parts, *more]


def load_teacher_weights(model, teacher_path: str):
    """Copy a FP teacher checkpoint's weights into a quant_roberta student (strict; the
    quantizer state an FP checkpoint lacks is added uninitialised, as fairseq loads it)."""
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(teacher_path)
    model.load_state_dict(state["model"], strict=True)
    return model


def batch(task, split: str = "valid", n: int = 8, indices=None):
    """A collated batch of ``split`` (loads the split on first use)."""
    if split not in task.datasets:
        task.load_dataset(split)
    dataset = task.dataset(split)
    indices = list(range(n)) if indices is None else list(indices)
    return dataset.collater([dataset[i] for i in indices])


def add_padding(sample, pad: int, columns: int):
    """The same batch with ``columns`` extra padding columns on the right."""
    sample = dict(sample)
    net_input = dict(sample["net_input"])
    src = net_input["src_tokens"]
    net_input["src_tokens"] = torch.cat([src, src.new_full((src.size(0), columns), pad)], dim=1)
    sample["net_input"] = net_input
    return sample
