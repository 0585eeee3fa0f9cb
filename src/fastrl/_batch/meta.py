"""The rules of batch format v1 (docs/FORMAT.md) in one place: reading meta.json, the problems a
reader refuses, the column layout a meta.json implies, file sizes, checksums, the episode index,
and the manifest of a sharded batch (its shard list, each shard's chain record, totals).

The writer, the reader, ``validate``, ``open_dataset``, ``decompress``, storage and Ray all call
these functions; none of them re-states a rule of the format.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np

from .. import _format as F
from ..errors import BatchFormatError
from .checksum import crc32, format_crc
from .codecs import codec_problems
from .safeio import SafeFile, kind_of, lstat_problem, name_problem

__all__ = ["SHARD_PREFIX", "read_meta", "parse_meta", "is_int", "meta_problems", "column_layout", "size_problems",
           "checksum_problems", "episode_starts_from", "index_problems", "manifest_shards",
           "batch_parts", "shard_record_problem", "check_shard_chain", "meta_columns",
           "build_manifest", "length_summary", "MAX_META_BYTES", "MAX_META_DEPTH",
           "user_meta_problem", "MAX_USER_META_DEPTH", "MAX_USER_META_BYTES", "shard_problems",
           "folder_entry_problems"]

SHARD_PREFIX = "shard_"  # the folders of a sharded batch: shard_00000, shard_00001, ...
SHARD_NAME = re.compile(r"shard_[A-Za-z0-9_-]{1,200}\Z")
MAX_META_BYTES = 64 * 1024 * 1024  # a larger meta.json is refused (readers and writer alike)
MAX_META_DEPTH = 100  # objects/arrays nested deeper in meta.json are refused
MAX_USER_META_DEPTH = 64  # nesting of the producer's ``user`` metadata (BatchWriter(meta=...))
MAX_USER_META_BYTES = MAX_META_BYTES // 2  # its encoded size; the rest is left to fastrl's keys
MAX_INT_DIGITS = 4000  # Python refuses to parse longer integers (sys.get_int_max_str_digits)


def read_meta(path: str | os.PathLike) -> dict:
    """Parse ``<path>/meta.json``; BatchFormatError naming the file when absent, not a regular
    file (a link, FIFO, device...), over MAX_META_BYTES (counted as read) or not strict JSON."""
    mpath = Path(path) / F.META_FILE
    try:
        with SafeFile(mpath) as f:
            if f.size > MAX_META_BYTES:
                raise BatchFormatError(f"{mpath}: {f.size} bytes, larger than the "
                                       f"{MAX_META_BYTES} limit")
            raw = f.read_capped(MAX_META_BYTES)
    except FileNotFoundError:
        raise BatchFormatError(f"{mpath}: missing (not a batch folder, or not committed)") from None
    except BatchFormatError:
        raise
    except OSError as exc:
        raise BatchFormatError(f"{mpath}: unreadable ({exc.strerror or exc})") from None
    return parse_meta(raw, mpath)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def _strict_float(text):
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:40]} does not fit a double")
    return v


def _no_duplicates(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k[:80]!r}")
            seen.add(k)
    return d


def _utf8_ok(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk_problem(obj, max_depth: int, strings: bool) -> str | None:
    """Why a parsed JSON value is refused: nested deeper than ``max_depth`` containers, or
    (``strings``) a string or key holding a lone surrogate. Iterative: no recursion."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return f"nested deeper than {max_depth} levels"
        if isinstance(node, dict):
            if strings and not all(_utf8_ok(k) for k in node):
                return "a key holds a lone surrogate (not UTF-8)"
            values = node.values()
        else:
            values = node
        for v in values:
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1))
            elif strings and isinstance(v, str) and not _utf8_ok(v):
                return "a string holds a lone surrogate (not UTF-8)"
    return None


