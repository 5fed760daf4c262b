"""HF -> fairseq -> HF on tiny locally made models: logits equal on raw text (each side its
own tokenizer), and one end-to-end QAT run of an imported classifier exported back."""
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import hf_fixtures as hf  # noqa: E402
from conftest import REPO_DIR  # noqa: E402

from qbert.hf import export_hf, import_hf  # noqa: E402

TOL = 1e-4
MEASURED = {}  # name -> max abs logit difference (printed at the end with -s)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from qbert.data import mini_glue

    root = tmp_path_factory.mktemp("hf")
    glue = str(root / "glue")
    mini_glue.generate(glue, "SST-2,RTE,STS-B", seed=1, train_size=120, dev_size=40, test_size=10)
    singles = hf.glue_sentences(glue, "SST-2", 0)
    rte = [(a, b) for a, b in zip(hf.glue_sentences(glue, "RTE", 1), hf.glue_sentences(glue, "RTE", 2), strict=True)]
    corpus = singles + [s for pair in rte for s in pair]
    return {"root": root, "glue": glue, "singles": singles[:6], "pairs": rte[:6],
            "tok": {"roberta": hf.roberta_tokenizer(corpus), "bert": hf.bert_tokenizer(corpus)}}


CASES = {  # name: (family, HF class, num_labels, layer_norm_eps)
    "roberta-cls": ("roberta", "RobertaForSequenceClassification", 3, None),  # HF's default 1e-12
    "roberta-reg": ("roberta", "RobertaForSequenceClassification", 1, 1e-5),  # roberta-base's: fairseq roberta
    "bert-cls": ("bert", "BertForSequenceClassification", 2, None),
    "bert-reg": ("bert", "BertForSequenceClassification", 1, None),
}


@pytest.fixture(scope="module")
def imported(world):
    """{case: (hf_dir, import_dir)} -- every case built and imported once."""
    out = {}
    for i, (name, (family, arch, labels, eps)) in enumerate(CASES.items()):
        hf_dir = str(world["root"] / f"{name}-hf")
        hf.make_hf_model(hf_dir, family, arch, world["tok"][family], num_labels=labels, seed=i, eps=eps)
        out[name] = (hf_dir, import_hf(hf_dir, str(world["root"] / f"{name}-fs")))
    return out


