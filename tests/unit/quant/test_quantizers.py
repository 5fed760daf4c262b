"""Quantizer math against the papers' formulas (hand-computed values), and the plumbing
around it: lazy init, checkpoints, PACT's LR scale / clip-only weight decay, fp16, flags."""
import math
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from conftest import REPO_DIR

from qbert.errors import CheckpointError
from qbert.groups import GROUPS, parse_quant_groups, validate_bits
from qbert.quant import (
    ACT_QUANTIZERS,
    QUANTIZERS,
    WEIGHT_QUANTIZERS,
    EMAQuantizer,
    LSQQuantizer,
    MinMaxQuantizer,
    PACTQuantizer,
    QuantEmbedding,
    QuantLinear,
    TWNQuantizer,
    build_quantizer,
)

T = torch.tensor


def ready(q, **values):
    """Mark q initialised and set its parameters/buffers to the given values."""
    with torch.no_grad():
        for name, v in values.items():
            getattr(q, name).copy_(torch.as_tensor(v, dtype=torch.float32).reshape(getattr(q, name).shape))
        q.initialized.fill_(1)
    return q


def n_levels(y):
    return torch.unique(y.detach()).numel()


# ------------------------------------------------------------------------------ grid
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_integer_grid(bits):
    q = LSQQuantizer(bits, signed=True)
    assert (q.Qn, q.Qp) == (2 ** (bits - 1), 2 ** (bits - 1) - 1)
    q = LSQQuantizer(bits, signed=False)
    assert (q.Qn, q.Qp) == (0, 2 ** bits - 1)
    assert int(q.bits) == bits and int(q.initialized) == 0
    assert f"bits={bits}" in repr(q) and "signed=False" in repr(q) and "per_channel=False" in repr(q)


