"""The per-part KD losses and flag parsing against hand-computed values (pure, fast)."""
import math

import pytest
import torch

from fairseq_qbert.criterions import kd_losses as L
from fairseq_qbert.criterions.kd_options import (
    default_layer_map,
    layer_pairs,
    parse_kd_parts,
    parse_layer_map,
)
from qbert.errors import ConfigError

NEG_INF = float("-inf")


# ---------------------------------------------------------------------------- logits
def test_logits_hand_value():
    # teacher softmax = (3/4, 1/4), student softmax = (1/2, 1/2):
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])  # 2nd sentence: equal -> 0
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert L.logits_kd_loss(student, teacher).item() == pytest.approx(expected, abs=1e-6)


def test_logits_temperature_hand_value():
    # T = 2: teacher softmax(ln3/2, 0) = (r/(1+r), 1/(1+r)), r = sqrt(3);
    # student softmax(1/2, 0) = (e/(1+e), 1/(1+e)), e = exp(1/2); loss = T^2 * KL(p || q)
    r, e = math.sqrt(3.0), math.exp(0.5)
    p = (r / (1 + r), 1 / (1 + r))
    q = (e / (1 + e), 1 / (1 + e))
    expected = 4.0 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    got = L.logits_kd_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]),
                           temperature=2.0)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_logits_gradient_is_soft_cross_entropy_gradient():
    torch.manual_seed(0)
    teacher = torch.randn(4, 3)
    student = torch.randn(4, 3, requires_grad=True)
    L.logits_kd_loss(student, teacher).backward()
    ours = student.grad.clone()
    student.grad = None
    # TernaryBERT's soft_cross_entropy (summed instead of averaged over the batch)
    sce = (-torch.softmax(teacher, -1) * torch.log_softmax(student, -1)).sum()
    sce.backward()
    assert torch.allclose(ours, student.grad, atol=1e-6)
    assert L.logits_kd_loss(teacher, teacher).abs().item() < 1e-6


def test_regression_and_label_hand_values():
    s = torch.tensor([[1.0], [2.0]])
    t = torch.tensor([[0.5], [4.0]])
    assert L.regression_kd_loss(s, t).item() == pytest.approx(0.25 + 4.0)
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    # -ln(1/2) - ln(1/4)
    assert L.label_loss(logits, torch.tensor([1, 1]), regression=False).item() == pytest.approx(
        math.log(2.0) + math.log(4.0), abs=1e-6)
    assert L.label_loss(s, torch.tensor([1.0, 1.0]), regression=True).item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------- hidden
def test_hidden_hand_value_ignores_padding():
    # T=3, B=2, C=2; sentence 1 has its last position padded.
    student = torch.zeros(3, 2, 2)
    teacher = torch.zeros(3, 2, 2)
    teacher[:, 0, :] = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]])  # sentence 0
    teacher[:, 1, :] = torch.tensor([[2.0, 0.0], [0.0, 0.0], [100.0, 100.0]])  # last = pad
    pad = torch.tensor([[False, False, False], [False, False, True]])
    # sentence 0: (1+1 + 4+0 + 0+9) / (3*2) = 15/6; sentence 1: (4 + 0) / (2*2) = 1
    expected = 15 / 6 + 1.0
    assert L.hidden_kd_loss(student, teacher, pad).item() == pytest.approx(expected)
    # without a mask every position counts
    assert L.hidden_kd_loss(student, teacher, None).item() == pytest.approx(
        15 / 6 + (4 + 20000) / 6)


# ---------------------------------------------------------------------------- attention
def _scores(values, pad_last: bool):
    s = torch.tensor(values, dtype=torch.float32).view(1, 1, 3, 3)
    if pad_last:
        s[..., 2] = NEG_INF  # padded key: -inf in the scores, as our attention emits
    return s


def test_attention_hand_value_masks_queries_and_keys():
    student = _scores([[1, 2, 0], [3, 4, 0], [9, 9, 0]], pad_last=True)
    teacher = _scores([[0, 0, 0], [1, 1, 0], [-5, 7, 0]], pad_last=True)
    pad = torch.tensor([[False, False, True]])
    # only the 2x2 block of real queries x real keys: (1 + 4 + 4 + 9) / (1 head * 2^2)
    assert L.attention_kd_loss(student, teacher, pad).item() == pytest.approx(18 / 4)


