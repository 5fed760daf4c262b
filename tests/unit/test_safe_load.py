"""qbert.safe_load (torch's restricted unpickler + fairseq's types) and its fairseq wiring
(fairseq_qbert.checkpoint_loading), in-process; the fairseq commands: integration/test_safe_loading.py."""
import argparse
import collections
import datetime
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from qbert.errors import CheckpointError, QBertError, UsageError
from qbert.safe_load import (
    FAIRSEQ_SAFE_GLOBALS,
    TRUST_ENV,
    UnsafeCheckpointError,
    allowed_globals,
    refused_global,
    safe_load,
    trust,
    trusted_paths,
)

REPO = Path(__file__).resolve().parents[2]


class RunsCommand:
    """Unpickling it runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture(autouse=True)
def no_trust(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)


def argparse_checkpoint(path, **extra_state):
    """Like fairseq-train's argparse path: cfg containers with cfg["model"] a Namespace."""
    args = argparse.Namespace(arch="roberta", encoder_layers=2, dropout=0.1, _name="roberta")
    state = {"args": None,
             "cfg": {"common": {"seed": 1, "user_dir": None}, "model": args,
                     "task": {"_name": "sentence_prediction", "num_classes": 2}},
             "model": collections.OrderedDict(w=torch.ones(2, 3), b=torch.zeros(3)),
             "optimizer_history": [{"criterion_name": "SentencePredictionCriterion",
                                    "optimizer_name": "FairseqAdam",
                                    "lr_scheduler_state": {"best": 0.5}, "num_updates": 3}],
             "extra_state": {"train_iterator": {"epoch": 1}, "best": 0.5, **extra_state},
             "last_optimizer_state": {"state": {0: {"exp_avg": torch.zeros(3)}}}}
    torch.save(state, path)
    return str(path)


def evil_checkpoint(path, marker):
    torch.save({"args": None, "model": {}, "extra_state": {"x": RunsCommand(f"touch {marker}")}}, path)
    return str(path)


# ---------------------------------------------------------------------------- qbert.safe_load
def test_loads_fairseq_types(tmp_path):
    path = argparse_checkpoint(tmp_path / "a.pt")
    state = safe_load(path)
    assert isinstance(state["cfg"]["model"], argparse.Namespace) and state["cfg"]["model"].encoder_layers == 2
    assert torch.equal(state["model"]["w"], torch.ones(2, 3))
    # roberta.base style: only args
    torch.save({"args": argparse.Namespace(arch="roberta_base"), "model": {"w": torch.ones(1)}},
               tmp_path / "old.pt")
    assert safe_load(tmp_path / "old.pt")["args"].arch == "roberta_base"


def test_loads_a_dictconfig_object(tmp_path):
    """A state re-saved after fairseq's load (cfg is then a DictConfig holding a Namespace)."""
    cfg = OmegaConf.create({"model": argparse.Namespace(arch="roberta"), "optimization": {"lr": [0.1]},
                            "common": {"seed": 1, "user_dir": None}}, flags={"allow_objects": True})
    torch.save({"cfg": cfg, "model": {}}, tmp_path / "dc.pt")
    loaded = safe_load(tmp_path / "dc.pt")["cfg"]
    assert loaded.optimization.lr == [0.1] and loaded.model.arch == "roberta"
    assert OmegaConf.to_container(loaded)["common"] == {"seed": 1, "user_dir": None}


def test_loads_numpy_scalar_metrics_but_not_arrays(tmp_path):
    """fairseq keeps the best metric in extra_state; MRPC's acc_and_f1 comes from numpy,
    so MRPC teachers hold a numpy float."""
    import numpy as np
    scalars = {"best": np.float64(65.2), "f32": np.float32(0.5), "n": np.int64(3), "ok": np.bool_(True)}
    path = argparse_checkpoint(tmp_path / "np.pt", **scalars)
    extra = safe_load(path)["extra_state"]
    assert {k: extra[k] for k in scalars} == scalars
    assert type(extra["best"]) is np.float64 and type(extra["n"]) is np.int64
    torch.save({"model": {}, "extra_state": {"a": np.arange(3)}}, tmp_path / "arr.pt")
    with pytest.raises(UnsafeCheckpointError, match="numpy"):
        safe_load(tmp_path / "arr.pt")


def test_refuses_code_execution_in_one_line(tmp_path):
    marker = tmp_path / "MARKER"
    path = evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_load(path)
    e = info.value
    assert isinstance(e, CheckpointError) and isinstance(e, QBertError)
    assert not marker.exists()
    msg = str(e)
    assert "\n" not in msg
    assert f"refused to unpickle global '{os.system.__module__}.system' from {path}" in msg
    assert "may run arbitrary code" in msg
    assert f"--trust-checkpoint {path}" in msg and f"{TRUST_ENV}={path}" in msg


def test_refuses_other_types_and_the_opt_in_loads_them(tmp_path, monkeypatch):
    path = argparse_checkpoint(tmp_path / "dt.pt", saved_at=datetime.datetime(2024, 5, 1))
    with pytest.raises(UnsafeCheckpointError, match=r"global 'datetime\.datetime'"):
        safe_load(path)
    assert safe_load(path, trusted=True)["extra_state"]["saved_at"].year == 2024
    monkeypatch.setenv(TRUST_ENV, str(tmp_path / "other.pt"))
    with pytest.raises(UnsafeCheckpointError):  # only the files named are trusted
        safe_load(path)
    monkeypatch.setenv(TRUST_ENV, os.pathsep.join([str(tmp_path / "other.pt"), path]))
    assert safe_load(path)["extra_state"]["saved_at"].month == 5
    # a file object is never trusted through the variable
    with open(path, "rb") as f, pytest.raises(UnsafeCheckpointError):
        safe_load(f)


