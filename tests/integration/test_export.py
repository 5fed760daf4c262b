"""qbert-export on tiny quant_roberta models: exported logits vs the fake-quant model for every
quantizer kind and group combination, the integer GEMMs in ORT's optimized graph, and the
command lines (qbert-export --verify, qbert-predict) end to end, with their errors."""
import os
import subprocess
import sys

import kd_fixtures as K
import numpy as np
import onnx
import pytest
import torch
from conftest import REPO_DIR
from contracts.cases import EXPORT_MODEL_CASES

from fairseq_qbert.export.convert import to_export
from fairseq_qbert.models.standalone import HEAD, build_model
from qbert.export import build_torch_model, create_session, load, write_export

FAKE_QUANT_INT_OPS = {"MatMulInteger", "DynamicQuantizeLinear"}  # never the A8 path


def tokens(seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(4, 100, (5, 17), generator=g)
    t[:, 0] = 0
    t[1, 12:] = 1
    t[3, 6:] = 1
    return t


def ready_model(flags, seed=0):
    """A tiny model whose quantizers are initialised by one training forward, in eval mode."""
    torch.manual_seed(seed)
    model = build_model("quant_roberta_tiny", flags, vocab_size=100)
    model.train()
    with torch.no_grad():
        model(tokens(seed + 1), features_only=True, classification_head_name=HEAD)
    return model.eval()


def fake_quant_logits(model, t):
    with torch.no_grad():
        return model(t, features_only=True, classification_head_name=HEAD)[0]


def optimized_ops(onnx_path, tmp_path):
    opt = str(tmp_path / "optimized.onnx")
    session = create_session(onnx_path, threads=1, optimized_model_path=opt)
    return session, {n.op_type for n in onnx.load(opt).graph.node}


@pytest.mark.parametrize("name", list(EXPORT_MODEL_CASES))
def test_export_reproduces_fake_quant_logits(name, tmp_path):
    flags = EXPORT_MODEL_CASES[name]
    model = ready_model(flags)
    t = tokens()
    ref = fake_quant_logits(model, t)
    out = write_export(to_export(model, HEAD), str(tmp_path / "ex"))
    export = load(out)
    with torch.no_grad():
        got = build_torch_model(export)(t)
    assert torch.equal(got, ref), (got - ref).abs().max()  # same grid values, same ops
    session, ops = optimized_ops(os.path.join(out, "model.onnx"), tmp_path)
    logits = session.run(["logits"], {"src_tokens": t.numpy()})[0]
    assert np.abs(logits - ref.numpy()).max() <= 1e-5 * max(1.0, ref.abs().max().item())
    assert (logits.argmax(-1) == ref.numpy().argmax(-1)).all()
    assert not ops & FAKE_QUANT_INT_OPS
    if "--act-bits" in flags:
        assert "MatMulIntegerToFloat" in ops and "QuantizeLinear" in ops, ops
    else:
        assert "MatMulIntegerToFloat" not in ops and "DynamicQuantizeMatMul" not in ops
    if "EMB" in " ".join(flags):
        assert export.weights["encoder.sentence_encoder.embed_tokens.weight"].codes.dtype == torch.int8


def test_a8_graph_runs_every_quantized_linear_as_integer_gemm(tmp_path):
    model = ready_model(EXPORT_MODEL_CASES["lsq-w4a8-head"])
    out = write_export(to_export(model, HEAD), str(tmp_path / "ex"))
    _, ops = optimized_ops(os.path.join(out, "model.onnx"), tmp_path)
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    int_gemms = [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert len(int_gemms) == 2 * 6 + 2  # q, k, v, out, fc1, fc2 per layer; the head's two
    assert "MultiHeadAttention" in ops and "SkipLayerNormalization" not in ops
    assert not {"MatMul", "Gemm", "FusedGemm", "BiasGelu"} & ops, ops


@pytest.mark.parametrize("option,op", [("fast", "DynamicQuantizeMatMul"), ("nbits", "MatMulNBits")])
def test_weight_only_fast_and_nbits(option, op, tmp_path):
    model = ready_model(EXPORT_MODEL_CASES["lsq-w4"])
    t = tokens()
    ref = fake_quant_logits(model, t).numpy()
    kwargs = {"mode": "fast"} if option == "fast" else {"nbits": True}
    out = write_export(to_export(model, HEAD), str(tmp_path / "ex"), **kwargs)
    session, ops = optimized_ops(os.path.join(out, "model.onnx"), tmp_path)
    assert op in ops, ops
    logits = session.run(["logits"], {"src_tokens": t.numpy()})[0]
    tol = 0.05 if option == "fast" else 1e-5  # fast: activations quantized on the fly
    assert np.abs(logits - ref).max() <= tol * max(1.0, np.abs(ref).max())


# ------------------------------------------------------------------ command lines
def cli(module, *argv):
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=REPO_DIR, capture_output=True,
                          text=True, env=K.subprocess_env(), timeout=300)


@pytest.fixture(scope="module")
def qat_checkpoint():
    """The trained tiny teacher (a real fairseq-train run) as a W4A8 quant_roberta checkpoint,
    its quantizers initialised on a training batch."""
    data = K.data_dir("cls")
    flags = [*K.task_flags("cls"), "--criterion", "sentence_prediction", "--arch", "quant_roberta", *K.TINY,
             "--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4", "--act-bits", "8"]
    cfg, task, model, _ = K.build(data, flags, criterion=False)
    K.load_teacher_weights(model, K.trained_teacher())
    model.train()
    with torch.no_grad():
        model(**K.batch(task, "train", 32)["net_input"], features_only=True, classification_head_name=HEAD)
    return K.save_checkpoint(K.workdir() / "export_w4a8.pt", cfg, model.eval()), data


def test_export_verify_and_predict_end_to_end(qat_checkpoint, tmp_path):
    checkpoint, data = qat_checkpoint
    out = tmp_path / "w4a8"
    proc = cli("fairseq_qbert.export.cli", checkpoint, "--out", out, "--verify", data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prediction agreement 100.00%" in proc.stdout, proc.stdout
    assert "x of fp32" in proc.stdout and "accuracy: fake-quant fairseq" in proc.stdout
    raw = tmp_path / "raw.tsv"
    raw.write_text("w1 w2 w3 w4\nw5 w0 w17\nw3\n")
    pred = cli("qbert.export.predict", out, "--input", raw)
    assert pred.returncode == 0, pred.stderr
    rows = [r.split("\t") for r in pred.stdout.splitlines()]
    assert rows[0][0] == "label" and len(rows[0]) == 3 and len(rows) == 4
    # the same sentences through fairseq's own pipeline give the same predictions
    from fairseq.data import Dictionary

    from fairseq_qbert.export.convert import load_fake_quant

    model, _, head = load_fake_quant(checkpoint)
    d = Dictionary.load(os.path.join(data, "input0", "dict.txt"))
    d.add_symbol("<mask>")
    labels = Dictionary.load(os.path.join(data, "label", "dict.txt"))
    for row, line in zip(rows[1:], raw.read_text().splitlines(), strict=True):
        ids = torch.cat([torch.tensor([0]), d.encode_line(line, append_eos=True, add_if_not_exist=False).long()])
        with torch.no_grad():
            logits = model(ids[None], features_only=True, classification_head_name=head)[0]
        assert row[0] == labels[int(logits.argmax()) + labels.nspecial]


def test_fp_roberta_checkpoint_exports_unquantized(tmp_path):
    out = tmp_path / "fp"
    proc = cli("fairseq_qbert.export.cli", K.trained_teacher(), "--out", out, "--verify", K.data_dir("cls"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "full precision" in proc.stdout and "agreement 100.00%" in proc.stdout
    assert load(str(out)).weights == {}


def _edited_checkpoint(src, dst, edit):
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    from fairseq_qbert.checkpoint_loading import load_checkpoint_to_cpu

    state = load_checkpoint_to_cpu(src)
    state["cfg"] = OmegaConf.to_container(state["cfg"], resolve=True)
    edit(state)
    checkpoint_utils.torch_persistent_save(state, str(dst))
    return dst


def _no_heads(state):
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("classification_heads.")}


def _other_arch(state):
    model = state["cfg"]["model"]  # a Namespace in fairseq's argparse-built configs
    for key in ("_name", "arch"):
        if isinstance(model, dict):
            model[key] = "transformer"
        else:
            setattr(model, key, "transformer")


def export_main(*argv):
    """qbert-export's main in-process; (exit code, one-line message or "")."""
    from fairseq_qbert.export.cli import main

    try:
        return main([str(a) for a in argv]), ""
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1, str(e)


@pytest.mark.parametrize("edit,argv,message", [
    (_other_arch, [], "is not a RoBERTa-family model"),
    (_no_heads, [], "no classification head"),
    (None, ["--head-name", "nope"], "--head-name nope: the checkpoint has no such classification head"),
])
def test_errors_are_one_line_and_write_nothing(qat_checkpoint, tmp_path, edit, argv, message):
    checkpoint = qat_checkpoint[0]
    if edit is not None:
        checkpoint = _edited_checkpoint(checkpoint, tmp_path / "edited.pt", edit)
    out = tmp_path / "out"
    code, text = export_main(checkpoint, "--out", out, *argv)
    assert code == 1 and message in text and "\n" not in text, text
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out")]


def test_nonempty_out_refused_then_forced(qat_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, text = export_main(qat_checkpoint[0], "--out", out)
    assert code == 1 and "exists and is not empty" in text
    assert os.listdir(out) == ["notes.txt"]
    assert export_main(qat_checkpoint[0], "--out", out, "--force") == (0, "")
    assert "model.onnx" in os.listdir(out) and "notes.txt" not in os.listdir(out)
