"""``load_batch``: open a batch folder as read-only memory-mapped NumPy columns.

Nothing in ``meta.json`` is trusted beyond what the files hold: every size is checked against the
file on disk before anything is mapped, so a truncated or resized file is an error, never a wrong
answer or an out-of-memory. Files are opened through :mod:`fastrl._batch.safeio`: only regular
files, never through a symbolic link, never blocking on a FIFO or device; what is mapped is the
file whose size was checked.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from . import _format as F
from ._batch.codecs import budget_error, decode_budget, decode_column
from ._batch.meta import (checksum_problems, column_layout, episode_starts_from, index_problems,
                          is_int, meta_problems, read_meta, size_problems)
from ._batch.safeio import map_array, read_array
from .errors import BatchFormatError

__all__ = ["load_batch", "Batch", "EpisodeView", "open_columns", "read_meta"]


def decoded_bytes(layout: dict, codecs: dict) -> int:
    """Bytes the compressed columns of ``layout`` decode to (their shapes' sizes)."""
    return sum(math.prod(int(x) for x in shape) * dtype.itemsize
               for name, (_, dtype, shape) in layout.items() if name in codecs)


def open_columns(layout: dict, codecs: dict, verify: bool = False, copy: bool = False,
                 names=None) -> dict:
    """name -> read-only array: memory-mapped plain files (``copy``: read into memory
    instead), decoded (in-memory) compressed ones. ``names`` limits it to those columns.

    The compressed columns of the folder together may decode to at most the decode budget
    (``FASTRL_MAX_DECODE_BYTES``, see :func:`fastrl._batch.codecs.decode_budget`); more is
    refused before anything is inflated."""
    if names is not None:
        layout = {n: v for n, v in layout.items() if n in names}
    want = decoded_bytes(layout, codecs)
    budget = decode_budget() if want else 0
    if want > budget:
        first = next(codecs[n]["file"] for n in layout if n in codecs)
        raise budget_error(first if len([n for n in layout if n in codecs]) == 1
                           else "the compressed columns", want, budget)
    cols = {}
    for name, (fpath, dtype, shape) in layout.items():
        if name in codecs:
            cols[name] = decode_column(fpath.parent, codecs[name], dtype, shape, verify=verify,
                                       budget=budget)
        else:
            cols[name] = _map(fpath, dtype, shape, copy=copy)
    return cols


def _map(fpath: Path, dtype, shape, copy: bool = False):
    """A read-only array mapped from the regular file ``fpath`` (``copy``: read into memory).
    A plain ndarray view of the np.memmap (which it keeps alive): slicing it costs what slicing
    an in-RAM array costs."""
    try:
        return (read_array if copy else map_array)(fpath, dtype, shape, fpath.name)
    except FileNotFoundError:
        raise BatchFormatError(f"{fpath.name}: missing") from None
    except OSError as exc:
        raise BatchFormatError(f"{fpath.name}: cannot read ({exc.strerror or exc})") from None


class EpisodeView:
    """Views (no copy) of one episode's rows. Attributes: ``index``, ``start``, ``stop`` (rows
    ``[start, stop)`` of the batch), ``obs`` (T, obsDim) float32, ``actions`` (T,) int32, ``rewards``
    (T,) float32, ``masks`` (T, maskDim) uint8, ``dones`` (T,) uint8, and ``values``, ``logprobs``
    (T,) float32 / ``truncated`` (T,) uint8 or None when the batch lacks them; ``final_obs``
    (obsDim,) float32, the observation after the last step, or None."""

    __slots__ = ("index", "start", "stop", "obs", "actions", "rewards", "masks", "dones", "values",
                 "logprobs", "truncated", "final_obs")

    def __init__(self, batch, index, start, stop):
        self.index, self.start, self.stop = index, start, stop
        for name in F.COLUMN_ORDER:
            col = getattr(batch, name)
            setattr(self, name, None if col is None else col[start:stop])
        self.final_obs = None if batch.final_obs is None else batch.final_obs[index]

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
    and ``truncated`` (uint8) or None when absent; ``final_obs`` (episodes, obsDim) float32, the
    observation after each episode's last step, or None when the producer gave none;
    ``episode_starts`` (episodes + 1,) int64 row offsets. ``len(batch)`` is the number of transitions; ``batch.num_episodes`` the episodes."""

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
        self.final_obs = columns.get(F.FINAL_OBS[0])
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
        return int(v) if is_int(v) else self.mask_dim

    @property
    def columns(self) -> dict:
        """name -> array for every per-transition column present (not ``final_obs``, which has
        one row per episode)."""
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


def load_batch(path: str | os.PathLike, *, verify: bool = False, copy: bool = False) -> Batch:
    """Open the batch folder ``path`` with memory-mapped, read-only columns.

    Checks meta.json and every file's size before mapping (BatchFormatError naming the file and
    the expected vs found size otherwise). ``verify=True`` also recomputes the checksums (reads
    every byte once). Opening costs a few system calls, whatever the batch size.

    ``copy=True`` reads every column into memory instead of mapping it (read-only arrays). Use
    it when another process may truncate the files while you read them: a mapped file that
    shrinks under a reader kills it with SIGBUS (see docs/HARDENING.md), a copied one cannot.
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
        cols = open_columns(layout, codecs, verify=verify, copy=copy)
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
