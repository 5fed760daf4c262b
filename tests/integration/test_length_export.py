"""A length configuration baked into the ONNX export (qbert.export.length): the graph keeps the
tokens the fairseq model keeps and gives its logits (FP and W8A8, padded batches, sentences
shorter than the configuration), a configuration that never drops a token is the plain
graph, the pure-torch rebuild follows it, and the command lines (qbert-export
--length-config --verify, qbert-predict) with their one-line errors."""
import json
import os
import subprocess
import sys

import kd_fixtures as K
import numpy as np
import onnx
import pytest
import torch
from conftest import REPO_DIR
from export_fixtures import padded_tokens, random_export
from export_fixtures import ready_model as fixtures_ready_model

from fairseq_qbert.export.convert import to_export
from fairseq_qbert.models.length_adaptive import set_length_config
from fairseq_qbert.models.standalone import HEAD
from qbert.errors import ConfigError
from qbert.export import build_onnx, build_torch_model, create_session, load, write_export
from qbert.export import length as export_length

W8A8 = ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "8", "--act-bits", "8"]
KEPT = "encoder.sentence_encoder.layers.{}.length.kept"


def tokens(seed=0):
    """6 x 17 with padding: rows of 17, 12, 6 and 3 tokens (shorter than most configurations)."""
    return padded_tokens(seed, lengths=(17, 12, 17, 6, 17, 3))


def ready_model(flags, seed=0):
    return fixtures_ready_model(flags, seed, tokens=tokens)


def fairseq_run(model, t, config, monkeypatch):
    """(logits, kept positions of every selecting layer) of the fairseq model under ``config``."""
    from fairseq_qbert.models import length_adaptive

    kept = []
    original = length_adaptive.select_tokens

    def spy(scores, keep, padding_mask=None):
        kept.append(original(scores, keep, padding_mask))
        return kept[-1]

    monkeypatch.setattr(length_adaptive, "select_tokens", spy)
    set_length_config(model, config)
    try:
        with torch.no_grad():
            logits = model(t, features_only=True, classification_head_name=HEAD)[0]
    finally:
        set_length_config(model, None)
        monkeypatch.undo()
    return logits, kept


def onnx_run(model_proto, t, tmp_path, outputs=()):
    """logits and ``outputs`` (intermediate tensors made graph outputs) from ORT."""
    model_proto = onnx.ModelProto.FromString(model_proto.SerializeToString())
    for name in outputs:
        model_proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    path = str(tmp_path / f"m{len(os.listdir(tmp_path))}.onnx")
    onnx.save(model_proto, path)
    session = create_session(path, threads=1)
    return session.run(["logits", *outputs], {"src_tokens": t.numpy()})


@pytest.mark.parametrize("flags", [[], W8A8], ids=["fp", "w8a8"])
@pytest.mark.parametrize("config", [(10, 4), (3, 2), (5, 5), (100, 9), (17, 1)])
def test_onnx_export_with_a_configuration_agrees_with_fairseq(flags, config, tmp_path, monkeypatch):
    model = ready_model(flags)
    t = tokens()
    plain = model(t, features_only=True, classification_head_name=HEAD)[0].detach()
    ref, kept = fairseq_run(model, t, config, monkeypatch)
    assert kept, "the fairseq model selected nothing"
    set_length_config(model, config)
    export = to_export(model, HEAD)
    set_length_config(model, None)
    assert export.arch["length_config"] == list(config)
    selecting = sorted(export_length.reducing_layers(config, 128))
    names = [KEPT.format(i) for i in selecting]
    got, *positions = onnx_run(build_onnx(export), t, tmp_path, names)
    # the same tokens as the fairseq model wherever it selects (which padding positions fill a
    # row shorter than l_i does not matter: they stay padding); elsewhere every token, in order
    length, theirs, real = t.shape[1], iter(kept), t.ne(1).sum(1).tolist()
    for i, mine in zip(selecting, positions, strict=True):
        if config[i] < length:
            other = next(theirs).numpy()
            for row, n in enumerate(real):  # real tokens come first, pads after (both sorted)
                assert np.array_equal(mine[row, :n], other[row, :n]), (i, row)
            length, real = config[i], [min(n, config[i]) for n in real]
        else:
            assert np.array_equal(mine, np.broadcast_to(np.arange(length), mine.shape)), i
    assert next(theirs, None) is None
    assert (got.argmax(-1) == ref.numpy().argmax(-1)).all()
    assert np.abs(got - ref.numpy()).max() <= 1e-5 * max(1.0, ref.abs().max().item())
    if config in ((10, 4), (3, 2)):  # the configuration matters (else the test proves nothing)
        assert (ref - plain).abs().max() > 1e-4
    with torch.no_grad():  # the pure-torch rebuild of the export follows the configuration too
        torch_logits = build_torch_model(export)(t)
    assert torch.equal(torch_logits, ref), (torch_logits - ref).abs().max()


@pytest.mark.parametrize("flags", [[], W8A8], ids=["fp", "w8a8"])
def test_full_length_configuration_is_the_plain_graph(flags, tmp_path):
    model = ready_model(flags)
    t = tokens()
    plain = build_onnx(to_export(model, HEAD))
    set_length_config(model, (128, 128))
    full_export = to_export(model, HEAD)
    set_length_config(model, None)
    assert full_export.arch["length_config"] == [128, 128]
    full = build_onnx(full_export)
    assert [n.op_type for n in full.graph.node] == [n.op_type for n in plain.graph.node]
    assert np.array_equal(onnx_run(full, t, tmp_path)[0], onnx_run(plain, t, tmp_path)[0])
    # keeping at least the batch's length everywhere selects every token: same logits
    export = to_export(model, HEAD)
    export_length.set_length_config(export, (t.shape[1], t.shape[1]))
    assert np.array_equal(onnx_run(build_onnx(export), t, tmp_path)[0], onnx_run(plain, t, tmp_path)[0])


