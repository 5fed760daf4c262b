"""qbert-calibrate end to end on mini-GLUE SST-2 (conftest's trained mini_teacher): one-line
errors that write nothing, the "Done when" numbers of PTQ, the checkpoint fairseq-validate
reads as is, reproducibility, and QAT started from the calibrated model (lr 0: its first
validation is the PTQ metric; other bits: refused with the model's own message). With 2:4
sparsity (issue 15, NVIDIA's order): masks are computed from the FP weights first and the pruned
weights are zero in PTQ.pt, the weight calibration is computed on the pruned weights, QAT from
PTQ.pt needs the same --sparse-groups and starts at the PTQ metric, bad flags are one line."""
import os
import re
import shutil
import sys
from pathlib import Path

import ablation_fixtures as F
import pytest
import torch

from fairseq_qbert.calib.cli import cli_main, main
from qbert.calib.calibrators import weight_amax
from qbert.errors import UsageError
from qbert.sparse import is_2to4, mask_2to4

ALL = ["--quant-groups", "EMB,QKV,FFN"]
CALIB = ["--num-calib-batches", "4", "--batch-size", "16", "--cpu"]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ptq_runs(mini_teacher, tmp_path_factory):
    """In-process qbert-calibrate runs on the trained teacher: {name: (summary, PTQ.pt)}."""
    out = tmp_path_factory.mktemp("ptq")
    settings = {
        "w8a8_pct": [*ALL, "--weight-bits", "8", "--act-bits", "8", "--calibrator", "percentile",
                     "--percentile", "99.99", "--weight-calibrator", "max"],
        "w8": [*ALL, "--weight-bits", "8", "--weight-calibrator", "max"],
        "w4": [*ALL, "--weight-bits", "4", "--weight-calibrator", "max"],
        "w2": [*ALL, "--weight-bits", "2", "--weight-calibrator", "max"],
    }
    runs = {}
    for name, flags in settings.items():
        path = out / f"{name}.pt"
        summary = main([str(mini_teacher.data_bin), "--path", str(mini_teacher.checkpoint), *flags,
                        *CALIB, "--out", str(path), "--no-fp-eval" if name != "w8a8_pct" else "--seed=1"])
        runs[name] = (summary, path)
    return runs


def accuracy(summary, which="ptq"):
    return summary[which]["accuracy"]


