"""Config translation and parameter maps of qbert.hf (no transformers, no fairseq needed)."""
import pytest
import torch
from hf_fixtures import hf_config

from qbert.errors import CheckpointError, ConfigError
from qbert.hf import maps, vocab
from qbert.hf import spec as specs

HEAD = specs.HEAD_NAME


def random_hf_state(spec):
    torch.manual_seed(0)
    return {k: torch.randn(shape) for k, shape in maps.expected_hf_shapes(spec).items()}


def test_config_translation_roberta_classifier():
    spec = specs.from_hf_config(hf_config())
    shape = (spec.family, spec.layers, spec.dim, spec.ffn_dim, spec.heads, spec.num_labels)
    assert shape == ("roberta", 2, 8, 16, 2, 3)
    assert spec.fairseq_max_positions == 16  # 18 rows = padding_idx + 1 offset + 16
    args = specs.to_fairseq_args(spec)
    assert args.arch == "roberta" and args.max_positions == 16 and args.num_classes == 3
    assert args.separator_token == 2 and not args.regression_target
    assert not hasattr(args, "layer_norm_eps")  # fairseq's own 1e-5


def test_config_translation_eps_bert_regression_minilm():
    spec = specs.from_hf_config(hf_config(layer_norm_eps=1e-12))
    args = specs.to_fairseq_args(spec)
    assert args.arch == "quant_roberta" and args.layer_norm_eps == 1e-12
    assert "--layer-norm-eps" in specs.train_flags(spec)
    bert = specs.from_hf_config(hf_config("BertForSequenceClassification", num_labels=1, id2label={"0": "s"},
                                          hidden_size=384, num_attention_heads=12, num_hidden_layers=6))
    assert bert.regression and bert.fairseq_max_positions == 16 and (bert.layers, bert.dim) == (6, 384)
    args = specs.to_fairseq_args(bert)
    assert args.arch == "quant_bert_base" and args.encoder_layout == "bert" and args.separator_token is None
    flags = specs.train_flags(bert)
    assert "--separator-token" not in flags and "--regression-target" in flags


def test_config_round_trip_through_fairseq_args():
    for cfg in (hf_config(), hf_config("BertForSequenceClassification")):
        spec = specs.from_hf_config(cfg)
        fs = maps.hf_to_fairseq(random_hf_state(spec), spec, list(range(spec.vocab_size)), HEAD)
        back = specs.from_fairseq_args(specs.to_fairseq_args(spec), fs, HEAD, "ckpt")
        for field in ("family", "architecture", "layers", "dim", "ffn_dim", "heads", "vocab_size",
                      "hf_positions", "type_vocab_size", "layer_norm_eps", "num_labels", "regression"):
            assert getattr(back, field) == getattr(spec, field), field


@pytest.mark.parametrize("arch", ["RobertaForSequenceClassification", "RobertaForMaskedLM", "RobertaModel",
                                  "BertForSequenceClassification", "BertModel"])
def test_maps_round_trip_exact(arch):
    spec = specs.from_hf_config(hf_config(arch))
    hf = random_hf_state(spec)
    if spec.family == "roberta":
        hf[maps.hf_prefix(spec) + "embeddings.token_type_embeddings.weight"].zero_()  # exported as zero
    order = [2, 0, 3, 1] + list(range(4, spec.vocab_size)) if spec.family == "bert" else list(range(spec.vocab_size))
    fs = maps.hf_to_fairseq(hf, spec, order, HEAD)
    assert fs["encoder.lm_head.weight"] is fs["encoder.sentence_encoder.embed_tokens.weight"]  # tied
    back = maps.fairseq_to_hf(fs, spec, HEAD, order=order)
    for key, value in hf.items():
        assert torch.equal(back[key], value), key


def test_roberta_token_type_is_folded_into_positions():
    spec = specs.from_hf_config(hf_config())
    hf = random_hf_state(spec)
    fs = maps.hf_to_fairseq(hf, spec, list(range(spec.vocab_size)), HEAD)
    token_type = hf["roberta.embeddings.token_type_embeddings.weight"][0]
    expected = hf["roberta.embeddings.position_embeddings.weight"] + token_type
    assert torch.allclose(fs["encoder.sentence_encoder.embed_positions.weight"], expected)


def test_bert_vocab_order_moves_specials_to_fairseq_slots():
    specials = {"bos": 2, "pad": 0, "eos": 3, "unk": 1, "mask": 4}
    order = vocab.fairseq_order(8, specials, "x")
    assert order == [2, 0, 3, 1, 4, 5, 6, 7]
    lines = vocab.dict_lines(order, specials, {4: "[MASK]", 5: "a", 6: "##b", 7: "a"}.get)
    assert lines == ["<mask> 1", "a 1", "##b 1", "madeupword00007 1"]  # duplicate symbol made unique


@pytest.mark.parametrize("over, message", [
    ({"architectures": ["GPT2LMHeadModel"]}, "unsupported architecture 'GPT2LMHeadModel'; supported: Roberta"),
    ({"hidden_act": "swish"}, "hidden_act 'swish'"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"pad_token_id": 0}, "pad_token_id must be 1"),
    ({"hidden_size": 9}, "not a multiple"),
])
def test_unsupported_configs_are_one_line_config_errors(over, message):
    with pytest.raises(ConfigError, match=message) as info:
        specs.from_hf_config(hf_config(**over), "DIR")
    assert "\n" not in str(info.value)


def test_config_weights_mismatch_names_the_tensor():
    spec = specs.from_hf_config(hf_config())
    hf = random_hf_state(spec)
    hf["roberta.encoder.layer.1.intermediate.dense.weight"] = torch.randn(12, 8)
    with pytest.raises(CheckpointError, match=r"layer.1.intermediate.dense.weight' has shape \(12, 8\)"):
        maps.check_hf_state_dict(hf, spec, "DIR")
    hf = random_hf_state(spec)
    del hf["classifier.out_proj.bias"]
    with pytest.raises(CheckpointError, match="no 'classifier.out_proj.bias'"):
        maps.check_hf_state_dict(hf, spec, "DIR")
