"""The masked-LM pretraining stage: the unlabeled corpus, scripts/pretrain_mini.sh, and a
teacher fine-tuned from its checkpoint the way fairseq fine-tunes roberta.base."""
import os
import re
import subprocess

import pytest
import torch
from conftest import REPO_DIR
from scratch import scratch_dir, subprocess_env

from qbert.data import mini_corpus, mini_glue
from qbert.data.glue_tasks import get_task

SCRIPTS = os.path.join(REPO_DIR, "scripts")


def test_corpus_is_deterministic_and_mixes_all_tasks(tmp_path):
    a = mini_corpus.write_corpus(str(tmp_path / "a"), "all", 30, 5, seed=3)
    b = mini_corpus.write_corpus(str(tmp_path / "b"), "all", 30, 5, seed=3)
    for pa, pb in zip(a, b):
        assert open(pa).read() == open(pb).read()
    lines = open(a[0]).read().splitlines()
    assert all(line.strip() == line and line for line in lines)
    # every task's text is in it: its first pretraining sentence appears
    for task in ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE"):
        first = next(mini_corpus.task_sentences(task, 30, 3, "pretrain-train"))
        assert first in lines, task


def test_corpus_holds_no_labels_and_no_unacceptable_cola():
    spec = get_task("CoLA")
    rows = mini_glue._split_rows("CoLA", "pretrain-train", 400, 1)
    bad = {r[spec.input_columns[0] - 1] for r in rows if r[spec.label_column - 1] == "0"}
    good = {r[spec.input_columns[0] - 1] for r in rows if r[spec.label_column - 1] == "1"}
    assert bad and good
    got = set(mini_corpus.task_sentences("CoLA", 400, 1, "pretrain-train"))
    assert got == good
    # pair tasks: two text lines per row, never the label column
    rte = get_task("RTE")
    rows = mini_glue._split_rows("RTE", "pretrain-train", 50, 1)
    text = list(mini_corpus.task_sentences("RTE", 50, 1, "pretrain-train"))
    assert len(text) == 2 * len(rows)
    assert not {r[rte.label_column - 1] for r in rows} & set(text)


def test_corpus_stream_is_not_the_training_split():
    corpus = list(mini_corpus.task_sentences("SST-2", 200, 1, "pretrain-train"))
    train = [r[0] for r in mini_glue._split_rows("SST-2", "train", 200, 1)]
    assert corpus[:200] != train[:200]


@pytest.fixture(scope="module")
def pretrained():
    """A 40-update masked-LM pretraining on a small corpus, and RTE binarized with its dict."""
    root = scratch_dir("pretrain")
    out = root / "pre"
    env = subprocess_env(drop=("SEED", "PEAK_LR"), SENTENCES_PER_TASK=150, TOTAL_UPDATES=40,
                         WARMUP_UPDATES=4, LOG_INTERVAL=10, MAX_SENTENCES=16)
    proc = subprocess.run(["bash", os.path.join(SCRIPTS, "pretrain_mini.sh"), str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env = subprocess_env(drop=("SEED",), DICT=out / "dict.txt", TRAIN_SIZE=200, DEV_SIZE=50,
                         TEST_SIZE=5)
    proc = subprocess.run(["bash", os.path.join(SCRIPTS, "prepare_mini_glue.sh"), str(root / "data"), "RTE"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, root / "data" / "RTE-bin", root


def _mlm_losses(log_text):
    return [float(m) for m in re.findall(r"train_inner .*? loss=([0-9.]+)", log_text)]


def test_pretraining_writes_a_roberta_base_layout_and_learns(pretrained):
    out, _, _ = pretrained
    assert (out / "model.pt").is_file() and (out / "dict.txt").is_file()
    assert (out / "tb").is_dir()
    losses = _mlm_losses((out / "train.log").read_text())
    assert len(losses) >= 3 and losses[-1] < losses[0] - 0.5, losses
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
    assert state["cfg"]["task"]["_name"] == "masked_lm"
    assert "encoder.lm_head.weight" in state["model"]


def _fine_tune(data_bin, save, roberta_path, **env_overrides):
    env = subprocess_env(drop=("SEED", "EXTRA_ARGS", "ARCH", "MAX_SENTENCES"),
                         ROBERTA_PATH=roberta_path, ARCH="roberta", LOG_INTERVAL=1, **env_overrides)
    return subprocess.run(["bash", os.path.join(SCRIPTS, "train_teacher.sh"), "RTE", str(data_bin), str(save)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_teacher_fine_tunes_from_the_pretrained_encoder(pretrained):
    out, data_bin, root = pretrained
    save = root / "teacher"
    # a vanishing learning rate: after 2 updates the encoder must still be the pretrained one
    proc = _fine_tune(data_bin, save, out / "model.pt", TOTAL_NUM_UPDATES=2, WARMUP_UPDATES=1, LR="1e-9")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pre = torch.load(out / "model.pt", map_location="cpu", weights_only=False)["model"]
    tuned = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    for key in ("encoder.sentence_encoder.embed_tokens.weight",
                "encoder.sentence_encoder.layers.1.fc2.weight"):
        assert torch.allclose(pre[key], tuned[key], atol=1e-6), key
    assert "classification_heads.sentence_classification_head.dense.weight" in tuned
    # what the ablation runner reads off such a teacher: its provenance and its shape
    from qbert.experiments import runner as qat_runner

    ckpt = str(save / "checkpoint_last.pt")
    assert qat_runner.teacher_init(ckpt) == str(out / "model.pt")
    assert qat_runner.teacher_shape_args(ckpt) == [
        "--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
        "--encoder-attention-heads", "4"]


def test_teacher_refuses_data_binarized_with_another_dictionary(pretrained, small_glue_bin):
    out, _, root = pretrained
    proc = _fine_tune(small_glue_bin["RTE"],
                      root / "mismatch", out / "model.pt", TOTAL_NUM_UPDATES=1)
    assert proc.returncode == 2
    assert "differs from the pretrained model's" in proc.stderr and "DICT=" in proc.stderr
    assert not (root / "mismatch" / "checkpoint_last.pt").exists()
