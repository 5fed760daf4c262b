"""The fast paths compute what the reference computes (issue #12).

* compiled kernels (:mod:`qbert.quant.kernels`) against the reference passes: forward values
  and input gradients bit for bit, step gradients to fp32 rounding of a float64 sum;
* every quantizer kind (all signs, granularities and 2..8 bits) with compiled kernels
  against itself with the reference kernels;
* the fused QuantLinear (:func:`qbert.quant.fused.quant_linear`) against the module path:
  bit for bit with the reference kernels (outputs, gradients of x, W, b and the steps);
* the row-wise QuantEmbedding (:func:`qbert.quant.fused.quant_embedding`) against
  quantizing the full table;
* the fused QuantLinear keeps no quantized copies for the backward.
"""
import contextlib

import pytest
import torch
from contracts.cases import case_params
from contracts.reference import reference_ste_grads

from qbert.quant import EPS, QuantEmbedding, QuantLinear, build_quantizer, fused, kernels

ALL_BITS = tuple(range(2, 9))


@contextlib.contextmanager
def backend(name, fused_layers=True):
    old = kernels.set_backend(name)
    old_fused = fused.set_enabled(fused_layers)
    try:
        yield
    finally:
        kernels.set_backend(old)
        fused.set_enabled(old_fused)


def reference():
    """The code as it was: reference kernels, module paths."""
    return backend("eager", fused_layers=False)


def hard_values(s, qmin, qmax, n=4096, seed=0):
    """Values on the grid, at half steps (round half to even), at and beyond the range ends,
    +-0, and random ones; ``s`` of shape [1] or [C, 1]."""
    g = torch.Generator().manual_seed(seed)
    rows = s.shape[0] if s.dim() == 2 else 1
    k = torch.arange(qmin - 3, qmax + 4, dtype=torch.float32)
    special = torch.cat([k, k + 0.5, k - 0.5, torch.tensor([0.0, -0.0, qmin * (1 + 1e-6),
                                                             qmax * (1 + 1e-6)])])
    v = torch.cat([special.repeat(rows, 1),
                   (torch.rand(rows, n, generator=g) * (qmax - qmin + 6) + qmin - 3)], dim=1)
    x = v * s if s.dim() == 2 else (v * s).reshape(-1)
    return x.contiguous()


