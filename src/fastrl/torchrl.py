"""TorchRL view of fastrl batches (``import fastrl.torchrl``; needs ``torch`` and ``tensordict``,
and ``torchrl`` for the replay-buffer recipe).

:func:`as_tensordict` gives a ``TensorDict`` with ``batch_size [count]`` and TorchRL's keys::

    observation           (count, obsDim) float32
    action                (count,) int32            the action id (``.long()`` for indexing)
    action_mask           (count, numActions) bool  padding columns dropped
    next: reward          (count, 1) float32
          done            (count, 1) bool           last step of an episode
          terminated      (count, 1) bool           done and not truncated (the game ended it)
          truncated       (count, 1) bool           a time limit ended the episode
          observation     (count, obsDim) float32   the observation after the step
    state_value           (count,) float32          when the batch has ``values``
    action_log_prob       (count,) float32          when the batch has ``logprobs``

**Memory.** For a plain batch (one part) every column above except ``next.observation`` (and
``next.terminated`` when the batch has a ``truncated`` column: ``count`` bytes) is the batch's
file itself, mapped copy-on-write (``mmap`` ``MAP_PRIVATE`` through ``np.memmap(mode="c")``):
nothing is read until used and nothing can ever be written to the files (an in-place write to a
tensor changes only this process's private copy of the touched pages). ``truncated`` without a
column is a broadcast ``False`` (no memory). Compressed columns are decoded in memory.
``next.observation`` is built once by a gather: ``observation[i + 1]`` inside an episode, the
batch's ``final_obs`` at an episode's last step; a batch without final observations uses the
last step's own observation there (``next.observation[i] == observation[i]``: use it only where
``next.terminated`` is set, or as an approximation). It costs ``count * obsDim * 4`` bytes: in
RAM (``materialize="memory"``, default) or in an unlinked temporary file mapped from
``tmpdir`` (``materialize="disk"``: bounded RAM, batches larger than memory); ``next_obs=False``
leaves it out. A source of several parts (a sharded batch, a root of batches) is concatenated
into one tensor per column, in RAM or on disk likewise (``part=k`` maps part ``k`` alone,
without copies).

The ``TensorDict`` is locked (no key can be added or replaced; ``td.unlock_()`` if you must).

Replay buffer by episode (a ``SliceSampler`` cuts slices that never cross an episode end)::

    from torchrl.data import ReplayBuffer, SliceSampler, TensorStorage
    td = fastrl.torchrl.as_tensordict(path)
    rb = ReplayBuffer(storage=TensorStorage(td), batch_size=256,
                      sampler=SliceSampler(slice_len=8, end_key=("next", "done"),
                                           cache_values=True))
    batch = rb.sample()            # 32 slices of 8 consecutive steps of one episode each

:func:`replay_buffer` builds exactly that.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ._batch.safeio import map_array
from .dataset import Dataset, open_dataset
from .reader import Batch

__all__ = ["as_tensordict", "replay_buffer"]


def _imports():
    try:
        import torch
        from tensordict import TensorDict
    except ImportError as e:
        raise ImportError("fastrl.torchrl needs torch and tensordict (pip install torchrl; or "
                          f"pip install \"fastrl-batch[torchrl]\"): {e}") from None
    return torch, TensorDict


# The per-transition column files of docs/FORMAT.md (meta.json ``columns`` may name others).
_FILES = {"obs": "obs.float32.bin", "actions": "actions.int32.bin",
          "rewards": "rewards.float32.bin", "masks": "masks.uint8.bin",
          "dones": "dones.uint8.bin", "values": "values.float32.bin",
          "logprobs": "logprobs.float32.bin", "truncated": "truncated.uint8.bin"}


def _cow_columns(b) -> dict:
    """name -> array of the part's per-transition columns, mapped copy-on-write from the files
    (compressed columns: the reader's in-memory arrays)."""
    cols = dict(b.columns)
    codecs = b.meta.get("codecs") or {}
    listed = b.meta.get("columns") if isinstance(b.meta.get("columns"), dict) else {}
    for name, arr in cols.items():
        if name in codecs or arr.size == 0:
            continue
        entry = listed.get(name)
        fname = entry.get("file") if isinstance(entry, dict) else _FILES.get(name)
        fpath = Path(b.path) / fname if isinstance(fname, str) else None
        if fpath is None:
            continue  # keep the reader's read-only map
        cols[name] = map_array(fpath, arr.dtype, arr.shape, copy_on_write=True)
    return cols


class _Alloc:
    """Arrays for what must be materialized: in RAM, or in unlinked temporary files."""

    def __init__(self, where: str, tmpdir):
        if where not in ("memory", "disk"):
            raise ValueError(f"materialize must be 'memory' or 'disk', got {where!r}")
        self.where = where
        self.tmpdir = tmpdir

    def empty(self, shape, dtype):
        if self.where == "memory" or int(np.prod(shape)) == 0:
            return np.empty(shape, dtype)
        fd, name = tempfile.mkstemp(prefix=".fastrl-torchrl-", suffix=".bin", dir=self.tmpdir)
        os.close(fd)
        try:
            arr = np.memmap(name, dtype=dtype, mode="w+", shape=tuple(shape))
        finally:
            try:
                os.unlink(name)  # the mapping keeps the space until it is released
            except OSError:  # pragma: no cover - e.g. Windows: removed at exit instead
                import atexit
                atexit.register(lambda p=name: os.path.exists(p) and os.remove(p))
        return arr


def _tensor(torch, arr):
    """A tensor sharing ``arr``'s memory. Copy-on-write maps and arrays of ours are writeable;
    a read-only array (a decoded column held by the reader) is wrapped without copying."""
    if not arr.flags.writeable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "non-writable tensors" warning
            return torch.from_numpy(arr)
    return torch.from_numpy(arr)


def _next_obs(obs, starts, fo, out, chunk=1 << 16):
    """Fill ``out`` with the next observation of every row: obs[i+1] inside an episode,
    final_obs (or obs[i]) at the episode's end, ``chunk`` rows at a time (bounded memory)."""
    n = obs.shape[0]
    for lo in range(0, n - 1, chunk):
        hi = min(n - 1, lo + chunk)
        out[lo:hi] = obs[lo + 1:hi + 1]
    ends = np.asarray(starts[1:], dtype=np.int64) - 1
    for lo in range(0, len(ends), chunk):
        e = ends[lo:lo + chunk]
        out[e] = fo[lo:lo + chunk] if fo is not None else obs[e]
    return out


def _final_obs(b):
    return getattr(b, "final_obs", None)


def _parts_of(source, part):
    if isinstance(source, Batch):
        parts = [source]
    else:
        ds = source if isinstance(source, Dataset) else open_dataset(source)
        parts = list(ds.parts)
    if not parts:
        raise ValueError(f"{source}: no transitions")
    if part is not None:
        try:
            parts = [parts[part]]
        except (IndexError, TypeError):
            raise IndexError(f"part {part!r} out of range: the source has {len(parts)}") from None
    return parts


def as_tensordict(source, *, next_obs: bool = True, materialize: str = "memory",
                  tmpdir=None, part: int | None = None):
    """A locked ``TensorDict`` (batch_size ``[count]``) with TorchRL's keys over ``source``: a
    batch folder, a sharded batch, a root of batches, a list of them, a
    :class:`fastrl.Dataset` or a :class:`fastrl.Batch`. See the module docstring for the keys,
    what is mapped from the files and what costs memory (``next_obs``, ``materialize``,
    ``tmpdir``, ``part``)."""
    torch, TensorDict = _imports()
    alloc = _Alloc(materialize, tmpdir)
    parts = _parts_of(source, part)
    n_actions = max(b.n_actions for b in parts)
    names = set.intersection(*(set(b.columns) for b in parts))
    per = [_cow_columns(b) for b in parts]
    count = sum(b.count for b in parts)

    def column(name):
        # a part without the column (only ``truncated`` can be missing here): zeros
        arrays = [p[name] if name in p else np.zeros(b.count, np.uint8)
                  for b, p in zip(parts, per)]
        if len(arrays) == 1:
            return arrays[0]
        out = alloc.empty((count,) + arrays[0].shape[1:], arrays[0].dtype)
        o = 0
        for a in arrays:
            out[o:o + len(a)] = a
            o += len(a)
        return out

    obs = column("obs")
    masks = column("masks")
    dones = column("dones")
    if masks.shape[1] < n_actions:  # parts of different widths cannot happen (same maskDim)
        raise ValueError("masks narrower than the action count")
    t_obs = _tensor(torch, obs)
    t_done = _tensor(torch, dones).view(torch.bool).unsqueeze(-1)
    has_trunc = any("truncated" in p for p in per)
    if has_trunc:
        trunc = column("truncated")
        t_trunc = _tensor(torch, trunc).view(torch.bool).unsqueeze(-1)
        term = alloc.empty((count,), np.bool_)
        np.logical_and(dones != 0, trunc == 0, out=term)
        t_term = torch.from_numpy(term).unsqueeze(-1)
    else:
        t_trunc = torch.zeros((1, 1), dtype=torch.bool).expand(count, 1)
        t_term = t_done
    nxt = {
        "reward": _tensor(torch, column("rewards")).unsqueeze(-1),
        "done": t_done,
        "terminated": t_term,
        "truncated": t_trunc,
    }
    if next_obs:
        nobs = alloc.empty(obs.shape, np.float32)
        o = 0
        for b, p in zip(parts, per):
            _next_obs(p["obs"], b.episode_starts, _final_obs(b), nobs[o:o + b.count])
            o += b.count
        nxt["observation"] = torch.from_numpy(nobs)
    data = {
        "observation": t_obs,
        "action": _tensor(torch, column("actions")),
        "action_mask": _tensor(torch, masks).view(torch.bool)[:, :n_actions],
        "next": TensorDict(nxt, batch_size=[count]),
    }
    if "values" in names:
        data["state_value"] = _tensor(torch, column("values"))
    if "logprobs" in names:
        data["action_log_prob"] = _tensor(torch, column("logprobs"))
    td = TensorDict(data, batch_size=[count])
    return td.lock_()


def replay_buffer(source, *, batch_size: int = 256, slice_len: int | None = None,
                  num_slices: int | None = None, strict_length: bool = False, **kwargs):
    """A ``torchrl.data.ReplayBuffer`` over :func:`as_tensordict` (``kwargs`` go there).

    With ``slice_len`` or ``num_slices`` it samples by episode through a ``SliceSampler``
    (``end_key=("next", "done")``, boundaries cached: the data never changes): every sample is
    ``batch_size`` rows made of slices of consecutive steps, each inside one episode; with
    ``strict_length=False`` (default) episodes shorter than a slice give shorter slices.
    Without them, transitions are sampled uniformly. The storage is the TensorDict itself:
    nothing is copied."""
    try:
        from torchrl.data import ReplayBuffer, SliceSampler, TensorStorage
    except ImportError as e:
        raise ImportError(f"replay_buffer needs torchrl (pip install torchrl): {e}") from None
    td = as_tensordict(source, **kwargs)
    sampler = None
    if slice_len is not None or num_slices is not None:
        sampler = SliceSampler(slice_len=slice_len, num_slices=num_slices,
                               end_key=("next", "done"), cache_values=True,
                               strict_length=strict_length)
    rb_kwargs = {"sampler": sampler} if sampler is not None else {}
    return ReplayBuffer(storage=TensorStorage(td), batch_size=batch_size, **rb_kwargs)
