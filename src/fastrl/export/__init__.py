"""``fastrl export``: episode files (contract §2) -> one batch folder.

Files ``*.json`` (one episode: an object with ``steps``, or a bare list of steps) and ``*.jsonl``
(one episode per line) are read in name order. Work is cut into tasks (a ``.json`` file, or a
byte range of a ``.jsonl`` file cut at line ends), each parsed, checked, encoded and packed into
column buffers by a worker; the main process appends the results to one ``BatchWriter`` in task
order, so the output is byte-identical whatever the number of workers. At most ``2 * workers``
task results are in flight, so memory stays bounded whatever the input size.

Each episode is read by the JSON scanner (:mod:`.scan`, a Cython kernel that writes numbers
straight into column buffers) when it can take it, else by the orjson path (``orjson.loads`` +
:func:`.parse.episode_fields`; the standard library when orjson is missing or refuses the input),
which also reports every error: the batch and the errors are the same whichever path ran.
Settings not given come from the folder's sidecar ``fastrl-episodes.json`` (:mod:`.sidecar`).

Episode numbers in messages: for ``.json`` files 0; for ``.jsonl`` files the 0-based line number.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import _format as F
from .._batch.chunkfile import SpilledChunk
from .._batch.engine import WriteEngine, base_meta, codec_map
from .._batch.commit import clean_stale
from .._threads import available_cpus
from ..errors import EpisodeError, FastrlError
from .._progress import progress_bar
from .parse import LineCounter, find_episode_files
from .plan import SCAN, plan_export
from .sidecar import SIDECAR_NAME, read_sidecar, write_sidecar
from .tasks import Options, run_task, seed_tools

__all__ = ["export_episodes", "ExportResult", "find_episode_files", "plan_export",
           "write_sidecar", "read_sidecar", "SIDECAR_NAME", "SCAN"]

MAX_SKIPPED_IN_META = 1000  # skipped-episode records kept in meta.json (the count is exact)


@dataclass
class ExportResult:
    """What :func:`export_episodes` did. ``path`` is the committed batch folder."""
    path: Path
    transitions: int
    episodes: int
    files: int
    skipped: list = field(default_factory=list)  # dicts: file, episode, step, reason
    seconds: float = 0.0



def export_episodes(episodes_dir="dataset/episodes", out_root="data/binary", *, spec=None,
                    encoder: str | None = None, n_actions: int | str | None = None,
                    mask_pad: int | None = None, workers: int = 1, on_error: str = "fail",
                    checksum: bool = True, progress: bool | None = None,
                    shard_bytes: int | None = None, compression=None,
                    compression_level: int | None = None,
                    flush_bytes: int = F.DEFAULT_FLUSH_BYTES,
                    use_sidecar: bool = True) -> ExportResult:
    """Export every episode file in ``episodes_dir`` into one batch under ``out_root``.

    spec: an ObsSpec (or a path to its JSON) used to re-encode each step's ``state`` (it wins
    over a stored ``obs``); encoder: ``"package.module:function"`` mapping one state to a list of
    floats, used when no spec fits; neither: steps' ``obs`` are stored. n_actions: the game's
    action count (default: the folder's sidecar, else the width of the first dense mask; with
    legal-id lists and no sidecar it must be given, or ``"scan"`` to infer it from the largest
    id, a second pass over every file); mask_pad: stored mask width (>= n_actions).
    use_sidecar: read ``<episodes_dir>/fastrl-episodes.json`` (see :func:`write_sidecar`) for
    the spec or encoder, n_actions and mask_pad not given here. workers: processes (capped by
    the CPUs available and the number of tasks; the output is identical for any number).
    on_error: "fail" (stop at the first bad episode, nothing is committed) or "skip" (keep good
    episodes, report every skipped one on stderr and in meta.json ``skipped``). progress: a
    progress bar on stderr (default: when stderr is a terminal). shard_bytes: write a sharded
    batch of shards of about this size; compression, compression_level: as for
    ``BatchWriter``.
    """
    t0 = time.perf_counter()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    plan = plan_export(episodes_dir, spec=spec, encoder=encoder, n_actions=n_actions,
                       mask_pad=mask_pad, on_error=on_error, use_sidecar=use_sidecar)
    spec, enc_fn, files, tasks, layout = plan
    encoder = plan.encoder
    opts = Options(layout, spec.to_json() if spec is not None else None, encoder, on_error)
    seed_tools(opts, spec, enc_fn)  # neither this process nor forked workers rebuild them
    workers = cap_workers(workers, len(tasks))
    lines = LineCounter()
    skipped = []
    total = sum(end - start for _, start, end in tasks)
    with progress_bar(total, "export", unit="B", enabled=progress) as bar:
        pool = _start_pool(workers) if workers > 1 else None
        try:
            return _export(tasks, opts, pool, bar, lines, skipped, episodes_dir, files,
                           encoder, on_error, t0, out_root, layout, spec, checksum,
                           flush_bytes, shard_bytes, compression, compression_level,
                           plan.first)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def cap_workers(workers: int, tasks: int) -> int:
    """``workers`` capped by the CPUs this process may use (saying so on stderr) and by the
    number of tasks (silently: an idle worker gains nothing)."""
    cpus = available_cpus()
    if workers > cpus:
        print(f"fastrl export: {workers} workers asked for, {cpus} CPU(s) available: using "
              f"{cpus}", file=sys.stderr)
        workers = cpus
    return max(1, min(workers, tasks))


def _export(tasks, opts, pool, bar, lines, skipped, episodes_dir, files, encoder, on_error, t0,
            out_root, layout, spec, checksum, flush_bytes, shard_bytes, compression,
            compression_level, first=None):
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)
    engine = WriteEngine(root, layout, spec=spec, flush_bytes=flush_bytes,
                         shard_bytes=shard_bytes, codecs=codec_map(compression),
                         level=compression_level, checksum=checksum, meta=base_meta(spec))
    try:
        if pool is not None:
            opts.spill_dir = engine.scratch_dir()
        for i, (task, result) in enumerate(_results(tasks, opts, pool, engine, first)):
            chunks, bad, failed = result
            path, start, _ = task
            base = lines.lines_before(path, start) if path.endswith(".jsonl") else 0
            for ep_no, step, reason in bad:
                rec = {"file": path, "episode": base + ep_no, "step": step, "reason": reason}
                if failed:
                    raise EpisodeError(reason, episode=base + ep_no, step=step, source=path)
                skipped.append(rec)
                print(f"fastrl export: skipped {path}, episode {base + ep_no}"
                      + (f", step {step}" if step is not None else "") + f": {reason}",
                      file=sys.stderr)
            for cols, lengths in chunks:
                if isinstance(cols, SpilledChunk):  # a worker's chunk file
                    engine.append_spilled(cols, lengths,
                                          release=lambda p=cols.path: os.unlink(p))
                else:
                    engine.append_packed(cols, lengths)
            bar.update(task[2] - task[1])
        if engine.episodes == 0:
            raise FastrlError(f"every episode in {episodes_dir} was skipped; nothing exported")
        engine.meta.update(export_meta(episodes_dir, len(files), encoder, on_error, skipped))
        path = engine.close()
    except BaseException:
        engine.abort()
        raise
    return ExportResult(path, engine.transitions, engine.episodes, len(files), skipped,
                        time.perf_counter() - t0)


def export_meta(episodes_dir, files: int, encoder, on_error: str, skipped: list) -> dict:
    """The meta.json keys an export adds: ``source`` and, with on_error="skip", the skipped
    episodes (``skippedCount``, and the first ``MAX_SKIPPED_IN_META`` records)."""
    meta = {"source": {"episodesDir": str(episodes_dir), "files": files, "encoder": encoder}}
    if on_error == "skip":
        meta["skippedCount"] = len(skipped)
        meta["skipped"] = skipped[:MAX_SKIPPED_IN_META]
    return meta


def _start_pool(workers: int):
    """A process pool whose workers all exist before the writer takes its lock, so none of them
    inherits it (a forked child of a killed export would otherwise keep the temporary folder
    locked). Linux: fork (no ``if __name__ == "__main__"`` guard needed in user scripts), every
    worker started now; elsewhere: the platform's default start method."""
    import multiprocessing as mp
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
    pool.workers = workers
    list(pool.map(_noop, range(workers)))  # start every worker now
    return pool


def _noop(_):
    return None


def _worker_init():
    """Die with the parent (Linux): a killed export leaves no orphan workers behind."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _results(tasks, opts, pool, engine, first=None):
    """Yield (task, result) in task order; at most 2*workers results held at once. Without a
    pool, tasks run in this process and pack straight into ``engine``. first: (task index,
    episode number, parsed object) of the episode the plan parsed already."""
    def known(i):
        return {first[1]: first[2]} if first is not None and first[0] == i else None

    if pool is None:
        for i, t in enumerate(tasks):
            yield t, run_task(t, opts, engine, known(i))
        return
    window = 2 * pool.workers
    pending = []
    it = enumerate(tasks)
    for i, t in it:
        pending.append((t, pool.submit(run_task, t, opts, None, known(i))))
        if len(pending) >= window:
            break
    while pending:
        t, fut = pending.pop(0)
        res = fut.result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append((nxt[1], pool.submit(run_task, nxt[1], opts, None, known(nxt[0]))))
        yield t, res


