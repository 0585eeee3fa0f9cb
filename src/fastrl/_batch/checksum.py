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

__all__ = ["crc32", "format_crc", "IMPLEMENTATION"]


def crc32(data, value: int = 0) -> int:
    """zlib's CRC-32 of ``data`` (any contiguous buffer), continuing from ``value``."""
    return _crc32(data, value)


def format_crc(value: int) -> str:
    """A CRC as meta.json stores it: ``crc32:`` and 8 lowercase hex digits."""
    return f"crc32:{value & 0xFFFFFFFF:08x}"
