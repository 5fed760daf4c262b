"""QParams and the reference quantize / dequantize against hand-computed values, and the
quantizers' parameters-as-data API (qparams, integer_codes, set_amax) per kind."""
import math

import pytest
import torch

from qbert.errors import ConfigError
from qbert.quant import (
    EMAQuantizer,
    LSQQuantizer,
    MinMaxQuantizer,
    PACTQuantizer,
    QParams,
    QuantizerStateError,
    TWNQuantizer,
    dequantize,
    fake_quant,
    quantize,
)
from qbert.quant.qparams import code_dtype

T = torch.tensor


def qp(scale, qmin, qmax, zero_point=None, threshold=None, bits=4, signed=True):
    scale = T(scale, dtype=torch.float32)
    zp = torch.zeros_like(scale, dtype=torch.int32) if zero_point is None else T(zero_point, dtype=torch.int32)
    return QParams(scale=scale, zero_point=zp, qmin=qmin, qmax=qmax,
                   axis=0 if scale.dim() == 2 else None, bits=bits, signed=signed,
                   restricted=False, threshold=None if threshold is None else T(threshold))


# ------------------------------------------------------------------------ pure functions
def test_code_dtype_is_the_smallest_signed_integer_type():
    assert code_dtype(-128, 127) == torch.int8
    assert code_dtype(-127, 127) == torch.int8
    assert code_dtype(0, 127) == torch.int8
    assert code_dtype(0, 255) == torch.int16  # unsigned 8 bits
    assert code_dtype(-32768, 32767) == torch.int16
    assert code_dtype(0, 65535) == torch.int32


def test_quantize_per_tensor_clamps_then_rounds():
    # s = 0.5, grid [-2, 1] (2-bit signed): v = x/s = [-4, -1.6, -0.4, 0.6, 1.2, 6]
    p = qp([0.5], -2, 1, bits=2)
    x = T([-2.0, -0.8, -0.2, 0.3, 0.6, 3.0])
    codes = quantize(x, p)
    assert codes.dtype == torch.int8
    assert torch.equal(codes, T([-2, -2, 0, 1, 1, 1], dtype=torch.int8))
    assert torch.equal(dequantize(codes, p), T([-1.0, -1.0, 0.0, 0.5, 0.5, 0.5]))
    assert torch.equal(fake_quant(x, p), T([-1.0, -1.0, 0.0, 0.5, 0.5, 0.5]))


def test_rounding_is_half_to_even():
    p = qp([1.0], -8, 7)
    assert torch.equal(quantize(T([0.5, 1.5, 2.5, -0.5, -1.5, -2.5]), p),
                       T([0, 2, 2, 0, -2, -2], dtype=torch.int8))


def test_quantize_per_channel_axis_0():
    # 3-bit signed rows with steps 0.5 and 0.25 (v = [[-6, 1.48, 2.4], [0.4, -1.6, 8]])
    p = qp([[0.5], [0.25]], -4, 3, bits=3)
    assert p.axis == 0
    x = T([[-3.0, 0.74, 1.2], [0.1, -0.4, 2.0]])
    assert torch.equal(quantize(x, p), T([[-4, 1, 2], [0, -2, 3]], dtype=torch.int8))
    assert torch.allclose(fake_quant(x, p), T([[-2.0, 0.5, 1.0], [0.0, -0.5, 0.75]]))


def test_zero_point_shifts_the_grid():
    # s = 0.5, z = 2, grid [0, 3]: codes round(clamp(x/s + 2)) = [0, 1, 2, 3, 3]
    p = qp([0.5], 0, 3, zero_point=[2], bits=2, signed=False)
    x = T([-2.0, -0.5, 0.1, 0.6, 5.0])
    assert torch.equal(quantize(x, p), T([0, 1, 2, 3, 3], dtype=torch.int8))
    assert torch.equal(fake_quant(x, p), T([-1.0, -0.5, 0.0, 0.5, 0.5]))