def _max_diff(name, a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    MEASURED[name] = diff
    print(f"{name}: max |logit diff| = {diff:.2e}")
    return diff


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("pairs", [False, True], ids=["single", "pair"])
def test_imported_logits_equal_hf(world, imported, case, pairs):
    hf_dir, fs_dir = imported[case]
    first = [p[0] for p in world["pairs"]] if pairs else world["singles"]
    second = [p[1] for p in world["pairs"]] if pairs else None
    expected = hf.hf_logits(hf_dir, first, second)
    got = hf.fairseq_logits(fs_dir, first, second)
    assert _max_diff(f"import {case} {'pair' if pairs else 'single'}", got, expected) <= TOL


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_hf_fairseq_hf(world, imported, case):
    hf_dir, fs_dir = imported[case]
    back = str(world["root"] / f"{case}-back")
    export_hf(os.path.join(fs_dir, "model.pt"), back, tokenizer_dir=os.path.join(fs_dir, "hf_tokenizer"))
    config = json.load(open(os.path.join(back, "config.json")))
    assert config["architectures"] == [CASES[case][1]]
    assert config["qbert_quantization"] == {"quantized": False}
    for first, second in ((world["singles"], None),
                          ([p[0] for p in world["pairs"]], [p[1] for p in world["pairs"]])):
        expected = hf.hf_logits(hf_dir, first, second)
        got = hf.hf_logits(back, first, second)
        assert _max_diff(f"round trip {case} {'pair' if second else 'single'}", got, expected) <= TOL


def test_masked_lm_import_keeps_lm_head(world):
    """RobertaForMaskedLM: the tied LM head gives HF's token logits (non-padded positions)."""
    hf_dir = str(world["root"] / "mlm-hf")
    hf.make_hf_model(hf_dir, "roberta", "RobertaForMaskedLM", world["tok"]["roberta"], seed=7)
    fs_dir = import_hf(hf_dir, str(world["root"] / "mlm-fs"))
    texts = world["singles"]
    expected = hf.hf_logits(hf_dir, texts, arch="AutoModelForMaskedLM")
    got = hf.fairseq_logits(fs_dir, texts, head=None)
    tokens, _ = hf.fairseq_tokens(fs_dir, texts)
    keep = tokens.ne(1)
    assert _max_diff("import roberta-mlm tokens", got[keep], expected[keep]) <= TOL


def _train(data_bin, save_dir, import_dir):
    """QAT from the imported checkpoint with the flags hf_import.json gives."""
    flags = json.load(open(os.path.join(import_dir, "hf_import.json")))["fairseq_train_flags"]
    cmd = [sys.executable, "-m", "fairseq_cli.train", data_bin, "--user-dir", os.path.join(REPO_DIR, "fairseq_qbert"),
           "--task", "sentence_prediction", "--criterion", "sentence_prediction", *flags,
           "--finetune-from-model", os.path.join(import_dir, "model.pt"),
           "--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4",
           "--optimizer", "adam", "--lr", "1e-4", "--batch-size", "16", "--max-update", "3",
           "--cpu", "--save-dir", save_dir, "--no-epoch-checkpoints", "--disable-validation",
           "--log-format", "simple", "--seed", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return os.path.join(save_dir, "checkpoint_last.pt")


def _validate(data_bin, import_dir, family):
    """fairseq-validate evaluates the imported checkpoint as is (a metric line, exit 0)."""
    task = ["--init-token", "0"] + (["--separator-token", "2"] if family == "roberta" else [])
    cmd = [sys.executable, "-m", "fairseq_cli.validate", data_bin, "--user-dir",
           os.path.join(REPO_DIR, "fairseq_qbert"), "--task", "sentence_prediction", *task,
           "--path", os.path.join(import_dir, "model.pt"), "--criterion", "sentence_prediction",
           "--num-classes", "2", "--valid-subset", "valid", "--batch-size", "16", "--cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "accuracy" in result.stdout + result.stderr


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_end_to_end_import_qat_export(world, family, tmp_path):
    """Import an HF classifier, binarize RTE its way, QAT 3 updates, export, from_pretrained."""
    from fairseq_qbert.data.preprocess_glue import preprocess_task

    T = hf.import_transformers()
    hf_dir = str(tmp_path / "hf")
    arch = "RobertaForSequenceClassification" if family == "roberta" else "BertForSequenceClassification"
    hf.make_hf_model(hf_dir, family, arch, world["tok"][family], num_labels=2, seed=11)
    fs_dir = import_hf(hf_dir, str(tmp_path / "fs"))
    if family == "roberta":
        data = preprocess_task(world["glue"], "RTE", str(tmp_path / "bin"), bpe="gpt2",
                               encoder_json=f"{fs_dir}/encoder.json", vocab_bpe=f"{fs_dir}/vocab.bpe",
                               dict_path=f"{fs_dir}/dict.txt")
        ckpt = _train(data, str(tmp_path / "qat"), fs_dir)
    else:
        data = preprocess_task(world["glue"], "RTE", str(tmp_path / "bin"), bpe="wordpiece",
                               vocab_txt=f"{fs_dir}/vocab.txt", dict_path=f"{fs_dir}/dict.txt")
        ckpt = _train(data, str(tmp_path / "qat"), fs_dir)
    _validate(data, fs_dir, family)

    out = str(tmp_path / "back")
    export_hf(ckpt, out, tokenizer_dir=f"{fs_dir}/hf_tokenizer")
    config = json.load(open(os.path.join(out, "config.json")))
    note = config["qbert_quantization"]
    assert note["quantized"] and note["group_bits"] == {"EMB": 4, "QKV": 4, "FFN": 4}
    model = T.AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True).eval()
    # the exported weights are the dequantized grid: few distinct values per row (4 bits: <= 16)
    fc1 = model.base_model.encoder.layer[0].intermediate.dense.weight
    assert max(len(torch.unique(row)) for row in fc1) <= 16
    # and the HF model computes what the quantized fairseq model computes
    first = [p[0] for p in world["pairs"]]
    second = [p[1] for p in world["pairs"]]
    expected = hf.fairseq_logits(fs_dir, first, second, checkpoint=ckpt)
    got = hf.hf_logits(out, first, second)
    assert _max_diff(f"QAT {family} fairseq vs exported HF", got, expected) <= TOL


@pytest.mark.parametrize("case", ["roberta-cls", "bert-cls"])
def test_imported_checkpoint_loads_as_kd_teacher(imported, case):
    """--teacher-path accepts the import; the BERT teacher keeps BERT's embeddings."""
    from types import SimpleNamespace

    from fairseq.data import Dictionary

    from fairseq_qbert.criterions.teacher import load_teacher

    _, fs_dir = imported[case]
    d = Dictionary.load(os.path.join(fs_dir, "dict.txt"))
    d.add_symbol("<mask>")
    task = SimpleNamespace(source_dictionary=d, cfg=SimpleNamespace(num_classes=CASES[case][2]))
    teacher = load_teacher(os.path.join(fs_dir, "model.pt"), task, "sentence_classification_head", False)
    encoder = teacher.model.encoder.sentence_encoder
    assert hasattr(encoder, "embed_token_types") == case.startswith("bert")