def validate(data_bin, path):
    proc = F.run([BIN / "fairseq-validate", data_bin, "--user-dir", F.REPO / "fairseq_qbert",
                  "--task", "sentence_prediction", "--path", path, "--criterion", "sentence_prediction",
                  "--num-classes", "2", "--valid-subset", "valid", "--batch-size", "16", "--cpu",
                  "--num-workers", "0", "--log-format", "simple"])
    m = re.search(r"valid on 'valid' subset .*?\| accuracy ([\d.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout[-2000:] + proc.stderr[-2000:]
    return float(m.group(1))


def test_ptq_numbers_on_mini_glue(ptq_runs, mini_teacher):
    """W8A8 percentile PTQ within 1 point of FP; W2 clearly below W4, W4 <= W8."""
    summary, _ = ptq_runs["w8a8_pct"]
    fp = accuracy(summary, "fp")
    assert fp == pytest.approx(mini_teacher.best_accuracy, abs=0.05)
    assert abs(accuracy(summary) - fp) <= 1.0, (fp, accuracy(summary))
    w8, w4, w2 = (accuracy(ptq_runs[k][0]) for k in ("w8", "w4", "w2"))
    assert w2 < w4 - 5 and w4 <= w8, (w8, w4, w2)


def test_the_checkpoint_is_what_fairseq_validate_evaluates(ptq_runs, mini_teacher):
    summary, path = ptq_runs["w8a8_pct"]
    assert validate(mini_teacher.data_bin, path) == pytest.approx(accuracy(summary), abs=0.05)
    # only tensors, containers and the model args: loads with weights_only=True
    import argparse

    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(path, weights_only=True)
    assert state["cfg"]["model"].arch == "quant_roberta" and state["extra_state"]["ptq"]["method"] == "percentile"
    initialized = [v for k, v in state["model"].items() if k.endswith("_quantizer.initialized")]
    assert initialized and all(int(v) == 1 for v in initialized)


def test_same_data_and_seed_give_the_same_checkpoint(ptq_runs, mini_teacher, tmp_path):
    _, path = ptq_runs["w8a8_pct"]
    again = tmp_path / "again.pt"
    main([str(mini_teacher.data_bin), "--path", str(mini_teacher.checkpoint), *ALL, "--weight-bits", "8",
          "--act-bits", "8", "--calibrator", "percentile", "--percentile", "99.99", "--weight-calibrator",
          "max", *CALIB, "--out", str(again), "--no-fp-eval"])
    a, b = torch.load(path, weights_only=False)["model"], torch.load(again, weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train_from(data_bin, ptq_path, save, *flags):
    return F.run([BIN / "fairseq-train", data_bin, "--user-dir", F.REPO / "fairseq_qbert",
                  "--task", "sentence_prediction", "--arch", "quant_roberta_tiny",
                  "--finetune-from-model", ptq_path, *flags, "--num-classes", "2", "--init-token", "0",
                  "--separator-token", "2", "--criterion", "sentence_prediction", "--max-positions", "128",
                  "--batch-size", "16", "--optimizer", "adam", "--lr", "0", "--lr-scheduler", "fixed",
                  "--max-update", "1", "--cpu", "--num-workers", "0", "--save-dir", save, "--no-save",
                  "--log-format", "simple", "--seed", "1"], check=False)


def test_qat_from_ptq_starts_from_the_calibrated_state(ptq_runs, mini_teacher, tmp_path):
    summary, path = ptq_runs["w8a8_pct"]
    proc = train_from(mini_teacher.data_bin, path, tmp_path / "qat", *ALL, "--weight-bits", "8", "--act-bits", "8")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = re.search(r"valid on 'valid' subset .*?\| accuracy ([\d.]+)", proc.stdout + proc.stderr)
    assert first and float(first.group(1)) == pytest.approx(accuracy(summary), abs=0.05)
    # the run's flags quantize with other bits than PTQ.pt: refused in one line, by the model
    proc = train_from(mini_teacher.data_bin, path, tmp_path / "bad", *ALL, "--weight-bits", "4", "--act-bits", "8")
    assert proc.returncode != 0
    line = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert line.startswith("fairseq-qbert: error: checkpoint quantizer") and "8 bits" in line, line


# ------------------------------------------------------------------------------ errors
def _fake_checkpoint(teacher, out, task_name):
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    state = checkpoint_utils.load_checkpoint_to_cpu(str(teacher))
    cfg = OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True)
    cfg["task"]["_name"] = task_name
    state["cfg"] = cfg
    checkpoint_utils.torch_persistent_save(state, str(out))
    return out


def _other_dictionary(data_bin, out):
    shutil.copytree(data_bin, out)
    with open(out / "input0" / "dict.txt", "a", encoding="utf-8") as f:
        f.write("extraword 1\n")
    return out


@pytest.mark.parametrize("case,match", [
    ("calibrator", "--calibrator: unknown calibrator 'kl'"),
    ("percentile0", "--percentile must be in (0, 100]"),
    ("percentile", "--percentile must be in (0, 100]"),
    ("batches", "--num-calib-batches must be >= 1"),
    ("not_a_checkpoint", "x.pt: cannot"),
    ("masked_lm", "not a RoBERTa-family sentence-prediction model"),
    ("dictionary", "input0/dict.txt: the dictionary has"),
])
def test_errors_are_one_line_and_write_nothing(case, match, mini_teacher, tmp_path):
    data, path = str(mini_teacher.data_bin), str(mini_teacher.checkpoint)
    extra = []
    if case == "calibrator":
        extra = ["--calibrator", "kl"]
    elif case == "percentile0":
        extra = ["--calibrator", "percentile", "--percentile", "0"]
    elif case == "percentile":
        extra = ["--calibrator", "percentile", "--percentile", "100.5"]
    elif case == "batches":
        extra = ["--num-calib-batches", "0"]
    elif case == "not_a_checkpoint":
        path = str(tmp_path / "x.pt")
        Path(path).write_text("not a checkpoint\n")
    elif case == "masked_lm":
        path = str(_fake_checkpoint(mini_teacher.checkpoint, tmp_path / "mlm.pt", "masked_lm"))
    elif case == "dictionary":
        data = str(_other_dictionary(mini_teacher.data_bin, tmp_path / "other-bin"))
    out = tmp_path / "out" / "ptq.pt"
    out.parent.mkdir()
    with pytest.raises(UsageError) as e:
        cli_main([data, "--path", path, *ALL, "--weight-bits", "8", "--act-bits", "8", *extra,
                  "--cpu", "--out", str(out)])
    message = str(e.value.code)
    assert message.startswith("fairseq-qbert: error: ") and "\n" not in message and match in message, message
    assert os.listdir(out.parent) == []


# ------------------------------------------------------------------------------ 2:4 sparsity
W8A8 = [*ALL, "--weight-bits", "8", "--act-bits", "8", "--calibrator", "percentile", "--percentile", "99.99"]
FC1 = "encoder.sentence_encoder.layers.0.fc1"
Q_PROJ = "encoder.sentence_encoder.layers.0.self_attn.q_proj"


def _load(path):
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="module")
def sparse_ptq(mini_teacher, tmp_path_factory):
    """W8A8 PTQ of the teacher with FFN 2:4-sparse, weights calibrated with mse (its histogram
    sees the zeros: max would not tell pruned from dense weights, the largest |w| is kept)."""
    out = tmp_path_factory.mktemp("sparse_ptq") / "ptq.pt"
    summary = main([str(mini_teacher.data_bin), "--path", str(mini_teacher.checkpoint), *W8A8,
                    "--weight-calibrator", "mse", "--sparse-groups", "FFN", *CALIB, "--out", str(out)])
    return summary, out


