"""Optional per-column compression of a finished batch folder.

Codecs: ``"zstd"`` (needs the ``zstandard`` package: ``pip install "fastrl-batch[zstd]"``),
``"brotli"`` (needs ``brotli``: ``pip install "fastrl-batch[brotli]"``; the origin document's
other choice beside gzip), ``"gzip"`` (stdlib; the fallback), and ``"packbits"`` for masks only
(``np.packbits`` along each row, MSB first: 8 mask columns per byte). A compressed column is
stored as ``<file>.zst`` / ``<file>.br`` / ``<file>.gz`` / ``masks.bits.bin`` instead of the plain
file, and ``meta.json`` ``codecs`` records, per column,
the codec, the stored file, and the CRC32 of the raw (decoded) bytes. Compressed columns are read
into memory (not mapped); ``fastrl decompress`` turns such a batch back into the plain format.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import BatchFormatError
from .checksum import crc32, format_crc
from .safeio import SafeFile

CODECS = ("zstd", "brotli", "gzip", "packbits")
_SUFFIX = {"zstd": ".zst", "brotli": ".br", "gzip": ".gz"}
# levels when none is given: zstd 3 and gzip 6 (their own defaults); brotli 5 (its own default,
# 11, is ~50x slower for a few percent)
DEFAULT_LEVEL = {"zstd": 3, "brotli": 5, "gzip": 6}
LEVELS = {"zstd": (1, 22), "brotli": (0, 11), "gzip": (0, 9)}
_CHUNK = 8 << 20


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def brotli_available() -> bool:
    try:
        import brotli  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(codec: str) -> str:
    """Check a codec name; ``"zstd"`` or ``"brotli"`` without their package installed is an
    error, not a silent switch (ask for ``"gzip"`` explicitly)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    if codec == "zstd" and not zstd_available():
        raise ValueError("codec 'zstd' needs the zstandard package (pip install "
                         "'fastrl-batch[zstd]'); use 'gzip' for a stdlib-only fallback")
    if codec == "brotli" and not brotli_available():
        raise ValueError("codec 'brotli' needs the brotli package (pip install "
                         "'fastrl-batch[brotli]'); use 'gzip' for a stdlib-only fallback")
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
                raw_crc = crc32(buf, raw_crc)
                bits = np.packbits(np.frombuffer(buf, np.uint8).reshape(-1, mask_dim), axis=1)
                out = bits.tobytes()
                stored_crc = crc32(out, stored_crc)
                fout.write(out)
        else:
            if codec == "zstd":
                import zstandard
                cctx = zstandard.ZstdCompressor(level=3 if level is None else level)
                comp = cctx.compressobj()
                compress, finish = comp.compress, comp.flush
            elif codec == "brotli":
                import brotli
                comp = brotli.Compressor(quality=DEFAULT_LEVEL["brotli"] if level is None
                                         else level)
                compress, finish = comp.process, comp.finish
            else:
                comp = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
                compress, finish = comp.compress, comp.flush
            while True:
                buf = fin.read(_CHUNK)
                if not buf:
                    break
                raw_crc = crc32(buf, raw_crc)
                out = compress(buf)
                stored_crc = crc32(out, stored_crc)
                fout.write(out)
            out = finish()
            stored_crc = crc32(out, stored_crc)
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


ENV_DECODE_BUDGET = "FASTRL_MAX_DECODE_BYTES"
_UNITS = {"": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
          "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40,
          "TB": 1 << 40, "TIB": 1 << 40}
_MIN_DEFAULT_BUDGET = 256 << 20


