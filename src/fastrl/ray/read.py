"""Ray Data integration (``pip install "fastrl[ray]"``).

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
import sys
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
    raise ImportError('fastrl.ray needs Ray Data: pip install "fastrl[ray]" '
                      f'(ray[data]); import failed: {_exc}') from _exc

from .. import _format as F
from .. import storage as _storage
from .._batch.meta import (manifest_shards, meta_columns, meta_problems, parse_meta, read_meta,
                           shard_record_problem)
from ..errors import BatchFormatError, EpisodeError, FastrlError
from ..reader import load_batch

__all__ = ["read_dataset", "export_ray", "plan_parts", "FastrlDatasource", "PartInfo",
           "cmd_export_ray"]

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
        raw = fs.cat_file(f"{p}/{F.META_FILE}")
    except FileNotFoundError:
        raise BatchFormatError(f"{url}/meta.json: missing (not a batch, or not committed)") \
            from None
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


# -- export --------------------------------------------------------------------------------------

def _split_tasks(tasks, n: int) -> list[list]:
    """Cut the export tasks (path, start, end) into at most ``n`` contiguous, non-empty groups
    of about equal bytes (order kept, so the concatenation is the local export's order)."""
    n = max(1, min(n, len(tasks)))
    sizes = [max(1, end - start) for _, start, end in tasks]
    total = sum(sizes)
    groups, cur, acc = [], [], 0
    for i, (t, s) in enumerate(zip(tasks, sizes, strict=True)):
        later = n - len(groups) - 1  # groups still to start after the current one
        # start a new group before this task when its middle lies past the current group's
        # share of the bytes, or when each remaining task must start a group of its own
        if cur and later > 0 and (acc + s / 2 > total * (len(groups) + 1) / n
                                  or len(tasks) - i == later):
            groups.append(cur)
            cur = []
        cur.append(t)
        acc += s
    if cur:
        groups.append(cur)
    return groups


def _export_group(tasks, task_root: str, o: dict) -> dict:
    """Run in a Ray task: export ``tasks`` (export's byte ranges of episode files) into one
    sharded batch under ``task_root`` with the layout the driver discovered. Returns its path
    (None when every episode was skipped), skipped records and the failure, if any."""
    from ..export import _LineCounter, _Options, _run_task
    from ..writer import BatchWriter
    spec = None
    if o["spec_json"] is not None:
        from ..spec import ObsSpec
        spec = ObsSpec.from_json(o["spec_json"])
    layout = o["layout"]
    opts = _Options(layout, o["spec_json"], o["encoder"], o["on_error"])
    writer = BatchWriter(task_root, n_actions=layout.n_actions, obs_dim=layout.obs_dim,
                         spec=spec, mask_pad=o["mask_pad"], checksum=o["checksum"],
                         flush_bytes=o["flush_bytes"], shard_bytes=o["shard_bytes"],
                         compression=o["compression"], compression_level=o["compression_level"])
    lines = _LineCounter()
    skipped = []
    try:
        writer._set_layout(layout)
        for task in tasks:
            _, bad, failed = _run_task(task, opts, writer)
            path, start, _ = task
            base = lines.lines_before(path, start) if path.endswith(".jsonl") else 0
            for ep_no, step, reason in bad:
                rec = {"file": path, "episode": base + ep_no, "step": step, "reason": reason}
                if failed:
                    writer.abort()
                    return {"path": None, "skipped": skipped, "failed": rec}
                skipped.append(rec)
        if writer.episodes == 0:
            writer.abort()
            return {"path": None, "skipped": skipped, "failed": None}
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"path": str(path), "skipped": skipped, "failed": None}


_EXPORT_OPTIONS = ("spec", "encoder", "n_actions", "mask_pad", "on_error", "checksum",
                   "shard_bytes", "compression", "compression_level", "flush_bytes", "progress")


