"""2:4 sparsity of quant_roberta: real fairseq-train runs (2:4 + W8A8 QAT + KD
with adam, resume) and
in-process checks (gradients through fairseq's optimizers, permutation, calibration, errors)."""
import shutil
import subprocess

import pytest
import torch
from kd_fixtures import (
    FAIRSEQ_TRAIN,
    SP,
    USER_DIR,
    batch,
    build,
    data_dir,
    kd_flags,
    load_teacher_weights,
    subprocess_env,
    task_flags,
    trained_teacher,
    workdir,
)

from qbert.sparse import mask_2to4, permute_pair, search_permutation

SPARSE = ["--sparse-groups", "QKV,FFN"]
ENC = "encoder.sentence_encoder.layers."
_RUNS = {}


def qat_kd():  # 2:4 QKV,FFN + W8A8 LSQ QAT + KD from the dense FP teacher
    return ["--quant-groups", "QKV,FFN", "--weight-bits", "8", "--act-bits", "8", *kd_flags(trained_teacher())]


def train(name, *flags, updates=4, resume_from=None):
    save = workdir() / f"sparse_{name}"
    if resume_from is not None:
        save.mkdir(exist_ok=True)
        shutil.copy(resume_from, save / "checkpoint_last.pt")
    cmd = [FAIRSEQ_TRAIN, data_dir("cls"), "--user-dir", USER_DIR, *SP, "--num-classes", "2",
           "--arch", "quant_roberta_tiny", "--finetune-from-model", trained_teacher(), "--cpu",
           "--batch-size", "16", "--max-update", str(updates), "--save-dir", str(save),
           "--no-epoch-checkpoints", "--save-interval-updates", "2", "--disable-validation",
           "--log-format", "simple", "--log-interval", "1", "--seed", "1", "--num-workers", "0",
           "--tensorboard-logdir", str(save / "tb"), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return save, proc.stdout + proc.stderr


def adam_run():
    if "adam" not in _RUNS:
        _RUNS["adam"] = train("adam", *SPARSE, *qat_kd(), "--optimizer", "adam", "--lr", "1e-3",
                              "--weight-decay", "0.01")
    return _RUNS["adam"]


def model_state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def teacher_state():
    return model_state(trained_teacher())


def check_masked(state, teacher):
    """Masks are the teacher's 2:4 masks; masked weights are 0, kept weights trained."""
    assert any("weight_quantizer" in k for k in state)
    masked = [k[:-len("_mask")] for k in state if k.endswith(".weight_mask")]
    assert len(masked) == 2 * 6  # q/k/v/out + fc1/fc2 of both layers (all pass the size rule)
    for key in masked:
        mask = state[key + "_mask"]
        assert torch.equal(mask, mask_2to4(teacher[key])), key
        assert not state[key][~mask].any(), key
        assert not torch.equal(state[key][mask], teacher[key][mask]), key
    assert not any(k.endswith("weight_mask") and "classification" in k for k in state)


def test_sparse_qat_kd_with_adam_keeps_masked_weights_zero_and_logs_sparsity():
    save, log = adam_run()
    assert "kd_hidden" in log and "qw_scale_FFN" in log
    check_masked(model_state(save / "checkpoint_last.pt"), teacher_state())
    assert "2:4 masks computed from the checkpoint's weights: QKV sparsity 0.500" in log
    assert "sparsity_FFN 0.5" in log and "sparse_kept_QKV 0.7" in log


def test_resume_is_bit_identical():
    straight, _ = adam_run()
    resumed, log = train("adam_resumed", *SPARSE, *qat_kd(), "--optimizer", "adam", "--lr", "1e-3",
                         "--weight-decay", "0.01", resume_from=straight / "checkpoint_1_2.pt")
    assert "2:4 masks computed" not in log  # restored, not recomputed
    a, b = model_state(straight / "checkpoint_last.pt"), model_state(resumed / "checkpoint_last.pt")
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("optimizer", [["--optimizer", "adam", "--weight-decay", "0.1", "--sparse-permute"],
                                       ["--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "0.1"]])
def test_gradients_of_masked_weights_are_zero_through_fairseq_optimizers(optimizer):
    """fairseq's adam and sgd (momentum, weight decay) from the loaded dense teacher; the
    fairseq-train run above covers adam end to end."""
    from fairseq import optim

    cfg, task, model, crit = build(data_dir("cls"), [*task_flags(), "--arch", "quant_roberta_tiny", "--criterion",
                                                     "sentence_prediction", *SPARSE, "--lr", "0.1", *optimizer])
    load_teacher_weights(model, trained_teacher())
    opt = optim.build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    masked = model.sparsity.masked(model)
    assert len(masked) == 12
    if "--sparse-permute" in optimizer:  # fc2 and out_proj keep more with their permutation
        permuted = [m for m in model.sparsity.report.modules if m.permuted]
        assert len(permuted) == 4 and all(m.kept > m.kept_unpermuted for m in permuted)
    for _ in range(2):
        opt.zero_grad()
        loss, _, _ = crit(model.train(), batch(task, "train", 16))
        opt.backward(loss)
        for name, m in masked.items():
            assert not m.weight.grad[~m.weight_mask].any(), name
        opt.step()  # no set_num_updates: the forward's mask alone keeps them at 0
        for name, m in masked.items():
            assert not m.weight[~m.weight_mask].any(), name


def test_permutation_of_the_model_pairs_preserves_logits():
    cfg, task, model, _ = build(data_dir("cls"), [*task_flags(), "--arch", "quant_roberta_tiny", "--criterion",
                                                  "sentence_prediction", *SPARSE])
    state = teacher_state()
    pairs = model.sparsity.pairs(model)
    assert (ENC + "0.fc1", ENC + "0.fc2", None) in pairs
    assert (ENC + "1.self_attn.v_proj", ENC + "1.self_attn.out_proj", 16) in pairs
    _, _, dense, _ = build(data_dir("cls"), [*task_flags(), "--arch", "quant_roberta_tiny", "--criterion",
                                             "sentence_prediction"], criterion=False)
    dense.load_state_dict(state)
    sample = batch(task)["net_input"]
    before = dense.eval()(**sample, features_only=True, classification_head_name="sentence_classification_head")[0]
    for producer, consumer, block in pairs:
        perm = search_permutation(state[consumer + ".weight"], block=block, max_rounds=5)
        assert not torch.equal(perm, torch.arange(perm.numel()))
        state[producer + ".weight"], state[producer + ".bias"], state[consumer + ".weight"] = permute_pair(
            state[producer + ".weight"], state[producer + ".bias"], state[consumer + ".weight"], perm)
    dense.load_state_dict(state)
    after = dense(**sample, features_only=True, classification_head_name="sentence_classification_head")[0]
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_ptq_calibration_sees_the_pruned_weights():
    from qbert.calib import calibrate_batches
    from qbert.calib.calibrators import weight_amax

    _, task, model, _ = build(data_dir("cls"), [*task_flags(), "--arch", "quant_roberta_tiny", "--criterion",
                                                "sentence_prediction", "--sparse-groups", "FFN",
                                                "--quant-groups", "FFN", "--act-bits", "8"], criterion=False)
    load_teacher_weights(model, trained_teacher())
    report = calibrate_batches(model, [batch(task)], lambda m, b: m(**b["net_input"]), weight_method="mse")
    dense = teacher_state()[ENC + "0.fc1.weight"]
    pruned = dense * mask_2to4(dense)
    fc1 = next(e for e in report.entries if e.module == ENC + "0.fc1" and e.role == "weight")
    assert fc1.amax == pytest.approx(float(weight_amax(pruned, "mse", 8)))
    assert fc1.amax != pytest.approx(float(weight_amax(dense, "mse", 8)))


@pytest.mark.parametrize("flags, message", [
    (["--sparse-groups", "QKV,MLP"], "--sparse-groups: unknown group 'MLP'"),
    (["--sparse-groups", "FFN", "--sparse-recompute-every", "0"], "--sparse-recompute-every must be an integer >= 1"),
])
def test_bad_flags_fail_with_one_line_naming_the_flag(flags, message):
    with pytest.raises(SystemExit, match=message):
        build(data_dir("cls"), [*task_flags(), "--arch", "quant_roberta_tiny", "--criterion",
                                "sentence_prediction", *flags], criterion=False)


def test_resuming_masks_with_other_sparse_groups_is_refused():
    save, _ = adam_run()
    _, _, model, _ = build(data_dir("cls"), [*task_flags(), "--arch", "quant_roberta_tiny", "--criterion",
                                             "sentence_prediction", "--sparse-groups", "FFN", "--quant-groups",
                                             "QKV,FFN", "--act-bits", "8"], criterion=False)
    with pytest.raises(SystemExit, match="masks for groups FFN,QKV .* this run has --sparse-groups FFN"):
        model.load_state_dict(model_state(save / "checkpoint_last.pt"))
