"""qbert-export on tiny quant_roberta models: exported logits vs the fake-quant model for every
quantizer kind and group combination, the integer GEMMs in ORT's optimized graph, and the
command lines (qbert-export --verify, qbert-predict) end to end, with their errors."""
import os
import re
import subprocess
import sys

import kd_fixtures as K
import numpy as np
import onnx
import pytest
import torch
from conftest import REPO_DIR
from contracts.cases import EXPORT_MODEL_CASES
from export_fixtures import padded_tokens, ready_model

from fairseq_qbert.export.convert import to_export
from fairseq_qbert.models.standalone import HEAD, build_model
from qbert.export import build_torch_model, create_session, load, write_export

FAKE_QUANT_INT_OPS = {"MatMulInteger", "DynamicQuantizeLinear"}  # never the A8 path


tokens = padded_tokens


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


def test_nbits_any_k_is_exact(tmp_path):
    """MatMulNBits for K that is not a power of two (FFN 64 -> 96 -> 64: fc2 has K = 96, padded
    to one 128-block) and for K > 128 (several blocks): ORT logits equal the fp32 export's."""
    from qbert.export.onnx_graph import nbits_block_size

    assert [nbits_block_size(k) for k in (8, 16, 48, 64, 96, 200, 768, 3072)] == [16, 16, 64, 64, 128, 128, 128, 128]
    for ffn, flags in ((96, ["--weight-bits", "4"]), (200, ["--weight-bits", "2"]),
                       (96, ["--weight-quantizer", "twn"]), (200, ["--weight-bits", "3", "--lsq-per-channel"])):
        model = ready_model(["--quant-groups", "QKV,FFN,HEAD", "--encoder-ffn-embed-dim", str(ffn), *flags])
        t = tokens()
        ref = fake_quant_logits(model, t).numpy()
        out = write_export(to_export(model, HEAD), str(tmp_path / f"ex{ffn}{flags[-1]}"), nbits=True)
        graph = onnx.load(os.path.join(out, "model.onnx")).graph
        nbits = {n.name: {a.name: a.i for a in n.attribute} for n in graph.node if n.op_type == "MatMulNBits"}
        assert len(nbits) == 2 * 6 + 2 and not [n for n in graph.node if n.op_type == "MatMul"]
        assert nbits["encoder.sentence_encoder.layers.0.fc2"]["K"] == ffn
        assert nbits["encoder.sentence_encoder.layers.0.fc2"]["block_size"] == 128
        session, _ = optimized_ops(os.path.join(out, "model.onnx"), tmp_path)
        logits = session.run(["logits"], {"src_tokens": t.numpy()})[0]
        assert np.abs(logits - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), (ffn, flags)


