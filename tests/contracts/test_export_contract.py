"""Export contract, per quantizer case: the packed integer codes, unpacked and multiplied by
the exported scale, are exactly the quantizer's eval forward (weights); an exported input
grid fake-quantizes exactly as the quantizer does (activations)."""
import pytest
import torch
from contracts.cases import case_params

from qbert.export import pack, unpack
from qbert.export.format import QuantInput, QuantWeight
from qbert.quant.qparams import fake_quant


@pytest.mark.parametrize("case", [c for c in case_params() if c.values[0].signed])  # weights are signed
def test_packed_codes_dequantize_to_the_forward(case):
    q = case.ready()
    w = case.sample(seed=1)
    qw = QuantWeight.from_qparams(q.integer_codes(w), q.qparams(w), case.name)
    codes = unpack(pack(qw.codes.numpy(), qw.bits, qw.offset), qw.bits, qw.codes.numel(), qw.offset)
    back = QuantWeight(torch.from_numpy(codes).reshape(qw.codes.shape), qw.scale, qw.bits, qw.qmin, qw.qmax)
    with torch.no_grad():
        assert torch.equal(back.dequantized(), q(w) + 0.0)  # + 0.0: -0.0 == 0.0
    assert qw.bits <= max(case.bits, 2) and qw.codes.dtype == torch.int8


@pytest.mark.parametrize("case", [c for c in case_params() if c.values[0].calibratable
                                  and not c.values[0].per_channel])
def test_exported_input_grid_fake_quantizes_as_the_forward(case):
    q = case.ready()
    x = case.sample(seed=2, spread=1.5)
    qi = QuantInput.from_qparams(q.qparams(), case.name)
    with torch.no_grad():
        assert torch.equal(fake_quant(x, qi.qparams()), q(x) + 0.0)