def export_ray(episodes_dir="dataset/episodes", out_root="data/binary", *,
               num_tasks: int | None = None, ray_remote_args: dict | None = None,
               **export_options) -> Path:
    """``fastrl export`` over Ray tasks; returns the committed sharded batch's path.

    The episode files (cut as ``export_episodes`` cuts them: whole ``.json`` files, ``.jsonl``
    files in ranges of 16 MiB) are dealt in file order into ``num_tasks`` contiguous groups of
    about equal bytes (default: the cluster's CPUs). Each Ray task exports its group with the
    layout the driver discovered into complete shards of a private batch; the driver moves the
    shards, renumbered, into one hidden folder of ``out_root``, rewrites each shard's ``shard``
    record, writes the manifest and commits the batch with one atomic rename.

    The transitions equal, row for row, those of ``export_episodes`` on the same folder. Only
    shard boundaries can differ: every group ends its last shard early, so there are at most
    ``num_tasks - 1`` more shards than a local export makes (without ``shard_bytes``: exactly
    one shard per group). export_options: as for :func:`fastrl.export.export_episodes`
    (``spec``, ``encoder``, ``n_actions``, ``mask_pad``, ``on_error``, ``checksum``,
    ``shard_bytes``, ``compression``, ``compression_level``, ``flush_bytes``; ``progress`` is
    accepted and ignored). ``out_root`` and ``episodes_dir`` must be visible to every worker at
    the same path (shared filesystem); an ``encoder`` module must be importable by the workers
    (installed, or shipped with a Ray ``runtime_env``). ray_remote_args: options of each task
    (default ``{"num_cpus": 1}``). Ray is started with ``ray.init()`` when not running yet.
    """
    from .._batch.columnset import write_json
    from .._batch.commit import TempFolder, clean_stale
    from ..export import plan_export
    from ..reader import read_meta
    unknown = set(export_options) - set(_EXPORT_OPTIONS)
    if unknown:
        raise TypeError(f"export_ray() got unexpected options {sorted(unknown)} (workers: use "
                        "num_tasks)")
    o = {k: export_options.get(k) for k in _EXPORT_OPTIONS}
    on_error = o["on_error"] or "fail"
    if num_tasks is not None and (not isinstance(num_tasks, int) or isinstance(num_tasks, bool)
                                  or num_tasks < 1):
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    encoder = o["encoder"]
    spec, _, files, tasks, layout = plan_export(
        episodes_dir, spec=o["spec"], encoder=encoder, n_actions=o["n_actions"],
        mask_pad=o["mask_pad"], on_error=on_error, resolve=True)
    shown = {str(p.resolve()): str(p) for p in files}  # report paths as the local export does
    if not ray.is_initialized():
        ray.init()
    if num_tasks is None:
        num_tasks = max(1, int(ray.cluster_resources().get("CPU", 1)))
    groups = _split_tasks(tasks, num_tasks)
    opts = {"layout": layout, "spec_json": spec.to_json() if spec is not None else None,
            "encoder": encoder, "on_error": on_error, "mask_pad": o["mask_pad"],
            "checksum": True if o["checksum"] is None else bool(o["checksum"]),
            "flush_bytes": o["flush_bytes"] or F.DEFAULT_FLUSH_BYTES,
            # without shard_bytes every group is one shard
            "shard_bytes": o["shard_bytes"] or (1 << 60),
            "compression": o["compression"], "compression_level": o["compression_level"]}

    root = Path(out_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)
    tmp = TempFolder(root, kind="ray")
    try:
        remote = ray.remote(_export_group).options(**({"num_cpus": 1} | (ray_remote_args or {})))
        refs = [remote.remote(g, str(tmp.path / f"task_{i:05d}"), opts)
                for i, g in enumerate(groups)]
        try:
            results = _gather(refs)
        except BaseException:
            for ref in refs:  # an interrupt: stop the tasks still queued or running
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort
                    pass
            raise
        skipped = []
        for res in results:
            for rec in res["skipped"]:
                rec = dict(rec, file=shown.get(rec["file"], rec["file"]))
                skipped.append(rec)
                print(f"fastrl export: skipped {rec['file']}, episode {rec['episode']}"
                      + (f", step {rec['step']}" if rec["step"] is not None else "")
                      + f": {rec['reason']}", file=sys.stderr)
            if res["failed"] is not None:
                f = res["failed"]
                raise EpisodeError(f["reason"], episode=f["episode"], step=f["step"],
                                   source=shown.get(f["file"], f["file"]))
        batches = [Path(r["path"]) for r in results if r["path"] is not None]
        if not batches:
            raise FastrlError(f"every episode in {episodes_dir} was skipped; nothing exported")
        manifest = _assemble(tmp.path, batches, write_json, read_meta)
        manifest["shardBytes"] = o["shard_bytes"]
        manifest["source"] = {"episodesDir": str(episodes_dir), "files": len(files),
                              "encoder": encoder}
        if on_error == "skip":
            manifest["skippedCount"] = len(skipped)
            manifest["skipped"] = skipped[:1000]
        manifest["ray"] = {"tasks": len(groups)}
        for i in range(len(groups)):
            shutil.rmtree(tmp.path / f"task_{i:05d}", ignore_errors=True)
        write_json(tmp.path / F.META_FILE, manifest, fsync=True)
        return tmp.commit(fsync=True)
    except BaseException:
        tmp.discard()
        raise