def steps(per_channel, rows=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    if per_channel:
        return torch.rand(rows, 1, generator=g) * 0.3 + 0.01
    return torch.tensor([0.0371])


# ------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("restricted", [False, True])
def test_compiled_kernels_equal_the_reference(bits, signed, per_channel, restricted):
    qp = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    qmin = (-qp if restricted else -(qp + 1)) if signed else 0
    s = steps(per_channel)
    x = hard_values(s, qmin, qp)
    gy = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with backend("compile"):
        y = kernels.ste_forward(x, s, qmin, qp)
    assert torch.equal(y, kernels.reference_forward(x, s, qmin, qp))
    for inside_step_grad, tol in ((True, 0.0), (False, 0.0), (True, 1e-5), (False, 1e-5)):
        with backend("compile"):
            gx, gs = kernels.ste_backward(x, s, gy, qmin, qp, inside_step_grad, tol, need_gs=True)
            gx_only, none = kernels.ste_backward(x, s, gy, qmin, qp, inside_step_grad, tol, need_gs=False)
        rgx, rgs = kernels.reference_backward(x, s, gy, qmin, qp, inside_step_grad, tol, need_gs=True)
        assert none is None and torch.equal(gx_only, rgx)
        assert torch.equal(gx, rgx)
        assert gs.shape == s.shape == rgs.shape and gs.dtype == torch.float32
        _, gs64 = reference_ste_grads(x, s, qmin, qp, gy, 1.0, inside_step_grad, tol)
        terms = gy.double().abs() * (x.double().abs() / s.double() + max(abs(qmin), qp))
        atol = 1e-6 * terms.sum_to_size(s.shape)
        assert ((gs.double() - gs64).abs() <= atol).all(), (gs, gs64)
        assert ((rgs.double() - gs64).abs() <= atol).all(), (rgs, gs64)


def test_kernel_backend_choice():
    with backend("auto"):
        assert not kernels.use_fused(torch.zeros(10))  # small: the reference
    with backend("eager"):
        assert not kernels.use_fused(torch.zeros(kernels.MIN_FUSED_NUMEL))
    with backend("compile"):
        assert kernels.use_fused(torch.zeros(10))
    with pytest.raises(ValueError, match="auto, compile, eager"):
        kernels.set_backend("fast")


# --------------------------------------------------------------------- quantizers
def _run(case, kernels_name, x, gy, seed=0):
    torch.manual_seed(seed)
    q = case.build().train()
    with backend(kernels_name):
        q(case.sample(seed=0))  # initialise
        xi = x.clone().requires_grad_()
        y = q(xi)
        y.backward(gy)
    grads = {n: p.grad.clone() for n, p in q.named_parameters() if p.grad is not None}
    return y.detach(), xi.grad, grads, q


@pytest.mark.parametrize("case", case_params(bits=ALL_BITS))
def test_quantizer_with_compiled_kernels_equals_reference(case):
    x = case.sample(seed=1, spread=3.0)
    gy = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    y, gx, grads, q = _run(case, "compile", x, gy)
    ry, rgx, rgrads, rq = _run(case, "eager", x, gy)
    assert torch.equal(y, ry) and torch.equal(gx, rgx)
    assert grads.keys() == rgrads.keys()
    for name in grads:  # LSQ's step, PACT's clip: the sums are reassociated
        assert torch.allclose(grads[name], rgrads[name], rtol=1e-5, atol=1e-6), name
    for (n, a), (_, b) in zip(q.state_dict().items(), rq.state_dict().items()):
        assert torch.equal(a, b), n  # the same state updates (EMA running max)


# ------------------------------------------------------------------ fused Linear
LINEAR_CASES = [
    # (weight quantizer, weight bits, per-channel weight, input quantizer, input bits, signed input)
    ("lsq", 4, False, None, 0, True),
    ("lsq", 2, True, "lsq", 8, True),
    ("lsq", 4, False, "lsq", 8, False),
    ("lsq", 3, True, "pact", 4, False),
    ("pact", 4, False, "pact", 8, True),
    ("minmax", 8, False, "ema", 8, True),
    ("minmax", 4, True, "ema", 6, False),
    ("ema", 4, False, "lsq", 2, True),
    ("ema", 5, True, None, 0, True),
    (None, 0, False, "lsq", 8, True),
    (None, 0, False, "ema", 7, False),
    ("twn", 2, False, "lsq", 8, True),  # TWN has no uniform STE: the module path runs
]


def _linear(case, seed=0, bias=True):
    wname, wbits, per_channel, iname, ibits, isigned = case
    torch.manual_seed(seed)
    out_f, in_f = 12, 16
    wq = build_quantizer(wname, wbits, per_channel=per_channel,
                         num_channels=out_f if per_channel else 1) if wname else None
    if wname == "pact":
        wq = build_quantizer("pact", wbits, init_clip=0.3)
    iq = build_quantizer(iname, ibits, signed=isigned) if iname else None
    return QuantLinear(in_f, out_f, bias=bias, weight_quantizer=wq, input_quantizer=iq).train()


def _linear_step(case, path, x, gy, bias=True, steps=2):
    lin = _linear(case, bias=bias)
    with path:
        for _ in range(steps):  # the first step initialises; the second reads the state
            lin.zero_grad(set_to_none=True)
            xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
            y = lin(xi)
            y.backward(gy)
    grads = {n: p.grad for n, p in lin.named_parameters()}
    return y.detach(), xi.grad, grads, lin.state_dict()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 3, 16), (9, 16), "transposed", (2, 3, 4, 16)],
                         ids=["TxBxC", "BxC", "BxTxC-transposed", "4d"])
