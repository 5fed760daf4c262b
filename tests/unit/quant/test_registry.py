"""The quantizer registry and the per-quantizer config dataclasses: one place per kind."""
import pytest
import torch
from contracts.toy import registered_toy

from qbert.errors import ConfigError
from qbert.quant import (
    ACT_QUANTIZERS,
    QUANTIZER_REGISTRY,
    QUANTIZERS,
    WEIGHT_QUANTIZERS,
    EMAConfig,
    LSQQuantizer,
    PACTConfig,
    QuantizerConfig,
    build_quantizer,
    register_quantizer,
)


def test_registry_order_roles_and_configs():
    assert list(QUANTIZER_REGISTRY) == ["lsq", "pact", "minmax", "ema", "twn"]
    assert list(WEIGHT_QUANTIZERS) == ["lsq", "pact", "minmax", "ema", "twn"]
    assert list(ACT_QUANTIZERS) == ["lsq", "pact", "ema"]
    assert QUANTIZER_REGISTRY["pact"].config is PACTConfig and QUANTIZER_REGISTRY["ema"].config is EMAConfig
    assert QUANTIZER_REGISTRY["lsq"].config is QuantizerConfig
    assert QUANTIZERS["lsq"] is LSQQuantizer and LSQQuantizer.kind == "lsq"
    assert "minmax" not in ACT_QUANTIZERS and dict(ACT_QUANTIZERS)["ema"].kind == "ema"


def test_config_defaults_and_messages():
    assert PACTConfig() == PACTConfig(init_clip=1.0, lr_scale=1000.0, weight_decay=0.5, optimizer_kind="adaptive")
    assert [f.name for f in PACTConfig.user_options()] == ["init_clip", "lr_scale", "weight_decay"]
    assert EMAConfig().decay == 0.9
    with pytest.raises(ConfigError, match=r"^PACT needs init_clip > 0, lr_scale > 0 and weight_decay >= 0$"):
        PACTConfig(weight_decay=-1.0).validate()
    with pytest.raises(ConfigError, match=r"^PACT optimizer_kind must be one of adaptive, linear, got 'sgd'$"):
        PACTConfig(init_clip=0.0, optimizer_kind="sgd").validate()
    with pytest.raises(ConfigError, match=r"^ema_decay must be in \[0, 1\), got 1.0$"):
        EMAConfig(decay=1.0).validate()
    with pytest.raises(ConfigError, match=r"^ema_decay must be in \[0, 1\), got 1.5$"):
        build_quantizer("ema", 8, ema_decay=1.5)


def test_build_quantizer_options():
    q = build_quantizer("pact", 4, signed=False)  # the config's defaults
    assert q.lr_scale == 1000.0 and q.weight_decay == 0.5 and q.alpha().item() == pytest.approx(1.0)
    assert build_quantizer("pact", 4, init_clip=2.0).alpha().item() == pytest.approx(2.0)
    assert build_quantizer("ema", 4, decay=0.5).ema_decay == 0.5
    assert build_quantizer("ema", 4, ema_decay=0.5).ema_decay == 0.5  # legacy prefixed name
    with pytest.raises(ConfigError, match=r"^quantizer lsq has no option 'pact_init_clip'; its options: none$"):
        build_quantizer("lsq", 4, pact_init_clip=2.0)
    with pytest.raises(ConfigError, match="given twice"):
        build_quantizer("ema", 4, decay=0.5, ema_decay=0.5)


@pytest.fixture
def toy():
    with registered_toy() as cls:
        yield cls


def test_a_registered_quantizer_is_everywhere(toy):
    assert "toy" in WEIGHT_QUANTIZERS and "toy" not in ACT_QUANTIZERS
    q = build_quantizer("toy", 4, gain=3.0)
    assert isinstance(q, toy) and q.gain == 3.0 and q.kind == "toy"
    with pytest.raises(ConfigError, match=r"^toy_gain must be > 0, got 0$"):
        build_quantizer("toy", 4, toy_gain=0)
    with pytest.raises(ValueError, match="already registered"):
        register_quantizer("toy")(LSQQuantizer)
    q.set_amax(torch.tensor(0.7))
    assert torch.allclose(q.qparams().scale, torch.tensor([0.1]))
