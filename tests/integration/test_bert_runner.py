"""A BERT through the ablation runner (issue 14): a tiny HF BertForSequenceClassification made
locally, imported with qbert-import-hf, mini-GLUE RTE (pairs) binarized in BERT's layout, then
one family cell (W8 QAT + KD from the imported teacher) with ARCH=quant_bert_tiny: BERT's pair
layout (no --separator-token), the teacher's position table, its FP baseline, the table; and the
one-line refusal when ARCH does not match the teacher's layout."""
import json

import ablation_fixtures as F
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import hf_fixtures as hf  # noqa: E402

from qbert.experiments import tables as make_tables  # noqa: E402
from qbert.hf import import_hf  # noqa: E402

FAST = dict(TOTAL_NUM_UPDATES=3, WARMUP_UPDATES=1, LOG_INTERVAL=1, JOBS=1, FP_CONTROL=0)
RUNNER = F.SCRIPTS / "lib" / "qat_runner.py"


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """(teacher model.pt, RTE data binarized with its WordPiece vocabulary)."""
    from fairseq_qbert.data.preprocess_glue import preprocess_task
    from qbert.data import mini_glue

    root = tmp_path_factory.mktemp("bert_runner")
    glue = str(root / "glue")
    mini_glue.generate(glue, "RTE", seed=1, train_size=120, dev_size=40, test_size=10)
    corpus = hf.glue_sentences(glue, "RTE", 1) + hf.glue_sentences(glue, "RTE", 2)
    hf.make_hf_model(str(root / "hf"), "bert", "BertForSequenceClassification", hf.bert_tokenizer(corpus),
                     num_labels=2, seed=3)
    fs = import_hf(str(root / "hf"), str(root / "fs"))
    data = preprocess_task(glue, "RTE", str(root / "RTE-bin"), bpe="wordpiece", vocab_txt=f"{fs}/vocab.txt",
                           dict_path=f"{fs}/dict.txt")
    return root / "fs" / "model.pt", data


def test_one_bert_cell_through_the_runner(bert, tmp_path):
    teacher, data = bert
    cells = tmp_path / "cells.tsv"
    cells.write_text(f"W8\tKD\tlsq_w8_kd\t--quant-groups EMB,QKV,FFN --weight-bits 8 --weight-quantizer lsq "
                     f"--criterion kd_sentence_prediction --teacher-path {teacher} --kd-parts trm,logits\n")
    out = tmp_path / "exp"
    proc = F.run([F.PYTHON, RUNNER, "family", "--family", "group_ablation", "--task", "RTE", "--data-bin", data,
                  "--teacher", teacher, "--out-dir", out, "--cells", cells], ARCH="quant_bert_tiny", **FAST)
    assert proc.stdout.count("[done]") == 2, proc.stdout + proc.stderr  # FP baseline + the cell
    plan = json.loads((out / "plans" / "group_ablation__RTE.json").read_text())
    run_dir = out / plan["cells"][0]["run"]
    result = json.loads((run_dir / "result.json").read_text())
    cmd = result["command"]
    assert result["arch"] == "quant_bert_tiny" and cmd[cmd.index("--arch") + 1] == "quant_bert_tiny"
    assert "--separator-token" not in cmd and cmd[cmd.index("--init-token") + 1] == "0"
    assert cmd[cmd.index("--max-positions") + 1] == str(hf.MAX_LEN)  # BERT: the teacher's position table
    assert cmd[cmd.index("--encoder-embed-dim") + 1] == str(hf.DIM)
    assert result["log"]["num_updates"] == FAST["TOTAL_NUM_UPDATES"]
    log = (run_dir / "train.log").read_text()
    assert "kd_logits" in log  # the KD criterion ran, with the imported BERT as its teacher
    import torch

    sd = torch.load(run_dir / "checkpoints" / "checkpoint_best.pt", weights_only=False)["model"]
    assert "encoder.sentence_encoder.embed_token_types.weight" in sd  # BERT's embeddings, quantized (EMB)
    assert any(k.startswith("encoder.sentence_encoder.embed_token_types.weight_quantizer.") for k in sd)
    baseline = json.loads((out / plan["baseline"] / "result.json").read_text())
    assert baseline["kind"] == "fp" and baseline["arch"] == "quant_bert_base"  # the imported teacher

    results = tmp_path / "results"
    make_tables.make([str(out)], str(results), plots=False)
    text = (results / "group_ablation_RTE.md").read_text()
    assert "quant_bert_tiny" in text
    row = next(line for line in text.splitlines() if line.startswith("W8 | "))
    assert row == f"W8 | {make_tables.fmt_delta(result['best'], baseline['best'])}", row


def test_arch_must_match_the_teachers_layout(bert, tmp_path):
    teacher, data = bert
    proc = F.run([F.PYTHON, RUNNER, "run", "RTE", data, teacher, tmp_path / "run", "cpu", "--",
                  "--quant-groups", "FFN", "--weight-bits", "8"], check=False, **FAST)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: ARCH=quant_roberta_tiny but the teacher {teacher} is a BERT model: "
        "set ARCH to quant_bert_tiny or quant_bert_base")