@pytest.mark.parametrize("case", LINEAR_CASES, ids=lambda c: "-".join(map(str, c)))
def test_fused_linear_equals_module_path(case, shape, bias):
    g = torch.Generator().manual_seed(3)
    if shape == "transposed":  # fairseq's x.transpose(0, 1): T x B x C stored as B x T x C
        x = (torch.randn(3, 7, 16, generator=g) * 1.5).transpose(0, 1)
        shape = tuple(x.shape)
    else:
        x = torch.randn(shape, generator=g) * 1.5
    gy = torch.randn(shape[:-1] + (12,), generator=g)
    ref = _linear_step(case, reference(), x, gy, bias)
    eager = _linear_step(case, backend("eager"), x, gy, bias)
    compiled = _linear_step(case, backend("compile"), x, gy, bias)
    for other, exact in ((eager, True), (compiled, False)):
        y, gx, grads, state = other
        assert torch.equal(y, ref[0]) and torch.equal(gx, ref[1])
        assert grads.keys() == ref[2].keys()
        for name, g_ in grads.items():
            if exact or not name.endswith(("step", "clip_raw")):
                assert torch.equal(g_, ref[2][name]), name
            else:
                assert torch.allclose(g_, ref[2][name], rtol=1e-5, atol=1e-6), name
        for name, v in state.items():
            assert torch.equal(v, ref[3][name]), name


def test_fused_linear_is_used_and_statistics_match():
    case = ("lsq", 4, False, "lsq", 8, True)
    lin = _linear(case)
    assert fused.linear_fusable(lin)
    x = torch.randn(5, 16)
    with backend("eager"):
        lin(x)
    stats = lin.weight_quantizer.last_clip_fraction, lin.input_quantizer.last_clip_fraction
    ref = _linear(case)
    with reference():
        ref(x)
    assert torch.equal(stats[0], ref.weight_quantizer.last_clip_fraction)
    assert torch.equal(stats[1], ref.input_quantizer.last_clip_fraction)
    hooked = _linear(case)
    handle = hooked.input_quantizer.register_forward_hook(lambda *a: None)
    assert not fused.linear_fusable(hooked)  # hooks watch the quantizer: the module path
    handle.remove()
    assert fused.linear_fusable(hooked)
    masked = _linear(case).add_weight_mask()
    assert not fused.linear_fusable(masked)  # 2:4 masks: the module path
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused.quant_linear(_linear(case), x) is None  # autocast: the module path