def test_attention_two_heads_two_sentences():
    torch.manual_seed(1)
    s = torch.randn(2, 2, 3, 3)
    t = torch.randn(2, 2, 3, 3)
    pad = torch.tensor([[False, False, False], [False, True, True]])
    s[1, :, :, 1:] = NEG_INF
    t[1, :, :, 1:] = NEG_INF
    expected = ((s[0] - t[0]) ** 2).sum() / (2 * 9) + ((s[1, :, 0, 0] - t[1, :, 0, 0]) ** 2).sum() / 2
    assert L.attention_kd_loss(s, t, pad).item() == pytest.approx(expected.item(), rel=1e-6)


def test_attention_gradient_is_finite_with_inf_entries():
    student = _scores([[1, 2, 0], [3, 4, 0], [9, 9, 0]], pad_last=True).requires_grad_(True)
    teacher = _scores([[0, 0, 0], [1, 1, 0], [-5, 7, 0]], pad_last=True)
    pad = torch.tensor([[False, False, True]])
    L.attention_kd_loss(student, teacher, pad).backward()
    grad = student.grad.view(3, 3)
    assert torch.isfinite(grad).all()
    assert grad[2].abs().sum() == 0 and grad[:, 2].abs().sum() == 0  # padded query/key
    assert torch.allclose(grad[:2, :2], torch.tensor([[2.0, 4.0], [4.0, 6.0]]) / 4)


def test_attention_and_hidden_padding_columns_do_not_change_loss():
    torch.manual_seed(2)
    s, t = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    s[1, :, :, 3:] = NEG_INF
    t[1, :, :, 3:] = NEG_INF
    base = L.attention_kd_loss(s, t, pad)
    s2 = torch.full((2, 4, 7, 7), NEG_INF)
    t2 = torch.full((2, 4, 7, 7), NEG_INF)
    s2[:, :, :5, :5], t2[:, :, :5, :5] = s, t
    s2[:, :, 5:, :] = 3.0  # garbage rows of padded queries
    pad2 = torch.cat([pad, torch.ones(2, 2, dtype=torch.bool)], dim=1)
    assert L.attention_kd_loss(s2, t2, pad2).item() == pytest.approx(base.item(), rel=1e-6)

    hs, ht = torch.randn(5, 2, 8), torch.randn(5, 2, 8)
    hbase = L.hidden_kd_loss(hs, ht, pad)
    hs2 = torch.cat([hs, torch.randn(2, 2, 8)]), torch.cat([ht, torch.randn(2, 2, 8)])
    assert L.hidden_kd_loss(*hs2, pad2).item() == pytest.approx(hbase.item(), rel=1e-6)


# ---------------------------------------------------------------------------- flags
def test_parse_kd_parts():
    assert parse_kd_parts("trm,logits") == {"hidden", "attn", "logits"}
    assert parse_kd_parts(" Output ") == {"output"}
    assert parse_kd_parts("attn,attn") == {"attn"}
    for bad, words in (("logits,foo", "unknown part 'foo'"), ("", "empty"),
                       ("trm,output", "already part of")):
        with pytest.raises(ConfigError, match=words):
            parse_kd_parts(bad)


def test_layer_maps():
    assert parse_layer_map("") is None
    assert parse_layer_map("1:2, 2:4") == {1: 2, 2: 4}
    assert parse_layer_map("0:0,1:3") == {0: 0, 1: 3}
    for bad, words in (("1-2", "bad entry"), ("1:2,1:3", "mapped twice"), ("0:1", "0 may only"),
                       ("a:b", "bad entry"), ("1:2:3", "bad entry"), ("-1:2", "negative")):
        with pytest.raises(ConfigError, match=words):
            parse_layer_map(bad)
    assert default_layer_map(2, 2) == {0: 0, 1: 1, 2: 2}
    assert default_layer_map(2, 4) == {0: 0, 1: 2, 2: 4}
    assert default_layer_map(3, 4) == {0: 0, 1: 2, 2: 3, 3: 4}  # ceil(l * 4 / 3)
    assert default_layer_map(4, 2) == {0: 0, 1: 1, 2: 1, 3: 2, 4: 2}
    assert layer_pairs("hidden", None, 2, 4) == [(0, 0), (1, 2), (2, 4)]
    assert layer_pairs("attn", None, 2, 4) == [(1, 2), (2, 4)]
    assert layer_pairs("output", None, 2, 4) == [(2, 4)]
    assert layer_pairs("hidden", {1: 3}, 2, 4) == [(1, 3)]
    assert layer_pairs("output", {1: 3}, 2, 4) == [(2, 4)]
