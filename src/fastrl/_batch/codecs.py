"""Optional per-column compression of a finished batch folder.

Codecs: ``"zstd"`` (needs the ``zstandard`` package: ``pip install "fastrl[zstd]"``), ``"gzip"``
(stdlib; the fallback), and ``"packbits"`` for masks only (``np.packbits`` along each row, MSB
first: 8 mask columns per byte). A compressed column is stored as ``<file>.zst`` / ``<file>.gz`` /
``masks.bits.bin`` instead of the plain file, and ``meta.json`` ``codecs`` records, per column,
the codec, the stored file, and the CRC32 of the raw (decoded) bytes. Compressed columns are read
into memory (not mapped); ``fastrl decompress`` turns such a batch back into the plain format.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import BatchFormatError

CODECS = ("zstd", "gzip", "packbits")
_SUFFIX = {"zstd": ".zst", "gzip": ".gz"}
_CHUNK = 8 << 20


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(codec: str) -> str:
    """Check a codec name; ``"zstd"`` without zstandard installed is an error, not a silent
    switch (ask for ``"gzip"`` explicitly)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    if codec == "zstd" and not zstd_available():
        raise ValueError("codec 'zstd' needs the zstandard package (pip install 'fastrl[zstd]'); "
                         "use 'gzip' for a stdlib-only fallback")
    return codec


def stored_name(plain_name: str, codec: str) -> str:
    if codec == "packbits":
        return "masks.bits.bin"
    return plain_name + _SUFFIX[codec]


def compress_column(folder: Path, plain_name: str, codec: str, level: int | None,
                    mask_dim: int = 0) -> dict:
    """Replace ``folder/plain_name`` by its compressed form; return the ``codecs`` entry."""
    src = folder / plain_name
    dst = folder / stored_name(plain_name, codec)
    raw_crc = stored_crc = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        if codec == "packbits":
            rows = max(1, _CHUNK // max(1, mask_dim))
            while True:
                buf = fin.read(rows * mask_dim)
                if not buf:
                    break
                raw_crc = zlib.crc32(buf, raw_crc)
                bits = np.packbits(np.frombuffer(buf, np.uint8).reshape(-1, mask_dim), axis=1)
                out = bits.tobytes()
                stored_crc = zlib.crc32(out, stored_crc)
                fout.write(out)
        else:
            if codec == "zstd":
                import zstandard
                cctx = zstandard.ZstdCompressor(level=3 if level is None else level)
                comp = cctx.compressobj()
                finish = comp.flush
            else:
                comp = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
                finish = comp.flush
            while True:
                buf = fin.read(_CHUNK)
                if not buf:
                    break
                raw_crc = zlib.crc32(buf, raw_crc)
                out = comp.compress(buf)
                stored_crc = zlib.crc32(out, stored_crc)
                fout.write(out)
            out = finish()
            stored_crc = zlib.crc32(out, stored_crc)
            fout.write(out)
        fout.flush()
        os.fsync(fout.fileno())
    raw_size = src.stat().st_size
    src.unlink()
    entry = {"codec": codec, "file": dst.name, "rawBytes": raw_size,
             "rawChecksum": f"crc32:{raw_crc:08x}", "storedChecksum": f"crc32:{stored_crc:08x}"}
    if codec != "packbits":
        entry["level"] = level
    return entry


def decode_column(folder: Path, entry: dict, dtype: np.dtype, shape: tuple,
                  verify: bool = False) -> np.ndarray:
    """Read a compressed column into memory as ``dtype`` with ``shape``; the decoded size must
    be exactly the shape's (a bomb or a truncated stream is an error, never a wrong answer)."""
    path = folder / entry["file"]
    want = math.prod(int(x) for x in shape) * dtype.itemsize
    codec = entry["codec"]
    raw = entry.get("rawBytes")
    if not isinstance(raw, int) or isinstance(raw, bool) or raw != want:
        raise BatchFormatError(f"{path.name}: codecs rawBytes {raw!r} does not match the "
                               f"column's shape ({want} bytes)")
    try:
        if codec == "packbits":
            rows, width = shape
            packed = (width + 7) // 8
            stored = path.stat().st_size
            if stored != rows * packed:
                raise BatchFormatError(f"{path.name}: {stored} bytes on disk, expected "
                                       f"{rows * packed} ({rows} x {packed} packed bytes)")
            bits = np.fromfile(path, np.uint8).reshape(rows, packed) if rows else \
                np.zeros((0, packed), np.uint8)
            out = np.unpackbits(bits, axis=1, count=width) if rows else np.zeros(shape, np.uint8)
            raw = out.reshape(shape)
        else:
            raw_bytes = _inflate(path, codec, want)
            raw = np.frombuffer(raw_bytes, dtype=dtype).reshape(shape) if want else \
                np.zeros(shape, dtype)
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        if isinstance(exc, BatchFormatError):
            raise
        raise BatchFormatError(f"{path.name}: cannot decode {codec} column ({exc})") from None
    if verify:
        crc = f"crc32:{zlib.crc32(np.ascontiguousarray(raw).data):08x}"
        if crc != entry.get("rawChecksum"):
            raise BatchFormatError(f"{path.name}: checksum mismatch after decoding "
                                   f"(meta.json {entry.get('rawChecksum')}, data {crc})")
    return raw


def _inflate(path: Path, codec: str, want: int) -> bytes:
    """Decompress the whole file, refusing more than ``want`` bytes or fewer."""
    with open(path, "rb") as f:
        if codec == "zstd":
            try:
                import zstandard
            except ImportError:
                raise BatchFormatError(f"{path.name}: zstd column, but the zstandard package is "
                                       "not installed (pip install 'fastrl[zstd]')") from None
            reader = zstandard.ZstdDecompressor().stream_reader(f)
        else:
            reader = gzip.GzipFile(fileobj=f, mode="rb")
        data = bytearray()
        with reader:
            while len(data) < want + 1:
                more = reader.read(min(_CHUNK, want + 1 - len(data)))
                if not more:
                    break
                data += more
    if len(data) != want:
        raise BatchFormatError(f"{path.name}: decodes to {len(data)}{'+' if len(data) > want else ''}"
                               f" bytes, expected {want}")
    return bytes(data)


def codec_problems(meta: dict, plain_names: dict) -> list[str]:
    """Problems with meta.json ``codecs``: known codec, stored file name exactly the one the
    codec gives (so no path can escape the folder), packbits only for masks."""
    codecs = meta.get("codecs")
    if codecs is None:
        return []
    if not isinstance(codecs, dict):
        return ["meta.json: codecs must be an object"]
    probs = []
    for col, entry in codecs.items():
        if col not in plain_names:
            probs.append(f"meta.json: codecs: unknown column {col!r}")
            continue
        if not isinstance(entry, dict) or entry.get("codec") not in CODECS:
            probs.append(f"meta.json: codecs[{col!r}]: codec must be one of {', '.join(CODECS)}")
            continue
        if entry["codec"] == "packbits" and col != "masks":
            probs.append(f"meta.json: codecs[{col!r}]: packbits is for masks only")
            continue
        if entry.get("file") != stored_name(plain_names[col], entry["codec"]):
            probs.append(f"meta.json: codecs[{col!r}]: file must be "
                         f"{stored_name(plain_names[col], entry['codec'])!r}")
    return probs