def _saved_bytes(fn):
    """Bytes of distinct tensors autograd keeps for the backward of ``fn()``."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def test_fused_linear_keeps_no_quantized_copies():
    case = ("lsq", 4, True, "lsq", 8, True)
    x = torch.randn(64, 4, 16, requires_grad=True)
    lin = _linear(case)
    with reference():
        lin(x)  # initialise
        ref_bytes, _ = _saved_bytes(lambda: lin(x))
    with backend("eager"):
        fused_bytes, _ = _saved_bytes(lambda: lin(x))
    fp = torch.nn.Linear(16, 12)
    fp_bytes, _ = _saved_bytes(lambda: fp(x))
    steps = lin.weight_quantizer.step.numel() * 4 + 4
    assert fused_bytes <= fp_bytes + steps < ref_bytes


# --------------------------------------------------------------- row-wise Embedding
EMB_CASES = [("lsq", 4, False), ("lsq", 2, True), ("pact", 3, False), ("minmax", 8, False),
             ("minmax", 4, True), ("ema", 4, False), ("ema", 6, True), ("twn", 2, False)]


def _embedding(name, bits, per_channel, rows=40, dim=8, pad=1):
    torch.manual_seed(0)
    q = build_quantizer(name, bits, per_channel=per_channel, num_channels=rows if per_channel else 1)
    return QuantEmbedding(rows, dim, padding_idx=pad, weight_quantizer=q).train()


def _embedding_step(case, path, ids, gy, steps=2):
    emb = _embedding(*case)
    with path:
        for _ in range(steps):  # the first step initialises from the full table
            emb.zero_grad(set_to_none=True)
            y = emb(ids)
            y.backward(gy)
    return y.detach(), {n: p.grad for n, p in emb.named_parameters()}, emb.state_dict(), emb


@pytest.mark.parametrize("kernels_name", ["eager", "compile"])
@pytest.mark.parametrize("case", EMB_CASES, ids=lambda c: "-".join(map(str, c)))
def test_rowwise_embedding_equals_full_table(case, kernels_name):
    ids = torch.tensor([[0, 5, 5, 1, 7], [1, 1, 39, 5, 2]])  # repeats and padding (1)
    gy = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(4))
    ry, rgrads, rstate, remb = _embedding_step(case, reference(), ids, gy)
    y, grads, state, emb = _embedding_step(case, backend(kernels_name), ids, gy)
    assert torch.equal(y, ry)
    assert torch.equal(grads["weight"], rgrads["weight"])
    assert grads["weight"][1].abs().sum() == 0  # the padding row
    for name in rgrads:
        assert name in grads
        assert torch.allclose(grads[name], rgrads[name], rtol=1e-5, atol=1e-7), name
    for name, v in state.items():
        assert torch.equal(v, rstate[name]), name
    assert torch.equal(emb.weight_quantizer.last_clip_fraction, remb.weight_quantizer.last_clip_fraction)


def test_rowwise_embedding_uses_the_full_table_scale():
    emb = _embedding("lsq", 4, False, rows=1000, dim=4)
    with torch.no_grad():
        emb.weight[500:] *= 10  # rows never looked up dominate the initial step
    ids = torch.tensor([[0, 2, 3]])
    with backend("eager"):
        assert fused.quant_embedding(emb, ids) is not None
    full = emb.weight.detach()
    expected = 2 * full.abs().mean() / 7 ** 0.5
    assert torch.allclose(emb.weight_quantizer.step, expected.reshape(1))
    # LSQ's gradient scale counts the whole table: g = 1 / sqrt(N Qp), N = 4000
    emb.zero_grad()
    with backend("eager"):
        emb(ids).sum().backward()
    fresh = _embedding("lsq", 4, False, rows=1000, dim=4)
    with torch.no_grad():
        fresh.weight[500:] *= 10
    with reference():
        fresh(ids)
        fresh.zero_grad()
        fresh(ids).sum().backward()
    assert torch.allclose(emb.weight_quantizer.step.grad, fresh.weight_quantizer.step.grad,
                          rtol=1e-5, atol=1e-8)


def test_rowwise_embedding_falls_back_where_it_must():
    emb = _embedding("lsq", 4, False)
    ids = torch.arange(40).reshape(2, 20)  # as many lookups as rows: the full table is cheaper
    assert fused.quant_embedding(emb, ids) is None
    assert fused.quant_embedding(_embedding("twn", 2, False), ids[:, :3]) is None
    assert fused.quant_embedding(_embedding("lsq", 4, False).add_weight_mask(), ids[:, :3]) is None


def test_eps_clamp_is_kept_by_the_fused_linear():
    lin = _linear(("lsq", 4, False, None, 0, True))
    with torch.no_grad():
        lin.weight_quantizer.step.fill_(-0.1)
        lin.weight_quantizer.initialized.fill_(1)
    x = torch.randn(3, 16)
    with backend("eager"):
        y = lin(x)
    w_q = lin.weight.detach().div(EPS).clamp(-8, 7).round() * EPS
    assert torch.equal(y, torch.nn.functional.linear(x, w_q, lin.bias))