# ------------------------------------------------------------------------------ LSQ
def test_lsq_forward_and_gradients_per_tensor():
    # 2-bit signed: Qn=2, Qp=1, s=0.5 -> v = x/s = [-4, -1.6, -0.4, 0.6, 1.2, 6]
    q = ready(LSQQuantizer(2, signed=True), step=0.5).train()
    x = T([-2.0, -0.8, -0.2, 0.3, 0.6, 3.0], requires_grad=True)
    y = q(x)
    assert torch.allclose(y, T([-1.0, -1.0, 0.0, 0.5, 0.5, 0.5]))
    y.backward(T([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    # dx: 1 inside [-Qn, Qp] (v = -1.6, -0.4, 0.6), 0 outside (v = -4, 1.2, 6)
    assert torch.equal(x.grad, T([0.0, 2.0, 3.0, 4.0, 0.0, 0.0]))
    # ds per element: -Qn, round(v)-v = -0.4, 0.4, 0.4, Qp, Qp; weighted by gy, times g=1/sqrt(N*Qp)
    ds = -2 * 1 + (-0.4) * 2 + 0.4 * 3 + 0.4 * 4 + 1 * 5 + 1 * 6
    assert torch.allclose(q.step.grad, T([ds / math.sqrt(6 * 1)]), atol=1e-6)
    assert torch.allclose(q.last_clip_fraction, T(0.5))
    assert torch.allclose(q.scale_summary(), T(0.5))


def test_lsq_forward_and_gradients_per_channel():
    # 3-bit signed: Qn=4, Qp=3; row steps 0.5 and 0.25
    q = ready(LSQQuantizer(3, signed=True, per_channel=True, num_channels=2), step=[[0.5], [0.25]])
    assert q.step.shape == (2, 1)
    x = T([[-3.0, 0.74, 1.2], [0.1, -0.4, 2.0]], requires_grad=True)  # v = [[-6,1.48,2.4],[0.4,-1.6,8]]
    y = q(x)
    assert torch.allclose(y, T([[-2.0, 0.5, 1.0], [0.0, -0.5, 0.75]]))
    y.sum().backward()
    assert torch.equal(x.grad, T([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    g = 1 / math.sqrt(3 * 3)  # N = 3 elements per row
    expected = T([[(-4 - 0.48 - 0.4) * g], [(-0.4 - 0.4 + 3) * g]])
    assert torch.allclose(q.step.grad, expected, atol=1e-6)


@pytest.mark.parametrize("signed", [True, False])
def test_lsq_init_from_first_tensor(signed):
    torch.manual_seed(0)
    x = torch.randn(4, 50) * 3
    q = LSQQuantizer(4, signed=signed)
    qp = 7 if signed else 15
    q(x)
    assert int(q.initialized) == 1
    assert torch.allclose(q.step, (2 * x.abs().mean() / math.sqrt(qp)).reshape(1))
    qc = LSQQuantizer(4, signed=signed, per_channel=True, num_channels=4)
    qc(x)
    assert torch.allclose(qc.step, 2 * x.abs().mean(dim=1, keepdim=True) / math.sqrt(qp))


def test_lsq_negative_step_is_clamped_and_still_learns():
    """A step an update pushed below 0 quantizes as the smallest step EPS = 1e-8 (every
    nonzero value lands on a grid end), and its gradient, passed straight through the
    clamp, pushes it back up: the reconstruction loss wants a larger step."""
    from qbert.quant.base import EPS

    q = ready(LSQQuantizer(4), step=-0.1).train()  # 4-bit signed: grid [-8, 7]
    x = T([-1.0, -0.3, 0.0, 0.2, 2.0])
    y = q(x)
    eps = T(EPS)  # float32, as the quantizer computes
    assert torch.equal(y, T([-8.0, -8.0, 0.0, 7.0, 7.0]) * eps)
    loss = (y - x).pow(2).sum()
    loss.backward()
    # dL/ds = sum 2 (y - x) dy/ds, dy/ds = -Qn = -8 below the range, Qp = 7 above, round(0) - 0
    # at 0; LSQ's gradient scale 1 / sqrt(N * Qp)
    dyds = T([-8.0, -8.0, 0.0, 7.0, 7.0])
    expected = (2 * (y.detach() - x) * dyds).sum() / math.sqrt(5 * 7)
    assert q.step.grad.shape == (1,)
    assert q.step.grad.item() == pytest.approx(expected.item(), rel=1e-6)
    assert q.step.grad.item() < -5  # gradient descent raises the step


# --------------------------------------------------------------------- level counts
def span(lo, hi, n=40001):
    return torch.linspace(lo, hi, n)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_level_counts(bits):
    full, restricted = 2 ** bits, 2 ** bits - 1
    s = 0.01
    qmax_s, qmax_u = 2 ** (bits - 1), 2 ** bits
    # LSQ signed: [-Qn, Qp] -> 2^b levels
    q = ready(LSQQuantizer(bits, signed=True), step=s)
    assert n_levels(q(span(-(qmax_s + 3) * s, (qmax_s + 3) * s))) == full
    # LSQ unsigned: [0, Qp] -> 2^b levels
    q = ready(LSQQuantizer(bits, signed=False), step=s)
    assert n_levels(q(span(-3 * s, (qmax_u + 3) * s))) == full
    # PACT unsigned: 2^b levels on [0, alpha]
    q = PACTQuantizer(bits, signed=False, init_clip=1.0)
    assert n_levels(q(span(-0.5, 1.5))) == full
    # PACT signed: restricted symmetric [-Qp, Qp]
    q = PACTQuantizer(bits, signed=True, init_clip=1.0)
    assert n_levels(q(span(-1.5, 1.5))) == restricted
    # Q8BERT min-max (weights) and EMA (activations, eval on a wider input): restricted
    assert n_levels(MinMaxQuantizer(bits)(span(-1.0, 1.0))) == restricted
    assert n_levels(MinMaxQuantizer(bits, signed=False)(span(-0.5, 1.0))) == full
    e = EMAQuantizer(bits).train()
    e(span(-1.0, 1.0))
    assert n_levels(e.eval()(span(-2.0, 2.0))) == restricted
    # unsigned EMA: [0, Qp] -> 2^b
    e = EMAQuantizer(bits, signed=False).train()
    e(span(0.0, 1.0))
    assert n_levels(e.eval()(span(-1.0, 2.0))) == full


def test_twn_has_three_levels():
    torch.manual_seed(0)
    assert n_levels(TWNQuantizer(2)(torch.randn(64, 64))) == 3
    assert int(TWNQuantizer().bits) == 2
    with pytest.raises(ValueError):
        TWNQuantizer(4)


# ------------------------------------------------------------------------------ PACT
def test_pact_unsigned_forward_and_paper_ste():
    # 2 bits unsigned: Qp = 3, alpha = 1, s = 1/3
    q = PACTQuantizer(2, signed=False, init_clip=1.0)
    x = T([-0.5, 0.2, 0.9, 1.5, 2.0], requires_grad=True)
    y = q(x)
    assert torch.allclose(y, T([0.0, 1 / 3, 1.0, 1.0, 1.0]))
    y.backward(T([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert torch.equal(x.grad, T([0.0, 2.0, 3.0, 0.0, 0.0]))  # 1 on [0, alpha), 0 outside
    assert torch.allclose(q.clip_raw.grad, T([4.0 + 5.0]))       # d/dalpha = 1 for x >= alpha only
    assert torch.allclose(q.last_clip_fraction, T(3 / 5))


def test_pact_signed_forward_and_paper_ste():
    # 3 bits signed: restricted grid [-3, 3], alpha = 1.5, s = 0.5
    q = PACTQuantizer(3, signed=True, init_clip=1.5)
    x = T([-2.0, -1.0, 0.3, 1.2, 1.6, 3.0], requires_grad=True)
    y = q(x)
    assert torch.allclose(y, T([-1.5, -1.0, 0.5, 1.0, 1.5, 1.5]))
    y.backward(T([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert torch.equal(x.grad, T([0.0, 2.0, 3.0, 4.0, 0.0, 0.0]))
    assert torch.allclose(q.clip_raw.grad, T([-1.0 + 5.0 + 6.0]))  # -1 below -alpha, +1 above alpha
    assert torch.allclose(q.scale_summary(), T(1.5))


def test_pact_per_channel_clip():
    q = PACTQuantizer(3, signed=True, per_channel=True, num_channels=2, init_clip=1.5)
    with torch.no_grad():
        q.clip_raw[1] = 3.0
    x = T([[2.0, 0.3], [2.0, 0.3]], requires_grad=True)
    y = q(x)
    assert torch.allclose(y, T([[1.5, 0.5], [2.0, 0.0]]))
    y.sum().backward()
    assert torch.allclose(q.clip_raw.grad, T([[1.0], [0.0]]))


def alpha_change(opt_cls, lr_scale, kind, lr=0.01, steps=1):
    torch.manual_seed(0)
    q = PACTQuantizer(4, signed=False, init_clip=1.0, lr_scale=lr_scale, optimizer_kind=kind)
    x = torch.rand(256) * 2  # about half of it above the clip
    opt = opt_cls(q.parameters(), lr=lr)
    a0 = q.alpha().item()
    for _ in range(steps):
        opt.zero_grad()
        q(x).pow(2).sum().backward()
        opt.step()
    return q.alpha().item() - a0


@pytest.mark.parametrize("lr_scale", [4.0, 10.0])
def test_pact_lr_scale_sgd(lr_scale):
    base = alpha_change(torch.optim.SGD, 1.0, "linear", lr=1e-4)
    assert base != 0
    assert alpha_change(torch.optim.SGD, lr_scale, "linear", lr=1e-4) == pytest.approx(lr_scale * base, rel=1e-5)


@pytest.mark.parametrize("lr_scale", [4.0, 10.0])
def test_pact_lr_scale_adam(lr_scale):
    base = alpha_change(torch.optim.Adam, 1.0, "adaptive")
    assert base != 0
    assert alpha_change(torch.optim.Adam, lr_scale, "adaptive") == pytest.approx(lr_scale * base, rel=1e-4)
    # the same reparametrization chosen for the wrong optimizer kind gives only sqrt(lr_scale)
    assert alpha_change(torch.optim.Adam, lr_scale, "linear") == pytest.approx(math.sqrt(lr_scale) * base, rel=1e-4)


def test_pact_weight_decay_only_on_clip():
    lr, lr_scale, wd, mult = 0.1, 4.0, 0.01, 8.0
    torch.manual_seed(0)
    x = torch.rand(3, 5) * 0.4 + 0.1  # entirely inside [0, alpha=1]: task gradient to alpha is 0
    grads, alphas = [], []
    for decay in (0.0, wd):
        torch.manual_seed(1)
        lin = QuantLinear(5, 2, input_quantizer=PACTQuantizer(
            4, signed=False, lr_scale=lr_scale, weight_decay=decay, optimizer_kind="linear"))
        q = lin.input_quantizer
        q.decay_grad_multiplier = mult
        opt = torch.optim.SGD(lin.parameters(), lr=lr)
        lin(x).sum().backward()
        grads.append((lin.weight.grad.clone(), lin.bias.grad.clone()))
        a0 = q.alpha().item()
        opt.step()
        alphas.append(q.alpha().item() - a0)
    assert alphas[0] == 0.0
    assert alphas[1] == pytest.approx(-lr * lr_scale * wd * 1.0 * mult, rel=1e-5)
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


@pytest.mark.parametrize("kind", ["adaptive", "linear"])
def test_pact_reparam_factor_converted_on_load(kind):
    old = PACTQuantizer(4, signed=False, init_clip=0.7)
    new = PACTQuantizer(4, signed=False, lr_scale=10.0, optimizer_kind=kind)
    c = 10.0 if kind == "adaptive" else math.sqrt(10.0)
    assert float(new.reparam_factor) == pytest.approx(c)
    new.load_state_dict(old.state_dict())
    assert float(new.reparam_factor) == pytest.approx(c)
    assert new.alpha().item() == pytest.approx(0.7, rel=1e-6)
    assert new.clip_raw.item() == pytest.approx(0.7 / c, rel=1e-6)


# ----------------------------------------------------------------- Q8BERT min-max / EMA
def test_minmax_forward_and_ste():
    q = MinMaxQuantizer(3)  # Qp = 3, s = max|x| / 3 = 0.5
    x = T([-1.5, -0.6, 0.2, 0.8, 1.3], requires_grad=True)
    y = q(x)
    assert torch.allclose(y, T([-1.5, -0.5, 0.0, 1.0, 1.5]))
    y.backward(T([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert torch.equal(x.grad, T([1.0, 2.0, 3.0, 4.0, 5.0]))  # identity STE, nothing clipped
    assert q.last_clip_fraction.item() == 0.0
    assert torch.allclose(q.scale_summary(), T(0.5))
    qc = MinMaxQuantizer(3, per_channel=True, num_channels=2)  # row scales 0.3 and 1.0
    assert torch.allclose(qc(T([[0.3, -0.9, 0.5], [3.0, 1.1, -0.2]])), T([[0.3, -0.9, 0.6], [3.0, 1.0, 0.0]]))


def test_minmax_max_element_keeps_gradient():
    torch.manual_seed(0)
    for _ in range(20):
        x = (torch.randn(50) * torch.rand(1) * 10).requires_grad_()
        q = MinMaxQuantizer(8)
        q(x).sum().backward()
        assert torch.equal(x.grad, torch.ones(50))
        assert q.last_clip_fraction.item() == 0.0


def test_ema_lazy_init_update_eval_and_clipped_ste():
    q = EMAQuantizer(3, ema_decay=0.9).train()
    assert int(q.initialized) == 0 and q.running_max.item() == 0.0
    x1 = T([0.5, -2.0, 1.0])
    q(x1)
    assert int(q.initialized) == 1 and q.running_max.item() == 2.0  # first batch: max|x|
    q(T([4.0, 0.0]))
    assert q.running_max.item() == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)  # 2.2
    q.eval()
    x = T([-3.0, -1.0, 0.5, 2.0, 2.5], requires_grad=True)  # s = 2.2 / 3
    y = q(x)
    assert q.running_max.item() == pytest.approx(2.2)  # no update in eval
    s = 2.2 / 3
    assert torch.allclose(y, T([-3 * s, -1 * s, 1 * s, 3 * s, 3 * s]))
    y.sum().backward()
    assert torch.equal(x.grad, T([0.0, 1.0, 1.0, 1.0, 0.0]))


# ------------------------------------------------------------------------------ TWN
def test_twn_formula_per_tensor_and_per_row():
    w = T([0.398, -0.9, 0.5, 0.05, 1.2, -0.409], requires_grad=True)
    # mean|W| = 3.457/6 = 0.57617, Delta = 0.7 * that = 0.40332: 0.398 is dropped, -0.409 kept
    # (0.69 or 0.71 instead of 0.7 would flip one of them); alpha = (0.9+0.5+1.2+0.409)/4
    a = 3.009 / 4
    y = TWNQuantizer()(w)
    assert torch.allclose(y, T([0.0, -a, a, 0.0, a, -a]))
    y.backward(T([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert torch.equal(w.grad, T([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))  # identity STE
    q = TWNQuantizer(per_channel=True, num_channels=2)
    # row 0: mean 0.5993, Delta 0.4195 -> alpha 0.7; row 1: mean 0.553, Delta 0.3871 -> alpha 0.8045
    assert torch.allclose(q(w.detach().reshape(2, 3)), T([[0.0, -0.7, 0.7], [0.0, 0.8045, -0.8045]]))
    assert torch.allclose(q.scale_summary(), T((0.7 + 0.8045) / 2))


# ------------------------------------------------------------------ lazy init / checkpoint
@pytest.mark.parametrize("name", ["lsq", "pact", "ema"])
def test_activation_quantizer_state_dict_round_trip(name):
    torch.manual_seed(0)
    q = build_quantizer(name, 4, signed=False).train()
    first = torch.rand(8, 16) * 3
    q(first)
    if name == "lsq":
        assert q.step.item() == pytest.approx(2 * first.abs().mean().item() / math.sqrt(15), rel=1e-6)
    if name == "ema":
        assert q.running_max.item() == first.abs().max().item()
    sd = q.state_dict()
    assert int(sd["initialized"]) == 1 and int(sd["bits"]) == 4
    fresh = build_quantizer(name, 4, signed=False)
    fresh.load_state_dict(sd)
    q.eval(), fresh.eval()
    other = torch.rand(8, 16) * 10  # would give a different init
    assert torch.equal(q(other), fresh(other))
    for k, v in q.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_loading_an_uninitialised_state_reinitialises_from_next_batch():
    q = LSQQuantizer(4)
    q(torch.ones(10))
    q.load_state_dict(LSQQuantizer(4).state_dict())  # e.g. keys filled in for an FP checkpoint
    q(torch.full((10,), 3.0))
    assert q.step.item() == pytest.approx(2 * 3.0 / math.sqrt(7))
    q.reset_initialization()
    q(torch.full((10,), 5.0))
    assert q.step.item() == pytest.approx(2 * 5.0 / math.sqrt(7))


def test_bits_mismatch_on_load_raises():
    lin4 = QuantLinear(3, 2, weight_quantizer=LSQQuantizer(4))
    lin2 = QuantLinear(3, 2, weight_quantizer=LSQQuantizer(2))
    message = r"^checkpoint quantizer weight_quantizer was trained with 4 bits but this quantizer has 2$"
    with pytest.raises(CheckpointError, match=message):
        lin2.load_state_dict(lin4.state_dict())
    assert int(lin2.weight_quantizer.bits) == 2


# ------------------------------------------------------------------------------ fp16
@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_fp16_input_math_in_fp32(name):
    torch.manual_seed(0)
    bits = 2 if name == "twn" else 4
    x32 = torch.randn(4, 8) * 2
    x16 = x32.half().requires_grad_()
    ref = build_quantizer(name, bits)(x16.detach().float())
    q = build_quantizer(name, bits)
    y = q(x16)
    assert y.dtype == torch.float16
    assert torch.equal(y, ref.half())
    y.float().sum().backward()
    assert x16.grad.dtype == torch.float16
    qh = build_quantizer(name, bits).half()  # parameters/buffers in fp16 (fairseq --fp16)
    assert qh(x16).dtype == torch.float16


# ------------------------------------------------------------------------------ modules
def test_quant_linear_without_quantizers_equals_linear():
    torch.manual_seed(0)
    lin = nn.Linear(7, 5)
    q = QuantLinear.from_linear(lin)
    x = torch.randn(3, 7)
    assert torch.equal(q(x), lin(x))
    assert set(q.state_dict()) == {"weight", "bias"}
    q2 = QuantLinear(7, 5)
    q2.load_state_dict(lin.state_dict())
    assert torch.equal(q2(x), lin(x))


def test_quant_linear_with_quantizers():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    wq, iq = LSQQuantizer(4, per_channel=True, num_channels=4), LSQQuantizer(8, signed=False)
    q = QuantLinear.from_linear(lin, weight_quantizer=wq, input_quantizer=iq)
    x = torch.rand(3, 6)
    y = q(x)
    ref_w, ref_x = LSQQuantizer(4, per_channel=True, num_channels=4)(lin.weight), LSQQuantizer(8, signed=False)(x)
    assert torch.allclose(y, torch.nn.functional.linear(ref_x, ref_w, lin.bias))
    y.sum().backward()
    assert wq.step.grad is not None and iq.step.grad is not None
    assert {"weight", "bias", "weight_quantizer.step", "weight_quantizer.bits", "weight_quantizer.initialized",
            "input_quantizer.step", "input_quantizer.bits", "input_quantizer.initialized"} == set(q.state_dict())


def test_quant_embedding():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4, padding_idx=1)
    idx = torch.tensor([[0, 1, 5], [9, 1, 2]])
    qe = QuantEmbedding.from_embedding(emb)
    assert torch.equal(qe(idx), emb(idx)) and qe.padding_idx == 1
    twn = TWNQuantizer(per_channel=True, num_channels=10)
    qe = QuantEmbedding.from_embedding(emb, weight_quantizer=twn)
    out = qe(idx)
    expected = TWNQuantizer(per_channel=True, num_channels=10)(emb.weight.detach())[idx]
    assert torch.allclose(out, expected)
    out.sum().backward()
    assert qe.weight.grad[1].abs().sum() == 0 and qe.weight.grad[0].abs().sum() > 0  # padding row
    assert set(qe.state_dict()) == {"weight", "weight_quantizer.bits", "weight_quantizer.initialized"}
    mn = QuantEmbedding(10, 4, max_norm=0.5)  # renorms the stored rows as nn.Embedding does
    mn(idx)
    assert mn.weight[idx.flatten()].norm(dim=1).max() <= 0.5 + 1e-6


# ------------------------------------------------------------------------------ builder
def test_build_quantizer_registry_and_errors():
    assert set(WEIGHT_QUANTIZERS) == {"lsq", "pact", "minmax", "ema", "twn"}
    assert set(ACT_QUANTIZERS) == {"lsq", "pact", "ema"}
    q = build_quantizer("pact", 4, signed=False, pact_init_clip=2.0, pact_lr_scale=5.0,
                        pact_weight_decay=0.1, optimizer_kind="linear")
    assert isinstance(q, PACTQuantizer) and q.alpha().item() == pytest.approx(2.0)
    assert q.weight_decay == 0.1 and float(q.reparam_factor) == pytest.approx(math.sqrt(5.0))
    assert build_quantizer("LSQ", 3, per_channel=True, num_channels=5).step.shape == (5, 1)
    with pytest.raises(ValueError, match="lsq, pact, minmax, ema, twn"):
        build_quantizer("dorefa", 4)
    with pytest.raises(ValueError, match="optimizer_kind"):
        build_quantizer("pact", 4, optimizer_kind="sgd")


# ------------------------------------------------------------------------------ groups
def test_parse_quant_groups():
    assert GROUPS == ("EMB", "QKV", "FFN", "HEAD")
    assert parse_quant_groups("EMB,QKV,FFN", 4) == {"EMB": 4, "QKV": 4, "FFN": 4}
    assert parse_quant_groups(" emb:2 , Qkv : 4,FFN:8 ", 4) == {"EMB": 2, "QKV": 4, "FFN": 8}
    assert parse_quant_groups("head", 3) == {"HEAD": 3}
    assert parse_quant_groups("", 4) == {}


@pytest.mark.parametrize("spec,default,msg", [
    ("EMB,ATT", 4, "--quant-groups: unknown group 'ATT'; allowed: EMB, QKV, FFN, HEAD"),
    ("FFN:9", 4, "--quant-groups: bits for FFN must be in 2..8, got 9"),
    ("QKV", 1, "--quant-groups: bits for QKV must be in 2..8, got 1"),
    ("EMB:2,emb:4", 4, "--quant-groups: group EMB given more than once"),
    ("EMB:x", 4, "--quant-groups: bits for EMB must be an integer in 2..8, got 'x'"),
])
def test_parse_quant_groups_errors(spec, default, msg):
    with pytest.raises(ValueError) as e:
        parse_quant_groups(spec, default)
    assert str(e.value) == msg


def test_validate_bits():
    assert validate_bits("--weight-bits", 2) == 2
    with pytest.raises(ValueError, match=r"^--act-bits must be in 2\.\.8, got 16$"):
        validate_bits("--act-bits", 16)


# ------------------------------------------------------------------------------ DDP init
_WORKER = r"""
import sys, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[3])
from qbert.quant import LSQQuantizer  # the fairseq-free core
assert "fairseq" not in sys.modules
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method=sys.argv[2], rank=rank, world_size=2)
q = LSQQuantizer(4)
q(torch.full((10,), 1.0 + rank))  # rank 0 alone: 2*1/sqrt(7), rank 1: 2*2/sqrt(7)
print(repr(q.step.item()))
dist.destroy_process_group()
"""


def test_lazy_init_is_averaged_over_data_parallel_workers():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pkg_dir = REPO_DIR
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(r), f"tcp://127.0.0.1:{port}", pkg_dir],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    steps = [float(o[0].strip().splitlines()[-1]) for o in outs]
    assert steps[0] == steps[1] == pytest.approx(1.5 * 2 / math.sqrt(7), rel=1e-6)
