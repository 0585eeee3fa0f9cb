"""PyTorch datasets over fastrl batches (``pip install torch``; fastrl does not require it).

- :class:`TransitionDataset` — map-style, random access to every transition of
  :func:`fastrl.open_dataset` sources (memory-mapped; safe with ``DataLoader`` workers, fork or
  spawn: it pickles as its source paths and reopens them in the worker).
- :class:`ShardStream` — iterable: streams parts (shards or batches) in order, or shuffled per
  epoch with an optional shuffle buffer. Parts are split across ``DataLoader`` workers and
  distributed ranks so that, in one epoch, every transition is read exactly once.

Samples are dicts of tensors: ``obs`` float32 (obsDim,), ``actions`` int32 (), ``rewards``,
``masks`` uint8 (maskDim,), ``dones`` ... plus ``index`` (int64 global transition index).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset
from torch.utils.data import IterableDataset as _TorchIterable
from torch.utils.data import get_worker_info

from .dataset import open_dataset

__all__ = ["TransitionDataset", "ShardStream"]


def _tensors(cols: dict) -> dict:
    # np.array copies out of the read-only memmap; torch.from_numpy then shares that copy.
    return {k: torch.from_numpy(np.array(v)) for k, v in cols.items()}


class TransitionDataset(_TorchDataset):
    """Map-style dataset: ``ds[i]`` is transition ``i`` of ``fastrl.open_dataset(source)``.

    ``columns``: names to return (default: every column present in all parts).
    ``get_batch(indices)`` returns a whole minibatch (dict of stacked tensors) in one gather,
    faster than collating single items.
    """

    def __init__(self, source, columns=None):
        self._source = source
        self._columns = None if columns is None else tuple(columns)
        self._ds = open_dataset(source)

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i) -> dict:
        i = int(i)
        if i < 0:
            i += len(self._ds)
        cols = self._ds.gather(np.array([i]))
        out = {k: v[0] for k, v in cols.items() if self._columns is None or k in self._columns}
        out["index"] = np.int64(i)
        return _tensors(out)

    def get_batch(self, indices) -> dict:
        idx = np.asarray(indices, dtype=np.int64)
        cols = self._ds.gather(idx)
        out = {k: v for k, v in cols.items() if self._columns is None or k in self._columns}
        out["index"] = idx
        return _tensors(out)

    def __getstate__(self):
        return {"source": self._source, "columns": self._columns}

    def __setstate__(self, state):
        self.__init__(state["source"], state["columns"])


class ShardStream(_TorchIterable):
    """Iterable dataset streaming the parts (shards/batches) of ``open_dataset(source)``.

    shuffle: shuffle the part order each epoch (seeded by ``seed`` and :meth:`set_epoch`) and
    the rows inside each part. shuffle_buffer: also mix rows across parts through a buffer of
    this many transitions. batch_size: yield dicts of stacked tensors of this many transitions
    (the last one may be smaller) instead of single transitions. rank / world_size: this
    process's share in distributed training (default: from ``torch.distributed`` when
    initialized, else 0 / 1). Parts are dealt round-robin to (rank, worker) pairs.
    """

    def __init__(self, source, *, shuffle: bool = False, shuffle_buffer: int = 0, seed: int = 0,
                 batch_size: int | None = None, rank: int | None = None,
                 world_size: int | None = None, columns=None):
        self._source = source
        self.shuffle = bool(shuffle)
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.epoch = 0
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self._columns = None if columns is None else tuple(columns)
        if self.shuffle_buffer < 0 or (batch_size is not None and batch_size < 1):
            raise ValueError("shuffle_buffer must be >= 0 and batch_size >= 1")
        ds = open_dataset(source)
        self._parts = [(b.path, int(ds.row_starts[k])) for k, b in enumerate(ds.parts)]
        self._len = len(ds)

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling of the next iteration (call once per epoch, like
        ``DistributedSampler.set_epoch``)."""
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
        from .reader import load_batch
        me, total = self._share()
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self._parts)) if self.shuffle else np.arange(len(self._parts))
        mine = [self._parts[k] for k in order[me::total]]
        rows = self._rows(mine, rng, load_batch)
        if self.shuffle_buffer:
            rows = self._buffered(rows, rng)
        if self.batch_size is None:
            for r in rows:
                yield _tensors(r)
        else:
            pending = []
            for r in rows:
                pending.append(r)
                if len(pending) == self.batch_size:
                    yield self._stack(pending)
                    pending = []
            if pending:
                yield self._stack(pending)

    def _rows(self, parts, rng, load_batch):
        for path, first in parts:
            b = load_batch(path)
            cols = {k: v for k, v in b.columns.items()
                    if self._columns is None or k in self._columns}
            idx = rng.permutation(b.count) if self.shuffle else np.arange(b.count)
            for start in range(0, b.count, 4096):  # read in blocks, hand out rows
                sel = np.sort(idx[start:start + 4096]) if not self.shuffle else idx[start:start + 4096]
                block = {k: np.asarray(v[sel]) for k, v in cols.items()}
                block["index"] = sel.astype(np.int64) + first
                for j in range(len(sel)):
                    yield {k: v[j] for k, v in block.items()}

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

    @staticmethod
    def _stack(rows):
        return {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in rows[0]}