def test_trust_adds_real_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trust("a.pt")
    trust(str(tmp_path / "a.pt"))
    trust("b.pt")
    assert trusted_paths() == [str((tmp_path / "a.pt").resolve()), str((tmp_path / "b.pt").resolve())]


def test_a_broken_file_is_not_called_unsafe(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2)[:-3])
    with pytest.raises(Exception) as info:  # torch's own error, or CheckpointError
        safe_load(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_refused_global_parses_torch_messages():
    assert refused_global(pickle.UnpicklingError(
        "Weights only load failed. ... Trying to load unsupported GLOBAL posix.system whose module "
        "posix is blocked.")) == "global 'posix.system'"
    assert refused_global(pickle.UnpicklingError(
        "Unsupported global: GLOBAL datetime.datetime was not an allowed global by default.")) \
        == "global 'datetime.datetime'"
    assert refused_global(pickle.UnpicklingError("invalid load key, 'x'.")) is None


def test_allow_list_is_scoped_and_keeps_other_codes_globals(tmp_path):
    path = argparse_checkpoint(tmp_path / "a.pt")
    before = set(torch.serialization.get_safe_globals())
    safe_load(path)
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(pickle.UnpicklingError):  # torch's default is untouched
        torch.load(path)
    # a global someone else allowed stays allowed after our load
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        safe_load(path)
        assert argparse.Namespace in torch.serialization.get_safe_globals()
        torch.load(path)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(list(before))
    with allowed_globals(FAIRSEQ_SAFE_GLOBALS):
        assert argparse.Namespace in torch.serialization.get_safe_globals()
    assert set(torch.serialization.get_safe_globals()) == before


def test_plugin_import_keeps_torch_defaults(tmp_path):
    """After importing the plugin, plain torch.load still refuses non-allow-listed globals
    (and even argparse.Namespace: the allow-list is never process-wide), and no
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set."""
    marker = tmp_path / "MARKER"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    plain = argparse_checkpoint(tmp_path / "a.pt")
    code = f"""
import os, pickle, torch
import fairseq_qbert
from fairseq import checkpoint_utils
assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
for path in ({evil!r}, {plain!r}):
    try:
        torch.load(path)
    except pickle.UnpicklingError:
        pass
    else:
        raise SystemExit("torch.load accepted " + path)
checkpoint_utils.load_checkpoint_to_cpu({plain!r})  # the plugin's own loading works
try:
    torch.load({plain!r})
except pickle.UnpicklingError:
    print("OK")
"""
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", TRUST_ENV)}
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr[-3000:]
    assert not marker.exists()


# ---------------------------------------------------------------------------- fairseq wiring
def test_fairseq_loader_is_installed_once():
    from fairseq import checkpoint_utils, options

    import fairseq_qbert  # noqa: F401
    from fairseq_qbert import checkpoint_loading

    assert checkpoint_loading.installed()
    wrapped = options.add_dataset_args
    checkpoint_loading.install()
    assert options.add_dataset_args is wrapped and checkpoint_loading.installed()
    assert checkpoint_utils.load_checkpoint_to_cpu is checkpoint_loading._fairseq_load_checkpoint_to_cpu


def test_fairseq_load_checkpoint_to_cpu(tmp_path):
    from fairseq import checkpoint_utils

    import fairseq_qbert  # noqa: F401
    from fairseq_qbert.checkpoint_loading import load_checkpoint_to_cpu

    state = checkpoint_utils.load_checkpoint_to_cpu(argparse_checkpoint(tmp_path / "a.pt"))
    assert OmegaConf.is_config(state["cfg"]) and state["cfg"].model.arch == "roberta"
    torch.save({"args": argparse.Namespace(arch="roberta_base", max_positions=512, task="masked_lm"),
                "model": {"w": torch.ones(1)},
                "optimizer_history": [{"criterion_name": "MaskedLmLoss", "optimizer_name": "FairseqAdam",
                                       "lr_scheduler_state": {"best": 1.0}, "num_updates": 9}],
                "extra_state": {"train_iterator": {"epoch": 2}}}, tmp_path / "old.pt")
    assert checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "old.pt"))["args"].max_source_positions == 512

    marker = tmp_path / "MARKER"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeCheckpointError):  # the library form
        load_checkpoint_to_cpu(evil)
    with pytest.raises(UsageError) as info:  # what fairseq calls: one line, exit status 1
        checkpoint_utils.load_checkpoint_to_cpu(evil)
    assert str(info.value.code).startswith("fairseq-qbert: error: refused to unpickle global")
    assert not marker.exists()


def test_trust_checkpoint_flag(tmp_path, monkeypatch):
    from fairseq import options

    import fairseq_qbert  # noqa: F401

    path = argparse_checkpoint(tmp_path / "dt.pt", saved_at=datetime.datetime(2024, 5, 1))
    for make, more in ((options.get_validation_parser, []),
                       (options.get_training_parser, ["--arch", "quant_roberta_tiny"])):
        monkeypatch.delenv(TRUST_ENV, raising=False)
        parser = make()
        assert "--trust-checkpoint" in parser.format_help()
        args = options.parse_args_and_arch(parser, [str(tmp_path), "--task", "sentence_prediction", *more,
                                                    "--trust-checkpoint", path])
        assert args.trust_checkpoint == [path]
        assert trusted_paths() == [os.path.realpath(path)]
        assert safe_load(path)["extra_state"]["saved_at"].year == 2024
