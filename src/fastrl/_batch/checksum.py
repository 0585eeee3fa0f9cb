"""CRC-32 of the column files: the zlib polynomial and values (so checksums in meta.json read
``crc32:%08x`` whatever computed them), from the fastest implementation installed.

ISA-L (``isal``, a dependency of fastrl) runs ~14 GB/s on one core against zlib's ~2 GB/s; zlib-ng
(``zlib-ng``) ~9 GB/s; the standard library's ``zlib`` is the fallback. All three release the GIL
on large buffers, so the writer's background thread computes CRCs while the kernels pack.
"""

from __future__ import annotations

import zlib

try:
    from isal.isal_zlib import crc32 as _crc32
    IMPLEMENTATION = "isal"
except ImportError:  # pragma: no cover - depends on the install
    try:
        from zlib_ng.zlib_ng import crc32 as _crc32
        IMPLEMENTATION = "zlib-ng"
    except ImportError:
        _crc32 = zlib.crc32
        IMPLEMENTATION = "zlib"
try:
    from isal.isal_zlib import crc32_combine as _crc32_combine
except ImportError:  # pragma: no cover - depends on the install
    _crc32_combine = None

__all__ = ["crc32", "crc32_combine", "format_crc", "IMPLEMENTATION"]


def crc32(data, value: int = 0) -> int:
    """zlib's CRC-32 of ``data`` (any contiguous buffer), continuing from ``value``."""
    return _crc32(data, value)


def crc32_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """The CRC-32 of A followed by B, from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's
    crc32_combine: ISA-L's, a dependency of fastrl; else the same algorithm in Python, ~1 ms)."""
    if _crc32_combine is not None:
        return _crc32_combine(crc_a, crc_b, len_b)
    return crc32_combine_py(crc_a, crc_b, len_b)


def _gf2_times(matrix, vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix):
    return [_gf2_times(matrix, row) for row in matrix]


def crc32_combine_py(crc_a: int, crc_b: int, len_b: int) -> int:
    """:func:`crc32_combine` in Python: appends ``len_b`` zero bytes to A's CRC with powers of
    the GF(2) operator of one zero byte (zlib's method), then adds B's."""
    if len_b <= 0:  # B is empty: its CRC is 0
        return crc_a ^ crc_b
    op = [0xEDB88320] + [1 << i for i in range(31)]  # the operator of one zero bit
    for _ in range(3):
        op = _gf2_square(op)                           # ... of one zero byte
    crc = crc_a
    while len_b:  # apply the operator of 2**k zero bytes for each set bit k of len_b
        if len_b & 1:
            crc = _gf2_times(op, crc)
        len_b >>= 1
        if len_b:
            op = _gf2_square(op)
    return (crc ^ crc_b) & 0xFFFFFFFF


def format_crc(value: int) -> str:
    """A CRC as meta.json stores it: ``crc32:`` and 8 lowercase hex digits."""
    return f"crc32:{value & 0xFFFFFFFF:08x}"
