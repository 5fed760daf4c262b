"""quant_roberta's quantization flags derive from the quantizer registry: flags, help,
defaults, validation messages and the KD teacher's full-precision settings."""
import argparse

import pytest
from contracts.toy import registered_toy

from fairseq_qbert.criterions.teacher import FP_OVERRIDES
from fairseq_qbert.models.quant_config import QuantSettings, add_quant_args, full_precision_args
from qbert.errors import ConfigError


def parse(argv, optimizer="adam"):
    parser = argparse.ArgumentParser(add_help=False)
    add_quant_args(parser)
    args = parser.parse_args(argv)
    args.optimizer = optimizer
    return parser, args


def test_pact_flags_help_and_defaults():
    parser, _ = parse([])
    helps = {a.option_strings[0]: a.help for a in parser._actions}
    assert helps["--pact-init-clip"] == "PACT: initial clip value alpha (default 1.0)"
    assert helps["--pact-lr-scale"] == "PACT: multiplier on the clip parameters' learning rate (default 1000)"
    assert helps["--pact-weight-decay"] == "PACT: L2 weight decay on the clip parameters only (default 0.5)"
    assert "--ema-decay" not in helps  # fairseq's own flag (checkpoint EMA)
    assert FP_OVERRIDES == full_precision_args() == {
        "quant_groups": "", "weight_bits": 8, "weight_quantizer": "lsq", "act_bits": 0,
        "act_quantizer": None, "lsq_per_channel": False, "shared_qkv_input_quantizer": False,
        "pact_init_clip": None,
        "pact_lr_scale": None, "pact_weight_decay": None}


def test_pact_settings_from_flags():
    _, args = parse(["--quant-groups", "FFN", "--weight-quantizer", "pact", "--pact-lr-scale", "4"], "sgd")
    settings = QuantSettings.from_args(args)
    assert settings._kwargs("pact") == dict(init_clip=1.0, lr_scale=4.0, weight_decay=0.5, optimizer_kind="linear")
    q = settings.weight_quantizer_for("FFN", 3)
    assert q.lr_scale == 4.0 and q.optimizer_kind == "linear"
    assert settings._kwargs("ema") == {"decay": 0.9}


@pytest.mark.parametrize("argv, optimizer, message", [
    (["--quant-groups", "FFN", "--weight-quantizer", "pact", "--pact-init-clip", "0"], "adam",
     "--pact-init-clip must be > 0, got 0.0"),
    (["--quant-groups", "FFN", "--weight-quantizer", "pact", "--pact-weight-decay", "-1"], "adam",
     "--pact-weight-decay must be >= 0, got -1.0"),
    (["--quant-groups", "FFN", "--pact-lr-scale", "2"], "adam",
     "--pact-lr-scale is a PACT flag but PACT is not used; pass --weight-quantizer pact or --act-quantizer pact"),
    (["--quant-groups", "FFN", "--weight-quantizer", "pact"], "rmsprop",
     "--pact-lr-scale: do not know how --optimizer rmsprop scales updates; supported: adam, adamax, "
     "adagrad, adadelta, adafactor, lamb, cpu_adam, sgd, nag"),
])
def test_messages(argv, optimizer, message):
    _, args = parse(argv, optimizer)
    with pytest.raises(ConfigError) as e:
        QuantSettings.from_args(args)
    assert str(e.value) == message


@pytest.fixture
def toy():
    with registered_toy() as cls:
        yield cls


def test_a_registered_quantizer_gets_its_flags(toy):
    parser, args = parse(["--quant-groups", "FFN", "--weight-quantizer", "toy", "--toy-gain", "3"])
    assert {a.option_strings[0]: a.help for a in parser._actions}["--toy-gain"] == "TOY: step multiplier (default 2.0)"
    assert full_precision_args()["toy_gain"] is None
    assert QuantSettings.from_args(args).weight_quantizer_for("FFN", 4).gain == 3.0
    _, args = parse(["--quant-groups", "FFN", "--toy-gain", "3"])
    with pytest.raises(ConfigError, match=r"^--toy-gain is a TOY flag but TOY is not used; "
                                          r"pass --weight-quantizer toy$"):
        QuantSettings.from_args(args)
    _, args = parse(["--quant-groups", "FFN", "--weight-quantizer", "toy", "--toy-gain", "-3"])
    with pytest.raises(ConfigError, match=r"^--toy-gain must be > 0, got -3.0$"):
        QuantSettings.from_args(args)
