"""KD on original + augmented rows (TinyBERT data augmentation): --task sentence_prediction_aug
marks the original rows, kd_sentence_prediction applies the ground-truth loss to them only
and the KD parts to every row; the default path is unchanged."""
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "augment"))
import aug_fixtures as A  # noqa: E402
import kd_fixtures as K  # noqa: E402

from fairseq_qbert.augment.cli import augment_folder  # noqa: E402
from qbert.augment import layout  # noqa: E402

HEAD = "sentence_classification_head"
W_LABEL = 0.7


@pytest.fixture(scope="module")
def aug(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_aug")
    out = {}
    for kind in ("cls", "reg_pairs"):
        data = A.aug_data(kind)
        out[kind] = augment_folder(data, A.masked_lm(data), str(root / kind), n_aug=3, top_k=4,
                                   replace_prob=0.5, seed=1)
    return out


def _flags(kind, task_name, teacher, weight=W_LABEL):
    task = ["--task", task_name, "--init-token", "0", "--separator-token", "2"]
    task += ["--num-classes", "2"] if kind == "cls" else ["--num-classes", "1", "--regression-target"]
    return [*task, *K.ROBERTA_TINY, "--dropout", "0", "--attention-dropout", "0",
            *K.kd_flags(teacher, "logits", "--kd-label-weight", str(weight))]


def _teacher(kind, data):
    kd_kind = "cls" if kind == "cls" else "reg_pairs"
    return K.make_teacher(f"aug_{kind}", K.ROBERTA_TINY, kd_kind, data=data)


def _hand_loss(model, crit, sample, kind, original):
    net_input = sample["net_input"]
    with torch.no_grad():
        s = model(**net_input, features_only=True, classification_head_name=HEAD)[0].float()
        t = crit.teacher.model(**net_input, features_only=True, classification_head_name=HEAD)[0].float()
    y = sample["target"].view(-1)
    if kind == "cls":
        p_t = F.softmax(t, -1)
        kd = (p_t * (F.log_softmax(t, -1) - F.log_softmax(s, -1))).sum()
        per_row = -F.log_softmax(s, -1).gather(1, y[:, None]).squeeze(1)
    else:
        kd = ((s - t) ** 2).sum()
        per_row = (s.view(-1) - y.float()) ** 2
    label = (per_row * original.float()).sum()
    return kd + W_LABEL * label, label


@pytest.mark.parametrize("kind", ["cls", "reg_pairs"])
def test_labels_only_on_original_rows(aug, kind):
    data = aug[kind]
    _, task, model, crit = K.build(data, _flags(kind, "sentence_prediction_aug", _teacher(kind, data)))
    model.eval()
    task.load_dataset("train")
    ds = task.dataset("train")
    n_orig = layout.read_meta(data).splits["train"]["original_rows"]
    assert len(ds) > n_orig
    ids = [0, n_orig, 1, n_orig + 1, n_orig + 2, 2]
    sample = ds.collater([ds[i] for i in ids])
    assert sample["original"].tolist() == [i < n_orig for i in sample["id"].tolist()]
    assert sample["original"].tolist() == [True, False, True, False, False, True]
    loss, size, log = crit(model, sample)
    expected, label = _hand_loss(model, crit, sample, kind, sample["original"])
    assert size == len(ids)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log["kd_label"], label, rtol=1e-5, atol=1e-5)
    assert log["noriginal"] == 3
    # gradient: an augmented row's label does not matter at all
    sample2 = dict(sample)
    target = sample["target"].clone()
    aug_rows = ~sample["original"]
    target[aug_rows] = (1 - target[aug_rows]) if kind == "cls" else target[aug_rows] + 5.0
    sample2["target"] = target
    loss2, _, _ = crit(model, sample2)
    torch.testing.assert_close(loss2.detach(), loss.detach())
    # valid is not augmented: every row original
    task.load_dataset("valid")
    valid = task.dataset("valid")
    vs = valid.collater([valid[i] for i in range(4)])
    assert vs["original"].all()