# ------------------------------------------------------------------ BERT layout
def bert_tokens(seed=0):
    """[CLS] A [SEP] B [SEP] rows (fairseq ids: <s>=0, </s>=2), right-padded with 1."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(4, 100, (5, 17), generator=g)
    t[:, 0] = 0
    for row, (sep, end) in enumerate(((5, 16), (3, 9), (8, 12), (1, 4), (10, 13))):
        t[row, sep] = 2
        t[row, end] = 2
        t[row, end + 1:] = 1
    return t


BERT_CASES = {
    "fp": [],
    "w8a8-emb": ["--quant-groups", "EMB,QKV,FFN,HEAD", "--weight-bits", "8", "--act-bits", "8"],
    "w4-emb-channel": ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4", "--lsq-per-channel"],
    "w2a8-pact": ["--quant-groups", "QKV,FFN", "--weight-bits", "2", "--act-bits", "8", "--act-quantizer", "pact",
                  "--optimizer", "adam"],
}


@pytest.mark.parametrize("name", list(BERT_CASES))
def test_bert_layout_export_reproduces_fake_quant_logits(name, tmp_path):
    torch.manual_seed(0)
    model = build_model("quant_bert_tiny", BERT_CASES[name], vocab_size=100)
    with torch.no_grad():  # non-trivial token-type rows and LayerNorms
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    t = bert_tokens()
    model.train()
    with torch.no_grad():
        model(bert_tokens(1), features_only=True, classification_head_name=HEAD)
    model.eval()
    ref = fake_quant_logits(model, t)
    export = to_export(model, HEAD)
    assert export.arch["family"] == "bert" and export.arch["layer_norm_eps"] == 1e-12
    assert export.has("encoder.sentence_encoder.embed_token_types.weight")
    if "EMB" in " ".join(BERT_CASES[name]):
        assert "encoder.sentence_encoder.embed_token_types.weight" in export.weights
    out = write_export(export, str(tmp_path / "ex"))
    with torch.no_grad():
        got = build_torch_model(load(out))(t)
    assert torch.equal(got, ref), (got - ref).abs().max()
    session, ops = optimized_ops(os.path.join(out, "model.onnx"), tmp_path)
    logits = session.run(["logits"], {"src_tokens": t.numpy()})[0]
    assert np.abs(logits - ref.numpy()).max() <= 1e-5 * max(1.0, ref.abs().max().item())
    # the segment ids follow the first [SEP]: moved, both models move the same way
    moved = t.clone()
    moved[0, 5], moved[0, 2] = 7, 2
    ref_moved = fake_quant_logits(model, moved).numpy()
    got_moved = session.run(["logits"], {"src_tokens": moved.numpy()})[0]
    assert np.abs(got_moved - ref_moved).max() <= 1e-5 * max(1.0, np.abs(ref_moved).max())
    if name == "fp":
        assert not np.allclose(got_moved[0], logits[0], rtol=0, atol=1e-5)


def _wordpiece_files(glue_dir, task, out):
    """A WordPiece vocabulary trained on the task's train sentences, as qbert-import-hf writes
    BERT's: vocab.txt in fairseq order ([CLS] [PAD] [SEP] [UNK] at 0..3) and dict.txt."""
    import tokenizers

    from fairseq_qbert.data.preprocess_glue import extract_split
    from qbert.data.glue_tasks import get_task

    inputs, _ = extract_split(get_task(task), "train", os.path.join(glue_dir, task, "train.tsv"))
    wp = tokenizers.BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator([x for col in inputs for x in col], vocab_size=150, show_progress=False,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    heads = ["[CLS]", "[PAD]", "[SEP]", "[UNK]"]
    rest = [t for t, _ in sorted(wp.get_vocab().items(), key=lambda kv: kv[1]) if t not in heads]
    (out / "vocab.txt").write_text("".join(t + "\n" for t in heads + rest))
    (out / "dict.txt").write_text("".join(("<mask>" if t == "[MASK]" else t) + " 1\n" for t in rest))
    return str(out / "vocab.txt"), str(out / "dict.txt")


def test_bert_wordpiece_export_verify_and_predict_end_to_end(small_glue, tmp_path):
    """A quant_bert W8A8 model on BERT-layout data (qbert-preprocess-glue --bpe wordpiece, pairs
    as [CLS] A [SEP] B [SEP]): qbert-export --bpe wordpiece --verify agrees 100%, and
    qbert-predict on the raw dev sentences gives the fake-quant model's predictions."""
    from fairseq_qbert.data.preprocess_glue import extract_split, preprocess_task
    from fairseq_qbert.export.convert import load_fake_quant
    from qbert.data.glue_tasks import get_task

    task = "RTE"
    vocab, dict_txt = _wordpiece_files(small_glue, task, tmp_path)
    data = preprocess_task(small_glue, task, str(tmp_path / "bin"), bpe="wordpiece", vocab_txt=vocab,
                           dict_path=dict_txt)
    flags = ["--task", "sentence_prediction", "--init-token", "0", "--num-classes", "2", "--criterion",
             "sentence_prediction", "--arch", "quant_bert_tiny", "--quant-groups", "EMB,QKV,FFN,HEAD",
             "--weight-bits", "8", "--act-bits", "8"]
    torch.manual_seed(0)
    cfg, task_obj, model, _ = K.build(data, flags, criterion=False)
    model.train()
    with torch.no_grad():
        for p in model.parameters():  # a less uniform random model than BERT's init
            p.add_(0.05 * torch.randn_like(p))
        model(**K.batch(task_obj, "train", 32)["net_input"], features_only=True, classification_head_name=HEAD)
    checkpoint = K.save_checkpoint(tmp_path / "bert_w8a8.pt", cfg, model.eval())
    out = tmp_path / "bert"
    proc = cli("fairseq_qbert.export.cli", checkpoint, "--out", out, "--verify", data, "--bpe", "wordpiece",
               "--vocab", vocab)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prediction agreement 100.00%" in proc.stdout, proc.stdout
    config = load(str(out)).files
    assert config["bpe"] == "wordpiece" and config["init_token"] == 0 and config["separator_token"] is None
    inputs, _ = extract_split(get_task(task), "dev", os.path.join(small_glue, task, "dev.tsv"))
    raw = tmp_path / "raw.tsv"
    raw.write_text("".join(f"{a}\t{b}\n" for a, b in zip(*inputs, strict=True)))
    pred = cli("qbert.export.predict", out, "--input", raw)
    assert pred.returncode == 0, pred.stderr
    rows = [r.split("\t") for r in pred.stdout.splitlines()][1:]
    fq, _, head = load_fake_quant(checkpoint)
    task_obj.load_dataset("valid")
    dataset = task_obj.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    assert sample["net_input"]["src_tokens"][0, 0] == 0  # [CLS] A [SEP] B [SEP]
    with torch.no_grad():
        logits = fq(sample["net_input"]["src_tokens"], features_only=True, classification_head_name=head)[0]
    labels = task_obj.label_dictionary
    expected = [labels[int(i) + labels.nspecial] for i in logits.argmax(-1)]
    assert len(rows) == len(expected) and [r[0] for r in rows] == expected


# ------------------------------------------------------------------ 2:4 sparsity
SPARSE_CASES = {
    "fp": ["--sparse-groups", "QKV,FFN"],
    "w8a8": ["--sparse-groups", "QKV,FFN,EMB", "--quant-groups", "EMB,QKV,FFN", "--weight-bits", "8",
             "--act-bits", "8"],
    "w4-channel": ["--sparse-groups", "FFN", "--quant-groups", "QKV,FFN", "--weight-bits", "4", "--lsq-per-channel"],
    "twn": ["--sparse-groups", "QKV,FFN", "--quant-groups", "QKV,FFN", "--weight-quantizer", "twn"],
}


@pytest.mark.parametrize("name", list(SPARSE_CASES))
def test_2to4_export_is_compact_and_reproduces_masked_logits(name, tmp_path):
    from safetensors.numpy import load_file

    from qbert.sparse import is_2to4

    model = ready_model(SPARSE_CASES[name])  # masks from the initial weights at the first training forward
    masked = {n + ".weight": m.weight_mask.clone() for n, m in model.named_modules()
              if m._buffers.get("weight_mask") is not None and n.startswith("encoder.")}
    assert masked and all(is_2to4(m) for m in masked.values())
    t = tokens()
    ref = fake_quant_logits(model, t)
    export = to_export(model, HEAD)
    assert set(export.masks) == set(masked)
    out = write_export(export, str(tmp_path / "ex"))
    back = load(out)
    assert set(back.masks) == set(masked)
    for name_, mask in masked.items():
        assert torch.equal(back.masks[name_], mask)
        assert torch.equal(back.weight(name_), export.weight(name_))  # the exact masked (grid) weights
        assert not back.weight(name_)[~mask].any()
    stored = load_file(os.path.join(out, "model.safetensors"))
    some = next(iter(masked))
    rows, cols = masked[some].shape
    assert stored[some + ".sparse_index"].shape == (rows, cols // 8)
    assert (some + ".qcodes" in stored) == (some in export.weights)
    if some not in export.weights:
        assert stored[some + ".sparse_values"].shape == (rows, cols // 2) and some not in stored
    compact, dense = export.sparse_bytes()  # per weight: bits/2 + 1 (index) bits instead of bits
    assert compact == dense if name == "twn" else compact < dense  # 2-bit codes: 1 + 1 = 2 bits
    with torch.no_grad():
        got = build_torch_model(back)(t)
    assert torch.equal(got, ref), (got - ref).abs().max()
    session, _ = optimized_ops(os.path.join(out, "model.onnx"), tmp_path)  # dense masked weights
    logits = session.run(["logits"], {"src_tokens": t.numpy()})[0]
    assert np.abs(logits - ref.numpy()).max() <= 1e-5 * max(1.0, ref.abs().max().item())


# ------------------------------------------------------------------ verify matrix
VERIFY_MATRIX = {
    "W8A8-lsq": ["--weight-bits", "8", "--act-bits", "8"],
    "W8A8-pact": ["--weight-bits", "8", "--act-bits", "8", "--act-quantizer", "pact"],
    "W4A8-lsq": ["--weight-bits", "4", "--act-bits", "8"],
    "W4A8-pact": ["--weight-bits", "4", "--act-bits", "8", "--act-quantizer", "pact"],
    "W2A8-lsq": ["--weight-bits", "2", "--act-bits", "8"],
    "W2A8-pact": ["--weight-bits", "2", "--act-bits", "8", "--act-quantizer", "pact"],
    "W4": ["--weight-bits", "4"],
    "W2": ["--weight-bits", "2"],
    "TWN": ["--weight-quantizer", "twn"],
}


HEAD_OUT = f"classification_heads.{HEAD}.out_proj.weight"


def _task_flags(data):
    from qbert.data.glue_tasks import get_task

    spec = get_task(os.path.basename(data)[:-len("-bin")])
    classes = ["--num-classes", "1", "--regression-target"] if spec.regression else \
        ["--num-classes", str(len(spec.labels))]
    return ["--task", "sentence_prediction", "--init-token", "0", "--separator-token", "2", *classes,
            "--criterion", "sentence_prediction", "--arch", "quant_roberta_tiny", "--optimizer", "adam"]


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread: a 2 x 64 model gains nothing from two, and loses a lot when the
    CPU is shared (measured 6x on a loaded 2-core host)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mini_glue_fp_models(small_glue_bin, one_thread):
    """{task: (data, cfg, a train batch, fp state dict)}: a tiny FP model per mini-GLUE task, trained briefly
    (12 Adam steps of 32 examples at lr 3e-3: past the uniform random init, so its
    predictions depend on the input)."""
    out = {}
    for task, data in small_glue_bin.items():
        torch.manual_seed(0)
        cfg, task_obj, model, _ = K.build(data, _task_flags(data), criterion=False)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        task_obj.load_dataset("train")
        for step in range(12):
            sample = K.batch(task_obj, "train", indices=range(32 * (step % 7), 32 * (step % 7 + 1)))
            logits = model(**sample["net_input"], features_only=True, classification_head_name=HEAD)[0]
            target = sample["target"]
            loss = (torch.nn.functional.mse_loss(logits[:, 0], target.float()) if task == "STS-B" else
                    torch.nn.functional.cross_entropy(logits, target.view(-1)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        out[task] = (data, cfg, K.batch(task_obj, "train", 64),
                     {k: v.detach().clone() for k, v in model.state_dict().items()})
    return out


@pytest.mark.parametrize("init", ["qat-start", "ptq"])
@pytest.mark.parametrize("config", list(VERIFY_MATRIX))
def test_verify_agreement_is_100_percent_on_every_mini_glue_dev_set(config, init, mini_glue_fp_models, tmp_path):
    """Issue #18's target: the briefly trained tiny model of every mini-GLUE task, its
    quantizers initialised from data as QAT starts (``qat-start``: one training-mode forward;
    LSQ's 2 mean|x| / sqrt(Qp) steps clip many activations, PACT's alpha, TWN's threshold)
    or by PTQ (``ptq``: qbert.calib percentile 99.99 calibration on 64 training examples),
    exported and run through --verify's comparison on every dev set (MNLI: matched and
    mismatched), agrees with the fake-quant model on 100% of the predictions."""
    from fairseq_qbert.export.verify import verify
    from qbert.calib import calibrate

    for task, (data, cfg, batch, state) in mini_glue_fp_models.items():
        torch.manual_seed(0)
        classes = state[HEAD_OUT].size(0)
        model = build_model("quant_roberta_tiny", ["--optimizer", "adam", "--quant-groups", "EMB,QKV,FFN",
                                                   *VERIFY_MATRIX[config]],
                            vocab_size=state["encoder.sentence_encoder.embed_tokens.weight"].size(0),
                            num_classes=classes)
        model.load_state_dict(dict(state), strict=True)  # a copy: loading adds the quantizer keys to it
        if init == "ptq":
            calibrate(model, lambda m, b=batch: m(**b["net_input"], features_only=True, classification_head_name=HEAD),
                      method="percentile", percentile=99.99)
        else:
            model.train()
            with torch.no_grad():
                model(**batch["net_input"], features_only=True, classification_head_name=HEAD)
        model.eval()
        out = write_export(to_export(model, HEAD, regression=task == "STS-B"), str(tmp_path / task))
        checkpoint = {"cfg": cfg}  # what verify reads of a checkpoint: its task settings
        for subset in ("valid", "valid1") if task == "MNLI" else ("valid",):
            result = verify(model, checkpoint, out, data, HEAD, subset, batch_size=64, threads=1,
                            min_agreement=0.0)
            assert result.agreement == 100.0, (config, task, subset, result)


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
    # only the tool's own lines: fairseq's import-time basicConfig(level=DEBUG) is overridden
    assert not re.search(r"^(DEBUG|INFO):", proc.stdout + proc.stderr, re.M), proc.stderr[-2000:]
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


def test_sparse_qat_checkpoint_exports_compactly_from_the_command_line(tmp_path, capsys):
    """The trained tiny teacher 2:4-pruned (QKV,FFN: masks computed as the dense weights load)
    as a W8A8 checkpoint: qbert-export prints the compact 2:4 storage and --verify agrees."""
    data = K.data_dir("cls")
    flags = [*K.task_flags("cls"), "--criterion", "sentence_prediction", "--arch", "quant_roberta", *K.TINY,
             "--sparse-groups", "QKV,FFN", "--quant-groups", "EMB,QKV,FFN", "--weight-bits", "8", "--act-bits", "8"]
    cfg, task, model, _ = K.build(data, flags, criterion=False)
    K.load_teacher_weights(model, K.trained_teacher())
    model.train()
    with torch.no_grad():
        model(**K.batch(task, "train", 32)["net_input"], features_only=True, classification_head_name=HEAD)
    checkpoint = K.save_checkpoint(tmp_path / "sparse_w8a8.pt", cfg, model.eval())
    code, text = export_main(checkpoint, "--out", tmp_path / "out", "--verify", data)
    printed = capsys.readouterr().out
    assert code == 0, text
    assert "2:4 sparse: 12 weights stored compactly" in printed and "no 2:4 kernel" in printed, printed
    assert "prediction agreement 100.00%" in printed
    assert len(load(str(tmp_path / "out")).masks) == 12  # q, k, v, out_proj, fc1, fc2 of 2 layers


def test_nonempty_out_refused_then_forced(qat_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, text = export_main(qat_checkpoint[0], "--out", out)
    assert code == 1 and "exists and is not empty" in text
    assert os.listdir(out) == ["notes.txt"]
    assert export_main(qat_checkpoint[0], "--out", out, "--force") == (0, "")
    assert "model.onnx" in os.listdir(out) and "notes.txt" not in os.listdir(out)
