"""Parquet: one row per transition, readable by pyarrow, pandas, DuckDB, Hugging Face datasets."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np

from .._progress import progress_bar
from ._common import final_obs_of, meta_json, open_source, truncated_of

_ROW_GROUP_BYTES = 32 << 20  # about this much raw data per row group (and in memory at once)


def _import_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("to_parquet needs pyarrow (pip install pyarrow; or "
                          "pip install \"fastrl-batch[parquet]\")") from None
    return pa, pq


def parquet_schema(obs_dim: int, n_actions: int, *, values=False, logprobs=False,
                   final_obs=False, mask_dtype="bool"):
    """The Arrow schema :func:`to_parquet` writes (without its metadata)."""
    pa, _ = _import_pyarrow()
    fields = [
        pa.field("episode", pa.int64(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("obs", pa.list_(pa.float32(), obs_dim), nullable=False),
        pa.field("action", pa.int32(), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("done", pa.bool_(), nullable=False),
        pa.field("terminal", pa.bool_(), nullable=False),
        pa.field("timeout", pa.bool_(), nullable=False),
        pa.field("mask", pa.list_(pa.bool_() if mask_dtype == "bool" else pa.uint8(),
                                  n_actions), nullable=False),
    ]
    if values:
        fields.append(pa.field("value", pa.float32(), nullable=False))
    if logprobs:
        fields.append(pa.field("logprob", pa.float32(), nullable=False))
    if final_obs:
        fields.append(pa.field("final_obs", pa.list_(pa.float32(), obs_dim), nullable=True))
    return pa.schema(fields)


def to_parquet(path, out, *, row_group_rows: int | None = None, compression: str | None = "zstd",
               mask_dtype: str = "bool", progress: bool | None = None) -> Path:
    """Write ``fastrl.open_dataset(path)`` (a batch, a sharded batch, a root of batches or a
    list of them) as one Parquet file ``out``, one row per transition, and return ``out``.

    Columns (in this order):

    ========== ================================ ==================================================
    episode    int64                            episode number across the whole source, from 0
    step       int32                            step within the episode, from 0
    obs        fixed_size_list<float32>[obsDim] the observation
    action     int32                            the chosen action id
    reward     float32
    done       bool                             last step of its episode (``dones``)
    terminal   bool                             ``done`` and not ``timeout`` (the game ended it)
    timeout    bool                             a time limit ended the episode here (``truncated``)
    mask       fixed_size_list<bool>[numActions] legal actions (padding columns dropped);
                                                ``uint8`` 0/1 with ``mask_dtype="uint8"``
    value      float32                          only when the batch has ``values``
    logprob    float32                          only when the batch has ``logprobs``
    final_obs  fixed_size_list<float32>[obsDim] only when the batch has final observations:
                                                the observation after the episode's last step,
                                                on the episode's last row; null on every other row
    ========== ================================ ==================================================

    There is no ``next_obs`` column (it would double the file): the next observation of row
    ``i`` is row ``i+1``'s ``obs`` when ``done`` is false, else ``final_obs`` (when present).
    The file's schema metadata key ``fastrl`` holds JSON with ``obsDim``, ``numActions``,
    ``maskDim``, ``count``, ``episodes``, the sources and, when recorded, ``obsSpec`` /
    ``obsSlices`` (names of obs columns ranges).

    Rows are written in row groups of ``row_group_rows`` transitions (default: about 32 MiB
    of raw data each), read from the memory-mapped columns one group at a time, so memory
    stays bounded whatever the batch size. ``compression`` is Parquet's (``"zstd"`` default,
    ``"snappy"``, ``None``...). The file is written beside ``out`` under a temporary name,
    flushed to disk and renamed: ``out`` appears complete or not at all (an existing ``out``
    is replaced). ``progress``: a bar of the transitions written on stderr (default: when
    stderr is a terminal).
    """
    pa, pq = _import_pyarrow()
    if mask_dtype not in ("bool", "uint8"):
        raise ValueError(f"mask_dtype must be 'bool' or 'uint8', got {mask_dtype!r}")
    if row_group_rows is not None and (not isinstance(row_group_rows, (int, np.integer))
                                       or isinstance(row_group_rows, bool)
                                       or row_group_rows < 1):
        raise ValueError(f"row_group_rows must be a positive integer, got {row_group_rows!r}")
    ds = open_source(path)
    parts = ds.parts
    obs_dim = ds.obs_dim
    n_actions = max(b.n_actions for b in parts)
    has_values = all(b.values is not None for b in parts)
    has_logprobs = all(b.logprobs is not None for b in parts)
    has_final = any(final_obs_of(b) is not None for b in parts)
    schema = parquet_schema(obs_dim, n_actions, values=has_values, logprobs=has_logprobs,
                            final_obs=has_final, mask_dtype=mask_dtype)
    info = {"format": "fastrl-parquet", "formatVersion": 1, "obsDim": obs_dim,
            "numActions": n_actions, "maskDim": ds.mask_dim, "count": len(ds),
            "episodes": ds.num_episodes, "sources": [str(b.path) for b in parts],
            "finalObs": "last row of each episode" if has_final else None}
    first = (meta_json(path) if isinstance(path, (str, os.PathLike)) else None) \
        or parts[0].meta
    for key in ("obsSpec", "obsSlices"):
        v = first.get(key, parts[0].meta.get(key))
        if v is not None:
            info[key] = v
    schema = schema.with_metadata({"fastrl": json.dumps(info)})
    row_bytes = obs_dim * 4 * (2 if has_final else 1) + n_actions + 32
    rg = int(row_group_rows or max(1024, _ROW_GROUP_BYTES // row_bytes))

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with pq.ParquetWriter(tmp, schema, compression=compression) as writer, \
                progress_bar(len(ds), "to-parquet", unit="transition", enabled=progress) as bar:
            for k, b in enumerate(parts):
                first_episode = int(ds.episode_starts[k])
                starts = np.asarray(b.episode_starts)
                trunc = truncated_of(b)
                fo = final_obs_of(b)
                for lo in range(0, b.count, rg):
                    hi = min(b.count, lo + rg)
                    writer.write_table(_table(pa, schema, b, starts, trunc, fo, lo, hi,
                                              first_episode, n_actions, mask_dtype,
                                              has_values, has_logprobs, has_final),
                                       row_group_size=hi - lo)
                    bar.update(hi - lo)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
        try:
            dfd = os.open(out.parent if str(out.parent) else ".", os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _table(pa, schema, b, starts, trunc, fo, lo, hi, first_episode, n_actions, mask_dtype,
           has_values, has_logprobs, has_final):
    n = hi - lo
    obs_dim = b.obs_dim
    ep = np.searchsorted(starts, np.arange(lo, hi), side="right").astype(np.int64) - 1
    step = (np.arange(lo, hi, dtype=np.int64) - starts[ep]).astype(np.int32)
    done = np.asarray(b.dones[lo:hi]) != 0
    tout = trunc[lo:hi]

    def fixed(values2d, width, typ, mask=None):
        flat = np.ascontiguousarray(values2d).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=typ), width, mask=mask)

    masks = np.asarray(b.masks[lo:hi, :n_actions])
    if masks.shape[1] < n_actions:  # a part with fewer actions than the widest
        masks = np.pad(masks, ((0, 0), (0, n_actions - masks.shape[1])))
    cols = [
        pa.array(ep + first_episode, pa.int64()),
        pa.array(step, pa.int32()),
        fixed(b.obs[lo:hi], obs_dim, pa.float32()),
        pa.array(np.asarray(b.actions[lo:hi]), pa.int32()),
        pa.array(np.asarray(b.rewards[lo:hi]), pa.float32()),
        pa.array(done, pa.bool_()),
        pa.array(done & ~tout, pa.bool_()),
        pa.array(tout, pa.bool_()),
        fixed(masks.astype(bool) if mask_dtype == "bool" else masks, n_actions,
              pa.bool_() if mask_dtype == "bool" else pa.uint8()),
    ]
    if has_values:
        cols.append(pa.array(np.asarray(b.values[lo:hi]), pa.float32()))
    if has_logprobs:
        cols.append(pa.array(np.asarray(b.logprobs[lo:hi]), pa.float32()))
    if has_final:
        vals = np.zeros((n, obs_dim), np.float32)
        valid = done.copy() if fo is not None else np.zeros(n, bool)
        if valid.any():
            vals[valid] = np.asarray(fo)[ep[valid]]
        cols.append(fixed(vals, obs_dim, pa.float32(), mask=pa.array(~valid)))
    return pa.Table.from_arrays(cols, schema=schema)
