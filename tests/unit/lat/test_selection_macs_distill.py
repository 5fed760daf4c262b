"""Token selection, the MACs formula and the in-place distillation loss."""
import pytest
import torch
from torch.nn import functional as F

from qbert.lat import (
    encoder_macs,
    inplace_distillation_loss,
    layer_macs,
    mean_encoder_macs,
    select_tokens,
    significance,
)


def test_s_is_always_kept_and_positions_sorted():
    scores = torch.tensor([[0.0, 5.0, 1.0, 9.0, 3.0]])  # <s> scores lowest
    assert select_tokens(scores, 3).tolist() == [[0, 1, 3]]
    assert select_tokens(scores, 1).tolist() == [[0]]
    assert select_tokens(scores, 99).tolist() == [[0, 1, 2, 3, 4]]


def test_padding_is_dropped_first():
    probs = torch.rand(2, 3, 5, 5)  # B, H, T, S
    pad = torch.tensor([[False, False, False, True, True], [False] * 5])
    probs = probs.masked_fill(pad[:, None, None, :], 0.0)
    sig = significance(probs, pad)
    assert sig[0, 3:].eq(0).all() and sig[1].gt(0).all()
    # padded queries do not vote: their rows may hold anything
    noisy = probs.clone()
    noisy[0, :, 3:, :3] = 100.0
    assert torch.equal(significance(noisy, pad), sig)
    # even with a huge score a padding position goes before any real token
    scores = torch.tensor([[1.0, 0.1, 0.2, 50.0, 60.0]])
    kept = select_tokens(scores, 3, pad[:1])
    assert kept.tolist() == [[0, 1, 2]]
    assert select_tokens(scores, 4, pad[:1]).tolist()[0][:3] == [0, 1, 2]


def test_macs_against_a_hand_count():
    # layer: n_in=10, n_out=6, d=4, d_ff=8: q,k,v,o 4*10*16, QK^T and AV 2*100*4, FFN 2*6*4*8
    assert layer_macs(10, 6, 4, 8) == 640 + 800 + 384
    # two layers at (6, 3) from 10 tokens: layer 2 starts with 6 tokens
    assert encoder_macs(10, 2, 4, 8, (6, 3)) == layer_macs(10, 6, 4, 8) + layer_macs(6, 3, 4, 8)
    # a sentence shorter than the configuration keeps every token
    assert encoder_macs(5, 2, 4, 8, (6, 3)) == layer_macs(5, 5, 4, 8) + layer_macs(5, 3, 4, 8)
    assert mean_encoder_macs([10, 5, 5], 2, 4, 8, (6, 3)) == pytest.approx(
        (encoder_macs(10, 2, 4, 8, (6, 3)) + 2 * encoder_macs(5, 2, 4, 8, (6, 3))) / 3)


def test_macs_match_the_quala_table():
    """6 x 384, FFN 1536, 384 tokens: 4.756 GMACs (QuaLA-MiniLM's "GFLOPS" column)."""
    assert round(encoder_macs(384, 6, 384, 1536) / 1e9, 3) == 4.756
    assert encoder_macs(384, 6, 384, 1536, (384,) * 6) == encoder_macs(384, 6, 384, 1536)


def test_inplace_distillation_is_kl_full_to_sub_with_full_detached():
    torch.manual_seed(0)
    full = torch.randn(4, 3, requires_grad=True)
    sub = torch.randn(4, 3, requires_grad=True)
    loss = inplace_distillation_loss(sub, full)
    p_full, p_sub = F.softmax(full, -1), F.softmax(sub, -1)
    kl_full_sub = (p_full * (p_full.log() - p_sub.log())).sum()
    kl_sub_full = (p_sub * (p_sub.log() - p_full.log())).sum()
    assert loss.item() == pytest.approx(kl_full_sub.item(), rel=1e-5)
    assert abs(loss.item() - kl_sub_full.item()) > 1e-3  # not the reference's direction
    loss.backward()
    assert full.grad is None and sub.grad.abs().sum() > 0
    # gradient of KL(p||q) wrt the student's logits is q - p
    assert torch.allclose(sub.grad, p_sub.detach() - p_full.detach(), atol=1e-6)


def test_inplace_distillation_regression_is_squared_error():
    full = torch.tensor([[0.5], [2.0]], requires_grad=True)
    sub = torch.tensor([[1.0], [1.0]], requires_grad=True)
    # softmax over one output: KL would be 0 whatever the predictions
    assert inplace_distillation_loss(sub, full).item() == pytest.approx(0.0, abs=1e-7)
    loss = inplace_distillation_loss(sub, full, regression=True)
    assert loss.item() == pytest.approx(0.25 + 1.0)
    loss.backward()
    assert full.grad is None and sub.grad.tolist() == [[1.0], [-2.0]]
