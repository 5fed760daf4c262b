"""The contract every registered quantizer keeps, over every grid it allows (see cases.py):
checkpoints, fp16 inputs, integer codes, QParams reproducing the forward, calibration, and
the STE's gradients. New subsystems (fast kernels, export) add their checks over the same
cases."""
import pytest
import torch
from contracts.cases import case_params
from contracts.reference import reference_ste_grads

from qbert.errors import ConfigError
from qbert.quant import dequantize, fake_quant, fake_quant_ste
from qbert.quant.qparams import code_dtype

CASES = case_params()


@pytest.mark.parametrize("case", CASES)
def test_state_dict_round_trip(case):
    q = case.ready(seed=0)
    fresh = case.build()
    fresh.load_state_dict(q.state_dict())
    fresh.eval()
    assert list(fresh.state_dict()) == list(q.state_dict())
    x = case.sample(seed=1, spread=3.0)  # would initialise differently
    assert torch.equal(fresh(x), q(x))


@pytest.mark.parametrize("case", CASES)
def test_fp16_input_is_computed_in_fp32(case):
    q = case.ready()
    x16 = case.sample(seed=1, spread=2.0).half()
    y = q(x16)
    assert y.dtype == torch.float16
    assert torch.equal(y, q(x16.float()).half())


@pytest.mark.parametrize("case", CASES)
def test_integer_codes_are_integers_on_the_grid(case):
    q = case.ready()
    x = case.sample(seed=1, spread=3.0)
    codes = q.integer_codes(x)
    qp = q.qparams(x)
    assert codes.shape == x.shape and codes.dtype == code_dtype(qp.qmin, qp.qmax)
    assert not codes.dtype.is_floating_point and codes.dtype != torch.bool
    assert int(codes.min()) >= qp.qmin and int(codes.max()) <= qp.qmax
    assert (qp.qmin, qp.qmax) == (q.qmin, q.qmax)


@pytest.mark.parametrize("case", CASES)
def test_qparams_reproduce_the_forward(case):
    q = case.ready()
    for seed, spread in ((1, 0.5), (2, 3.0)):  # mostly inside the range, and clipping
        x = case.sample(seed, spread)
        y = q(x)
        qp = q.qparams(x)
        assert torch.equal(fake_quant(x, qp), y)
        assert torch.equal(dequantize(q.integer_codes(x), qp), y)
    assert qp.scale.dtype == torch.float32 and tuple(qp.scale.shape) == q.param_shape
    assert torch.equal(qp.zero_point, torch.zeros_like(qp.scale, dtype=torch.int32))
    assert qp.axis == (0 if case.per_channel else None)
    assert (qp.bits, qp.signed, qp.restricted) == (case.bits, case.signed, q.restricted)


@pytest.mark.parametrize("case", CASES)
def test_set_amax(case):
    q = case.build()
    amax = torch.rand(q.param_shape, generator=torch.Generator().manual_seed(3)) + 0.1
    if not case.calibratable:
        with pytest.raises(ConfigError, match="no range to set"):
            q.set_amax(amax)
        return
    q.set_amax(amax)
    scale = q.qparams().scale
    assert torch.allclose(scale, amax / q.qmax, rtol=1e-6, atol=0)
    q.eval()(case.sample(seed=1, spread=10.0))  # counts as initialised: no lazy re-init
    assert torch.equal(q.qparams().scale, scale)


@pytest.mark.parametrize("case", CASES)
def test_input_gradient_is_the_clipped_straight_through_estimator(case):
    q = case.ready()
    x = case.sample(seed=1, spread=3.0).requires_grad_()
    gy = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    q(x).backward(gy)
    qp = q.qparams(x)
    if qp.threshold is not None:  # ternary: identity STE everywhere
        assert torch.equal(x.grad, gy)
        return
    v = x.detach() / qp.scale
    inside = (v >= qp.qmin) & (v <= qp.qmax)
    outside = (v < qp.qmin * (1 + 1e-4)) | (v > qp.qmax * (1 + 1e-4))
    assert torch.equal(x.grad[inside], gy[inside])
    assert torch.equal(x.grad[outside], torch.zeros_like(gy[outside]))


@pytest.mark.parametrize("inside_step_grad, tol, grad_scale", [
    (True, 0.0, 0.125),   # LSQ
    (False, 0.0, 1.0),    # PACT
    (True, 1e-5, 1.0),    # min-max / EMA range tolerance
])
@pytest.mark.parametrize("case", CASES)
def test_fake_quant_ste_gradients_match_the_reference(case, inside_step_grad, tol, grad_scale):
    q = case.ready()
    x = case.sample(seed=1, spread=3.0).requires_grad_()
    qp = q.qparams(x.detach())
    s = qp.scale.clone().requires_grad_()
    gy = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    fake_quant_ste(x, s, qp.qmin, qp.qmax, grad_scale, inside_step_grad, tol).backward(gy)
    gx, gs = reference_ste_grads(x, s, qp.qmin, qp.qmax, gy, grad_scale, inside_step_grad, tol)
    assert torch.equal(x.grad, gx)
    terms = (gy.double().abs() * (x.detach().double().abs() / s.detach().double() + qp.qmax))
    atol = 1e-6 * terms.sum_to_size(s.shape) * grad_scale
    assert ((s.grad.double() - gs).abs() <= atol).all(), (s.grad, gs)
