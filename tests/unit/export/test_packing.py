"""Bit-packing of integer codes: round trips at 2, 3, 4, 8 bits (and odd sizes), layout, errors."""
import numpy as np
import pytest

from qbert.errors import ConfigError, DataError
from qbert.export import packing


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("count", [1, 7, 13, 1000, 4099])
def test_round_trip_signed(bits, count):
    offset = 2 ** (bits - 1)
    codes = np.random.default_rng(bits * 31 + count).integers(-offset, offset, size=count)
    packed = packing.pack(codes, bits, offset)
    assert packed.dtype == np.uint8 and packed.size == packing.packed_size(count, bits) == -(-count * bits // 8)
    assert np.array_equal(packing.unpack(packed, bits, count, offset), codes)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_round_trip_unsigned_and_2d(bits):
    codes = np.random.default_rng(bits).integers(0, 2 ** bits, size=(5, 11))
    out = packing.unpack(packing.pack(codes, bits), bits, codes.size, dtype=np.int16).reshape(codes.shape)
    assert np.array_equal(out, codes)


def test_generic_path_crosses_chunks(monkeypatch):
    monkeypatch.setattr(packing, "_CHUNK", 24)
    codes = np.random.default_rng(0).integers(-4, 4, size=101)
    assert np.array_equal(packing.unpack(packing.pack(codes, 3, 4), 3, 101, 4), codes)


def test_layout_low_bits_first():
    # 2-bit values 0,1,2,3 -> 0b11_10_01_00; 3-bit 1,2,3 -> bits 100 010 110 -> 0b11010001, 0
    assert packing.pack([0, 1, 2, 3], 2).tolist() == [0b11100100]
    assert packing.pack([1, 2, 3], 3).tolist() == [0b11010001, 0b0]
    assert packing.pack([-1, 0, 1], 2, offset=2).tolist() == [0b00111001 & 0b111111]


def test_ternary_as_two_bits():
    codes = np.array([-1, 0, 1, 1, -1])
    assert np.array_equal(packing.unpack(packing.pack(codes, 2, 2), 2, 5, 2), codes)


def test_errors():
    with pytest.raises(ConfigError, match="must lie in"):
        packing.pack([0, 4], 2)
    with pytest.raises(ConfigError, match="bits"):
        packing.pack([0], 9)
    with pytest.raises(DataError, match="need 1 bytes"):
        packing.unpack(np.zeros(2, np.uint8), 2, 3)
