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
import zlib
from pathlib import Path

import numpy as np

from .. import _format as F
from ..errors import BatchFormatError
from .codecs import codec_problems

__all__ = ["SHARD_PREFIX", "read_meta", "parse_meta", "is_int", "meta_problems", "column_layout", "size_problems",
           "checksum_problems", "episode_starts_from", "index_problems", "manifest_shards",
           "batch_parts", "shard_record_problem", "check_shard_chain", "meta_columns",
           "build_manifest", "length_summary", "MAX_META_BYTES"]

SHARD_PREFIX = "shard_"  # the folders of a sharded batch: shard_00000, shard_00001, ...
MAX_META_BYTES = 64 * 1024 * 1024  # a larger meta.json is refused (readers and writer alike)


def read_meta(path: str | os.PathLike) -> dict:
    """Parse ``<path>/meta.json``; BatchFormatError naming the file when absent or not JSON."""
    mpath = Path(path) / F.META_FILE
    try:
        size = mpath.stat().st_size
        if size > MAX_META_BYTES:
            raise BatchFormatError(f"{mpath}: {size} bytes, larger than the {MAX_META_BYTES} limit")
        with open(mpath, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise BatchFormatError(f"{mpath}: missing (not a batch folder, or not committed)") from None
    except OSError as exc:
        raise BatchFormatError(f"{mpath}: unreadable ({exc})") from None
    return parse_meta(raw, mpath)


def parse_meta(raw: bytes, where) -> dict:
    """A meta.json's bytes -> dict; BatchFormatError naming ``where`` when not a JSON object."""
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BatchFormatError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BatchFormatError(f"{where}: must hold a JSON object, got {type(meta).__name__}")
    return meta


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
    if "createdAt" in meta and not isinstance(meta["createdAt"], str):
        probs.append("meta.json: createdAt must be an ISO-8601 string")
    if "formatVersion" in meta and meta["formatVersion"] != F.FORMAT_VERSION:
        probs.append(f"meta.json: formatVersion {meta['formatVersion']!r} is not supported "
                     f"(this fastrl reads version {F.FORMAT_VERSION})")
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
            present = (name in listed) if isinstance(listed, dict) else (path / fname).exists()
            if not present:
                continue
        w = {"obsDim": od, "maskDim": md, None: None}[width]
        layout[name] = (path / fname, dtype, (count, w) if w is not None else (count,))
    for (name, fname, dtype), shape in ((F.FINAL_OBS, (meta["episodes"], od)),
                                        (F.EPISODE_INDEX, (meta["episodes"] + 1,))):
        present = (name in listed) if isinstance(listed, dict) else (path / fname).exists()
        if present:
            layout[name] = (path / fname, dtype, shape)
    return layout


def size_problems(layout: dict, codecs: dict | None = None) -> list[str]:
    """Files missing or whose size is not exactly the product of their shape and item size
    (compressed columns: the stored file must exist; its decoded size is checked on decoding)."""
    probs = []
    codecs = codecs or {}
    for name, (fpath, dtype, shape) in layout.items():
        if name in codecs:
            if not (fpath.parent / codecs[name]["file"]).is_file():
                probs.append(f"{codecs[name]['file']}: missing (column {name!r}, "
                             f"{codecs[name]['codec']})")
            continue
        expected = math.prod(int(x) for x in shape) * dtype.itemsize  # Python ints: no wrap
        try:
            found = fpath.stat().st_size
        except FileNotFoundError:
            probs.append(f"{fpath.name}: missing (column {name!r})")
            continue
        except OSError as exc:
            probs.append(f"{fpath.name}: cannot stat ({exc})")
            continue
        if found != expected:
            probs.append(f"{fpath.name}: {found} bytes on disk, expected {expected} "
                         f"({' x '.join(map(str, shape))} x {dtype.itemsize} bytes)")
    return probs


def checksum_problems(path: Path, meta: dict, chunk: int = 16 << 20) -> list[str]:
    """Compare each file's CRC32 with ``meta['checksums']``."""
    sums = meta.get("checksums")
    if not isinstance(sums, dict):
        return []
    probs = []
    for fname, expected in sums.items():
        if not isinstance(fname, str) or "/" in fname or fname.startswith(".") \
                or not isinstance(expected, str) or not expected.startswith("crc32:"):
            probs.append(f"meta.json: bad checksum entry {fname!r}: {expected!r}")
            continue
        crc = 0
        try:
            with open(Path(path) / fname, "rb") as f:
                while True:
                    buf = f.read(chunk)
                    if not buf:
                        break
                    crc = zlib.crc32(buf, crc)
        except OSError as exc:
            probs.append(f"{fname}: cannot read for checksum ({exc})")
            continue
        if f"crc32:{crc:08x}" != expected.lower():
            probs.append(f"{fname}: checksum mismatch (meta.json {expected}, file crc32:{crc:08x})")
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
        if not isinstance(name, str) or not name.startswith(SHARD_PREFIX) or "/" in name \
                or "\\" in name or "\0" in name or name in seen or len(name) > 255:
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
    its shards in manifest order, checked by :func:`manifest_shards`)."""
    path = Path(path)
    meta = read_meta(path)
    if meta.get("sharded") is not True:
        return [path]
    probs = meta_problems(meta)
    if probs:
        raise BatchFormatError(f"{path}: " + "; ".join(probs))
    return [path / s["path"] for s in manifest_shards(meta, path / F.META_FILE)]


def shard_record_problem(shard_meta: dict, index: int, first_row: int,
                         first_episode: int) -> str | None:
    """Why a shard's own ``shard`` record does not continue the chain at this place, or None."""
    rec = shard_meta.get("shard")
    want = {"index": index, "firstRow": first_row, "firstEpisode": first_episode}
    if not isinstance(rec, dict) or any(rec.get(k) != v for k, v in want.items()):
        return f"shard record {rec!r} does not continue the manifest's chain (expected {want})"
    return None


def check_shard_chain(path: Path, batches: list) -> None:
    """The opened shards of the sharded batch at ``path`` must be the manifest's, in order:
    each shard's own ``shard`` record (index, first row, first episode) continues the previous
    one and the totals equal the manifest's. A dropped, repeated or reordered entry is an
    error, never fewer or shuffled transitions."""
    manifest = read_meta(path)
    rows = eps = 0
    for k, b in enumerate(batches):
        problem = shard_record_problem(b.meta, k, rows, eps)
        if problem:
            raise BatchFormatError(f"{b.path}: {problem}")
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
