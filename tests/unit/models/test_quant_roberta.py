"""quant_roberta: module placement, attention path, parameter shares, checkpoints, flag errors."""
import copy

import pytest
import torch
from fairseq.models import ARCH_MODEL_REGISTRY
from model_utils import HEAD, FakeTask, build, parse

from fairseq_qbert.models.quant_attention import QuantMultiheadAttention, capture_attention_scores
from fairseq_qbert.models.quant_roberta import group_parameter_counts
from qbert.errors import UsageError
from qbert.quant import PACTQuantizer
from qbert.quant.modules import QuantEmbedding, QuantLinear

TINY_ROBERTA = ["--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
                "--encoder-attention-heads", "4", "--max-positions", "128"]


def tokens(batch=3, length=10, pad_from=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, 100, (batch, length), generator=g)
    x[:, 0] = 0
    if pad_from is not None:
        x[0, pad_from:] = 1  # fairseq pad index
    return x


def logits(model, x):
    return model(x, classification_head_name=HEAD)[0]


def test_groups_put_quantizers_exactly_where_asked():
    model = build(extra=["--quant-groups", "FFN:2,QKV", "--weight-bits", "4", "--act-bits", "8"])
    layer = model.encoder.sentence_encoder.layers[0]
    assert isinstance(layer.fc1, QuantLinear) and layer.fc1.weight_quantizer.Qp == 1  # 2-bit signed
    assert isinstance(layer.self_attn.q_proj, QuantLinear) and layer.self_attn.q_proj.weight_quantizer.Qp == 7
    assert layer.fc1.input_quantizer.Qp == 127 and layer.self_attn.out_proj.input_quantizer.Qp == 127
    assert type(model.encoder.sentence_encoder.embed_tokens) is torch.nn.Embedding  # EMB not listed
    assert type(model.classification_heads[HEAD].dense) is torch.nn.Linear
    groups = model.quantizers_by_group()
    assert set(groups) == {"FFN", "QKV"}
    assert len([1 for role, _ in groups["QKV"] if role == "weight"]) == 4 * 2


