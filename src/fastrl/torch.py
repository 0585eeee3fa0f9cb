"""PyTorch datasets over fastrl batches (``pip install torch``; fastrl does not require it).

- :class:`TransitionDataset` — map-style, random access to every transition of
  :func:`fastrl.open_dataset` sources (memory-mapped; safe with ``DataLoader`` workers, fork or
  spawn: it pickles as its source paths and reopens them in the worker). It implements
  ``__getitems__``, so ``DataLoader(TransitionDataset(root), batch_size=256, shuffle=True)``
  fetches each minibatch in one vectorized gather (no per-item work), with the default collate.
- :class:`ShardStream` — iterable: streams parts (shards or batches) in order, or shuffled with
  a new order every epoch (also with ``persistent_workers=True``), several parts interleaved so
  that a minibatch mixes them. Parts are split across ``DataLoader`` workers and distributed
  ranks so that, in one epoch, every transition is read exactly once.

Samples are dicts of tensors: ``obs`` float32 (obsDim,), ``actions`` int32 (), ``rewards``,
``masks`` uint8 (maskDim,), ``dones`` ... (the columns present in every part) plus ``index``
(int64 global transition index); minibatches have a leading batch axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset
from torch.utils.data import IterableDataset as _TorchIterable
from torch.utils.data import get_worker_info

from .dataset import open_dataset
from .reader import load_batch

__all__ = ["TransitionDataset", "ShardStream", "RandomBatchSampler"]


def _tensors(cols: dict) -> dict:
    """Fresh (writeable, owned) arrays -> tensors sharing their memory (no copy)."""
    return {k: torch.from_numpy(v) for k, v in cols.items()}


def _common_columns(parts, wanted) -> tuple:
    names = set.intersection(*(set(b.columns) for b in parts)) if parts else set()
    if wanted is not None:
        unknown = set(wanted) - names - {"index"}
        if unknown:
            raise ValueError(f"columns not present in every part: {', '.join(sorted(unknown))} "
                             f"(available: {', '.join(sorted(names))})")
        names &= set(wanted)
    return tuple(sorted(names))


# --------------------------------------------------------------------------------------------
# Map-style

class _Row(Mapping):
    """One transition of a minibatch fetched by ``TransitionDataset.__getitems__`` (a
    read-only mapping; its values are taken from the batched tensors when asked for)."""

    __slots__ = ("_batch", "_i")

    def __init__(self, batch: dict, i: int):
        self._batch = batch
        self._i = i

    def __getitem__(self, key):
        return self._batch[key][self._i]

    def __iter__(self):
        return iter(self._batch)

    def __len__(self):
        return len(self._batch)


class _Rows(Sequence):
    """What ``TransitionDataset.__getitems__`` returns: a sequence of per-transition dicts
    (for any collate_fn) that also holds the already batched tensors, which the default
    collate returns as they are (no per-item stacking)."""

    __slots__ = ("batch", "_n")

    def __init__(self, batch: dict, n: int):
        self.batch = batch
        self._n = n

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return _Row(self.batch, i)


def _collate_rows(batch, *, collate_fn_map=None):
    if isinstance(batch, _Rows):
        return dict(batch.batch)
    return {k: torch.stack([r[k] for r in batch]) for k in batch[0]}


def _register_collate():
    # torch's documented way to extend default_collate ("in-place modifying
    # default_collate_fn_map", see torch.utils.data.default_collate); it only adds our own type.
    try:
        from torch.utils.data._utils.collate import default_collate_fn_map
    except ImportError:  # pragma: no cover - older/newer torch: items are collated one by one
        return
    default_collate_fn_map.setdefault(_Row, _collate_rows)


_register_collate()


class TransitionDataset(_TorchDataset):
    """Map-style dataset: ``ds[i]`` is transition ``i`` of ``fastrl.open_dataset(source)``.

    ``columns``: names to return (default: every column present in all parts).
    ``get_batch(indices)`` returns a whole minibatch (dict of stacked tensors) in one gather.
    ``__getitems__`` (what a ``DataLoader`` with a ``batch_size`` calls, PyTorch >= 2.0) does
    the same, so ``DataLoader(ds, batch_size=256, shuffle=True)`` does one gather per
    minibatch, and the default ``collate_fn`` returns it as it is (a dict of batched tensors).
    What is left is torch's own sampler, a Python step per index (about 0.1 µs each): small
    next to the gather for wide rows, as much as the gather for narrow ones;
    ``batch_sampler=RandomBatchSampler(ds, 256)`` removes it (docs/INTEROP.md has numbers). A
    custom ``collate_fn`` receives a sequence of per-transition dicts, as usual.
    """

    def __init__(self, source, columns=None):
        self._source = source
        self._columns = None if columns is None else tuple(columns)
        self._ds = open_dataset(source)
        self._names = _common_columns(self._ds.parts, self._columns)
        self._single = len(self._ds.parts) == 1
        self._cols = [{n: b.columns[n] for n in self._names} for b in self._ds.parts]

    def __len__(self) -> int:
        return len(self._ds)

    def _gather(self, idx: np.ndarray) -> dict:
        n = len(self._ds)
        if not self._cols:
            if idx.size:
                raise IndexError("transition index out of range: the dataset is empty")
            return {"index": idx} if self._columns is None or "index" in self._columns else {}
        out = {}
        if self._single:
            try:  # np.take checks the bounds and takes negative indices as Python does
                for name, col in self._cols[0].items():
                    out[name] = np.take(col, idx, axis=0)
            except IndexError:
                raise IndexError(f"transition index out of range for {n} transitions") from None
            if idx.size and idx.min() < 0:
                idx = np.where(idx < 0, idx + n, idx)
        else:
            if idx.size:
                lo, hi = int(idx.min()), int(idx.max())
                if lo < -n or hi >= n:
                    raise IndexError(f"transition index out of range for {n} transitions")
                if lo < 0:
                    idx = np.where(idx < 0, idx + n, idx)
            starts = self._ds.row_starts
            part = np.searchsorted(starts, idx, side="right") - 1
            for name, col in self._cols[0].items():
                out[name] = np.empty((len(idx),) + col.shape[1:], dtype=col.dtype)
            for k in np.unique(part):
                sel = np.flatnonzero(part == k)
                rows = idx[sel] - starts[k]
                for name, col in self._cols[k].items():
                    out[name][sel] = np.take(col, rows, axis=0)
        if self._columns is None or "index" in self._columns:
            out["index"] = idx
        return out

    def __getitem__(self, i) -> dict:
        idx = np.array([int(i)], dtype=np.int64)
        out = self._gather(idx)
        return {k: torch.from_numpy(np.array(v[0])) for k, v in out.items()}

    def get_batch(self, indices) -> dict:
        """Dict of tensors with a leading axis ``len(indices)`` (any order, negative ok)."""
        idx = np.array(indices, dtype=np.int64, copy=True).reshape(-1)
        return _tensors(self._gather(idx))

    def __getitems__(self, indices):
        batch = self.get_batch(indices)
        return _Rows(batch, len(indices))

    def __getstate__(self):
        return {"source": self._source, "columns": self._columns}

    def __setstate__(self, state):
        self.__init__(state["source"], state["columns"])


class RandomBatchSampler(torch.utils.data.Sampler):
    """Minibatches of indices as int64 arrays, for ``DataLoader(ds, batch_sampler=...)``.

    The same batches as ``DataLoader(ds, batch_size=..., shuffle=True)`` draws (a new
    ``torch.randperm`` order every epoch, from ``generator`` or torch's global RNG), without
    its per-index Python work: torch's ``RandomSampler`` + ``BatchSampler`` step a generator
    once per index (tens of microseconds per 256), which is most of the time when rows are
    narrow. ``shuffle=False`` gives the indices in order.
    """

    def __init__(self, data_source, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = False, generator=None):
        n = data_source if isinstance(data_source, (int, np.integer)) else len(data_source)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.n, self.batch_size = int(n), int(batch_size)
        self.shuffle, self.drop_last, self.generator = bool(shuffle), bool(drop_last), generator

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).numpy() if self.shuffle \
            else np.arange(self.n, dtype=np.int64)
        stop = self.n - self.n % self.batch_size if self.drop_last else self.n
        for lo in range(0, stop, self.batch_size):
            yield order[lo:lo + self.batch_size]

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)


# --------------------------------------------------------------------------------------------
# Iterable

class ShardStream(_TorchIterable):
    """Iterable dataset streaming the parts (shards/batches) of ``open_dataset(source)``.

    Parts are dealt round-robin to the (rank, worker) pairs after an order that every worker
    and rank computes alike, so in one epoch each transition is yielded exactly once across
    all of them.

    shuffle: new part order and new row order every epoch, and ``interleave`` parts read at
    once: rows are drawn in blocks of ``block_rows`` from each of ``interleave`` parts (default
    4; a part that ends is replaced by the worker's next one), the blocks are shuffled
    together, and the minibatches are cut from that mix, so each minibatch holds rows of up to
    ``interleave`` parts. Memory: ``interleave * block_rows`` transitions per worker (default
    ``block_rows``: 4096 transitions, fewer for wide rows, about 8 MiB per block).
    Without shuffle, parts and rows come in order.

    shuffle_buffer: also pass rows through a reservoir of this many transitions (slower:
    per-row work; rarely needed with ``interleave``).

    **Epochs.** The shuffling of an iteration is seeded by ``(seed, epoch)`` where ``epoch`` is
    ``max(set_epoch value, previous epoch of this object + 1)``, the previous epoch being the
    one the same object (the main process's, or a worker's copy) used on its last iteration.
    So the order changes every epoch by itself when the object is iterated repeatedly: in the
    main process (``num_workers=0``) and in ``persistent_workers=True`` workers, whose copies
    live across epochs (``set_epoch`` in the main process cannot reach them; every worker and
    rank counts alike, so they still agree). Non-persistent workers get a fresh copy of the
    main object each epoch: call ``set_epoch(e)`` before each epoch there (as with
    ``DistributedSampler``); calling it every epoch is harmless in every mode.

    batch_size: yield dicts of stacked tensors of this many transitions (the last one of each
    worker may be smaller) instead of single transitions; use ``DataLoader(stream,
    batch_size=None)``. rank / world_size: this process's share in distributed training
    (default: from ``torch.distributed`` when initialized, else 0 / 1).
    """

    def __init__(self, source, *, shuffle: bool = False, shuffle_buffer: int = 0, seed: int = 0,
                 batch_size: int | None = None, rank: int | None = None,
                 world_size: int | None = None, columns=None, interleave: int = 4,
                 block_rows: int | None = None):
        self._source = source
        self.shuffle = bool(shuffle)
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.epoch = 0
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.interleave = int(interleave)
        self._columns = None if columns is None else tuple(columns)
        if self.shuffle_buffer < 0 or (batch_size is not None and batch_size < 1):
            raise ValueError("shuffle_buffer must be >= 0 and batch_size >= 1")
        if self.interleave < 1 or (block_rows is not None and block_rows < 1):
            raise ValueError("interleave and block_rows must be >= 1")
        ds = open_dataset(source)
        self._names = _common_columns(ds.parts, self._columns)
        self._parts = [(b.path, int(ds.row_starts[k]), b.count) for k, b in enumerate(ds.parts)]
        self._len = len(ds)
        if block_rows is None:
            b = ds.parts[0] if ds.parts else None
            row = (b.obs_dim * 4 + b.mask_dim + 32) if b is not None else 64
            block_rows = max(64, min(4096, (8 << 20) // row))
        self.block_rows = int(block_rows)
        self._last_epoch = None

    def set_epoch(self, epoch: int) -> None:
        """Seed the shuffling of the next iteration with ``epoch`` (see the class docstring)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._len

    def _share(self):
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized():
                rank, world = dist.get_rank(), dist.get_world_size()
            else:
                rank, world = 0, 1
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * nw + wid, world * nw

    def __iter__(self):
        # Not a generator function: the epoch is counted when iter() is called (each worker
        # calls it exactly once per epoch), even if this iteration is never consumed.
        last = self._last_epoch
        epoch = self.epoch if last is None or self.epoch > last else last + 1
        self._last_epoch = epoch
        return self._generate(epoch)

    def _generate(self, epoch: int):
        me, total = self._share()
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self._parts)) \
            if self.shuffle else np.arange(len(self._parts))
        mine = [self._parts[k] for k in order[me::total]]
        rng = np.random.default_rng([self.seed, epoch, 1 + me])
        blocks = self._mixed(mine, rng) if self.shuffle else self._ordered(mine)
        if self.shuffle_buffer:
            rows = self._buffered(self._rows(blocks), rng)
            if self.batch_size is None:
                for r in rows:
                    yield _tensors(r)
            else:
                blocks = self._stack_rows(rows, self.batch_size)
                for blk in blocks:
                    yield _tensors(blk)
            return
        if self.batch_size is None:
            for r in self._rows(blocks):
                yield _tensors(r)
        else:
            for blk in self._cut(blocks, self.batch_size):
                yield _tensors(blk)

    # -- blocks: dicts of arrays, rows of one or more parts ----------------------------------

    def _read(self, path, first):
        b = load_batch(path)
        return {n: b.columns[n] for n in self._names}, first

    def _block(self, cols, first, sel):
        out = {n: np.take(c, sel, axis=0) for n, c in cols.items()}
        if self._columns is None or "index" in self._columns:
            out["index"] = sel.astype(np.int64) + first
        return out

    def _ordered(self, parts):
        for path, first, count in parts:
            cols, first = self._read(path, first)
            for lo in range(0, count, self.block_rows):
                yield self._block(cols, first, np.arange(lo, min(count, lo + self.block_rows)))

    def _part_blocks(self, part, rng):
        path, first, count = part
        cols, first = self._read(path, first)
        perm = rng.permutation(count)
        for lo in range(0, count, self.block_rows):
            yield self._block(cols, first, np.sort(perm[lo:lo + self.block_rows]))

    def _mixed(self, parts, rng):
        queue = list(parts)
        active = []
        while queue or active:
            while queue and len(active) < self.interleave:
                active.append(self._part_blocks(queue.pop(0), rng))
            got = []
            for it in list(active):
                blk = next(it, None)
                if blk is None:
                    active.remove(it)
                else:
                    got.append(blk)
            if not got:
                continue
            merged = {k: np.concatenate([g[k] for g in got]) for k in got[0]}
            perm = rng.permutation(len(next(iter(merged.values()))))
            yield {k: v[perm] for k, v in merged.items()}

    @staticmethod
    def _cut(blocks, size):
        """Re-cut a stream of blocks into blocks of exactly ``size`` rows (the last smaller)."""
        pending = []
        have = 0
        for blk in blocks:
            n = len(next(iter(blk.values())))
            start = 0
            if pending:
                take = min(size - have, n)
                pending.append({k: v[:take] for k, v in blk.items()})
                have += take
                start = take
                if have < size:
                    continue
                yield {k: np.concatenate([p[k] for p in pending]) for k in blk}
                pending, have = [], 0
            while n - start >= size:
                yield {k: v[start:start + size].copy() for k, v in blk.items()}
                start += size
            if start < n:
                pending = [{k: v[start:] for k, v in blk.items()}]
                have = n - start
        if pending:
            yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}

    @staticmethod
    def _rows(blocks):
        for blk in blocks:
            n = len(next(iter(blk.values())))
            for j in range(n):
                yield {k: v[j].copy() if v.ndim > 1 else np.array(v[j]) for k, v in blk.items()}

    @staticmethod
    def _stack_rows(rows, size):
        pending = []
        for r in rows:
            pending.append(r)
            if len(pending) == size:
                yield {k: np.stack([p[k] for p in pending]) for k in pending[0]}
                pending = []
        if pending:
            yield {k: np.stack([p[k] for p in pending]) for k in pending[0]}

    def _buffered(self, rows, rng):
        buf = []
        for r in rows:
            if len(buf) < self.shuffle_buffer:
                buf.append(r)
                continue
            j = int(rng.integers(0, len(buf)))
            yield buf[j]
            buf[j] = r
        rng.shuffle(buf)
        yield from buf
