"""2:4 mask, ASP size rule, permutation search and compact packing (fairseq-free)."""
import pytest
import torch

from qbert.errors import ConfigError
from qbert.quant.modules import QuantLinear
from qbert.sparse import (
    is_2to4,
    kept_magnitude,
    mask_2to4,
    pack_2to4,
    packed_nbytes,
    parse_sparse_groups,
    permute_pair,
    search_permutation,
    size_rule_violation,
    sparsify,
    unpack_2to4,
)


def test_mask_keeps_exactly_the_two_largest_of_every_four():
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    mask = mask_2to4(w)
    assert mask.dtype == torch.bool and is_2to4(mask)
    groups, kept = w.abs().reshape(16, 8, 4), mask.reshape(16, 8, 4)
    assert torch.equal(groups[kept].reshape(16, 8, 2).min(-1).values >= groups[~kept].reshape(16, 8, 2).max(-1).values,
                       torch.ones(16, 8, dtype=torch.bool))
    assert mask_2to4(-w).equal(mask)  # magnitude, not sign


def test_ties_are_broken_towards_the_lower_index_deterministically():
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 2.0, -2.0, 2.0]])
    assert mask_2to4(w).tolist() == [[True, True, False, False, False, True, True, False]]
    assert torch.equal(mask_2to4(torch.zeros(2, 4)), torch.tensor([[True, True, False, False]] * 2))


def test_size_rule_is_asps():
    assert size_rule_violation(64, 128) is None and size_rule_violation(768, 3072) is None
    assert "out_features 2 % 8" in size_rule_violation(2, 64)
    assert "in_features 40 % 16" in size_rule_violation(64, 40)


def test_kept_magnitude_and_group_parsing():
    w = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert kept_magnitude(w) == pytest.approx(0.7)
    assert parse_sparse_groups("qkv, FFN") == ("QKV", "FFN") and parse_sparse_groups("") == ()
    with pytest.raises(ConfigError, match="--sparse-groups: unknown group 'ATTN'"):
        parse_sparse_groups("QKV,ATTN")


def test_permutation_keeps_more_magnitude_and_preserves_the_function():
    torch.manual_seed(1)
    fc1, fc2 = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)
    perm = search_permutation(fc2.weight, max_rounds=20)
    assert sorted(perm.tolist()) == list(range(64))
    assert kept_magnitude(fc2.weight[:, perm]) > kept_magnitude(fc2.weight) + 0.005
    x = torch.randn(5, 32)
    before = fc2(torch.nn.functional.gelu(fc1(x)))
    w1, b1, w2 = permute_pair(fc1.weight, fc1.bias, fc2.weight, perm)
    after = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(x, w1, b1)), w2, fc2.bias)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    # within blocks (attention heads): channels never leave their block
    blocked = search_permutation(fc2.weight, block=16, max_rounds=20)
    assert torch.equal(blocked // 16, torch.arange(64) // 16)


def test_sparsify_prunes_a_state_dict_and_reports_skipped_weights():
    torch.manual_seed(2)
    params = {"a.weight": torch.randn(16, 32), "b.weight": torch.randn(2, 32)}
    dense = params["a.weight"].clone()
    report = sparsify(params, {"a": "FFN", "b": "HEAD"})
    assert torch.equal(params["a.weight_mask"], mask_2to4(dense))
    assert torch.equal(params["a.weight"], dense * params["a.weight_mask"])
    assert "b.weight_mask" not in params and [m.name for m in report.skipped()] == ["b"]
    assert report.by_group()["FFN"]["sparsity"] == 0.5


def test_quant_linear_mask_zeroes_weights_and_their_gradients():
    torch.manual_seed(3)
    dense = QuantLinear(32, 16)
    assert "weight_mask" not in dense.state_dict()  # dense checkpoints keep their keys
    lin = QuantLinear(32, 16).add_weight_mask()
    lin.weight_mask.copy_(mask_2to4(lin.weight))
    lin(torch.randn(4, 32)).pow(2).sum().backward()
    assert not lin.weight.grad[~lin.weight_mask].any() and lin.weight.grad[lin.weight_mask].any()
    assert lin.half().weight_mask.dtype == torch.bool


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_pack_unpack_round_trip(dtype):
    torch.manual_seed(4)
    w = (torch.randn(24, 64) * 50).to(dtype)
    mask = mask_2to4(w.float())
    values, indices = pack_2to4(w, mask)
    assert values.shape == (24, 32) and values.dtype == dtype
    assert indices.shape == (24, 8) and indices.dtype == torch.uint8
    assert torch.equal(unpack_2to4(values, indices, 64), w * mask.to(dtype))
    assert values.numel() * values.element_size() + indices.numel() == packed_nbytes(24, 64, values.element_size())
    with pytest.raises(ConfigError):
        pack_2to4(w, torch.ones_like(mask))