def test_ternary_threshold():
    # TWN: Delta = 0.7 * mean|W| = 0.40332, alpha = (0.9 + 0.5 + 1.2 + 0.409) / 4
    w = T([0.398, -0.9, 0.5, 0.05, 1.2, -0.409])
    a = 3.009 / 4
    p = qp([a], -1, 1, threshold=[0.7 * 3.457 / 6], bits=2)
    assert torch.equal(quantize(w, p), T([0, -1, 1, 0, 1, -1], dtype=torch.int8))
    assert torch.allclose(fake_quant(w, p), T([0.0, -a, a, 0.0, a, -a]))


def test_half_input_is_quantized_in_fp32():
    p = qp([0.1], -8, 7)
    x = T([0.33, -0.26, 0.05]).half()
    assert torch.equal(quantize(x, p), quantize(x.float(), p))
    assert fake_quant(x, p).dtype == torch.float32


def test_qparams_checks_its_fields():
    with pytest.raises(ValueError, match="zero_point shape"):
        QParams(T([1.0]), torch.zeros(2, dtype=torch.int32), -1, 1, None, 2, True, True)
    with pytest.raises(ValueError, match="qmin < qmax"):
        qp([1.0], 1, 1)


# ------------------------------------------------------------- quantizers' qparams
def test_lsq_qparams_read_the_step():
    q = LSQQuantizer(2, signed=True)
    q.set_amax(0.5)  # step = amax / Qp, Qp = 1
    p = q.qparams()
    assert torch.equal(p.scale, T([0.5])) and torch.equal(p.zero_point, T([0], dtype=torch.int32))
    assert (p.qmin, p.qmax, p.axis, p.bits, p.signed, p.restricted, p.threshold) == (-2, 1, None, 2, True, False, None)
    x = T([-2.0, -0.8, -0.2, 0.3, 0.6, 3.0])
    assert torch.equal(q.integer_codes(x), T([-2, -2, 0, 1, 1, 1], dtype=torch.int8))
    qc = LSQQuantizer(3, per_channel=True, num_channels=2)
    qc.set_amax(T([[1.5], [0.75]]))  # Qp = 3
    assert qc.qparams().axis == 0 and torch.equal(qc.qparams().scale, T([[0.5], [0.25]]))
    with pytest.raises(ValueError, match="2 rows"):
        qc.qparams(torch.zeros(3, 4))


def test_lsq_qparams_before_initialisation_is_an_error():
    with pytest.raises(QuantizerStateError, match="lsq quantizer is not initialised yet"):
        LSQQuantizer(4).qparams()


def test_pact_qparams_step_is_alpha_over_qp():
    q = PACTQuantizer(3, signed=True, init_clip=1.5)  # restricted [-3, 3], s = 0.5
    p = q.qparams()
    assert torch.equal(p.scale, T([0.5])) and (p.qmin, p.qmax, p.restricted) == (-3, 3, True)
    assert torch.equal(q.integer_codes(T([-2.0, -1.0, 0.3, 1.2, 1.6, 3.0])),
                       T([-3, -2, 1, 2, 3, 3], dtype=torch.int8))
    u = PACTQuantizer(8, signed=False, init_clip=2.55)
    assert (u.qparams().qmin, u.qparams().qmax) == (0, 255)
    assert u.integer_codes(T([1.0])).dtype == torch.int16


def test_minmax_qparams_need_the_tensor():
    q = MinMaxQuantizer(3)  # Qp = 3, s = max|x| / 3 = 0.5
    x = T([-1.5, -0.6, 0.2, 0.8, 1.3])
    assert torch.equal(q.qparams(x).scale, T([0.5]))
    assert torch.equal(q.integer_codes(x), T([-3, -1, 0, 2, 3], dtype=torch.int8))
    with pytest.raises(ConfigError, match=r"^minmax quantizer: qparams\(\) needs the tensor"):
        q.qparams()


