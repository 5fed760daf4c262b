"""KD with TinyBERT-augmented data end to end, with real fairseq commands: a masked LM
pretrained by ``fairseq-train --task masked_lm`` (a few updates, on the toy data's own
dictionary), ``qbert-augment`` (the console script), then a 2-bit ``quant_roberta``
student trained by ``fairseq-train --task sentence_prediction_aug --criterion
kd_sentence_prediction --kd-label-weight 1`` on the augmented folder."""
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "augment"))
import aug_fixtures as A  # noqa: E402
import kd_fixtures as K  # noqa: E402
from scratch import subprocess_env  # noqa: E402

from qbert.augment import layout  # noqa: E402

BIN = Path(sys.executable).parent


def _run(cmd):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          env=subprocess_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_pretrain_augment_and_distil_on_augmented_rows(tmp_path):
    data = A.aug_data("cls")
    # 1. a masked LM pretrained on an unlabeled corpus of the same words, with the data's
    #    dictionary (the roberta.base layout: model.pt + dict.txt)
    rng = random.Random(5)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(" ".join(rng.choice(A.WORDS + A.STOP) for _ in range(rng.randint(3, 9)))
                              + " .\n" for _ in range(300)))
    _run([BIN / "fairseq-preprocess", "--only-source", "--srcdict", Path(data, "input0", "dict.txt"),
          "--trainpref", corpus, "--validpref", corpus,
          "--destdir", tmp_path / "corpus-bin", "--workers", "1"])
    _run([BIN / "fairseq-train", tmp_path / "corpus-bin", "--user-dir", K.USER_DIR,
          "--task", "masked_lm", "--criterion", "masked_lm", *K.ROBERTA_TINY,
          "--sample-break-mode", "complete", "--tokens-per-sample", "64", "--optimizer", "adam",
          "--lr", "1e-3", "--batch-size", "8", "--max-update", "8", "--cpu", "--num-workers", "0",
          "--save-dir", tmp_path / "pre-ckpt", "--no-epoch-checkpoints", "--disable-validation",
          "--log-format", "simple", "--seed", "1"])
    pre = tmp_path / "pre"
    pre.mkdir()
    shutil.copy(tmp_path / "pre-ckpt" / "checkpoint_last.pt", pre / "model.pt")
    shutil.copy(tmp_path / "corpus-bin" / "dict.txt", pre / "dict.txt")

    # 2. augmentation through the console script
    aug = tmp_path / "AUG-bin"
    log = _run([BIN / "qbert-augment", "--data", data, "--pretrained", pre / "model.pt",
                "--n-aug", "4", "--top-k", "5", "--replace-prob", "0.4", "--seed", "3", "--out", aug])
    meta = layout.read_meta(str(aug))
    rows, n_orig = meta.splits["train"]["rows"], meta.splits["train"]["original_rows"]
    assert n_orig == 24 and rows > n_orig
    assert f"split train = {n_orig} original + {rows - n_orig} augmented rows of train" in log

    # 3. QAT + KD on original + augmented rows, ground truth on the originals only
    teacher = K.make_teacher("aug_integration", K.ROBERTA_TINY, "cls", data=str(aug))
    save = tmp_path / "student"
    log = _run([BIN / "fairseq-train", aug, "--user-dir", K.USER_DIR,
                "--task", "sentence_prediction_aug", "--init-token", "0", "--separator-token", "2",
                "--num-classes", "2", "--arch", "quant_roberta", *K.TINY,
                "--quant-groups", "EMB,QKV,FFN", "--weight-bits", "2",
                *K.kd_flags(teacher, "trm,logits", "--kd-label-weight", "1"),
                "--finetune-from-model", teacher, "--optimizer", "adam", "--lr", "1e-4",
                "--batch-size", "16", "--max-epoch", "2", "--cpu", "--num-workers", "0",
                "--save-dir", save, "--no-epoch-checkpoints", "--log-format", "simple",
                "--log-interval", "1", "--seed", "1", "--dropout", "0", "--attention-dropout", "0"])
    assert f"train: {n_orig} original + {rows - n_orig} augmented rows" in log
    assert re.search(rf"Loaded train with #samples: {rows}\b", log)
    # an epoch covers every row: updates per epoch = ceil(rows / 16)
    epoch_updates = -(-rows // 16)
    assert re.search(r"end of epoch 2 \(average epoch stats below\)", log)
    train_lines = [ln for ln in log.splitlines() if "| train |" in ln]
    assert train_lines and all("kd_label" in ln and "kd_attn" in ln for ln in train_lines)
    assert re.search(rf"num_updates {2 * epoch_updates}\b", train_lines[-1]), train_lines[-1]
    assert (save / "checkpoint_last.pt").is_file()
    assert os.path.getsize(save / "checkpoint_last.pt") > 0
