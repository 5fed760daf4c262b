"""Length configurations: parsing/checks and the LengthDrop / LayerDrop samplers."""
import math
import random

import pytest

from qbert.errors import ConfigError
from qbert.lat import approx_ratio, inverse_approx_ratio, parse_length_config, sample_layer_config, sample_length_config


def test_parse_forms_and_checks():
    assert parse_length_config("(96, 80,64)", 3, 128) == (96, 80, 64)
    assert parse_length_config("96,80,80", 3, 128) == (96, 80, 80)
    assert parse_length_config([5, 5], 2, 5) == (5, 5)
    assert parse_length_config(None, 3) is None and parse_length_config("", 3) is None
    for text, message in (("(96,80)", "2 values for a model with 3 layers"),
                          ("(64,80,10)", "increasing at layer 2"),
                          ("(64,0,0)", ">= 1"), ("(200,80,10)", "maximum of 128"),
                          ("(a,b,c)", "comma-separated")):
        with pytest.raises(ConfigError, match=r"--length-config") as e:
            parse_length_config(text, 3, 128)
        assert message in str(e.value)


def test_random_lengths_stay_within_the_bound_and_monotone():
    rng = random.Random(0)
    for _ in range(500):
        length, layers, bound = rng.randint(2, 200), rng.randint(1, 12), rng.choice([0.1, 0.2, 0.5])
        config = sample_length_config(length, layers, rng, ratio_bound=bound)
        prev = length
        for value in config:
            assert max(2, math.ceil(prev * (1 - bound))) <= value <= max(prev, 2)
            prev = value
        assert all(a >= b for a, b in zip(config, config[1:]))


def test_the_smallest_and_skipped_layers():
    assert sample_length_config(384, 6, ratio=0.2) == (308, 247, 198, 159, 128, 103)
    assert sample_length_config(3, 4, ratio=0.5) == (2, 2, 2, 2)  # never below 2
    # LayerDrop: a skipped layer keeps the previous length
    assert sample_length_config(100, 4, ratio=0.5, kept_layers=(0, 2)) == (50, 50, 25, 25)
    rng = random.Random(1)
    config = sample_length_config(100, 4, rng, ratio_bound=0.5, kept_layers=(1, 3))
    assert config[0] == 100 and config[1] == config[2]


def test_layer_dropout_sampling():
    rng = random.Random(0)
    assert sample_layer_config(6, 0.0, rng) == tuple(range(6))
    kept = [len(sample_layer_config(10, 0.2, rng)) for _ in range(2000)]
    assert abs(sum(kept) / len(kept) - 8.0) < 0.1
    assert all(list(k) == sorted(k) for k in (sample_layer_config(10, 0.5, rng) for _ in range(50)))


def test_approx_ratio_inverse():
    for target in (0.5, 0.7, 0.9):
        assert abs(approx_ratio(inverse_approx_ratio(target, 6, 384), 6, 384) - target) < 0.01
