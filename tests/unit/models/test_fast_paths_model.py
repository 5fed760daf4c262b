"""quant_roberta with the fast paths (issue #12) computes what the reference module paths
compute, and --shared-qkv-input-quantizer shares one q/k/v input quantizer."""
import contextlib
import copy

import pytest
import torch
from model_utils import HEAD, build, parse

from fairseq_qbert.models.quant_config import QuantSettings
from qbert.errors import CheckpointError, UsageError
from qbert.quant import fused, kernels

W4A8 = ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4", "--act-bits", "8"]
SHARED = W4A8 + ["--shared-qkv-input-quantizer"]


@contextlib.contextmanager
def paths(kernel_backend, fused_layers):
    old = kernels.set_backend(kernel_backend)
    old_fused = fused.set_enabled(fused_layers)
    try:
        yield
    finally:
        kernels.set_backend(old)
        fused.set_enabled(old_fused)


def tokens(batch=3, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, 100, (batch, length), generator=g)
    x[:, 0] = 0
    x[0, 8:] = 1  # padding
    return x


def train_steps(flags, kernel_backend, fused_layers, steps=3):
    """Logits, parameter gradients and final state of a few Adam steps (dropout off)."""
    torch.manual_seed(0)
    model = build(extra=flags + ["--dropout", "0", "--attention-dropout", "0"]).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = tokens(), torch.tensor([0, 1, 1])
    with paths(kernel_backend, fused_layers):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            out = model(x, classification_head_name=HEAD)[0]
            torch.nn.functional.cross_entropy(out, y).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            opt.step()
    return out.detach(), grads, model.state_dict()


@pytest.mark.parametrize("flags", [
    W4A8,
    ["--quant-groups", "EMB:2,QKV:4,FFN:3", "--lsq-per-channel", "--act-bits", "6"],
    ["--quant-groups", "EMB,QKV,FFN,HEAD", "--weight-quantizer", "minmax", "--act-bits", "8",
     "--act-quantizer", "ema"],
    ["--quant-groups", "QKV,FFN", "--weight-quantizer", "pact", "--act-bits", "4", "--act-quantizer", "pact",
     "--optimizer", "adam"],
], ids=["lsq-w4a8", "lsq-channel", "minmax-ema-head", "pact"])
def test_fast_paths_train_like_the_reference(flags):
    """Fused Linear and row-wise embeddings, reference kernels: the same logits, gradients
    and states as the module paths, bit for bit, on the first update (the token embedding's
    step gradient is summed in another order: equal to fp32 rounding); after more updates
    (where that rounding has moved Adam's updates) the logits agree to fp32 rounding."""
    ref = train_steps(flags, "eager", False, steps=1)
    fast = train_steps(flags, "eager", True, steps=1)
    assert torch.equal(fast[0], ref[0])
    assert fast[1].keys() == ref[1].keys()
    for name, g in fast[1].items():
        if "embed_tokens.weight_quantizer" in name:
            assert torch.allclose(g, ref[1][name], rtol=1e-5, atol=1e-9), name
        else:
            assert torch.equal(g, ref[1][name]), name
    ref = train_steps(flags, "eager", False, steps=3)
    fast = train_steps(flags, "eager", True, steps=3)
    assert torch.allclose(fast[0], ref[0], rtol=1e-4, atol=1e-6)
    assert fast[2].keys() == ref[2].keys()


def test_compiled_kernels_train_like_the_reference():
    ref = train_steps(W4A8, "eager", False, steps=2)
    fast = train_steps(W4A8, "compile", True, steps=2)
    assert torch.allclose(fast[0], ref[0], rtol=1e-4, atol=1e-5)
    for name, g in fast[1].items():
        assert torch.allclose(g, ref[1][name], rtol=1e-3, atol=1e-6), name


# ----------------------------------------------------- --shared-qkv-input-quantizer
def test_shared_qkv_input_quantizer_is_one_module():
    model = build(extra=SHARED)
    attn = model.encoder.sentence_encoder.layers[0].self_attn
    q = attn.q_proj.input_quantizer
    assert attn.k_proj.input_quantizer is q and attn.v_proj.input_quantizer is q
    assert attn.out_proj.input_quantizer is not q
    steps = [n for n, _ in model.named_parameters() if "input_quantizer" in n and "self_attn" in n]
    assert len(steps) == 2 * 2  # per layer: the shared one (under q_proj) and out_proj's
    keys = model.state_dict().keys()
    assert {"encoder.sentence_encoder.layers.0.self_attn.k_proj.input_quantizer.step",
            "encoder.sentence_encoder.layers.0.self_attn.v_proj.input_quantizer.step"} <= set(keys)
    assert "shared" in QuantSettings.from_args(parse("quant_roberta_tiny", SHARED)).describe()
    assert build(extra=W4A8).encoder.sentence_encoder.layers[0].self_attn.shared_input_quantizer is None


def test_shared_qkv_input_quantizer_quantizes_once_and_learns():
    torch.manual_seed(0)
    model = build(extra=SHARED).train()
    attn = model.encoder.sentence_encoder.layers[0].self_attn
    q = attn.q_proj.input_quantizer
    calls = []
    q.register_forward_hook(lambda *a: calls.append(1))
    out = model(tokens(), classification_head_name=HEAD)[0]
    assert len(calls) == 1  # one quantization of x per layer forward, not three
    out.sum().backward()
    assert q.step.grad is not None and q.step.grad.abs().sum() > 0
    # the same values as separate quantizers that hold the same step
    sep = build(extra=W4A8).train()
    sep.load_state_dict(model.state_dict())  # a shared checkpoint starts three equal ones
    sep.eval(), model.eval()
    assert torch.allclose(sep(tokens(), classification_head_name=HEAD)[0],
                          model(tokens(), classification_head_name=HEAD)[0], atol=1e-6)


def test_shared_qkv_refuses_a_checkpoint_of_separate_quantizers():
    torch.manual_seed(0)
    sep = build(extra=W4A8).train()
    sep(tokens(), classification_head_name=HEAD)  # initialises q/k/v from the same x: equal
    shared = build(extra=SHARED)
    shared.load_checked_state_dict(copy.deepcopy(sep.state_dict()))  # equal values: accepted
    with torch.no_grad():  # as after training: three different steps
        sep.encoder.sentence_encoder.layers[1].self_attn.k_proj.input_quantizer.step.mul_(1.1)
    with pytest.raises(CheckpointError, match="separate q/k/v input quantizers.*--shared-qkv-input-quantizer"):
        shared.load_checked_state_dict(copy.deepcopy(sep.state_dict()))
    fp = build()  # a full-precision checkpoint: fresh shared quantizer state is filled in
    shared2 = build(extra=SHARED)
    state = fp.state_dict()
    shared2.upgrade_state_dict_named(state, "")
    shared2.load_state_dict(state)


@pytest.mark.parametrize("flags, message", [
    (["--shared-qkv-input-quantizer"], "needs --act-bits N and QKV"),
    (["--quant-groups", "QKV", "--shared-qkv-input-quantizer"], "needs --act-bits N and QKV"),
    (["--quant-groups", "FFN", "--act-bits", "8", "--shared-qkv-input-quantizer"], "needs --act-bits N and QKV"),
])
def test_shared_qkv_flag_errors(flags, message):
    with pytest.raises(UsageError, match=message):  # at parse time, one line
        parse("quant_roberta_tiny", flags)
