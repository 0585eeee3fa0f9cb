"""``load_batch``: open a batch folder as read-only memory-mapped NumPy columns.

Nothing in ``meta.json`` is trusted beyond what the files hold: every size is checked against the
file on disk before anything is mapped, so a truncated or resized file is an error, never a wrong
answer or an out-of-memory.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path

import numpy as np

from . import _format as F
from ._batch.codecs import codec_problems, decode_column
from .errors import BatchFormatError

__all__ = ["load_batch", "Batch", "EpisodeView", "read_meta", "meta_problems", "column_layout"]

_MAX_META_BYTES = 64 * 1024 * 1024


def read_meta(path: str | os.PathLike) -> dict:
    """Parse ``<path>/meta.json``; BatchFormatError naming the file when absent or not JSON."""
    mpath = Path(path) / F.META_FILE
    try:
        size = mpath.stat().st_size
        if size > _MAX_META_BYTES:
            raise BatchFormatError(f"{mpath}: {size} bytes, larger than the {_MAX_META_BYTES} limit")
        with open(mpath, "rb") as f:
            meta = json.loads(f.read())
    except FileNotFoundError:
        raise BatchFormatError(f"{mpath}: missing (not a batch folder, or not committed)") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BatchFormatError(f"{mpath}: unreadable or not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BatchFormatError(f"{mpath}: must hold a JSON object, got {type(meta).__name__}")
    return meta


def _is_int(v) -> bool:
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
            if not _is_int(v) or not lo <= v <= hi:
                probs.append(f"meta.json: {key} must be an integer in [{lo}, {hi}], got {v!r}")
    ok = lambda k: _is_int(meta.get(k))  # noqa: E731
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
    probs += codec_problems(meta, plain)
    return probs


def column_layout(meta: dict, path: Path) -> dict:
    """name -> (file path, dtype, shape) for every column present: the five required ones, the
    optional per-transition ones (listed in meta ``columns``, or, for producers that write no
    list, found on disk), and the episode index. Assumes ``meta_problems(meta)`` is empty."""
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
    name, fname, dtype = F.EPISODE_INDEX
    present = (name in listed) if isinstance(listed, dict) else (path / fname).exists()
    if present:
        layout[name] = (path / fname, dtype, (meta["episodes"] + 1,))
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


def open_columns(layout: dict, codecs: dict, verify: bool = False) -> dict:
    """name -> array: memory-mapped plain files, decoded (in-memory) compressed ones."""
    cols = {}
    for name, (fpath, dtype, shape) in layout.items():
        if name in codecs:
            cols[name] = decode_column(fpath.parent, codecs[name], dtype, shape, verify=verify)
        else:
            cols[name] = _map(fpath, dtype, shape)
    return cols


def _map(fpath: Path, dtype, shape):
    """A read-only array mapped from ``fpath``. A plain ndarray view of the np.memmap (which it
    keeps alive): slicing it costs what slicing an in-RAM array costs."""
    if math.prod(int(x) for x in shape) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(fpath, dtype=dtype, mode="r", shape=shape).view(np.ndarray)


class EpisodeView:
    """Views (no copy) of one episode's rows. Attributes: ``index``, ``start``, ``stop`` (rows
    ``[start, stop)`` of the batch), ``obs`` (T, obsDim) float32, ``actions`` (T,) int32, ``rewards``
    (T,) float32, ``masks`` (T, maskDim) uint8, ``dones`` (T,) uint8, and ``values``, ``logprobs``
    (T,) float32 / ``truncated`` (T,) uint8 or None when the batch lacks them."""

    __slots__ = ("index", "start", "stop", "obs", "actions", "rewards", "masks", "dones", "values",
                 "logprobs", "truncated")

    def __init__(self, batch, index, start, stop):
        self.index, self.start, self.stop = index, start, stop
        for name in ("obs", "actions", "rewards", "masks", "dones", "values", "logprobs",
                     "truncated"):
            col = getattr(batch, name)
            setattr(self, name, None if col is None else col[start:stop])

    def __len__(self):
        return self.stop - self.start

    @property
    def is_truncated(self) -> bool:
        """True when a time limit, not the game, ended this episode."""
        return bool(self.truncated is not None and len(self) and self.truncated[-1])

    @property
    def total_reward(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))

    def __repr__(self):
        return f"EpisodeView(index={self.index}, rows=[{self.start}, {self.stop}))"


class Batch:
    """A batch opened by :func:`load_batch`. Columns are read-only arrays memory-mapped from the
    files (compressed columns: decoded in memory):
    ``obs`` (count, obsDim) float32, ``actions`` (count,) int32, ``rewards`` (count,) float32,
    ``masks`` (count, maskDim) uint8, ``dones`` (count,) uint8; ``values``, ``logprobs`` (float32)
    and ``truncated`` (uint8) or None when absent; ``episode_starts`` (episodes + 1,) int64 row
    offsets. ``len(batch)`` is the number of transitions; ``batch.num_episodes`` the episodes."""

    def __init__(self, path: Path, meta: dict, columns: dict, episode_starts: np.ndarray):
        self.path = path
        self.meta = meta
        self.obs = columns["obs"]
        self.actions = columns["actions"]
        self.rewards = columns["rewards"]
        self.masks = columns["masks"]
        self.dones = columns["dones"]
        self.values = columns.get("values")
        self.logprobs = columns.get("logprobs")
        self.truncated = columns.get("truncated")
        self.episode_starts = episode_starts

    @property
    def count(self) -> int:
        return int(self.meta["count"])

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts) - 1

    @property
    def obs_dim(self) -> int:
        return int(self.meta["obsDim"])

    @property
    def mask_dim(self) -> int:
        return int(self.meta["maskDim"])

    @property
    def n_actions(self) -> int:
        """The game's action count (maskDim when the producer did not record it)."""
        v = self.meta.get("numActions")
        return int(v) if _is_int(v) else self.mask_dim

    @property
    def columns(self) -> dict:
        """name -> array for every column present."""
        names = ("obs", "actions", "rewards", "masks", "dones", "values", "logprobs", "truncated")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def __len__(self):
        return self.count

    def episode(self, i: int) -> EpisodeView:
        """Views of episode ``i`` (negative counts from the end); O(1)."""
        n = self.num_episodes
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"episode index must be an integer, got {type(i).__name__}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"episode {i} out of range: the batch has {n} episodes")
        return EpisodeView(self, int(i), int(self.episode_starts[i]),
                           int(self.episode_starts[i + 1]))

    def episodes(self):
        """Iterate over all episodes in order (EpisodeView each)."""
        for i in range(self.num_episodes):
            yield self.episode(i)

    def sample(self, n: int, rng=None, *, replace: bool = True) -> dict:
        """A random minibatch of ``n`` transitions: dict name -> array (copies), plus ``"index"``
        (int64 row numbers, sorted so the gather reads the files in order)."""
        if self.count == 0:
            raise ValueError("cannot sample from an empty batch")
        rng = np.random.default_rng(rng)
        idx = rng.choice(self.count, size=n, replace=replace) if not replace \
            else rng.integers(0, self.count, size=n)
        idx = np.sort(idx).astype(np.int64)
        out = {name: np.take(col, idx, axis=0) for name, col in self.columns.items()}
        out["index"] = idx
        return out

    def verify_checksums(self) -> list[str]:
        """Recompute each column file's checksum; return mismatches (empty when all match)."""
        return checksum_problems(self.path, self.meta)

    def __repr__(self):
        return (f"Batch({str(self.path)!r}, transitions={self.count}, "
                f"episodes={self.num_episodes}, obsDim={self.obs_dim}, maskDim={self.mask_dim})")


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