def parse_meta(raw: bytes, where) -> dict:
    """A meta.json's bytes -> dict; BatchFormatError naming ``where`` unless they are one
    strict JSON object in UTF-8: no byte-order mark, no UTF-16/32, no NaN/Infinity or numbers
    beyond a double, no duplicate keys, no lone surrogates, at most MAX_META_DEPTH levels."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if raw[:3] == b"\xef\xbb\xbf":
        raise BatchFormatError(f"{where}: not valid JSON (starts with a byte-order mark)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchFormatError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        meta = json.loads(text, object_pairs_hook=_no_duplicates,
                          parse_constant=_refuse_constant, parse_float=_strict_float)
    except (ValueError, RecursionError) as exc:
        raise BatchFormatError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BatchFormatError(f"{where}: must hold a JSON object, got {type(meta).__name__}")
    surrogates = _SURROGATE_ESCAPE.search(raw) is not None
    if surrogates or raw.count(b"[") + raw.count(b"{") > MAX_META_DEPTH:
        problem = _walk_problem(meta, MAX_META_DEPTH, surrogates)
        if problem:
            raise BatchFormatError(f"{where}: not valid JSON ({problem})")
    return meta


def user_meta_problem(obj) -> str | None:
    """Why ``obj`` cannot be a batch's ``user`` metadata (``BatchWriter(meta=...)``), or None.

    It must be strict JSON that every reader parses back to the same value: dicts with string
    keys, lists (tuples), strings (valid Unicode: no lone surrogates), finite floats, integers
    of at most MAX_INT_DIGITS digits, booleans and None; nested at most MAX_USER_META_DEPTH
    levels; encoded (as the writer encodes meta.json) in at most MAX_USER_META_BYTES bytes.
    No recursion (any depth or a cycle is reported, never a RecursionError)."""
    max_bits = int(MAX_INT_DIGITS * 3.3219)
    stack = [(obj, 0, "meta")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            if depth >= MAX_USER_META_DEPTH:
                return f"{where}: nested deeper than {MAX_USER_META_DEPTH} levels"
            if isinstance(node, dict):
                for k, v in node.items():
                    if not isinstance(k, str):
                        return (f"{where}: key {k!r} is a {type(k).__name__}; JSON object keys "
                                "are strings")
                    if not _utf8_ok(k):
                        return f"{where}: key {k!r} is not valid Unicode (lone surrogate)"
                    stack.append((v, depth + 1, f"{where}[{k[:40]!r}]"))
            else:
                stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(node))
        elif node is None or isinstance(node, bool):
            continue
        elif isinstance(node, str):
            if not _utf8_ok(node):
                return f"{where}: string is not valid Unicode (lone surrogate)"
        elif isinstance(node, int):
            if abs(node).bit_length() > max_bits:
                return f"{where}: integer with more than {MAX_INT_DIGITS} digits"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return f"{where}: {node!r} is not a JSON number (NaN/Infinity are not JSON)"
        else:
            return (f"{where}: a {type(node).__module__}.{type(node).__qualname__} is not JSON "
                    "(use dict, list, str, int, float, bool or None; e.g. .item() or "
                    ".tolist() for NumPy values)")
    try:
        size = len(json.dumps({"user": obj}, indent=1, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - checked above
        return f"meta: not JSON ({exc})"
    if size > MAX_USER_META_BYTES:
        return f"meta: {size} bytes as JSON, more than the {MAX_USER_META_BYTES}-byte limit"
    return None


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def meta_problems(meta: dict) -> list[str]:
    """Problems with the keys and values of a parsed meta.json (not the files): empty if sound."""
    probs = []
    for key in F.REQUIRED_META_KEYS:
        if key not in meta:
            probs.append(f"meta.json: required key {key!r} missing")
    limits = {"count": F.MAX_COUNT, "steps": F.MAX_COUNT, "episodes": F.MAX_COUNT,
              "obsDim": F.MAX_DIM, "maskDim": F.MAX_DIM, "numActions": F.MAX_DIM}
    for key, hi in limits.items():
        if key in meta:
            v = meta[key]
            lo = 1 if key in ("obsDim", "maskDim", "numActions") else 0
            if not is_int(v) or not lo <= v <= hi:
                probs.append(f"meta.json: {key} must be an integer in [{lo}, {hi}], got {v!r}")
    ok = lambda k: is_int(meta.get(k))  # noqa: E731
    if ok("count") and ok("steps") and meta["count"] != meta["steps"]:
        probs.append(f"meta.json: count ({meta['count']}) != steps ({meta['steps']})")
    if ok("count") and ok("episodes") and (meta["episodes"] > meta["count"]
                                           or (meta["count"] > 0 and meta["episodes"] == 0)):
        probs.append(f"meta.json: episodes ({meta['episodes']}) inconsistent with count "
                     f"({meta['count']})")
    if ok("numActions") and ok("maskDim") and meta["numActions"] > meta["maskDim"]:
        probs.append(f"meta.json: numActions ({meta['numActions']}) > maskDim ({meta['maskDim']})")
    if ok("count") and ok("obsDim") and meta["count"] * meta["obsDim"] * 4 > F.MAX_FILE_BYTES:
        probs.append(f"meta.json: count x obsDim x 4 = {meta['count'] * meta['obsDim'] * 4} "
                     f"bytes, more than the {F.MAX_FILE_BYTES} supported per file")
    if ok("count") and ok("maskDim") and meta["count"] * meta["maskDim"] > F.MAX_FILE_BYTES:
        probs.append(f"meta.json: count x maskDim = {meta['count'] * meta['maskDim']} bytes, "
                     f"more than the {F.MAX_FILE_BYTES} supported per file")
    created = meta.get("createdAt")
    if "createdAt" in meta and not (isinstance(created, str) or (
            isinstance(created, (int, float)) and not isinstance(created, bool)
            and math.isfinite(created) and created >= 0)):
        probs.append("meta.json: createdAt must be an ISO-8601 string or a number of "
                     f"milliseconds since the epoch, got {str(created)[:60]}")
    if "formatVersion" in meta and not (is_int(meta["formatVersion"])
                                        and meta["formatVersion"] == F.FORMAT_VERSION):
        probs.append(f"meta.json: formatVersion {str(meta['formatVersion'])[:60]} is not "
                     f"supported (this fastrl reads version {F.FORMAT_VERSION}, an integer)")
    if "format" in meta and meta["format"] != F.FORMAT_NAME:
        probs.append(f"meta.json: format must be {F.FORMAT_NAME!r}, got "
                     f"{str(meta['format'])[:60]}")
    if "byteOrder" in meta and meta["byteOrder"] != "little":
        probs.append(f"meta.json: byteOrder must be 'little' (format v1 is little-endian), got "
                     f"{str(meta['byteOrder'])[:60]}")
    if "sharded" in meta and not isinstance(meta["sharded"], bool):
        probs.append("meta.json: sharded must be true or false")
    cols = meta.get("columns")
    if cols is not None and (not isinstance(cols, dict)
                             or any(not isinstance(k, str) for k in cols)):
        probs.append("meta.json: columns must be an object")
    for key in ("checksums",):
        if key in meta and not isinstance(meta[key], dict):
            probs.append(f"meta.json: {key} must be an object")
    plain = {n: v[0] for n, v in F.ALL_COLUMNS.items()}
    plain[F.EPISODE_INDEX[0]] = F.EPISODE_INDEX[1]
    plain[F.FINAL_OBS[0]] = F.FINAL_OBS[1]
    probs += codec_problems(meta, plain)
    if not probs and isinstance(cols, dict):
        probs += _columns_problems(meta)
    return probs


def _format_columns() -> dict:
    """name -> (file, dtype, shape key) of every column the format knows."""
    known = {n: (f, dt, w) for n, (f, dt, w) in F.ALL_COLUMNS.items()}
    known[F.EPISODE_INDEX[0]] = (F.EPISODE_INDEX[1], F.EPISODE_INDEX[2], "index")
    known[F.FINAL_OBS[0]] = (F.FINAL_OBS[1], F.FINAL_OBS[2], "final")
    return known


def expected_shape(meta: dict, width_key) -> tuple:
    """The shape a column of the format has in a batch with this (sound) meta.json."""
    count, od, md, eps = meta["count"], meta["obsDim"], meta["maskDim"], meta["episodes"]
    return {"obsDim": (count, od), "maskDim": (count, md), None: (count,),
            "index": (eps + 1,), "final": (eps, od)}[width_key]


def dtype_spellings(dtype: np.dtype) -> set:
    """The ``columns`` dtype strings accepted for a column of ``dtype``: its NumPy ``str``
    (``"<f4"``, ``"<i4"``, ``"<i8"``, ``"|u1"``); one-byte columns also ``"u1"``, ``"<u1"``."""
    spell = {dtype.str}
    if dtype.itemsize == 1:
        spell |= {dtype.str.lstrip("|"), "<" + dtype.str.lstrip("|")}
    return spell


def _columns_problems(meta: dict) -> list[str]:
    """The ``columns`` table: every known column's entry names the format's file, its
    little-endian dtype and the shape the counts give. Columns the format does not know are
    ignored (forward compatibility); the five required ones are read whether listed or not."""
    probs = []
    cols = meta["columns"]
    known = _format_columns()
    for name, entry in cols.items():
        if name not in known:
            continue
        fname, dtype, width = known[name]
        if not isinstance(entry, dict):
            probs.append(f"meta.json: columns[{name!r}] must be an object")
            continue
        if entry.get("file") != fname:
            probs.append(f"meta.json: columns[{name!r}]: file must be {fname!r}, got "
                         f"{str(entry.get('file'))[:80]}")
        if entry.get("dtype") not in dtype_spellings(dtype):
            probs.append(f"meta.json: columns[{name!r}]: dtype must be {dtype.str!r} "
                         f"(little-endian), got {str(entry.get('dtype'))[:40]}")
        want = list(expected_shape(meta, width))
        shape = entry.get("shape")
        if not (isinstance(shape, list) and all(is_int(x) for x in shape) and shape == want):
            probs.append(f"meta.json: columns[{name!r}]: shape must be {want}, got "
                         f"{str(shape)[:80]}")
    return probs


def column_layout(meta: dict, path: Path) -> dict:
    """name -> (file path, dtype, shape) for every column present: the five required ones, the
    optional per-transition ones (listed in meta ``columns``, or, for producers that write no
    list, found on disk), the final observations (episodes x obsDim) and the episode index. Assumes ``meta_problems(meta)`` is empty."""
    count, od, md = meta["count"], meta["obsDim"], meta["maskDim"]
    listed = meta.get("columns")
    layout = {}
    for name, (fname, dtype, width) in F.ALL_COLUMNS.items():
        if name not in F.REQUIRED_COLUMNS:
            present = (name in listed) if isinstance(listed, dict) \
                else os.path.lexists(path / fname)
            if not present:
                continue
        w = {"obsDim": od, "maskDim": md, None: None}[width]
        layout[name] = (path / fname, dtype, (count, w) if w is not None else (count,))
    for (name, fname, dtype), shape in ((F.FINAL_OBS, (meta["episodes"], od)),
                                        (F.EPISODE_INDEX, (meta["episodes"] + 1,))):
        present = (name in listed) if isinstance(listed, dict) \
            else os.path.lexists(path / fname)
        if present:
            layout[name] = (path / fname, dtype, shape)
    return layout


def size_problems(layout: dict, codecs: dict | None = None) -> list[str]:
    """Files missing, not regular files (a link is never followed, a FIFO or device never
    read), or whose size is not exactly the product of their shape and item size. A
    compressed column: its stored file must be a regular file (packbits: of exactly rows x
    ceil(width / 8) bytes), ``rawBytes`` must be the shape's size, and the plain file must not
    lie beside it (fastrl would read one, the format's raw loader the other)."""
    probs = []
    codecs = codecs or {}
    for name, (fpath, dtype, shape) in layout.items():
        expected = math.prod(int(x) for x in shape) * dtype.itemsize  # Python ints: no wrap
        if name in codecs:
            entry = codecs[name]
            stored = fpath.parent / entry["file"]
            problem = lstat_problem(stored, entry["file"])
            if problem:
                probs.append(problem + (f" (column {name!r}, {entry['codec']})"
                                        if problem.endswith("missing") else ""))
                continue
            raw = entry.get("rawBytes")
            if not is_int(raw) or raw != expected:
                probs.append(f"{entry['file']}: codecs rawBytes {str(raw)[:40]} does not "
                             f"match the column's shape ({expected} bytes)")
            if entry["codec"] == "packbits" and len(shape) == 2:
                want = int(shape[0]) * ((int(shape[1]) + 7) // 8)
                found = os.lstat(stored).st_size
                if found != want:
                    probs.append(f"{entry['file']}: {found} bytes on disk, expected {want} "
                                 f"({shape[0]} x {(int(shape[1]) + 7) // 8} packed bytes)")
            if os.path.lexists(fpath):
                probs.append(f"{fpath.name}: a plain file beside its compressed form "
                             f"{entry['file']} (readers would disagree on the data); remove one")
            continue
        try:
            st = os.lstat(fpath)
        except FileNotFoundError:
            probs.append(f"{fpath.name}: missing (column {name!r})")
            continue
        except (OSError, ValueError) as exc:
            probs.append(f"{fpath.name}: cannot stat ({getattr(exc, 'strerror', None) or exc})")
            continue
        if not stat.S_ISREG(st.st_mode):
            probs.append(lstat_problem(fpath, fpath.name) or f"{fpath.name}: not a regular file")
            continue
        if st.st_size != expected:
            probs.append(f"{fpath.name}: {st.st_size} bytes on disk, expected {expected} "
                         f"({' x '.join(map(str, shape))} x {dtype.itemsize} bytes)")
    return probs


def folder_entry_problems(path: Path) -> list[str]:
    """Entries of a batch folder that a batch may not hold: symbolic links and special files
    (FIFOs, devices, sockets). A batch folder holds regular files (and, sharded, its shard
    folders) only."""
    probs = []
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        return [f"{path}: cannot list ({exc.strerror or exc})"]
    for e in entries:
        try:
            mode = e.stat(follow_symlinks=False).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            continue
        probs.append(f"{e.name}: is a {kind_of(mode)} (a batch folder holds regular files "
                     "only)")
    return probs


def checksum_problems(path: Path, meta: dict, chunk: int = 16 << 20) -> list[str]:
    """Compare each file's CRC32 with ``meta['checksums']``. Each name must be a plain file
    name in the folder (not hidden); the file is opened with :mod:`.safeio` and read up to the
    size it had when opened."""
    sums = meta.get("checksums")
    if not isinstance(sums, dict):
        return []
    probs = []
    for fname, expected in sums.items():
        if name_problem(fname) or fname.startswith(".") \
                or not isinstance(expected, str) or not expected.startswith("crc32:"):
            probs.append(f"meta.json: bad checksum entry {str(fname)[:80]!r}: "
                         f"{str(expected)[:80]!r}")
            continue
        crc = 0
        try:
            with SafeFile(Path(path) / fname, fname) as f:
                for buf in f.chunks(chunk):
                    crc = crc32(buf, crc)
        except FileNotFoundError:
            probs.append(f"{fname}: cannot read for checksum (missing)")
            continue
        except BatchFormatError as exc:
            probs.append(f"{exc} (listed in checksums)")
            continue
        except OSError as exc:
            probs.append(f"{fname}: cannot read for checksum ({exc.strerror or exc})")
            continue
        if format_crc(crc) != expected.lower():
            probs.append(f"{fname}: checksum mismatch (meta.json {expected}, file "
                         f"{format_crc(crc)})")
    return probs


def episode_starts_from(dones: np.ndarray, chunk: int = 1 << 24) -> np.ndarray:
    """Episode start rows (plus the end) from a dones column, read in chunks."""
    ends = [np.flatnonzero(dones[i:i + chunk]) + i for i in range(0, len(dones), chunk)]
    ends = np.concatenate(ends) if ends else np.zeros(0, np.int64)
    starts = np.zeros(len(ends) + 1, dtype=np.int64)
    starts[1:] = ends + 1
    return starts


def index_problems(starts: np.ndarray, count: int, episodes: int) -> list[str]:
    """Problems with an episode offset index (must go 0 .. count, strictly increasing)."""
    if len(starts) != episodes + 1:
        return [f"episode index has {len(starts) - 1} episodes, meta.json says {episodes}"]
    if len(starts) == 0 or starts[0] != 0 or starts[-1] != count:
        return [f"episode index must start at 0 and end at count={count}"]
    if len(starts) > 1 and not np.all(np.diff(starts) > 0):
        return ["episode index is not strictly increasing (empty or overlapping episodes)"]
    return []


def manifest_shards(meta: dict, where) -> list[dict]:
    """The shard entries of a sharded batch's manifest, checked: each names a folder
    ``shard_*`` directly inside the batch (no separator, not hidden, listed once), holds integer
    ``count`` and ``episodes``, and continues the chain (``firstRow`` / ``firstEpisode`` equal
    the totals of the entries before it); the totals equal the manifest's ``count`` and
    ``episodes``. BatchFormatError naming ``where`` and the entry otherwise. Assumes
    ``meta_problems(meta)`` is empty."""
    shards = meta.get("shards")
    if not isinstance(shards, list) or not shards:
        raise BatchFormatError(f"{where}: sharded batch without a shard list")
    rows = eps = 0
    seen = set()
    for k, s in enumerate(shards):
        name = s.get("path") if isinstance(s, dict) else None
        if not isinstance(name, str) or not SHARD_NAME.match(name) or name in seen:
            raise BatchFormatError(f"{where}: bad shard entry {k}: {str(s)[:200]}")
        seen.add(name)
        count, n_eps = s.get("count"), s.get("episodes")
        if not (is_int(count) and is_int(n_eps) and 0 <= count <= F.MAX_COUNT
                and 0 <= n_eps <= count):
            raise BatchFormatError(f"{where}: shard entry {k} ({name}): count/episodes must be "
                                   f"integers with 0 <= episodes <= count")
        if s.get("firstRow") != rows or s.get("firstEpisode") != eps:
            raise BatchFormatError(f"{where}: shard entry {k} ({name}) does not continue the "
                                   f"chain (expected firstRow {rows}, firstEpisode {eps})")
        rows += count
        eps += n_eps
    if (rows, eps) != (meta["count"], meta["episodes"]):
        raise BatchFormatError(f"{where}: shards hold {rows} transitions / {eps} episodes, the "
                               f"manifest says {meta['count']} / {meta['episodes']}")
    return shards


def batch_parts(path: Path) -> list[Path]:
    """Folders readable by ``load_batch`` that make up the batch at ``path`` (the batch itself, or
    its shards in manifest order, checked by :func:`manifest_shards`; each shard must be a real
    folder, not a link)."""
    path = Path(path)
    meta = read_meta(path)
    if meta.get("sharded") is not True:
        return [path]
    probs = meta_problems(meta)
    if probs:
        raise BatchFormatError(f"{path}: " + "; ".join(probs))
    parts = [path / s["path"] for s in manifest_shards(meta, path / F.META_FILE)]
    for part in parts:
        try:
            mode = os.lstat(part).st_mode
        except FileNotFoundError:
            raise BatchFormatError(f"{part}: missing (listed in the manifest)") from None
        except OSError as exc:
            raise BatchFormatError(f"{part}: cannot stat ({exc.strerror or exc})") from None
        if not stat.S_ISDIR(mode):
            raise BatchFormatError(f"{part}: is a {kind_of(mode)}, not a shard folder (a "
                                   "sharded batch holds its shards as real folders)")
    return parts


def shard_record_problem(shard_meta: dict, index: int, first_row: int,
                         first_episode: int) -> str | None:
    """Why a shard's own ``shard`` record does not continue the chain at this place, or None."""
    rec = shard_meta.get("shard")
    want = {"index": index, "firstRow": first_row, "firstEpisode": first_episode}
    if not isinstance(rec, dict) or any(not is_int(rec.get(k)) or rec.get(k) != v
                                        for k, v in want.items()):
        return f"shard record {str(rec)[:200]} does not continue the manifest's chain " \
               f"(expected {want})"
    return None


def shard_problems(manifest: dict, index: int, entry: dict | None, shard_meta: dict,
                   first_row: int, first_episode: int) -> list[str]:
    """Problems of one (sound) shard's meta.json against its (sound) manifest: a shard must not
    itself be sharded; obsDim, maskDim and numActions must be the manifest's; count and
    episodes its entry's (when given); its ``shard`` record must continue the chain."""
    probs = []
    if shard_meta.get("sharded") is True:
        return ["meta.json: a shard must not itself be sharded"]
    for key in ("obsDim", "maskDim"):
        if shard_meta.get(key) != manifest.get(key):
            probs.append(f"{key} {str(shard_meta.get(key))[:40]} disagrees with the manifest "
                         f"({str(manifest.get(key))[:40]})")
    na_shard = shard_meta.get("numActions", shard_meta.get("maskDim"))
    na_manifest = manifest.get("numActions", manifest.get("maskDim"))
    if na_shard != na_manifest:
        probs.append(f"numActions {str(na_shard)[:40]} disagrees with the manifest "
                     f"({str(na_manifest)[:40]})")
    if entry is not None:
        for key in ("count", "episodes"):
            if shard_meta.get(key) != entry.get(key):
                probs.append(f"{key} {str(shard_meta.get(key))[:40]} disagrees with the "
                             f"manifest ({str(entry.get(key))[:40]})")
    problem = shard_record_problem(shard_meta, index, first_row, first_episode)
    if problem:
        probs.append(f"meta.json {problem}")
    return probs


def check_shard_chain(path: Path, batches: list) -> None:
    """The opened shards of the sharded batch at ``path`` must be the manifest's, in order:
    each is not itself sharded, has the manifest's obsDim/maskDim/numActions, and its own
    ``shard`` record (index, first row, first episode) continues the previous one; the totals
    equal the manifest's. A dropped, repeated or reordered entry is an error, never fewer or
    shuffled transitions."""
    manifest = read_meta(path)
    rows = eps = 0
    for k, b in enumerate(batches):
        probs = shard_problems(manifest, k, None, b.meta, rows, eps)
        if probs:
            raise BatchFormatError(f"{b.path}: " + "; ".join(probs))
        rows += b.count
        eps += b.num_episodes
    if (rows, eps) != (manifest.get("count"), manifest.get("episodes")):
        raise BatchFormatError(f"{path}: shards hold {rows} transitions / {eps} episodes, the "
                               f"manifest says {manifest.get('count')} / "
                               f"{manifest.get('episodes')}")


def meta_columns(meta: dict) -> tuple:
    """Names of the per-transition columns a batch holds, in format order: those listed in
    meta ``columns``, or the five required ones for producers that write no list."""
    listed = meta.get("columns")
    if isinstance(listed, dict):
        return tuple(c for c in F.COLUMN_ORDER if c in listed)
    return tuple(F.REQUIRED_COLUMNS)


def length_summary(parts: list[dict]) -> dict | None:
    """{min, max, mean} episode length over parts given as their ``episodeLength`` summaries
    with ``episodes`` and ``transitions`` counts (a manifest's shard stats)."""
    parts = [p for p in parts if p.get("episodeLength")]
    if not parts:
        return None
    eps = sum(p["episodes"] for p in parts)
    rows = sum(p["transitions"] for p in parts)
    return {"min": min(p["episodeLength"]["min"] for p in parts),
            "max": max(p["episodeLength"]["max"] for p in parts),
            "mean": rows / eps if eps else None}


def build_manifest(first_shard_meta: dict, shards: list[dict], shard_bytes, created_at: str,
                   extra: dict | None = None) -> dict:
    """The meta.json of a sharded batch: the keys every shard shares (dims, format, spec, user
    meta, ... taken from the first shard's meta.json), the totals, ``sharded``, ``shardBytes``
    and the ``shards`` list (entries: path, firstRow, firstEpisode, count, episodes, stats),
    plus ``extra`` (producer keys such as ``source``)."""
    per_folder = ("count", "steps", "episodes", "createdAt", "columns", "checksums", "codecs",
                  "shard", "episodeLength", "episodeReturn")
    rows = sum(s["count"] for s in shards)
    eps = sum(s["episodes"] for s in shards)
    manifest = {"count": rows, "obsDim": first_shard_meta["obsDim"],
                "maskDim": first_shard_meta["maskDim"], "episodes": eps, "steps": rows,
                "createdAt": created_at}
    manifest.update((k, v) for k, v in first_shard_meta.items()
                    if k not in per_folder and k not in manifest)
    manifest.update({"sharded": True, "shardBytes": shard_bytes, "shards": shards})
    lengths = length_summary([s.get("stats") or {} for s in shards])
    if lengths is not None:
        manifest["episodeLength"] = lengths
    manifest.update(extra or {})
    return manifest