def _gather(refs) -> list:
    """ray.get every task in order; on a failure, wait for the others to end (they write into
    the temporary folder about to be deleted) and raise the first failure in file order."""
    results, error = [], None
    for ref in refs:
        try:
            results.append(ray.get(ref))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            if error is None:
                error = exc
            results.append(None)
    if error is not None:
        raise error
    return results


def _assemble(folder: Path, batches: list[Path], write_json, read_meta) -> dict:
    """Move the shards of the task batches, in order, into ``folder`` as one chain
    ``shard_00000, ...``; rewrite each shard's ``shard`` record; return the manifest (the
    first task's, with totals, shard list and episode-length summary recomputed)."""
    entries, rows, eps = [], 0, 0
    manifest = None
    lo, hi = None, None
    for batch in batches:
        m = read_meta(batch)
        if m.get("sharded") is not True:
            raise BatchFormatError(f"{batch}: a task wrote a plain batch, expected shards")
        if manifest is None:
            manifest = dict(m)
        for entry in m["shards"]:
            k = len(entries)
            dst = folder / f"shard_{k:05d}"
            os.rename(batch / entry["path"], dst)
            sm = read_meta(dst)
            if (sm.get("count"), sm.get("episodes")) != (entry["count"], entry["episodes"]):
                raise BatchFormatError(f"{dst}: shard meta disagrees with its task manifest")
            sm["shard"] = {"index": k, "firstRow": rows, "firstEpisode": eps}
            write_json(dst / F.META_FILE, sm, fsync=True)
            entries.append(dict(entry, path=dst.name, firstRow=rows, firstEpisode=eps))
            length = (entry.get("stats") or {}).get("episodeLength") or {}
            if length:
                lo = length["min"] if lo is None else min(lo, length["min"])
                hi = length["max"] if hi is None else max(hi, length["max"])
            rows += entry["count"]
            eps += entry["episodes"]
    from .._batch.columnset import iso_utc_now
    manifest.update({"count": rows, "steps": rows, "episodes": eps, "shards": entries,
                     "createdAt": iso_utc_now(),
                     "episodeLength": {"min": lo, "max": hi, "mean": rows / eps}})
    for key in ("source", "skipped", "skippedCount"):
        manifest.pop(key, None)
    return manifest


def cmd_export_ray(args) -> int:
    """``fastrl export --ray``: the export command's arguments, run by :func:`export_ray`
    (``--ray-tasks N``: number of tasks; Ray joins the cluster named by ``RAY_ADDRESS``, else
    starts a local one). Prints the batch path last, like ``fastrl export``."""
    import time

    from ..export import _compression_arg
    from ..reader import read_meta
    if not ray.is_initialized():
        ray.init()  # not counted in the rate below
    t0 = time.perf_counter()
    path = export_ray(args.episodes_dir, args.out, num_tasks=getattr(args, "ray_tasks", None),
                      spec=args.spec, encoder=args.encoder, n_actions=args.num_actions,
                      mask_pad=args.mask_pad, on_error=args.on_error,
                      shard_bytes=args.shard_size, compression=_compression_arg(args),
                      compression_level=args.compress_level)
    meta = read_meta(path)
    seconds = time.perf_counter() - t0
    print(f"exported {meta['count']:,} transitions in {meta['episodes']:,} episodes from "
          f"{meta['source']['files']} files with {meta['ray']['tasks']} Ray tasks into "
          f"{len(meta['shards'])} shards ({meta['count'] / max(seconds, 1e-9):,.0f} "
          "transitions/s)" + (f"; skipped {meta['skippedCount']} episode(s)"
                              if meta.get("skippedCount") else ""), file=sys.stderr)
    print(path)
    return 0
