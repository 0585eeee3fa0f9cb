"""``fastrl export`` spread over Ray tasks (:func:`export_ray`): each task exports a contiguous run
of the episode files into complete shards with the local export's own task runner and write
engine, and the driver assembles them into one sharded batch, committed atomically."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import ray

from .. import _format as F
from .._batch.columnset import iso_utc_now, write_json
from .._batch.commit import TempFolder, clean_stale
from .._batch.engine import WriteEngine, base_meta, codec_map
from .._batch.meta import SHARD_PREFIX, build_manifest, manifest_shards, read_meta
from ..errors import BatchFormatError, EpisodeError, FastrlError
from ..export import export_meta
from ..export.parse import LineCounter
from ..export.plan import plan_export
from ..export.tasks import Options, run_task, worker_tools

__all__ = ["export_ray", "split_tasks"]


def split_tasks(tasks, n: int) -> list[list]:
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
    layout = o["layout"]
    opts = Options(layout, o["spec_json"], o["encoder"], o["on_error"])
    spec, _ = worker_tools(opts)
    engine = WriteEngine(Path(task_root), layout, spec=spec, flush_bytes=o["flush_bytes"],
                         shard_bytes=o["shard_bytes"], codecs=codec_map(o["compression"]),
                         level=o["compression_level"], checksum=o["checksum"],
                         meta=base_meta(spec))
    lines = LineCounter()
    skipped = []
    try:
        for task in tasks:
            _, bad, failed = run_task(task, opts, engine)
            path, start, _ = task
            base = lines.lines_before(path, start) if path.endswith(".jsonl") else 0
            for ep_no, step, reason in bad:
                rec = {"file": path, "episode": base + ep_no, "step": step, "reason": reason}
                if failed:
                    engine.abort()
                    return {"path": None, "skipped": skipped, "failed": rec}
                skipped.append(rec)
        if engine.episodes == 0:
            engine.abort()
            return {"path": None, "skipped": skipped, "failed": None}
        path = engine.close()
    except BaseException:
        engine.abort()
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
    unknown = set(export_options) - set(_EXPORT_OPTIONS)
    if unknown:
        raise TypeError(f"export_ray() got unexpected options {sorted(unknown)} (workers: use "
                        "num_tasks)")
    o = {k: export_options.get(k) for k in _EXPORT_OPTIONS}
    on_error = o["on_error"] or "fail"
    if num_tasks is not None and (not isinstance(num_tasks, int) or isinstance(num_tasks, bool)
                                  or num_tasks < 1):
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    plan = plan_export(
        episodes_dir, spec=o["spec"], encoder=o["encoder"], n_actions=o["n_actions"],
        mask_pad=o["mask_pad"], on_error=on_error, resolve=True)
    spec, _, files, tasks, layout = plan
    encoder = plan.encoder  # the option, or the episode folder's sidecar
    shown = {str(p.resolve()): str(p) for p in files}  # report paths as the local export does
    if not ray.is_initialized():
        ray.init()
    if num_tasks is None:
        num_tasks = max(1, int(ray.cluster_resources().get("CPU", 1)))
    groups = split_tasks(tasks, num_tasks)
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
        extra = export_meta(episodes_dir, len(files), encoder, on_error, skipped)
        extra["ray"] = {"tasks": len(groups)}
        manifest = _assemble(tmp.path, batches, o["shard_bytes"], extra)
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


def _assemble(folder: Path, batches: list[Path], shard_bytes, extra: dict) -> dict:
    """Move the shards of the task batches, in order, into ``folder`` as one chain
    ``shard_00000, ...``; rewrite each shard's ``shard`` record; return the manifest."""
    entries, rows, eps = [], 0, 0
    first_meta = None
    for batch in batches:
        m = read_meta(batch)
        if m.get("sharded") is not True:
            raise BatchFormatError(f"{batch}: a task wrote a plain batch, expected shards")
        for entry in manifest_shards(m, batch / F.META_FILE):
            k = len(entries)
            dst = folder / f"{SHARD_PREFIX}{k:05d}"
            os.rename(batch / entry["path"], dst)
            sm = read_meta(dst)
            if (sm.get("count"), sm.get("episodes")) != (entry["count"], entry["episodes"]):
                raise BatchFormatError(f"{dst}: shard meta disagrees with its task manifest")
            sm["shard"] = {"index": k, "firstRow": rows, "firstEpisode": eps}
            write_json(dst / F.META_FILE, sm, fsync=True)
            if first_meta is None:
                first_meta = sm
            entries.append(dict(entry, path=dst.name, firstRow=rows, firstEpisode=eps))
            rows += entry["count"]
            eps += entry["episodes"]
    return build_manifest(first_meta, entries, shard_bytes, iso_utc_now(), extra)