def test_masks_first_then_pruned_weights_are_zero_in_the_checkpoint(sparse_ptq, mini_teacher):
    summary, path = sparse_ptq
    teacher = _load(mini_teacher.checkpoint)["model"]
    state = _load(path)
    sd = state["model"]
    masks = sorted(k[:-len(".weight_mask")] for k in sd if k.endswith(".weight_mask"))
    # FFN only: fc1 and fc2 of both layers (64 x 128 / 128 x 64 pass ASP's size rule)
    assert masks == sorted(f"encoder.sentence_encoder.layers.{i}.{m}" for i in (0, 1) for m in ("fc1", "fc2"))
    for name in masks:
        mask, w = sd[name + ".weight_mask"], sd[name + ".weight"]
        assert mask.dtype == torch.bool and is_2to4(mask)
        assert torch.equal(mask, mask_2to4(teacher[name + ".weight"]))  # from the FP weights
        assert torch.count_nonzero(w[~mask]) == 0
        assert torch.equal(w[mask], teacher[name + ".weight"][mask])    # kept weights untouched
    assert not any(k.endswith(".weight_mask") for k in sd if ".self_attn." in k)
    assert state["cfg"]["model"].sparse_groups == "FFN" and state["extra_state"]["ptq"]["sparse_groups"] == "FFN"
    sp = summary["sparsity"]
    assert sp["groups"] == ["FFN"] and sp["masks"] == 4 and sp["by_group"]["FFN"]["sparsity"] == pytest.approx(0.5)
    # FP = the dense teacher; 2:4 FP = pruned, not quantized; PTQ = pruned + W8A8
    assert summary["fp"]["accuracy"] == pytest.approx(mini_teacher.best_accuracy, abs=0.05)
    assert summary["sparse_fp"]["accuracy"] != summary["fp"]["accuracy"] or \
        summary["sparse_fp"]["loss"] != pytest.approx(summary["fp"]["loss"])


def test_calibration_sees_the_pruned_weights(sparse_ptq, mini_teacher):
    summary, _ = sparse_ptq
    teacher = _load(mini_teacher.checkpoint)["model"]
    entries = {(e["module"], e["role"]): e for e in summary["calibration"]["quantizers"]}
    dense = teacher[FC1 + ".weight"]
    pruned = dense * mask_2to4(dense)
    expected = float(weight_amax(pruned, "mse", 8))
    assert entries[(FC1, "weight")]["amax"] == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(float(weight_amax(dense, "mse", 8)), rel=1e-3)  # the test can fail
    # a group that is not sparse is calibrated on its dense weights
    q = teacher[Q_PROJ + ".weight"]
    assert entries[(Q_PROJ, "weight")]["amax"] == pytest.approx(float(weight_amax(q, "mse", 8)), rel=1e-6)


def test_qat_from_sparse_ptq_keeps_the_masks_and_needs_the_same_groups(sparse_ptq, mini_teacher, tmp_path):
    summary, path = sparse_ptq
    quant = [*ALL, "--weight-bits", "8", "--act-bits", "8"]
    proc = train_from(mini_teacher.data_bin, path, tmp_path / "qat", *quant, "--sparse-groups", "FFN")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = re.search(r"valid on 'valid' subset .*?\| accuracy ([\d.]+)", proc.stdout + proc.stderr)
    assert first and float(first.group(1)) == pytest.approx(summary["ptq"]["accuracy"], abs=0.05)
    for groups in (["--sparse-groups", "QKV,FFN"], []):
        proc = train_from(mini_teacher.data_bin, path, tmp_path / "bad", *quant, *groups)
        assert proc.returncode != 0
        line = (proc.stdout + proc.stderr).strip().splitlines()[-1]
        assert line.startswith("fairseq-qbert: error: the checkpoint has 2:4 masks for groups FFN") \
            and "--sparse-groups FFN" in line, line