def default_decode_budget() -> int:
    """A quarter of this machine's physical memory (at least 256 MiB; 4 GiB when unknown)."""
    try:
        phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 4 << 30
    return max(_MIN_DEFAULT_BUDGET, phys // 4)


def decode_budget() -> int:
    """The most bytes the compressed columns of one batch folder may decode to in memory:
    ``$FASTRL_MAX_DECODE_BYTES`` (a byte count, suffixes K/M/G/T in powers of 1024 allowed),
    else :func:`default_decode_budget`. Read at each call."""
    text = os.environ.get(ENV_DECODE_BUDGET, "").strip()
    if not text:
        return default_decode_budget()
    num, unit = text, ""
    for i, ch in enumerate(text):
        if not ch.isdigit():
            num, unit = text[:i], text[i:].strip().upper()
            break
    if not num or unit not in _UNITS:
        raise BatchFormatError(f"{ENV_DECODE_BUDGET}={text!r}: not a byte count (e.g. "
                               "8000000000 or 8G)")
    return int(num) * _UNITS[unit]


def budget_error(name: str, want: int, budget: int) -> BatchFormatError:
    return BatchFormatError(f"{name}: decodes to {want} bytes, more than the {budget}-byte "
                            f"decode budget (set {ENV_DECODE_BUDGET} to read it, or "
                            "`fastrl decompress` it on a machine with the memory)")


def decode_column(folder: Path, entry: dict, dtype: np.dtype, shape: tuple,
                  verify: bool = False, budget: int | None = None) -> np.ndarray:
    """Read a compressed column into memory as ``dtype`` with ``shape``; the decoded size must
    be exactly the shape's (a bomb or a truncated stream is an error, never a wrong answer).

    Bounded work: a declared size over ``budget`` (default :func:`decode_budget`) is refused
    before anything is inflated; the stream is decoded into one buffer of exactly the declared
    size and decoding stops there (more data, trailing bytes or fewer bytes: an error). The
    stored file is opened with :mod:`.safeio` (a regular file, no link followed)."""
    name = entry["file"]
    path = folder / name
    want = math.prod(int(x) for x in shape) * dtype.itemsize
    codec = entry["codec"]
    raw = entry.get("rawBytes")
    if not isinstance(raw, int) or isinstance(raw, bool) or raw != want:
        raise BatchFormatError(f"{name}: codecs rawBytes {raw!r} does not match the "
                               f"column's shape ({want} bytes)")
    budget = decode_budget() if budget is None else budget
    if want > budget:
        raise budget_error(name, want, budget)
    try:
        if codec == "packbits":
            rows, width = shape
            packed = (width + 7) // 8
            with SafeFile(path, name) as f:
                if f.size != rows * packed:
                    raise BatchFormatError(f"{name}: {f.size} bytes on disk, expected "
                                           f"{rows * packed} ({rows} x {packed} packed bytes)")
                bits = np.empty((rows, packed), np.uint8)
                if rows * packed:
                    f.read_into(bits)
            out = np.unpackbits(bits, axis=1, count=width) if rows else np.zeros(shape, np.uint8)
            raw = out.reshape(shape)
        else:
            buf = np.empty(want, np.uint8)
            _inflate_into(path, name, codec, buf)
            raw = buf.view(dtype).reshape(shape)
    except MemoryError:
        raise BatchFormatError(f"{name}: cannot allocate {want} bytes to decode it") from None
    except FileNotFoundError:
        raise BatchFormatError(f"{name}: missing ({codec} column)") from None
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        if isinstance(exc, BatchFormatError):
            raise
        raise BatchFormatError(f"{name}: cannot decode {codec} column ({exc})") from None
    if verify:
        crc = format_crc(crc32(np.ascontiguousarray(raw).data))
        if crc != entry.get("rawChecksum"):
            raise BatchFormatError(f"{name}: checksum mismatch after decoding "
                                   f"(meta.json {entry.get('rawChecksum')}, data {crc})")
    raw.setflags(write=False)
    return raw


def _inflate_into(path: Path, name: str, codec: str, out: np.ndarray) -> None:
    """Decode the stored file into ``out`` (uint8, exactly the declared size): more data,
    trailing bytes that are not another frame/member, or fewer bytes are errors."""
    want = out.size
    view = memoryview(out)
    with SafeFile(path, name) as f:
        if codec == "zstd":
            try:
                import zstandard
            except ImportError:
                raise BatchFormatError(f"{name}: zstd column, but the zstandard package is "
                                       "not installed (pip install 'fastrl-batch[zstd]')") from None
            problem = _zstd_structure_problem(f.fd, f.size)
            if problem:
                raise BatchFormatError(f"{name}: {problem}")
            got = 0
            with f.fileobj() as fo:
                try:
                    reader = zstandard.ZstdDecompressor().stream_reader(
                        fo, read_across_frames=True, closefd=False)
                    with reader:
                        while got < want:
                            n = reader.readinto(view[got:])
                            if not n:
                                break
                            got += n
                        if got == want and reader.read(1):
                            raise BatchFormatError(f"{name}: decodes to more than the "
                                                   f"declared {want} bytes")
                except zstandard.ZstdError as exc:
                    if got == want:
                        raise BatchFormatError(f"{name}: trailing bytes after the zstd data "
                                               f"({exc})") from None
                    raise BatchFormatError(f"{name}: not a valid zstd stream ({exc})") from None
            if got != want:
                raise BatchFormatError(f"{name}: decodes to {got} bytes, expected {want}")
            return
        if codec == "brotli":
            _unbrotli_into(f, name, view)
            return
        got = 0
        d = zlib.decompressobj(31)
        for chunk in f.chunks(1 << 20):
            data = chunk
            while data:
                if d.eof:  # another gzip member may follow; anything else is trailing garbage
                    d = zlib.decompressobj(31)
                    try:
                        piece = d.decompress(data, min(_CHUNK, want - got + 1))
                    except zlib.error as exc:
                        raise BatchFormatError(f"{name}: trailing bytes after the gzip data "
                                               f"({exc})") from None
                else:
                    try:
                        piece = d.decompress(data, min(_CHUNK, want - got + 1))
                    except zlib.error as exc:
                        raise BatchFormatError(f"{name}: not a valid gzip stream ({exc})") \
                            from None
                if got + len(piece) > want:
                    raise BatchFormatError(f"{name}: decodes to more than the declared "
                                           f"{want} bytes")
                view[got:got + len(piece)] = piece
                got += len(piece)
                data = d.unused_data if d.eof else d.unconsumed_tail
        if not d.eof:
            raise BatchFormatError(f"{name}: the gzip stream ends early (truncated)")
        if got != want:
            raise BatchFormatError(f"{name}: decodes to {got} bytes, expected {want}")


def _unbrotli_into(f, name: str, view: memoryview) -> None:
    """Decode a brotli stream into ``view`` (exactly its size), never producing more than the
    room left plus one byte per call (a bomb stops at the declared size)."""
    try:
        import brotli
    except ImportError:
        raise BatchFormatError(f"{name}: brotli column, but the brotli package is not "
                               "installed (pip install 'fastrl-batch[brotli]')") from None
    want, got = len(view), 0
    d = brotli.Decompressor()
    try:
        for chunk in f.chunks(1 << 20):
            if d.is_finished():
                raise BatchFormatError(f"{name}: trailing bytes after the brotli data")
            data = chunk
            while True:
                piece = d.process(data, output_buffer_limit=max(1, want - got + 1))
                data = b""
                if got + len(piece) > want:
                    raise BatchFormatError(f"{name}: decodes to more than the declared "
                                           f"{want} bytes")
                view[got:got + len(piece)] = piece
                got += len(piece)
                if d.can_accept_more_data():
                    break
    except brotli.error as exc:
        if got == want:  # the stream was complete: what follows it is junk
            raise BatchFormatError(f"{name}: trailing bytes after the brotli data") from None
        raise BatchFormatError(f"{name}: not a valid brotli stream: corrupt, or bytes after "
                               f"its end ({exc})") from None
    if not d.is_finished():
        raise BatchFormatError(f"{name}: the brotli stream ends early (truncated)")
    if got != want:
        raise BatchFormatError(f"{name}: decodes to {got} bytes, expected {want}")


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # .. 0x184D2A5F


def _zstd_structure_problem(fd: int, size: int) -> str | None:
    """Walk the zstd frames of a file by their headers (RFC 8878), without decompressing:
    every frame (or skippable frame) must be complete and the last must end exactly at the end
    of the file. Returns what is wrong, or None. O(blocks) small reads."""
    pos = 0

    def read(n):
        b = os.pread(fd, n, pos)
        if len(b) != n:
            raise EOFError
        return b

    try:
        if size == 0:
            return "empty (not a zstd stream)"
        while pos < size:
            magic = int.from_bytes(read(4), "little")
            if magic & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
                n = int.from_bytes(os.pread(fd, 4, pos + 4).ljust(4, b"\xff"), "little")
                if pos + 8 + n > size:
                    return "a skippable frame runs past the end of the file (truncated)"
                pos += 8 + n
                continue
            if magic != _ZSTD_MAGIC:
                return (f"trailing bytes after the zstd data (at byte {pos})" if pos
                        else "not a zstd stream (bad magic number)")
            pos += 4
            fhd = read(1)[0]
            if fhd & 0x08:
                return f"bad zstd frame header at byte {pos - 4}"
            fcs = {0: 1 if fhd & 0x20 else 0, 1: 2, 2: 4, 3: 8}[fhd >> 6]
            did = (0, 1, 2, 4)[fhd & 0x03]
            pos += 1 + (0 if fhd & 0x20 else 1) + did + fcs
            while True:
                h = int.from_bytes(read(3), "little")
                pos += 3
                btype, bsize = (h >> 1) & 3, h >> 3
                if btype == 3:
                    return f"bad zstd block type at byte {pos - 3}"
                pos += 1 if btype == 1 else bsize
                if pos > size:
                    raise EOFError
                if h & 1:
                    break
            if fhd & 0x04:
                pos += 4
            if pos > size:
                raise EOFError
    except EOFError:
        return "the zstd stream ends inside a frame (truncated)"
    return None


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