def test_configuration_is_recorded_and_reloaded(tmp_path):
    export = random_export(weight_bits=8, act_bits=8)
    assert export_length.set_length_config(export, "(9, 4)") == (9, 4)
    out = write_export(export, str(tmp_path / "ex"))
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["arch"]["length_config"] == [9, 4]
    back = load(out)
    assert back.arch["length_config"] == [9, 4]
    ops = [n.op_type for n in onnx.load(os.path.join(out, "model.onnx")).graph.node]
    assert ops.count("TopK") == 4 and ops.count("GatherND") == 2
    assert export_length.set_length_config(export, None) is None and "length_config" not in export.arch


@pytest.mark.parametrize("config, message", [
    ("(9,4,2)", "--length-config (9,4,2): 3 values for a model with 2 layers"),
    ("(4,9)", "--length-config (4,9): increasing at layer 2"),
    ("(4,0)", "--length-config (4,0): token counts must be >= 1"),
    ("(40,4)", "--length-config (40,4): 40 tokens is above the model's maximum of 32 positions"),
    ("(a,b)", "--length-config '(a,b)': expected comma-separated token counts"),
])
def test_bad_configurations_are_one_line_errors(config, message):
    export = random_export()
    with pytest.raises(ConfigError) as e:
        export_length.set_length_config(export, config)
    assert str(e.value.message).startswith(message) and "\n" not in e.value.message
    assert "length_config" not in export.arch
    export.arch["length_config"] = [4, 9]  # a tampered config.json
    with pytest.raises(ConfigError, match="arch.length_config"):
        build_onnx(export)


# ------------------------------------------------------------------ command lines
def cli(module, *argv):
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=REPO_DIR, capture_output=True,
                          text=True, env=K.subprocess_env(), timeout=300)


@pytest.fixture(scope="module")
def w8a8_checkpoint():
    """A tiny W8A8 quant_roberta sentence-prediction checkpoint (quantizers initialised)."""
    data = K.data_dir("cls")
    cfg, task, model, _ = K.build(data, [*K.task_flags("cls"), "--criterion", "sentence_prediction",
                                         "--arch", "quant_roberta", *K.TINY, *W8A8], criterion=False)
    model.train()
    with torch.no_grad():
        model(**K.batch(task, "train", 32)["net_input"], features_only=True, classification_head_name=HEAD)
    return K.save_checkpoint(K.workdir() / "length_export_w8a8.pt", cfg, model.eval()), data


def test_export_verify_and_predict_with_a_configuration(w8a8_checkpoint, tmp_path):
    checkpoint, data = w8a8_checkpoint
    out = tmp_path / "la"
    proc = cli("fairseq_qbert.export.cli", checkpoint, "--out", out, "--verify", data,
               "--length-config", "(6,3)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "length configuration (6,3) baked into model.onnx" in proc.stdout
    assert "prediction agreement 100.00%" in proc.stdout, proc.stdout
    assert load(str(out)).arch["length_config"] == [6, 3]
    raw = tmp_path / "raw.tsv"
    raw.write_text("w1 w2 w3 w4 w5 w6 w7 w8 w9\nw5 w0 w17\nw3\n")
    pred = cli("qbert.export.predict", out, "--input", raw)
    assert pred.returncode == 0, pred.stderr
    assert "length configuration (6,3)" in pred.stderr
    assert len(pred.stdout.splitlines()) == 4


@pytest.mark.parametrize("config, message", [
    ("(6,3,1)", "--length-config (6,3,1): 3 values for a model with 2 layers"),
    ("(3,6)", "--length-config (3,6): increasing at layer 2"),
    ("(0,0)", "--length-config (0,0): token counts must be >= 1"),
    ("(129,3)", "--length-config (129,3): 129 tokens is above the model's maximum of 128 positions"),
])
def test_export_refuses_bad_configurations_and_writes_nothing(w8a8_checkpoint, tmp_path, config, message):
    out = tmp_path / "la"
    proc = cli("fairseq_qbert.export.cli", w8a8_checkpoint[0], "--out", out, "--length-config", config)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".la")]


def test_a_checkpoint_saved_with_a_configuration_exports_it_unless_told_otherwise(w8a8_checkpoint, tmp_path):
    from fairseq import checkpoint_utils

    from fairseq_qbert.checkpoint_loading import load_checkpoint_to_cpu
    from fairseq_qbert.export.convert import export_checkpoint

    state = load_checkpoint_to_cpu(w8a8_checkpoint[0])
    state["cfg"]["model"].length_config = "(7,2)"  # as fairseq-train --length-config saves it
    saved = tmp_path / "saved.pt"
    checkpoint_utils.torch_persistent_save(state, str(saved))
    _, export, model, _ = export_checkpoint(str(saved), str(tmp_path / "own"))
    assert export.arch["length_config"] == [7, 2]
    assert model.encoder.sentence_encoder.length_config == (7, 2)  # what --verify runs
    _, export, model, _ = export_checkpoint(str(saved), str(tmp_path / "none"), length_config="none")
    assert "length_config" not in export.arch and model.encoder.sentence_encoder.length_config is None
    _, export, _, _ = export_checkpoint(str(saved), str(tmp_path / "other"), length_config="(5,5)")
    assert load(str(tmp_path / "other")).arch["length_config"] == [5, 5]