@pytest.mark.parametrize("extra,match", [
    (["--sparse-groups", "FFN,XYZ"], "--sparse-groups: unknown group 'XYZ'"),
    (["--sparse-permute"], "--sparse-permute needs --sparse-groups"),
    (["--sparse-groups", "FFN", "--sparse-recompute-every", "0"], "--sparse-recompute-every must be an integer >= 1"),
])
def test_sparse_flag_errors_are_one_line_and_write_nothing(extra, match, mini_teacher, tmp_path):
    out = tmp_path / "out" / "ptq.pt"
    out.parent.mkdir()
    with pytest.raises(UsageError) as e:
        cli_main([str(mini_teacher.data_bin), "--path", str(mini_teacher.checkpoint), *W8A8, *extra,
                  "--cpu", "--out", str(out)])
    message = str(e.value.code)
    assert message.startswith("fairseq-qbert: error: ") and "\n" not in message and match in message, message
    assert os.listdir(out.parent) == []


def test_a_sparse_checkpoint_calibrated_with_other_groups_is_refused(sparse_ptq, mini_teacher, tmp_path):
    """The masks of a 2:4 FP checkpoint (here: PTQ.pt's, after dropping its quantizer state) are
    kept as they are; other --sparse-groups are one line naming the flag."""
    state = _load(sparse_ptq[1])
    state["model"] = {k: v for k, v in state["model"].items() if "_quantizer." not in k}
    sparse_fp = tmp_path / "sparse_fp.pt"
    torch.save(state, sparse_fp)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UsageError) as e:
        cli_main([str(mini_teacher.data_bin), "--path", str(sparse_fp), *W8A8, "--sparse-groups", "QKV,FFN",
                  *CALIB, "--out", str(out / "x.pt")])
    assert "the checkpoint has 2:4 masks for groups FFN" in str(e.value.code), e.value.code
    assert os.listdir(out) == []
    summary = main([str(mini_teacher.data_bin), "--path", str(sparse_fp), *W8A8, "--sparse-groups", "FFN",
                    *CALIB, "--out", str(out / "y.pt"), "--no-fp-eval"])
    assert summary["sparsity"]["from"] == "the checkpoint's own masks"
    a, b = _load(sparse_ptq[1])["model"], _load(out / "y.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.endswith(".weight_mask"))


def _hand_mcc(pred, target) -> float:
    """Matthews correlation, 100 x (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))."""
    tp = float(((pred == 1) & (target == 1)).sum())
    tn = float(((pred == 0) & (target == 0)).sum())
    fp = float(((pred == 1) & (target == 0)).sum())
    fn = float(((pred == 0) & (target == 1)).sum())
    den = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    return 100.0 * (tp * tn - fp * fn) / den if den else 0.0


def test_report_mcc_checkpoints_are_evaluated_by_mcc(mini_teacher, tmp_path):
    """A checkpoint trained with --report-mcc (CoLA's recipe) is scored by MCC: evaluate()
    returns fairseq's derived scalar (not the criterion's pred/targ lists), equal to the MCC of
    the model's own dev predictions."""
    from fairseq_qbert.calib.ptq import evaluate
    from fairseq_qbert.lat.search_cli import load_model

    state = torch.load(mini_teacher.checkpoint, weights_only=False)
    state["cfg"]["criterion"]["report_mcc"] = True  # fairseq saves cfg as plain containers
    path = tmp_path / "mcc.pt"
    torch.save(state, path)
    _state, _args, task, model, criterion, metric = load_model(str(path), str(mini_teacher.data_bin))
    assert metric == "mcc"
    values = evaluate(model, task, criterion, "valid", 64, torch.device("cpu"))
    assert isinstance(values["mcc"], float)
    dataset = task.dataset("valid")
    preds, targets = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), 64):
            sample = dataset.collater([dataset[i] for i in range(start, min(start + 64, len(dataset)))])
            logits = model(**sample["net_input"], features_only=True,
                           classification_head_name=criterion.classification_head_name)[0]
            preds.append(logits.argmax(-1))
            targets.append(sample["target"].view(-1))
    pred, target = torch.cat(preds), torch.cat(targets)
    assert values["mcc"] == pytest.approx(_hand_mcc(pred, target), abs=0.051)
    assert values["mcc"] > 50  # the trained teacher is far from chance