def test_kd_label_is_logged_per_original_sentence():
    from fairseq.logging import metrics

    from fairseq_qbert.criterions.kd_sentence_prediction import KDSentencePredictionCriterion

    logs = [{"loss": torch.tensor(3.0), "sample_size": 4, "nsentences": 4, "ntokens": 20,
             "kd_logits": torch.tensor(2.0), "kd_label": torch.tensor(3.0), "noriginal": 1},
            {"loss": torch.tensor(1.0), "sample_size": 4, "nsentences": 4, "ntokens": 20,
             "kd_logits": torch.tensor(2.0), "kd_label": torch.tensor(3.0), "noriginal": 2}]
    with metrics.aggregate() as agg:
        KDSentencePredictionCriterion.reduce_metrics(logs)
    values = agg.get_smoothed_values()
    assert values["kd_label"] == pytest.approx(2.0)   # 6 nats over 3 original sentences
    assert values["kd_logits"] == pytest.approx(0.5)  # 4 nats over all 8 sentences


def test_default_task_unchanged_and_refused_on_augmented_labels(aug):
    plain = A.aug_data("cls")
    teacher = _teacher("cls", plain)
    _, task, model, crit = K.build(plain, _flags("cls", "sentence_prediction", teacher))
    model.eval()
    sample = K.batch(task, "train", n=6)
    assert "original" not in sample
    loss, _, log = crit(model, sample)
    expected, _ = _hand_loss(model, crit, sample, "cls", torch.ones(6, dtype=torch.bool))
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)
    assert "noriginal" not in log
    # the aug task on a folder qbert-augment did not write: every row original, same loss
    _, task2, _, crit2 = K.build(plain, _flags("cls", "sentence_prediction_aug", teacher))
    sample2 = K.batch(task2, "train", n=6)
    assert sample2["original"].all()
    loss2, _, _ = crit2(model, sample2)
    torch.testing.assert_close(loss2.detach(), loss.detach())
    # stock sentence_prediction on an augmented folder would fit placeholder labels: refused
    with pytest.raises(SystemExit, match="sentence_prediction_aug"):
        K.build(aug["cls"], _flags("cls", "sentence_prediction", teacher))
    # ... unless only the KD parts train (TernaryBERT: --kd-label-weight 0)
    K.build(aug["cls"], _flags("cls", "sentence_prediction", teacher, weight=0))


def test_flags_sidecar_is_indexed_by_fairseq_row_id(aug):
    """The shuffled, length-sorted batches of fairseq's iterator still get the right flags."""
    data = aug["cls"]
    _, task, _, _ = K.build(data, _flags("cls", "sentence_prediction_aug", _teacher("cls", data)))
    task.load_dataset("train")
    ds = task.dataset("train")
    flags = layout.load_original_flags(data, "train", len(ds))
    order = ds.ordered_indices()
    sample = ds.collater([ds[int(i)] for i in order[:10]])
    assert np.array_equal(sample["original"].numpy(), flags[sample["id"].numpy()])


def test_augmented_split_inside_the_data_folder(tmp_path):
    """qbert-augment --out-split train_aug: fairseq-train --train-subset train_aug with the aug
    task marks its rows; the folder's own train split stays plain (no refusal)."""
    import shutil

    data = tmp_path / "bin"
    shutil.copytree(A.aug_data("cls"), data)
    augment_folder(str(data), A.masked_lm(A.aug_data("cls")), out_split="train_aug", n_aug=2,
                   top_k=3, replace_prob=0.5, seed=1)
    teacher = _teacher("cls", str(data))
    _, task, _, _ = K.build(str(data), _flags("cls", "sentence_prediction_aug", teacher))
    task.load_dataset("train_aug")
    ds = task.dataset("train_aug")
    assert len(ds) > 24
    sample = ds.collater([ds[i] for i in (0, 24, 1)])
    assert sample["original"].tolist() == [True, False, True]
    K.build(str(data), _flags("cls", "sentence_prediction", teacher))  # train is not augmented
