"""qbert-import-hf / qbert-export-hf errors: one line, exit 1, nothing half-written."""
import json
import os
import subprocess
import sys

import pytest
import torch
from hf_fixtures import hf_config

from qbert.errors import CheckpointError, ConfigError, DataError
from qbert.hf import cli, compat, export_hf, hfio, import_hf


def write_folder(path, cfg, weights=None):
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    if weights is not None:
        from safetensors.torch import save_file

        save_file(weights, os.path.join(path, "model.safetensors"))
    return str(path)


def test_unsupported_architecture_names_it_and_lists_supported(tmp_path):
    src = write_folder(tmp_path / "hf", hf_config(architectures=["DistilBertForSequenceClassification"]))
    with pytest.raises(ConfigError) as info:
        import_hf(src, str(tmp_path / "out"))
    msg = str(info.value)
    assert "DistilBertForSequenceClassification" in msg and "BertForSequenceClassification" in msg
    assert not os.path.exists(tmp_path / "out")


def test_missing_weights_and_missing_folder(tmp_path):
    src = write_folder(tmp_path / "hf", hf_config())
    with pytest.raises(CheckpointError, match="no weights file"):
        import_hf(src, str(tmp_path / "out"))
    with pytest.raises(DataError, match="no such folder"):
        import_hf(str(tmp_path / "nope"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_config_weights_mismatch(tmp_path):
    src = write_folder(tmp_path / "hf", hf_config(hidden_size=16),
                       {"roberta.embeddings.LayerNorm.weight": torch.ones(8)})
    with pytest.raises(CheckpointError, match="config and weights do not match|the weights have no"):
        import_hf(src, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_existing_out_dir_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(ConfigError, match="exists"):
        import_hf(str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="exists"):
        export_hf(str(tmp_path / "x.pt"), str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == ["keep"]


def test_staged_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with hfio.staged_dir(str(out)) as tmp:
            open(os.path.join(tmp, "model.pt"), "w").write("half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with hfio.staged_dir(str(out)) as tmp:
        open(os.path.join(tmp, "model.pt"), "w").write("whole")
    assert os.listdir(out) == ["model.pt"]


def test_export_of_a_non_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="bad.pt"):
        export_hf(str(bad), str(tmp_path / "out"))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        export_hf(str(tmp_path / "none.pt"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_console_mains_print_one_line_and_exit_1(tmp_path, capsys):
    src = write_folder(tmp_path / "hf", hf_config(architectures=["T5Model"]))
    with pytest.raises(SystemExit) as info:
        cli.import_main([src, "--out", str(tmp_path / "out")])
    assert info.value.code != 0 and str(info.value).count("\n") == 0 and "T5Model" in str(info.value)
    result = subprocess.run([sys.executable, "-c", "from qbert.hf.cli import export_main; export_main()",
                             str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 1
    expected = f"fairseq-qbert: error: {tmp_path / 'none.pt'}: no such checkpoint file"
    assert result.stderr.strip().splitlines() == [expected]


def test_broken_module_is_hidden_as_not_installed(tmp_path, monkeypatch):
    pkg = tmp_path / "qbert_broken_mod"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise OSError('cannot load library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "qbert_broken_mod", raising=False)
    compat._hide_broken("qbert_broken_mod")
    assert sys.modules["qbert_broken_mod"] is None
    import importlib.util

    assert importlib.util.find_spec("qbert_broken_mod") is None
    monkeypatch.delitem(sys.modules, "qbert_broken_mod")