def test_ema_qparams_read_the_running_max():
    q = EMAQuantizer(3)
    q.set_amax(2.1)
    assert torch.allclose(q.qparams().scale, T([0.7]))
    with pytest.raises(QuantizerStateError):
        EMAQuantizer(3).qparams()


def test_twn_qparams_scale_and_threshold():
    w = T([0.398, -0.9, 0.5, 0.05, 1.2, -0.409])
    p = TWNQuantizer().qparams(w)
    assert torch.allclose(p.scale, T([3.009 / 4])) and torch.allclose(p.threshold, T([0.7 * 3.457 / 6]))
    assert (p.qmin, p.qmax, p.bits) == (-1, 1, 2)
    assert torch.equal(TWNQuantizer().integer_codes(w), T([0, -1, 1, 0, 1, -1], dtype=torch.int8))
    zero_row = TWNQuantizer(per_channel=True, num_channels=2).qparams(T([[0.0, 0.0], [1.0, -2.0]]))
    assert zero_row.scale[0].item() > 0  # an all-zero row: positive scale, all codes 0


# ---------------------------------------------------------------------- set_amax
def test_set_amax_sets_the_state():
    lsq = LSQQuantizer(4)  # Qp = 7
    lsq.set_amax(1.4)
    assert torch.allclose(lsq.step, T([0.2])) and int(lsq.initialized) == 1
    lsq(torch.full((10,), 100.0))  # no lazy re-initialisation from this tensor
    assert torch.allclose(lsq.step, T([0.2]))
    pact = PACTQuantizer(4, signed=False, lr_scale=10.0)
    pact.set_amax(T([3.0]))
    assert pact.alpha().item() == pytest.approx(3.0) and pact.clip_raw.item() == pytest.approx(0.3)
    ema = EMAQuantizer(4, per_channel=True, num_channels=2)
    ema.set_amax(T([[0.7], [1.4]]))
    assert torch.equal(ema.running_max, T([[0.7], [1.4]]))
    assert torch.allclose(ema.qparams().scale, T([[0.1], [0.2]]))
    ema.set_amax(2.8)  # one value for every channel
    assert torch.equal(ema.running_max, T([[2.8], [2.8]]))


@pytest.mark.parametrize("amax, message", [
    (-1.0, "amax must be finite and >= 0"),
    (float("nan"), "amax must be finite and >= 0"),
    ([1.0, 2.0, 3.0], r"amax of shape \(3,\) does not fit a quantizer with scale shape \(2, 1\)"),
])
def test_set_amax_errors(amax, message):
    with pytest.raises(ConfigError, match=message):
        LSQQuantizer(4, per_channel=True, num_channels=2).set_amax(amax)


@pytest.mark.parametrize("q", [MinMaxQuantizer(4), TWNQuantizer()], ids=["minmax", "twn"])
def test_set_amax_on_a_weight_defined_scale_is_an_error(q):
    with pytest.raises(ConfigError, match=r"computed from each tensor itself, there is no range to set"):
        q.set_amax(1.0)


def test_scale_summary_is_unchanged():
    q = LSQQuantizer(4)
    q.set_amax(1.75)  # Qp = 7
    assert q.scale_summary().item() == 0.25
    assert LSQQuantizer(4).scale_summary().item() == 1.0  # before init: the stored step
    assert MinMaxQuantizer(4).scale_summary().item() == 0.0  # before the first forward
    assert PACTQuantizer(4, init_clip=2.0).scale_summary().item() == pytest.approx(2.0)  # alpha
    assert EMAQuantizer(4).scale_summary().item() == pytest.approx(1e-8)
    m = MinMaxQuantizer(3)
    m(T([1.5, -0.3]))
    assert m.scale_summary().item() == pytest.approx(0.5)
    e = EMAQuantizer(3)
    e.set_amax(2.1)
    assert math.isclose(e.scale_summary().item(), 0.7, rel_tol=1e-6)
