"""``open_dataset``: many batches and shards presented as one memory-mapped dataset.

Global transition ``i`` lives in part ``k = searchsorted(row_starts, i, 'right') - 1`` at row
``i - row_starts[k]`` (O(log parts)); episodes likewise. Parts are plain batches or the shards of a
sharded batch, in name order. ``refresh()`` picks up batches committed to the root since (the
append-only way bots keep producing).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import _format as F
from .errors import BatchFormatError
from ._batch.meta import batch_parts, check_shard_chain, read_meta
from .columnview import ColumnView
from .reader import Batch, EpisodeView, load_batch

__all__ = ["open_dataset", "Dataset"]


def root_batches(p: Path) -> list[str]:
    """Names of the committed batches in the root ``p`` (``batch_*`` folders holding a
    ``meta.json``), sorted. A ``batch_*`` entry that is a symbolic link is an error: fastrl
    never follows a link out of a root (open the link's target explicitly if you mean it)."""
    names = []
    with os.scandir(p) as it:
        for e in it:
            if not e.name.startswith(F.BATCH_PREFIX):
                continue
            if e.is_symlink():
                raise BatchFormatError(f"{e.path}: is a symbolic link (fastrl never follows a "
                                       "link out of a root; open its target explicitly)")
            if e.is_dir(follow_symlinks=False) \
                    and os.path.lexists(os.path.join(e.path, F.META_FILE)):
                names.append(e.name)
    return sorted(names)


def _expand(p: Path) -> list[tuple[Path, list[Path]]]:
    """(batch folder, its parts) for a batch folder, or for every batch in a root."""
    if os.path.lexists(p / F.META_FILE):
        return [(p, batch_parts(p))]
    if not p.is_dir():
        raise BatchFormatError(f"{p}: not a folder")
    try:
        batches = root_batches(p)
    except OSError as exc:
        raise BatchFormatError(f"{p}: cannot list ({exc.strerror or exc})") from None
    return [(p / name, batch_parts(p / name)) for name in batches]


class Dataset:
    """Transitions of several batches/shards as one. ``len()`` is the number of transitions;
    ``num_episodes``; ``episode(i)``; ``transition(i)`` (dict of one row); ``sample(n, rng)``;
    ``locate(i)`` -> (part index, row); ``parts`` are the opened :class:`Batch` objects."""

    def __init__(self, sources: list[Path], root: Path | None, copy: bool = False):
        self._sources = sources
        self._root = root
        self._copy = copy
        self.parts: list[Batch] = []
        self._paths: list[Path] = []
        self._empty: set = set()
        self.row_starts = np.zeros(1, np.int64)
        self.episode_starts = np.zeros(1, np.int64)
        self.refresh()

    def refresh(self) -> int:
        """Open parts that appeared since the last call (new batches in a root); return how many.
        Parts already open stay as they are."""
        seen = set(self._paths) | self._empty
        opened = []
        for src in self._sources:
            for batch_path, parts in _expand(src):
                if parts[0] in seen:
                    continue
                if parts[0] != batch_path:  # shards: none may itself be sharded
                    for p in parts:
                        if read_meta(p).get("sharded") is True:
                            raise BatchFormatError(f"{p}: meta.json: a shard must not itself "
                                                   "be sharded")
                group = [load_batch(p, copy=self._copy) for p in parts]
                if parts[0] != batch_path:
                    check_shard_chain(batch_path, group)
                opened += group
                seen.update(parts)
        new = [b.path for b in opened]
        for b in opened:
            p = b.path
            if self.parts and (b.obs_dim, b.mask_dim) != (self.parts[0].obs_dim,
                                                          self.parts[0].mask_dim):
                raise BatchFormatError(f"{p}: obsDim/maskDim {b.obs_dim}/{b.mask_dim} differ "
                                       f"from {self._paths[0]} "
                                       f"({self.parts[0].obs_dim}/{self.parts[0].mask_dim})")
            if b.count == 0:
                self._empty.add(p)
                continue
            self.parts.append(b)
            self._paths.append(p)
        self.row_starts = np.concatenate([[0], np.cumsum([b.count for b in self.parts])]) \
            .astype(np.int64)
        self.episode_starts = np.concatenate(
            [[0], np.cumsum([b.num_episodes for b in self.parts])]).astype(np.int64)
        return len(new)

    def __len__(self) -> int:
        return int(self.row_starts[-1])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts[-1])

    @property
    def obs_dim(self) -> int:
        return self.parts[0].obs_dim if self.parts else 0

    @property
    def mask_dim(self) -> int:
        return self.parts[0].mask_dim if self.parts else 0

    def locate(self, i: int) -> tuple[int, int]:
        """(part index, row in that part) of global transition ``i``."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"transition {i} out of range: the dataset has {n}")
        k = int(np.searchsorted(self.row_starts, i, side="right")) - 1
        return k, int(i - self.row_starts[k])

    def transition(self, i: int) -> dict:
        """One transition: column name -> value (arrays for obs and masks)."""
        k, r = self.locate(i)
        return {name: col[r] for name, col in self.parts[k].columns.items()}

    def episode(self, i: int) -> EpisodeView:
        """Views of global episode ``i`` (its ``index`` is the episode's index in its part)."""
        n = self.num_episodes
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"episode {i} out of range: the dataset has {n}")
        k = int(np.searchsorted(self.episode_starts, i, side="right")) - 1
        return self.parts[k].episode(int(i - self.episode_starts[k]))

    def episodes(self):
        for b in self.parts:
            yield from b.episodes()

    def gather(self, index) -> dict:
        """Rows at global indices ``index`` (any order): dict name -> array, in that order.
        Only columns present in every part are returned."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError("transition index out of range")
        part = np.searchsorted(self.row_starts, index, side="right") - 1
        names = set.intersection(*(set(b.columns) for b in self.parts)) if self.parts else set()
        out = {}
        for name in sorted(names):
            first = self.parts[0].columns[name]
            out[name] = np.empty((len(index),) + first.shape[1:], dtype=first.dtype)
        for k in np.unique(part):
            sel = np.flatnonzero(part == k)
            rows = index[sel] - self.row_starts[k]
            cols = self.parts[k].columns
            for name in out:
                out[name][sel] = cols[name][rows]
        return out

    def column(self, name: str) -> ColumnView:
        """One column across every part, as one array-like (:class:`fastrl.columnview.ColumnView`):
        ``len``, ``shape``, ``dtype``; slices, integer and boolean index arrays read only the rows
        asked for and return an ndarray of them. ``name``: a per-transition column (``obs``,
        ``actions``, ``rewards``, ``masks``, ``dones``, ``values``, ``logprobs``, ``truncated``:
        (transitions, ...)) or ``final_obs`` (episodes, obsDim). KeyError when a part lacks it."""
        if not self.parts:
            raise ValueError("the dataset has no transitions")
        arrays = []
        for b in self.parts:
            col = b.final_obs if name == "final_obs" else b.columns.get(name)
            if col is None:
                have = sorted(b.columns) + (["final_obs"] if b.final_obs is not None else [])
                raise KeyError(f"{b.path}: no column {name!r} (it has {', '.join(have)})")
            arrays.append(col)
        return ColumnView(name, arrays)

    def sample(self, n: int, rng=None) -> dict:
        """A random minibatch of ``n`` transitions (with replacement), sorted by index for
        locality; ``"index"`` holds the global indices."""
        if len(self) == 0:
            raise ValueError("cannot sample from an empty dataset")
        rng = np.random.default_rng(rng)
        idx = np.sort(rng.integers(0, len(self), size=n))
        out = self.gather(idx)
        out["index"] = idx
        return out

    def __repr__(self):
        return f"Dataset(parts={len(self.parts)}, transitions={len(self)}, " \
               f"episodes={self.num_episodes})"


def open_dataset(root_or_paths, *, copy: bool = False) -> Dataset:
    """Open a batch, a sharded batch, a root folder of batches (``batch_*`` with a meta.json,
    in name order), or a list of any of these, as one :class:`Dataset`.

    ``copy=True`` reads every column into memory instead of mapping it (see
    :func:`fastrl.load_batch`): for folders other processes may truncate while you read."""
    if isinstance(root_or_paths, (str, os.PathLike)):
        sources = [Path(root_or_paths)]
    else:
        sources = [Path(p) for p in root_or_paths]
    root = sources[0] if len(sources) == 1 else None
    return Dataset(sources, root, copy=copy)
