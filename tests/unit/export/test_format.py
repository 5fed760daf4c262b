"""The export folder: safetensors + config.json round trip, no pickle, all-or-nothing writes, errors."""
import json
import os

import numpy as np
import pytest
import torch
from export_fixtures import random_export, write_tiny_export

from qbert.errors import ConfigError, DataError
from qbert.export import build_torch_model, load, read_config, write_export
from qbert.export.format import QuantInput


@pytest.mark.parametrize("bits,act", [(0, 0), (8, 8), (4, 0), (3, 8), (2, 4)])
def test_round_trip_keeps_codes_scales_and_logits(tmp_path, bits, act):
    ex = random_export(bits, act)
    out = write_tiny_export(tmp_path / "ex", ex)
    back = load(out)
    assert set(back.weights) == set(ex.weights) and set(back.inputs) == set(ex.inputs)
    for name, w in ex.weights.items():
        assert torch.equal(back.weights[name].codes.long(), w.codes.long())
        assert torch.equal(back.weights[name].dequantized(), w.dequantized())
    tokens = torch.tensor([[0, 5, 6, 7, 2, 1], [0, 9, 2, 1, 1, 1]])
    with torch.no_grad():
        assert torch.equal(build_torch_model(back)(tokens), build_torch_model(ex)(tokens))
    names = os.listdir(out)
    assert sorted(names) == ["config.json", "dict.txt", "labels.txt", "model.onnx", "model.safetensors"]
    with open(os.path.join(out, "model.safetensors"), "rb") as f:
        assert b"\x80\x04" not in f.read(64)  # safetensors header, not a pickle
    if bits:
        config = read_config(out)
        spec = config["weights"][next(iter(ex.weights))]
        assert spec["bits"] == bits and spec["offset"] == 2 ** (bits - 1)


def test_packed_size_follows_bits(tmp_path):
    sizes = {b: os.path.getsize(os.path.join(write_tiny_export(tmp_path / f"w{b}", bits_export(b)),
                                             "model.safetensors")) for b in (8, 4, 2)}
    assert sizes[8] > sizes[4] > sizes[2]


def bits_export(bits):
    return random_export(bits, dim=64)


def test_activation_bits_above_8_refused(tmp_path):
    ex = random_export(8, 8)
    name = next(iter(ex.inputs))
    ex.inputs[name] = QuantInput(torch.tensor([0.01]), 9, True, -256, 255)
    with pytest.raises(ConfigError, match="activation bits 9 are above 8"):
        write_export(ex, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out") and os.listdir(tmp_path) == []


def test_nonempty_out_dir_refused_unless_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        write_export(random_export(), str(out))
    assert os.listdir(out) == ["keep.txt"]
    write_export(random_export(), str(out), force=True)
    assert "keep.txt" not in os.listdir(out) and "model.onnx" in os.listdir(out)
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import qbert.export.writer as writer

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "save_onnx", boom)
    with pytest.raises(OSError):
        write_export(random_export(), str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []


def test_not_an_export(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        read_config(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="no config.json"):
        read_config(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(DataError, match="not a qbert-export config"):
        read_config(str(tmp_path))


def test_onnx_matches_torch_model(tmp_path):
    from qbert.export import OnnxClassifier

    ex = random_export(8, 8, seed=3)
    out = write_tiny_export(tmp_path / "ex", ex)
    tokens = np.array([[0, 5, 6, 7, 8, 2], [0, 9, 2, 1, 1, 1]])
    got = OnnxClassifier(out, threads=1).logits(tokens)
    with torch.no_grad():
        ref = build_torch_model(ex)(torch.from_numpy(tokens)).numpy()
    assert np.abs(got - ref).max() < 1e-5
