"""qbert.calib.calibrate on a plain nn.Module holding our quantizers: what is observed, how
every quantizer kind takes its state, bypass, modes, errors, reproducibility."""
import copy

import pytest
import torch
import torch.nn as nn

from qbert.calib import calibrate, calibrate_batches
from qbert.errors import ConfigError, DataError
from qbert.quant import build_quantizer
from qbert.quant.modules import QuantLinear


def toy(wq="lsq", aq="lsq", bits=8, per_channel=False, seed=0):
    torch.manual_seed(seed)
    wkw = dict(per_channel=per_channel, num_channels=16) if per_channel else {}
    l1 = QuantLinear(8, 16, weight_quantizer=build_quantizer(wq, bits, **wkw),
                     input_quantizer=build_quantizer(aq, 8) if aq else None)
    l2 = QuantLinear(16, 4, weight_quantizer=build_quantizer(wq, bits),
                     input_quantizer=build_quantizer(aq, 8, signed=False) if aq else None)
    return nn.Sequential(l1, nn.ReLU(), l2)


def data(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 8, generator=g) * (i + 1) for i in range(n)]


def loop_over(batches):
    def loop(m):
        for b in batches:
            m(b)
        return len(batches)
    return loop


def fp_forward(model, x):
    l1, act, l2 = model
    return nn.functional.linear(act(nn.functional.linear(x, l1.weight, l1.bias)), l2.weight, l2.bias)


def test_lsq_max_state_is_amax_over_qp_and_inputs_are_observed_unquantized():
    model, batches = toy(), data()
    report = calibrate(model, loop_over(batches), method="max")
    l1, _, l2 = model
    x1 = torch.cat(batches)
    h = torch.relu(nn.functional.linear(x1, l1.weight, l1.bias))  # FP: quantization was off
    assert torch.allclose(l1.weight_quantizer.step, l1.weight.abs().max() / 127)
    assert torch.allclose(l2.weight_quantizer.step, l2.weight.abs().max() / 127)
    assert torch.allclose(l1.input_quantizer.step, x1.abs().max() / 127)
    assert torch.allclose(l2.input_quantizer.step, h.abs().max() / 255)  # unsigned after ReLU
    assert all(int(q.initialized) == 1 for q in (l1.weight_quantizer, l1.input_quantizer,
                                                   l2.weight_quantizer, l2.input_quantizer))
    assert report.num_batches == 4 and len(report.entries) == 4
    assert {e.role for e in report.entries} == {"weight", "input"}


def test_per_channel_lsq_gets_one_step_per_row():
    model = toy(per_channel=True)
    calibrate(model, loop_over(data()), method="max", weight_method="max")
    l1 = model[0]
    assert l1.weight_quantizer.step.shape == (16, 1)
    assert torch.allclose(l1.weight_quantizer.step[:, 0], l1.weight.abs().amax(dim=1) / 127)


def test_pact_clip_and_ema_range_are_amax():
    model = toy(wq="pact", aq="ema")
    batches = data()
    calibrate(model, loop_over(batches), method="max")
    l1 = model[0]
    assert torch.allclose(l1.weight_quantizer.alpha(), l1.weight.abs().max().reshape(1, ))
    assert torch.allclose(l1.input_quantizer.running_max, torch.cat(batches).abs().max().reshape(1))


def test_minmax_and_twn_stay_defined_by_the_weight():
    for wq, bits in (("minmax", 4), ("twn", 2)):
        model = toy(wq=wq, aq="lsq", bits=bits)
        report = calibrate(model, loop_over(data()), method="percentile", percentile=99.0)
        kinds = {e.role: e.method for e in report.entries}
        assert kinds == {"weight": "defined-by-tensor", "input": "percentile"}
        ref = copy.deepcopy(model[0].weight_quantizer)  # its output is still a function of w alone
        w = model[0].weight
        assert torch.equal(model[0].weight_quantizer(w), ref(w))


def test_quantizers_are_bypassed_and_eval_mode_during_the_loop_and_restored_after():
    model, batches = toy(), data()
    model.train()
    seen = []

    def loop(m):
        for b in batches:
            seen.append((m.training, torch.equal(m(b), fp_forward(m, b))))
        return len(batches)

    calibrate(model, loop, method="entropy", num_bins=512)
    assert seen == [(False, True)] * len(batches)
    assert model.training
    assert "forward" not in model[0].input_quantizer.__dict__
    # after calibration the quantizers quantize again, from the calibrated state
    y = model.eval()(batches[0])
    assert not torch.equal(y, fp_forward(model, batches[0]))


def test_qat_from_calibrated_state_does_not_reinitialise():
    model = toy()
    calibrate(model, loop_over(data()), method="percentile", percentile=99.9)
    steps = [q.step.detach().clone() for q in (model[0].weight_quantizer, model[0].input_quantizer)]
    model.train()(data(1, seed=7)[0] * 10)  # a first training forward on other data
    assert torch.equal(model[0].weight_quantizer.step, steps[0])
    assert torch.equal(model[0].input_quantizer.step, steps[1])
    state = model.state_dict()  # and the state round-trips as initialised
    other = toy(seed=5)
    other.load_state_dict(state)
    other.train()(data(1, seed=8)[0])
    assert torch.equal(other[0].input_quantizer.step, steps[1])


@pytest.mark.parametrize("method", ["max", "percentile", "mse", "entropy"])
def test_bit_for_bit_reproducible(method):
    states = []
    for _ in range(2):
        model = toy(seed=3)
        calibrate(model, loop_over(data(3, seed=4)), method=method, weight_method="mse", num_bins=512)
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_calibrate_batches_runs_each_batch():
    model, batches = toy(), data(3)
    report = calibrate_batches(model, batches, lambda m, b: m(b), method="mse", num_bins=512)
    assert report.num_batches == 3


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="kl"), "--calibrator"),
    (dict(weight_method="percentile"), "--weight-calibrator"),
    (dict(method="percentile", percentile=0), "--percentile"),
    (dict(method="percentile", percentile=101), "--percentile"),
])
def test_bad_settings_fail_before_any_batch(kwargs, match):
    ran = []
    with pytest.raises(ConfigError, match=match):
        calibrate(toy(), lambda m: ran.append(1), **kwargs)
    assert not ran


def test_no_data_is_a_data_error():
    with pytest.raises(DataError, match="no data"):
        calibrate(toy(), lambda m: 0, method="percentile")
    with pytest.raises(ConfigError, match="no quantizers"):
        calibrate(nn.Linear(2, 2), lambda m: 0)