def load_batch(path: str | os.PathLike, *, verify: bool = False) -> Batch:
    """Open the batch folder ``path`` with memory-mapped, read-only columns.

    Checks meta.json and every file's size before mapping (BatchFormatError naming the file and
    the expected vs found size otherwise). ``verify=True`` also recomputes the checksums (reads
    every byte once). Opening costs a few system calls, whatever the batch size.
    """
    path = Path(path)
    if not path.is_dir():
        raise BatchFormatError(f"{path}: not a folder")
    meta = read_meta(path)
    if meta.get("sharded") is True:
        listed = meta.get("shards")
        shards = [s.get("path") for s in listed
                  if isinstance(s, dict) and isinstance(s.get("path"), str)] \
            if isinstance(listed, list) else []
        raise BatchFormatError(
            f"{path}: a sharded batch ({len(shards)} shards); open it with "
            f"fastrl.open_dataset({str(path)!r}), or load one shard with "
            f"load_batch({str(path / (shards[0] if shards else 'shard_00000'))!r})")
    probs = meta_problems(meta)
    if probs:
        raise BatchFormatError(f"{path}: " + "; ".join(probs))
    layout = column_layout(meta, path)
    codecs = meta.get("codecs") or {}
    probs = size_problems(layout, codecs)
    if probs:
        raise BatchFormatError(f"{path}: " + "; ".join(probs))
    if verify:
        probs = checksum_problems(path, meta)
        if probs:
            raise BatchFormatError(f"{path}: " + "; ".join(probs))
    try:
        cols = open_columns(layout, codecs, verify=verify)
    except BatchFormatError as exc:
        raise BatchFormatError(f"{path}: {exc}") from None
    if F.EPISODE_INDEX[0] in cols:
        starts = np.asarray(cols.pop(F.EPISODE_INDEX[0]))
    else:
        starts = episode_starts_from(cols["dones"])
    probs = index_problems(starts, meta["count"], meta["episodes"])
    if probs:
        raise BatchFormatError(f"{path}: " + "; ".join(probs))
    return Batch(path, meta, cols, starts)
