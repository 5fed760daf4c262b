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


def sparse_export(bits, seed=0):
    """random_export (dim 16) whose FFN weights carry 2:4 masks (codes / values zeroed where pruned)."""
    from qbert.sparse import mask_2to4

    ex = random_export(bits, dim=16, seed=seed)
    for name in [n for n in list(ex.weights) + list(ex.fp) if n.endswith(("fc1.weight", "fc2.weight"))]:
        if name in ex.weights:
            w = ex.weights[name]
            mask = mask_2to4(w.codes.float() + 0.01 * torch.rand(w.codes.shape))  # some kept codes are 0
            w.codes = w.codes * mask
        else:
            mask = mask_2to4(ex.fp[name])
            ex.fp[name] = ex.fp[name] * mask
        ex.masks[name] = mask
    return ex


@pytest.mark.parametrize("bits", [0, 2, 3, 4, 8])
def test_2to4_round_trip_is_exact_and_compact(tmp_path, bits):
    from safetensors.numpy import load_file

    ex = sparse_export(bits)
    assert len(ex.masks) == 4
    out = write_tiny_export(tmp_path / "ex", ex)
    back = load(out)
    assert set(back.masks) == set(ex.masks)
    for name, mask in ex.masks.items():
        assert torch.equal(back.masks[name], mask)
        assert torch.equal(back.weight(name), ex.weight(name))
    stored = load_file(os.path.join(out, "model.safetensors"))
    for name, mask in ex.masks.items():
        rows, cols = mask.shape
        assert stored[name + ".sparse_index"].shape == (rows, cols // 8)
        if bits:  # half the codes, packed at their width
            assert stored[name + ".qcodes"].size == rows * cols // 2 * bits // 8
        else:
            assert name not in stored and stored[name + ".sparse_values"].shape == (rows, cols // 2)
    assert read_config(out)["sparse"] == {n: {"pattern": "2:4", "shape": list(m.shape)} for n, m in ex.masks.items()}
    compact, dense = ex.sparse_bytes()  # bits/2 + 1 index bit per weight instead of bits (fp32: 17 vs 32)
    assert compact / dense == pytest.approx((bits / 2 + 1) / bits if bits else 17 / 32, rel=0.01)  # + scales
    tokens = torch.tensor([[0, 5, 6, 7, 2, 1], [0, 9, 2, 1, 1, 1]])
    with torch.no_grad():
        assert torch.equal(build_torch_model(back)(tokens), build_torch_model(ex)(tokens))


def test_mask_that_is_not_2to4_refused(tmp_path):
    ex = sparse_export(4)
    name = next(iter(ex.masks))
    ex.masks[name] = ex.masks[name].clone()
    ex.masks[name][0, :4] = True
    with pytest.raises(ConfigError, match="is not 2:4"):
        write_export(ex, str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []
