"""Bit-packing of integer weight codes at their width (2, 3, 4, 8 bits; ternary as 2-bit).

A code ``q`` in [qmin, qmax] is stored as the unsigned ``u = q + offset`` (``offset`` =
2^(bits-1) for signed grids, as ``MatMulNBits`` stores its codes; 0 for unsigned ones) in
``bits`` bits of a little-endian bit stream: value i occupies bits [i*bits, (i+1)*bits) of
the stream, low bit first; the last byte is zero-padded. Widths that divide 8 are packed
with shifts (4 values per byte at 2 bits, 2 at 4, 1 at 8); other widths go through numpy's
bit unpacking in chunks.
"""
import numpy as np

from qbert.errors import ConfigError, DataError

_CHUNK = 1 << 20  # values per chunk of the generic path (bounds its temporary memory)


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` values of ``bits`` bits take."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ConfigError(f"packing: bits must be an integer in 1..8, got {bits!r}")


def pack(codes, bits: int, offset: int = 0) -> np.ndarray:
    """The codes (any integer array, flattened in C order) as a 1-D uint8 bit stream."""
    _check_bits(bits)
    values = np.asarray(codes).reshape(-1).astype(np.int64) + offset
    if values.size and (values.min() < 0 or values.max() >= 1 << bits):
        raise ConfigError(f"packing: codes + offset {offset} must lie in [0, {(1 << bits) - 1}] "
                          f"for {bits} bits, got [{values.min()}, {values.max()}]")
    u = values.astype(np.uint8)
    if 8 % bits == 0:
        per_byte = 8 // bits
        u = np.concatenate([u, np.zeros((-u.size) % per_byte, np.uint8)]).reshape(-1, per_byte)
        out = np.zeros(u.shape[0], np.uint8)
        for j in range(per_byte):
            out |= u[:, j] << np.uint8(j * bits)
        return out
    out = np.empty(packed_size(u.size, bits), np.uint8)
    shifts = np.arange(bits, dtype=np.uint8)
    step = _CHUNK - _CHUNK % 8  # whole bytes per chunk: chunk * bits is a multiple of 8
    for start in range(0, u.size, step):
        part = u[start:start + step]
        stream = ((part[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)
        chunk = np.packbits(stream, bitorder="little")
        first = start * bits // 8
        out[first:first + chunk.size] = chunk
    return out


def unpack(packed, bits: int, count: int, offset: int = 0, dtype=np.int8) -> np.ndarray:
    """``count`` codes of ``bits`` bits from the stream (1-D ``dtype`` array)."""
    _check_bits(bits)
    data = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if data.size != packed_size(count, bits):
        raise DataError(f"packed codes: {count} values of {bits} bits need "
                        f"{packed_size(count, bits)} bytes, got {data.size}")
    if 8 % bits == 0:
        per_byte = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        u = np.stack([(data >> np.uint8(j * bits)) & mask for j in range(per_byte)], axis=1).reshape(-1)
        u = u[:count]
    else:
        u = np.empty(count, np.uint8)
        weights = (1 << np.arange(bits)).astype(np.uint8)
        step = _CHUNK - _CHUNK % 8
        for start in range(0, count, step):
            n = min(step, count - start)
            first = start * bits // 8
            stream = np.unpackbits(data[first:first + packed_size(n, bits)], count=n * bits,
                                   bitorder="little")
            u[start:start + n] = stream.reshape(n, bits) @ weights
    return (u.astype(np.int16) - offset).astype(dtype)
