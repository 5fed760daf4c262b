"""One real "KD + aug" cell through the runner (qat_runner.py family, as scripts/kd_effect.sh
and kd_parts.sh call it) on conftest's mini_teacher: a masked LM pretrained with the data's
dictionary (a few fairseq masked_lm updates, as in test_augment.py), the augmented split
written into DATA_BIN once by the runner (qbert-augment --out-split; AUG_* parameters,
QAT_TRAIN_SIZE's subset augmented), the cell trained on it with --task sentence_prediction_aug,
and a second family run skipping both the augmentation and the finished cell."""
import json
import os
import re
import shutil

import ablation_fixtures as F
import kd_fixtures as K

FAST = dict(TOTAL_NUM_UPDATES=6, WARMUP_UPDATES=1, LOG_INTERVAL=3, JOBS=1, FP_CONTROL=0, SEEDS=1)
AUG_ENV = dict(AUG_N=2, AUG_TOP_K=5, AUG_P=0.5, AUG_SEED=3, QAT_TRAIN_SIZE=120)
SPLIT = "train120_aug_n2_k5_p0.5_s3"


def _pretrain_mlm(tmp_path, data_bin, glue_dir):
    """A masked LM on the task's own sentences and dictionary, laid out like roberta.base/."""
    corpus = tmp_path / "corpus.txt"
    rows = [line.split("\t")[0] for line in (glue_dir / "SST-2" / "train.tsv").read_text().splitlines()[1:400]]
    corpus.write_text("".join(r + "\n" for r in rows))
    bin_dir = os.path.dirname(F.PYTHON)
    F.run([os.path.join(bin_dir, "fairseq-preprocess"), "--only-source", "--srcdict",
           data_bin / "input0" / "dict.txt", "--trainpref", corpus, "--validpref", corpus,
           "--destdir", tmp_path / "corpus-bin", "--workers", "1"])
    F.run([os.path.join(bin_dir, "fairseq-train"), tmp_path / "corpus-bin", "--user-dir", K.USER_DIR,
           "--task", "masked_lm", "--criterion", "masked_lm", *K.ROBERTA_TINY,
           "--sample-break-mode", "complete", "--tokens-per-sample", "64", "--optimizer", "adam",
           "--lr", "1e-3", "--batch-size", "8", "--max-update", "6", "--cpu", "--num-workers", "0",
           "--save-dir", tmp_path / "pre-ckpt", "--no-epoch-checkpoints", "--disable-validation",
           "--log-format", "simple", "--seed", "1"])
    pre = tmp_path / "pretrain"
    pre.mkdir()
    shutil.copy(tmp_path / "pre-ckpt" / "checkpoint_last.pt", pre / "model.pt")
    shutil.copy(tmp_path / "corpus-bin" / "dict.txt", pre / "dict.txt")
    return pre / "model.pt"


def test_kd_aug_cell_augments_once_and_trains_on_originals_plus_variants(tmp_path, mini_teacher):
    data_bin = tmp_path / "SST-2-bin"  # the runner writes the split into DATA_BIN: a copy
    shutil.copytree(mini_teacher.data_bin, data_bin)
    model = _pretrain_mlm(tmp_path, data_bin, mini_teacher.glue_dir)
    teacher = mini_teacher.checkpoint
    # the cell as scripts/kd_effect.sh writes it (family_common.sh: lsq_flags, kd_flags, aug_flags)
    cells = tmp_path / "cells.tsv"
    cells.write_text("SST-2\tKD + aug\tlsq_w2_EMB-QKV-FFN_kd-logits_aug\t--quant-groups EMB,QKV,FFN "
                     "--weight-bits 2 --weight-quantizer lsq --criterion kd_sentence_prediction "
                     f"--teacher-path {teacher} --kd-parts logits --kd-label-weight 1 "
                     "--task sentence_prediction_aug --train-subset train_aug\n")
    out = tmp_path / "exp"
    cmd = [F.PYTHON, F.SCRIPTS / "lib" / "qat_runner.py", "family", "--family", "kd_effect", "--task", "SST-2",
           "--data-bin", data_bin, "--teacher", teacher, "--out-dir", out, "--cells", cells,
           "--variant", "w2_EMB-QKV-FFN_kd-logits"]
    env = dict(FAST, AUG_PRETRAINED=model, **AUG_ENV)
    first = F.run(cmd, **env)
    assert f"[augment] SST-2: train120 -> {SPLIT} (N 2, K 5, P 0.5, seed 3, {model})" in first.stdout
    assert f"[augment] SST-2: {SPLIT} written" in first.stdout and first.stdout.count("[done]") == 2

    # the split: the 120-row subset's rows first, then their variants (at most N per sentence)
    meta = json.loads((data_bin / "augment" / "augment.json").read_text())
    entry = meta["splits"][SPLIT]
    assert entry["original_rows"] == 120 and 120 < entry["rows"] <= 120 * 3
    assert entry["source_split"] == "train120" and (entry["n_aug"], entry["top_k"], entry["seed"]) == (2, 5, 3)
    assert meta["pretrained"] == str(model)

    plan = json.loads((out / "plans" / "kd_effect_w2_EMB-QKV-FFN_kd-logits__SST-2.json").read_text())
    (cell,) = plan["cells"]
    assert cell["col"] == "KD + aug" and cell["augment"]["split"] == SPLIT
    run_dir = out / cell["run"]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["flags"][-4:] == ["--task", "sentence_prediction_aug", "--train-subset", SPLIT]
    assert result["spec"]["augment"]["pretrained"] == str(model) and result["log"]["num_updates"] == 6
    log = (run_dir / "train.log").read_text()
    assert " --task sentence_prediction " not in log.split("\n", 1)[0]  # the cell's task, given once
    assert f"{SPLIT}: 120 original + {entry['rows'] - 120} augmented rows" in log
    assert re.search(rf"Loaded {re.escape(SPLIT)} with #samples: {entry['rows']}\b", log)
    assert "kd_logits" in log and "kd_label" in log  # KD on every row, labels on the originals

    # again: the split is there (no qbert-augment) and the cell is finished (no fairseq-train)
    again = F.run(cmd, **env)
    assert "[augment]" not in again.stdout and "[start]" not in again.stdout
    assert again.stdout.count("[skip]") == 2
    # other AUG_* values are another split and another run (the split's parameters are in the hash)
    other = F.run([F.PYTHON, "-c", "import sys; sys.path.insert(0, '.'); from qbert.experiments import runner; "
                   f"s = runner.build_spec('qat', 'SST-2', '{data_bin}', '{teacher}', 'cpu', "
                   "['--train-subset', 'train_aug']); print(s['flags'][1], runner.spec_hash(s))"],
                  **dict(env, AUG_N=3))
    assert other.stdout.split()[0] == "train120_aug_n3_k5_p0.5_s3"