def test_emb_and_head_groups_quantize_embeddings_positions_and_head():
    """The encoder's embedding output is LayerNorm(Q(tokens)[x] + Q(positions)[pos(x)]) and
    the logits are the head's two Linears with quantized weights, recomputed here from the
    quantized tables and weights; the FP tables give other values."""
    torch.manual_seed(0)
    model = build(extra=["--quant-groups", "EMB,HEAD", "--weight-bits", "3"])
    enc = model.encoder.sentence_encoder
    assert isinstance(enc.embed_tokens, QuantEmbedding)
    assert enc.embed_positions.weight_quantizer.Qp == 3
    head = model.classification_heads[HEAD]
    assert isinstance(head.dense, QuantLinear) and isinstance(head.out_proj, QuantLinear)
    model.eval()
    x = tokens(pad_from=6)
    out, extra = model(x, features_only=True, return_all_hiddens=True, classification_head_name=HEAD)
    with torch.no_grad():
        tok_q = enc.embed_tokens.weight_quantizer(enc.embed_tokens.weight)
        pos_q = enc.embed_positions.weight_quantizer(enc.embed_positions.weight)
    # 3-bit tables: at most 2^3 distinct values each, and not the FP tables
    for table, fp in ((tok_q, enc.embed_tokens.weight), (pos_q, enc.embed_positions.weight)):
        assert torch.unique(table).numel() <= 8
        assert (table - fp).abs().max() > 1e-3
    # fairseq's positions: padding_idx + 1, 2, ... over the real tokens, padding_idx at pads
    pad = x.eq(1)
    positions = torch.cumsum(~pad, dim=1) * ~pad + 1
    ln = enc.layernorm_embedding

    def embedded(tok_table, pos_table):
        e = torch.nn.functional.embedding(x, tok_table) + torch.nn.functional.embedding(positions, pos_table)
        e = torch.nn.functional.layer_norm(e, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        return (e * (~pad).unsqueeze(-1)).transpose(0, 1)  # (T, B, C), pads zeroed

    used = extra["inner_states"][0]
    with torch.no_grad():
        assert torch.allclose(used, embedded(tok_q, pos_q), atol=1e-5)
        assert not torch.allclose(used, embedded(enc.embed_tokens.weight, pos_q), atol=1e-3)
        assert not torch.allclose(used, embedded(tok_q, enc.embed_positions.weight), atol=1e-3)
        # the head: tanh(dense) then out_proj, both with 3-bit weights
        features = extra["inner_states"][-1][0]  # <s> of every sentence
        hidden = torch.tanh(features @ head.dense.weight_quantizer(head.dense.weight).t() + head.dense.bias)
        expected = hidden @ head.out_proj.weight_quantizer(head.out_proj.weight).t() + head.out_proj.bias
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("act", ["lsq", "pact", "ema"])
def test_fc2_input_is_unsigned_after_relu_and_signed_after_gelu(act):
    """README: Linear inputs are signed, except fc2's input after a ReLU (GELU dips to -0.17)."""
    flags = ["--quant-groups", "FFN,QKV", "--weight-bits", "4", "--act-bits", "4", "--act-quantizer", act,
             "--optimizer", "adam"]
    relu = build(extra=[*flags, "--activation-fn", "relu"])
    gelu = build(extra=flags)
    assert gelu.encoder.sentence_encoder.layers[0].activation_fn is not torch.relu
    for model, fc2_signed in ((relu, False), (gelu, True)):
        for layer in model.encoder.sentence_encoder.layers:
            q = layer.fc2.input_quantizer
            assert q.signed is fc2_signed
            if fc2_signed:
                assert q.qmin < 0 and q.qmax == 7
            else:
                assert (q.qmin, q.qmax) == (0, 15)
            for other in (layer.fc1, layer.self_attn.q_proj, layer.self_attn.out_proj):
                assert other.input_quantizer.signed and other.input_quantizer.qmin < 0
    # and fc2 gets the unsigned grid: 2^4 non-negative levels (a signed one has 8 above 0)
    relu.eval()
    fc2 = relu.encoder.sentence_encoder.layers[0].fc2
    seen = []
    handle = fc2.input_quantizer.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    logits(relu, tokens())  # initialises the quantizer from real ReLU outputs
    handle.remove()
    assert len(seen) == 1 and seen[0].min() >= 0
    step = fc2.input_quantizer.scale_summary() / (15 if act == "pact" else 1)  # PACT logs its clip
    with torch.no_grad():
        ramp = torch.linspace(0, 20 * float(step), 2001)
        codes = fc2.input_quantizer(ramp) / step
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert codes.round().unique().tolist() == [float(k) for k in range(16)]


def test_no_groups_is_plain_roberta():
    torch.manual_seed(0)
    quant = build()
    plain = ARCH_MODEL_REGISTRY["roberta"].build_model(parse("roberta", TINY_ROBERTA), FakeTask(100))
    plain.register_classification_head(HEAD, num_classes=2)
    plain.load_state_dict(quant.state_dict(), strict=True)
    quant.eval(), plain.eval()
    x = tokens(pad_from=6)
    assert torch.allclose(logits(quant, x), logits(plain, x), atol=1e-5)


def test_attention_uses_the_quantized_projection_weights():
    """fairseq's fused attention ignores swapped Linears; ours must not.

    Reference: plain fairseq RoBERTa (fast path) with every QKV weight replaced by its
    fake-quantized value must give exactly the quantized model's output.
    """
    torch.manual_seed(0)
    quant = build(extra=["--quant-groups", "QKV", "--weight-bits", "2"])
    quant.eval()
    x = tokens(pad_from=7)
    out_q = logits(quant, x)
    plain = ARCH_MODEL_REGISTRY["roberta"].build_model(parse("roberta", TINY_ROBERTA), FakeTask(100))
    plain.register_classification_head(HEAD, num_classes=2)
    state = {k: v for k, v in quant.state_dict().items() if "_quantizer." not in k}
    for name, module in quant.named_modules():
        if isinstance(module, QuantLinear):
            state[name + ".weight"] = module.quantized_weight().detach()
    plain.load_state_dict(state, strict=True)
    plain.eval()
    out_ref = logits(plain, x)
    assert torch.allclose(out_q, out_ref, atol=1e-5)
    # and the FP weights give a different answer (2-bit QKV changes the output)
    fp = copy.deepcopy(plain)
    fp.load_state_dict({k: v for k, v in quant.state_dict().items() if "_quantizer." not in k})
    assert not torch.allclose(logits(fp, x), out_q, atol=1e-3)


def test_attention_capture_is_exact_and_costs_nothing_when_off():
    model = build(extra=["--quant-groups", "FFN", "--weight-bits", "4"])
    model.eval()
    x = tokens(pad_from=5)
    before = logits(model, x)
    with capture_attention_scores(model) as scores:
        during = logits(model, x)
    assert torch.equal(before, during)
    assert len(scores) == 2 and scores[0].shape == (3, 4, 10, 10)
    assert torch.isinf(scores[0][0, :, :, 5:]).all() and torch.isfinite(scores[0][1]).all()
    assert all(m.score_sink is None for m in model.modules() if isinstance(m, QuantMultiheadAttention))


def test_roberta_base_group_shares_match_the_paper():
    model = build("quant_roberta", vocab=50265)
    counts = group_parameter_counts(model)
    shares = {g: counts[g] / counts["total"] for g in ("EMB", "QKV", "FFN")}
    assert shares["EMB"] == pytest.approx(0.311, abs=0.005)
    assert shares["QKV"] == pytest.approx(0.226, abs=0.005)
    assert shares["FFN"] == pytest.approx(0.452, abs=0.005)


def _train_step(model, x, y):
    model.train()
    loss = torch.nn.functional.cross_entropy(logits(model, x), y)
    loss.backward()
    return loss


def test_state_dict_round_trip_restores_quantizers_bit_identically():
    flags = ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4", "--act-bits", "8", "--lsq-per-channel"]
    torch.manual_seed(0)
    a = build(extra=flags)
    x, y = tokens(), torch.tensor([0, 1, 1])
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    _train_step(a, x, y)
    opt.step()
    state = copy.deepcopy(a.state_dict())
    torch.manual_seed(1)
    b = build(extra=flags)
    b.load_state_dict(state, strict=True)
    a.eval(), b.eval()
    assert torch.equal(logits(a, x), logits(b, x))
    for (na, qa), (_, qb) in zip(a.named_modules(), b.named_modules(), strict=True):
        if isinstance(qa, QuantLinear):
            assert torch.equal(qa.quantized_weight(), qb.quantized_weight()), na


def test_fp_checkpoint_loads_and_quantizers_initialise_from_data():
    torch.manual_seed(0)
    plain = ARCH_MODEL_REGISTRY["roberta"].build_model(parse("roberta", TINY_ROBERTA), FakeTask(100))
    plain.register_classification_head(HEAD, num_classes=2)
    quant = build(extra=["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "4", "--act-bits", "8"])
    quant.load_state_dict(plain.state_dict(), strict=True)  # fairseq's load: upgrade + strict
    fc1 = quant.encoder.sentence_encoder.layers[0].fc1
    assert not bool(fc1.weight_quantizer.initialized) and not bool(fc1.input_quantizer.initialized)
    quant.eval()
    logits(quant, tokens())
    w = plain.encoder.sentence_encoder.layers[0].fc1.weight
    expected = 2 * w.abs().mean() / (7 ** 0.5)  # LSQ init 2 mean|w| / sqrt(Qp)
    assert torch.allclose(fc1.weight_quantizer.step.detach().reshape(()), expected, rtol=1e-5)
    assert float(fc1.input_quantizer.step.detach().reshape(-1)[0]) > 0


def test_checkpoint_with_other_bits_is_refused_with_a_clear_message():
    w4 = build(extra=["--quant-groups", "FFN", "--weight-bits", "4"])
    w2 = build(extra=["--quant-groups", "FFN", "--weight-bits", "2"])
    with pytest.raises(UsageError, match="trained with 4 bits but this run asks for 2"):
        w2.load_state_dict(w4.state_dict(), strict=True)
    fp = build()
    with pytest.raises(UsageError, match="does not quantize"):
        fp.load_state_dict(w4.state_dict(), strict=True)


@pytest.mark.parametrize("flags, message", [
    (["--quant-groups", "EMB,ATT"], "--quant-groups: unknown group 'ATT'"),
    (["--quant-groups", "FFN:9"], "2..8"),
    (["--quant-groups", "FFN", "--weight-bits", "1"], "--weight-bits"),
    (["--quant-groups", "FFN", "--act-quantizer", "pact"], "--act-quantizer pact needs --act-bits"),
    (["--quant-groups", "FFN", "--pact-init-clip", "2"], "--pact-init-clip is a PACT flag"),
    (["--quant-groups", "FFN", "--weight-quantizer", "dorefa"], "allowed: lsq, pact, minmax, ema, twn"),
    (["--quant-groups", "FFN", "--weight-quantizer", "pact", "--optimizer", "adam", "--act-bits", "8",
      "--act-quantizer", "twn"], "--act-quantizer: unknown quantizer 'twn'"),
])
def test_bad_flags_fail_at_parse_time_with_one_line(flags, message):
    with pytest.raises(UsageError) as err:
        parse("quant_roberta_tiny", flags)
    assert message in str(err.value) and "\n" not in str(err.value)


def _clip_after_one_step(optimizer_name, lr_scale, weight_decay=0.0, inside=False):
    """One fairseq-optimizer step of a PACT-FFN model; returns (alpha before, alpha after)."""
    from fairseq import optim
    from omegaconf import OmegaConf

    flags = ["--quant-groups", "FFN", "--weight-bits", "4", "--weight-quantizer", "pact",
             "--optimizer", optimizer_name, "--pact-lr-scale", str(lr_scale),
             "--pact-weight-decay", str(weight_decay), "--pact-init-clip", "10" if inside else "0.01"]
    torch.manual_seed(0)
    model = build(extra=flags)
    cfg = {"adam": {"_name": "adam", "lr": [1e-3], "adam_betas": "(0.9, 0.999)", "adam_eps": 1e-12,
                    "weight_decay": 0.0, "use_old_adam": False, "fp16_adam_stats": False, "tpu": False},
           "sgd": {"_name": "sgd", "lr": [1e-3], "momentum": 0.0, "weight_decay": 0.0}}[optimizer_name]
    opt = optim.build_optimizer(OmegaConf.create(cfg), [p for p in model.parameters() if p.requires_grad])
    q = model.encoder.sentence_encoder.layers[0].fc1.weight_quantizer
    assert isinstance(q, PACTQuantizer)
    before = q.alpha().clone()
    x, y = tokens(batch=4), torch.tensor([0, 1, 1, 0])
    model.train()
    loss = torch.nn.functional.cross_entropy(logits(model, x), y, reduction="sum")
    opt.backward(loss)
    opt.multiply_grads(1.0 / x.size(0))  # what fairseq's trainer does (sample_size = sentences)
    opt.step()
    return before, q.alpha()


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd"])
def test_pact_lr_scale_takes_effect_with_stock_fairseq_optimizers(optimizer_name):
    b1, a1 = _clip_after_one_step(optimizer_name, 1.0)
    b2, a2 = _clip_after_one_step(optimizer_name, 100.0)
    assert torch.allclose(b1, b2)
    step1, step100 = (a1 - b1).abs().item(), (a2 - b2).abs().item()
    assert step1 > 0
    assert step100 / step1 == pytest.approx(100.0, rel=1e-3)


def test_pact_weight_decay_hits_only_the_clips():
    """All weights inside the clip: the task gives alpha no gradient, only the decay moves it."""
    b0, a0 = _clip_after_one_step("sgd", 10.0, weight_decay=0.0, inside=True)
    b1, a1 = _clip_after_one_step("sgd", 10.0, weight_decay=0.5, inside=True)
    assert torch.allclose(a0, b0)  # no task gradient inside the clip
    lr, lr_scale, wd = 1e-3, 10.0, 0.5
    assert (a1 - b1).item() == pytest.approx(-lr * lr_scale * wd * b1.item(), rel=1e-4)


def test_user_dir_works_from_any_directory_after_install(tmp_path):
    """fairseq-train run outside the repo finds the plugin through `qbert-user-dir`."""
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    user_dir = subprocess.run([bin_dir / "qbert-user-dir"], capture_output=True, text=True, check=True).stdout.strip()
    assert Path(user_dir, "__init__.py").is_file()
    proc = subprocess.run([bin_dir / "fairseq-train", str(tmp_path), "--user-dir", user_dir, "--task",
                           "sentence_prediction", "--num-classes", "2", "--arch", "quant_roberta_tiny", "--cpu",
                           "--quant-groups", "FFN,BAD"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "fairseq-qbert: error: --quant-groups: unknown group 'BAD'; allowed: EMB, QKV, FFN, HEAD")


def test_checkpoint_with_another_head_follows_fairseqs_rule():
    """A head of another shape is dropped from the checkpoint and the model keeps its own
    (fairseq's RobertaModel rule), quantized HEAD included; the encoder still loads."""
    flags = ["--quant-groups", "FFN,HEAD", "--weight-bits", "4"]
    three = build(extra=flags, num_classes=3)
    two = build(extra=flags, num_classes=2)
    own_head = copy.deepcopy(two.classification_heads[HEAD].state_dict())
    two.load_state_dict(copy.deepcopy(three.state_dict()), strict=True)
    for key, value in two.classification_heads[HEAD].state_dict().items():
        assert torch.equal(value, own_head[key]), key
    fc1 = "encoder.sentence_encoder.layers.0.fc1.weight"
    assert torch.equal(two.state_dict()[fc1], three.state_dict()[fc1])
