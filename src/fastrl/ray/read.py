"""Ray Data integration (``pip install "fastrl-batch[ray]"``).

- :func:`read_dataset` — fastrl batches (local roots or paths, or fsspec URLs) as a
  ``ray.data.Dataset``: one read task per part (each shard of a sharded batch, each plain batch),
  columns as NumPy (``obs`` and ``masks`` as tensor columns), so ``iter_torch_batches()``,
  ``split()`` and ``streaming_split()`` work. ``filter`` prunes parts from their manifest
  statistics without reading them; ``columns`` reads only some column files.
- :func:`export_ray` — ``fastrl export`` spread over Ray tasks: each task exports a contiguous
  run of the episode files into complete shards, and the driver assembles them into one sharded
  batch, committed atomically.

Local paths must be visible at the same path to every Ray worker (one machine, or a shared
filesystem). Remote URLs (``s3://...``, see :mod:`fastrl.storage`) are read by the workers
themselves, one part each.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    import ray
    import ray.data
    from ray.data.block import BlockAccessor, BlockMetadata
    from ray.data.datasource import Datasource, ReadTask
except ImportError as _exc:  # pragma: no cover - depends on the install
    raise ImportError('fastrl.ray needs Ray Data: pip install "fastrl-batch[ray]" '
                      f'(ray[data]); import failed: {_exc}') from _exc

from .. import _format as F
from .. import storage as _storage
from .._batch.meta import (MAX_META_BYTES, manifest_shards, meta_columns, meta_problems,
                           parse_meta, read_meta, shard_record_problem)
from ..errors import BatchFormatError
from ..reader import load_batch

__all__ = ["read_dataset", "plan_parts", "FastrlDatasource", "PartInfo"]

_BLOCK_BYTES = 64 << 20       # a read task yields blocks of about this size


# -- planning the read --------------------------------------------------------------------------

@dataclass
class PartInfo:
    """One part (a shard, or a plain batch) as seen by the planner and by ``filter``."""
    batch: str                 # the batch's path or URL
    part: str                  # the part's path or URL (== batch for a plain batch)
    shard: int | None          # index in the manifest, None for a plain batch
    first_row: int             # in the batch
    first_episode: int
    count: int
    episodes: int
    row_start: int = 0         # global row of the part's first transition (before filtering)
    stats: dict = field(default_factory=dict)
    columns: tuple = ()

    def filter_view(self) -> dict:
        """What ``filter`` sees: the part's statistics (``transitions``, ``episodes``,
        ``truncatedEpisodes``, ``episodeLength`` and ``episodeReturn`` as {min, mean, max},
        ``actionHistogram``; keys a producer did not record are None) plus ``batch``, ``part``,
        ``shard``, ``count``, ``firstRow``, ``firstEpisode``, ``rowStart``."""
        view = {"transitions": self.count, "episodes": self.episodes, "truncatedEpisodes": None,
                "episodeLength": None, "episodeReturn": None, "actionHistogram": None}
        view.update(self.stats or {})
        view.update({"batch": self.batch, "part": self.part, "shard": self.shard,
                     "count": self.count, "firstRow": self.first_row,
                     "firstEpisode": self.first_episode, "rowStart": self.row_start})
        return view


def _read_meta_any(url: str, fs_options) -> dict:
    """meta.json of a local or remote folder (BatchFormatError when absent or not valid)."""
    if not _storage.is_remote(url):
        return read_meta(_storage.local_path(url))
    fs, p = _storage.filesystem(url, fs_options)
    try:
        with fs.open(f"{p}/{F.META_FILE}", "rb") as f:
            raw = f.read(MAX_META_BYTES + 1)  # capped by bytes read, whatever the listing says
    except FileNotFoundError:
        raise BatchFormatError(f"{url}/meta.json: missing (not a batch, or not committed)") \
            from None
    if len(raw) > MAX_META_BYTES:
        raise BatchFormatError(f"{url}/meta.json: larger than the {MAX_META_BYTES}-byte limit")
    return parse_meta(raw, f"{url}/meta.json")


def _batch_parts(batch: str, fs_options) -> tuple[dict, list[PartInfo]]:
    """The manifest (or plain meta) of ``batch`` and its parts, from meta.json files only."""
    meta = _read_meta_any(batch, fs_options)
    probs = meta_problems(meta)
    if probs:
        raise BatchFormatError(f"{batch}: " + "; ".join(probs))
    if meta.get("sharded") is not True:
        stats = {k: meta.get(k) for k in ("episodeLength", "episodeReturn")}
        return meta, [PartInfo(batch, batch, None, 0, 0, meta["count"], meta["episodes"],
                               stats={k: v for k, v in stats.items() if v is not None},
                               columns=meta_columns(meta))]
    parts = []
    for k, s in enumerate(manifest_shards(meta, f"{batch}/meta.json")):
        parts.append(PartInfo(batch, _storage.join_url(batch, s["path"]), k, s["firstRow"],
                              s["firstEpisode"], s["count"], s["episodes"],
                              stats=s.get("stats") if isinstance(s.get("stats"), dict) else {}))
    # Every shard of one batch comes from one writer: the first shard's column list holds for all.
    cols = meta_columns(_read_meta_any(parts[0].part, fs_options))
    for p in parts:
        p.columns = cols
    return meta, parts


def _expand_source(src, fs_options) -> list[str]:
    """Batch paths/URLs of a source: a batch (has meta.json) or a root of batches."""
    text = str(src)
    if not _storage.is_remote(text):
        path = _storage.local_path(text)
        if (path / F.META_FILE).exists():
            return [str(path)]
        if not path.is_dir():
            raise BatchFormatError(f"{path}: not a folder")
        return _storage.list_batches(path)
    fs, p = _storage.filesystem(text, fs_options)
    if fs.exists(f"{p}/{F.META_FILE}"):
        return [text.rstrip("/")]
    return _storage.list_batches(text, fs_options)


def plan_parts(root_or_urls, *, fs_options=None) -> list[PartInfo]:
    """Every part of the sources, in dataset order (what :func:`fastrl.open_dataset` would
    open, in the same order), with global row starts. Reads meta.json files only."""
    sources = [root_or_urls] if isinstance(root_or_urls, (str, os.PathLike)) \
        else list(root_or_urls)
    parts, dims, row = [], None, 0
    for src in sources:
        for batch in _expand_source(src, fs_options):
            meta, group = _batch_parts(batch, fs_options)
            d = (meta["obsDim"], meta["maskDim"])
            if dims is None:
                dims = d
            elif d != dims:
                raise BatchFormatError(f"{batch}: obsDim/maskDim {d[0]}/{d[1]} differ from the "
                                       f"first batch's ({dims[0]}/{dims[1]})")
            for p in group:
                p.row_start = row
                row += p.count
            parts += group
    return parts


# -- reading one part -----------------------------------------------------------------------------

def _open_part(info: PartInfo, fs_options, tmpdirs: list):
    """load_batch of the part (downloaded to a private temp dir when remote), checked against
    what the manifest says about it."""
    path = info.part
    remote = _storage.is_remote(path)
    if remote:
        fs, rpath = _storage.filesystem(path, fs_options)
        tmp = tempfile.mkdtemp(prefix="fastrl-ray-part-")
        tmpdirs.append(tmp)
        rels = [r for r in _storage.files_under(fs, rpath)
                if "/" not in r and not r.startswith(".")]
        if F.META_FILE not in rels:
            raise BatchFormatError(f"{path}: no meta.json")
        fs.get([f"{rpath}/{r}" for r in rels], [os.path.join(tmp, r) for r in rels])
        local = Path(tmp)
    else:
        local = _storage.local_path(path)
    b = load_batch(local, verify=remote)  # a download is checked against its CRC-32s
    if (b.count, b.num_episodes) != (info.count, info.episodes):
        raise BatchFormatError(f"{path}: holds {b.count}/{b.num_episodes} transitions/episodes, "
                               f"its batch's manifest says {info.count}/{info.episodes}")
    if info.shard is not None:
        problem = shard_record_problem(b.meta, info.shard, info.first_row, info.first_episode)
        if problem:
            raise BatchFormatError(f"{path}: {problem}")
    return b


def _read_part_blocks(info: PartInfo, columns: tuple, fs_options, block_rows: int):
    tmpdirs: list = []
    try:
        b = _open_part(info, fs_options, tmpdirs)
        cols = b.columns
        for lo in range(0, max(b.count, 1), block_rows):
            hi = min(b.count, lo + block_rows)
            batch = {}
            for name in columns:
                if name == "index":
                    batch[name] = np.arange(info.row_start + lo, info.row_start + hi,
                                            dtype=np.int64)
                else:
                    batch[name] = np.array(cols[name][lo:hi])  # copy out of the memmap
            yield BlockAccessor.batch_to_block(batch)
    finally:
        for t in tmpdirs:
            shutil.rmtree(t, ignore_errors=True)


def _empty_block(columns: tuple, obs_dim: int, mask_dim: int):
    dtypes = {n: F.ALL_COLUMNS[n][1] for n in F.ALL_COLUMNS}
    dtypes["index"] = np.dtype(np.int64)
    widths = {"obs": obs_dim, "masks": mask_dim}
    batch = {n: np.zeros((0, widths[n]) if n in widths else (0,), dtypes[n]) for n in columns}
    return BlockAccessor.batch_to_block(batch)


def _block_metadata(rows, size, input_files):
    try:
        return BlockMetadata(num_rows=rows, size_bytes=size, input_files=input_files,
                             exec_stats=None)
    except TypeError:  # pragma: no cover - Ray versions whose BlockMetadata still has schema
        return BlockMetadata(num_rows=rows, size_bytes=size, schema=None,
                             input_files=input_files, exec_stats=None)


def _read_task(fn, meta, per_task_row_limit=None):
    if per_task_row_limit is not None:
        try:
            return ReadTask(fn, meta, per_task_row_limit=per_task_row_limit)
        except TypeError:  # pragma: no cover - older Ray
            pass
    return ReadTask(fn, meta)


class FastrlDatasource(Datasource):
    """A Ray Data ``Datasource`` over fastrl parts: exactly one read task per part (shard or
    plain batch), whatever ``parallelism`` Ray asks for."""

    def __init__(self, parts: list[PartInfo], columns: tuple, obs_dim: int, mask_dim: int,
                 fs_options=None, block_bytes: int = _BLOCK_BYTES):
        super().__init__()
        self.parts = parts
        self.columns = tuple(columns)
        self.obs_dim, self.mask_dim = obs_dim, mask_dim
        self.fs_options = fs_options
        widths = {"obs": obs_dim * 4, "masks": mask_dim, "index": 8}
        self.row_bytes = sum(widths.get(c, F.ALL_COLUMNS[c][1].itemsize if c in F.ALL_COLUMNS
                                        else 8) for c in self.columns)
        self.block_rows = max(1, int(block_bytes) // max(1, self.row_bytes))

    def get_name(self) -> str:
        return "fastrl"

    def estimate_inmemory_data_size(self):
        return sum(p.count for p in self.parts) * self.row_bytes

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, **kwargs):
        tasks = []
        cols, opts, rows = self.columns, self.fs_options, self.block_rows
        for info in self.parts:
            def read(info=info):
                return _read_part_blocks(info, cols, opts, rows)
            meta = _block_metadata(info.count, info.count * self.row_bytes, [info.part])
            tasks.append(_read_task(read, meta, per_task_row_limit))
        if not tasks:  # everything filtered out: one task yielding an empty, typed block
            od, md = self.obs_dim, self.mask_dim
            tasks.append(_read_task(lambda: [_empty_block(cols, od, md)],
                                    _block_metadata(0, 0, []), per_task_row_limit))
        return tasks


def read_dataset(root_or_urls, *, filter=None, columns=None, fs_options=None,
                 block_bytes: int = _BLOCK_BYTES, **read_args):
    """fastrl batches as a ``ray.data.Dataset``, one read task per shard / plain batch.

    root_or_urls: a root of batches, a batch (plain or sharded), a remote URL of either
    (``s3://bucket/root``, see :mod:`fastrl.storage`), or a list of these; parts keep the order
    of :func:`fastrl.open_dataset`. filter: ``callable(stats) -> bool`` called on each part's
    statistics before anything is read (see :meth:`PartInfo.filter_view`), e.g.
    ``lambda s: s["episodeReturn"]["max"] > 0``; parts for which it is false are not read.
    columns: names to read (default: every per-transition column present in all parts; add
    ``"index"`` for the global transition number in the unfiltered order). Rows are
    transitions: ``obs`` float32 (obsDim,) and ``masks`` uint8 (maskDim,) tensor columns,
    ``actions`` int32, ``rewards`` float32, ``dones`` uint8, ... Within a part, rows keep their
    order; Ray may reorder parts unless ``DataContext.execution_options.preserve_order``.
    read_args go to ``ray.data.read_datasource`` (e.g. ``concurrency``, ``ray_remote_args``).
    """
    parts = plan_parts(root_or_urls, fs_options=fs_options)
    if not parts:
        raise BatchFormatError(f"no batch found in {root_or_urls!r}")
    meta0 = _read_meta_any(parts[0].batch, fs_options)
    obs_dim, mask_dim = meta0["obsDim"], meta0["maskDim"]
    available = set.intersection(*(set(p.columns) for p in parts))
    if columns is None:
        columns = tuple(c for c in F.COLUMN_ORDER if c in available)
    else:
        columns = tuple(columns)
        bad = [c for c in columns if c != "index" and c not in available]
        if bad:
            raise ValueError(f"columns {bad} are not present in every part (available: "
                             f"{sorted(available)} and 'index')")
    if filter is not None:
        parts = [p for p in parts if filter(p.filter_view())]
    source = FastrlDatasource(parts, columns, obs_dim, mask_dim, fs_options, block_bytes)
    return ray.data.read_datasource(source, **read_args)
