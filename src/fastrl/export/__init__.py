"""``fastrl export``: episode files (contract §2) -> one batch folder.

Files ``*.json`` (one episode: an object with ``steps``, or a bare list of steps) and ``*.jsonl``
(one episode per line) are read in name order. Work is cut into tasks (a ``.json`` file, or a
byte range of a ``.jsonl`` file cut at line ends), each parsed, checked, encoded and packed into
column buffers by a worker; the main process appends the results to one ``BatchWriter`` in task
order, so the output is byte-identical whatever the number of workers. At most ``2 * workers``
task results are in flight, so memory stays bounded whatever the input size.

Episode numbers in messages: for ``.json`` files 0; for ``.jsonl`` files the 0-based line number.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import _format as F
from .._batch.stager import Layout, Stager
from ..errors import EpisodeError, FastrlError
from ..writer import BatchWriter

try:  # optional fast JSON parser
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the install
    _orjson = None

__all__ = ["export_episodes", "ExportResult", "find_episode_files"]

_TASK_BYTES = 16 << 20       # a .jsonl file is cut into tasks of about this many bytes
_MAX_SKIPPED_IN_META = 1000  # skipped-episode records kept in meta.json (the count is exact)
_MAX_INFERRED_ACTIONS = 65536  # a larger action count must be given explicitly


def _loads(data):
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)


@dataclass
class ExportResult:
    """What :func:`export_episodes` did. ``path`` is the committed batch folder."""
    path: Path
    transitions: int
    episodes: int
    files: int
    skipped: list = field(default_factory=list)  # dicts: file, episode, step, reason
    seconds: float = 0.0


def find_episode_files(episodes_dir) -> list[Path]:
    """``*.json`` and ``*.jsonl`` files directly in ``episodes_dir``, sorted by name."""
    d = Path(episodes_dir)
    if not d.is_dir():
        raise FastrlError(f"episodes folder {d} does not exist (run `fastrl bot` to make some)")
    files = [p for p in d.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file()
             and not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.name)


# -- parsing one episode ----------------------------------------------------------------------

def _bad(reason, step=None):
    return EpisodeError(reason, step=step)


def _short(v) -> str:
    """A short JSON rendering of a bad value for a message (safe on deeply nested values)."""
    if isinstance(v, (list, dict)):
        return f"a JSON {'list' if isinstance(v, list) else 'object'}"
    try:
        return json.dumps(v)[:40]
    except (TypeError, ValueError, RecursionError):
        return type(v).__name__


def _column(steps, key, required=True):
    """[step[key] for step in steps], or None when no step has it; names the first bad step."""
    try:
        return [s[key] for s in steps]
    except (KeyError, TypeError):
        pass
    present = [isinstance(s, dict) and key in s for s in steps]
    if not any(present) and not required:
        return None
    for t, s in enumerate(steps):
        if not isinstance(s, dict):
            raise _bad(f"step is a {type(s).__name__}, not an object", t)
        if key not in s:
            raise _bad(f"step has no {key!r}" if required or any(present)
                       else f"{key!r} missing", t)
    raise AssertionError("unreachable")


def _check_numbers(values, key, integer):
    """Name the first step whose ``key`` is not a number (JSON bools and strings refused)."""
    ok_types = (int,) if integer else (int, float)
    if set(map(type, values)) <= set(ok_types):
        return  # the common case, checked at C speed
    for t, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, ok_types):
            if integer and isinstance(v, float) and v.is_integer():
                continue
            raise _bad(f"{key} must be {'an integer' if integer else 'a number'}, "
                       f"got {_short(v)}", t)


def episode_fields(obj, *, use_states: bool, encoder=None) -> dict:
    """Keyword arguments for ``Stager.prepare`` from one parsed JSON episode (contract §2)."""
    truncated = False
    if isinstance(obj, dict):
        if "steps" not in obj:
            raise _bad("episode object has no 'steps' list")
        steps = obj["steps"]
        truncated = obj.get("truncated", False)
        if not isinstance(truncated, bool):
            raise _bad(f"'truncated' must be true or false, got {_short(truncated)}")
    else:
        steps = obj
    if not isinstance(steps, list):
        raise _bad(f"steps must be a list, got {type(steps).__name__}")
    if not steps:
        raise _bad("episode has no steps")
    actions = _column(steps, "action")
    _check_numbers(actions, "action", integer=True)
    rewards = _column(steps, "reward")
    _check_numbers(rewards, "reward", integer=False)
    out = {"actions": actions, "rewards": rewards, "truncated": truncated}
    for t, s in enumerate(steps[:-1]):
        if s.get("done"):
            raise _bad("done is true before the episode's last step", t)
    last = steps[-1]
    if last.get("truncated") is True:
        out["truncated"] = True
    masks = _column(steps, "mask", required=False)
    legal = _column(steps, "legal", required=False) if masks is None else None
    if masks is None and legal is None:
        raise _bad("step has neither 'mask' nor 'legal'", 0)
    if masks is not None:
        widths = {len(m) if isinstance(m, list) else -1 for m in masks}
        if len(widths) != 1 or -1 in widths:
            t = next(t for t, m in enumerate(masks)
                     if not isinstance(m, list) or len(m) != len(masks[0]))
            raise _bad("mask must be a list of 0/1 of the same length on every step", t)
        out["mask"] = masks
    else:
        for t, ids in enumerate(legal):
            if not isinstance(ids, list):
                raise _bad("legal must be a list of action ids", t)
        out["legal"] = legal
    for key, name in (("value", "values"), ("logprob", "logprobs")):
        col = _column(steps, key, required=False)
        if col is not None:
            _check_numbers(col, key, integer=False)
            out[name] = col
    if use_states:
        states = _column(steps, "state")
        if encoder is not None:
            rows = []
            for t, st in enumerate(states):
                try:
                    rows.append(np.asarray(encoder(st), dtype=np.float64))
                except Exception as exc:  # the user's encoder failed on this state
                    raise _bad(f"encoder failed: {type(exc).__name__}: {exc}", t) from None
                if rows[-1].ndim != 1 or rows[-1].shape != rows[0].shape:
                    raise _bad(f"encoder returned shape {rows[-1].shape}, expected "
                               f"{rows[0].shape}", t)
            out["obs"] = np.stack(rows)
        else:
            out["states"] = states
    else:
        obs = _column(steps, "obs", required=False)
        if obs is None:
            raise _bad("step has no 'obs' (pass --spec or --encoder to encode 'state')", 0)
        width = len(obs[0]) if isinstance(obs[0], list) else -1
        for t, row in enumerate(obs):
            if not isinstance(row, list) or len(row) != width:
                raise _bad(f"obs must be a list of {max(width, 0)} numbers on every step", t)
        out["obs"] = obs
    return out


# -- tasks ------------------------------------------------------------------------------------

@dataclass
class _Options:
    layout: Layout | None
    spec_json: str | None
    encoder: str | None
    on_error: str
    spill_dir: str | None = None  # workers hand packed chunks over as files here


def _spill(cols: dict, spill_dir: str) -> tuple:
    """Write a worker's packed chunk to one file (no pickling of big arrays through pipes);
    return what the parent needs to map it back."""
    _spill.counter = getattr(_spill, "counter", 0) + 1
    path = os.path.join(spill_dir, f"{os.getpid()}-{_spill.counter}.chunk")
    layout = []
    with open(path, "wb") as f:
        for name, arr in cols.items():
            f.write(memoryview(np.ascontiguousarray(arr)).cast("B"))
            layout.append((name, arr.dtype.str, arr.shape))
    return path, layout


def _unspill(path: str, layout) -> dict:
    """Views of a spilled chunk, mapped read-only from its file."""
    total = sum(int(np.prod(shape)) * np.dtype(dt).itemsize for _, dt, shape in layout)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(total,)) if total else \
        np.zeros(0, np.uint8)
    cols, off = {}, 0
    for name, dt, shape in layout:
        n = int(np.prod(shape)) * np.dtype(dt).itemsize
        cols[name] = mm[off:off + n].view(dt).reshape(shape)
        off += n
    return cols


def load_spec(spec):
    """An ObsSpec from a JSON file path or a parsed dict (SpecError/FastrlError otherwise)."""
    from ..spec import ObsSpec
    if isinstance(spec, dict):
        return ObsSpec.from_json(spec)
    try:
        with open(spec, "rb") as f:
            text = f.read(64 << 20)
    except OSError as exc:
        raise FastrlError(f"cannot read spec file {spec}: {exc}") from None
    try:
        return ObsSpec.from_json(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise FastrlError(f"spec file {spec} is not UTF-8 JSON") from None


def _load_encoder(name: str):
    mod, _, fn = name.partition(":")
    if not mod or not fn:
        raise FastrlError(f"--encoder must look like package.module:function, got {name!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(mod)
        for part in fn.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise FastrlError(f"cannot load encoder {name!r}: {exc}") from None
    if not callable(obj):
        raise FastrlError(f"encoder {name!r} is not callable")
    return obj


_WORKER_CACHE: dict = {}


def _worker_tools(opts: _Options):
    key = (opts.spec_json, opts.encoder)
    if key not in _WORKER_CACHE:
        spec = None
        if opts.spec_json is not None:
            from ..spec import ObsSpec
            spec = ObsSpec.from_json(opts.spec_json)
        enc = _load_encoder(opts.encoder) if opts.encoder else None
        _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = (spec, enc)
    return _WORKER_CACHE[key]


def _make_tasks(files):
    """(path, start, end) byte ranges: whole .json files; .jsonl cut after a newline."""
    tasks = []
    for p in files:
        size = p.stat().st_size
        if p.suffix != ".jsonl" or size <= _TASK_BYTES:
            tasks.append((str(p), 0, size))
            continue
        with open(p, "rb") as f:
            start = 0
            while start < size:
                end = min(size, start + _TASK_BYTES)
                if end < size:
                    f.seek(end)
                    rest = f.readline()
                    end += len(rest)
                tasks.append((str(p), start, end))
                start = end
    return tasks


def _read_range(path, start, end):
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def _iter_task_episodes(path, start, end):
    """Yield (episode number in file or None, parsed object or exception) for one task.
    For .jsonl ranges the number is relative to the range (line within the range)."""
    data = _read_range(path, start, end)
    if not path.endswith(".jsonl"):
        try:
            yield 0, _loads(data)
        except (ValueError, RecursionError) as exc:
            yield 0, _bad(f"not valid JSON ({exc})")
        return
    for i, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            yield i, _loads(line)
        except (ValueError, RecursionError) as exc:
            yield i, _bad(f"not valid JSON ({str(exc)[:200]})")


_CHUNK_BYTES = 16 << 20  # worker results are shipped in packed chunks of about this size


def _run_task(task, opts: _Options, writer=None):
    """Parse, check, encode and pack one task. With ``writer`` (one process), episodes go
    straight into the writer's buffers; otherwise (a worker) into packed chunks that are
    returned. Returns (chunks, skipped, failed): chunks is a list of (cols, lengths); skipped
    entries are (line-in-range, step, reason), line numbers relative to the task for .jsonl
    files; failed is True when on_error="fail" stopped at the (single) skipped entry."""
    path, start, end = task
    spec, encoder = _worker_tools(opts)
    if writer is not None:
        stager = writer._stager
    else:
        lay = opts.layout
        stager = Stager(lay, capacity=max(1, _CHUNK_BYTES // lay.row_bytes()), spec=spec,
                        threads=1)
        chunks = []

        def flush():
            cols, lengths = stager.take()
            if opts.spill_dir is not None:
                chunks.append((_spill(cols, opts.spill_dir), list(lengths)))
            else:
                chunks.append(({k: v.copy() for k, v in cols.items()}, list(lengths)))
    use_states = spec is not None or encoder is not None
    skipped = []
    for ep_no, obj in _iter_task_episodes(path, start, end):
        try:
            if isinstance(obj, EpisodeError):
                raise obj
            kw = episode_fields(obj, use_states=use_states, encoder=encoder)
            ep, states = stager.prepare(ep_no, **kw)
            if writer is not None:
                writer._put_prepared(ep, states, ep_no)
                stager = writer._stager
                continue
            if not stager.fits(ep.length):
                flush()
            stager.put(ep, states, ep_no)
        except EpisodeError as exc:
            if opts.on_error == "fail":
                return [], [(ep_no, exc.step, exc.reason)], True
            skipped.append((ep_no, exc.step, exc.reason))
    if writer is not None:
        return [], skipped, False
    if stager.used:
        flush()
    return chunks, skipped, False


class _LineCounter:
    """Absolute line numbers of .jsonl ranges, counted only when an error needs one."""

    def __init__(self):
        self._cache = {}

    def lines_before(self, path, offset):
        if offset == 0:
            return 0
        key = (path, offset)
        if key not in self._cache:
            n = 0
            with open(path, "rb") as f:
                left = offset
                while left:
                    buf = f.read(min(left, 16 << 20))
                    if not buf:
                        break
                    n += buf.count(b"\n")
                    left -= len(buf)
            self._cache[key] = n
        return self._cache[key]


# -- layout discovery ---------------------------------------------------------------------------

def _discover_layout(tasks, spec, encoder, n_actions, mask_pad):
    """Fix obsDim, numActions, maskDim and the optional columns from the first usable episode
    (and, when masks come as legal-id lists and ``n_actions`` is not given, a scan of all ids).
    Returns (layout or None, first bad episode's EpisodeError naming its file, or None)."""
    use_states = spec is not None or encoder is not None
    lines = _LineCounter()
    first_bad = None
    for path, start, end in tasks:
        for ep_no, obj in _iter_task_episodes(path, start, end):
            try:
                if isinstance(obj, EpisodeError):
                    raise obj
                fields = episode_fields(obj, use_states=use_states, encoder=encoder)
                obs_dim = spec.dim if spec is not None else len(fields["obs"][0])
                if not 1 <= obs_dim <= F.MAX_DIM:
                    raise _bad(f"obs rows have {obs_dim} values; obsDim must be in "
                               f"[1, {F.MAX_DIM}]", 0)
                width = None
                if "mask" in fields:
                    width = len(fields["mask"][0])
                    if not 1 <= width <= F.MAX_DIM:
                        raise _bad(f"mask has {width} entries; numActions must be in "
                                   f"[1, {F.MAX_DIM}]", 0)
            except EpisodeError as exc:
                if first_bad is None:
                    base = lines.lines_before(path, start) if path.endswith(".jsonl") else 0
                    first_bad = EpisodeError(exc.reason, episode=base + ep_no, step=exc.step,
                                             source=path)
                continue
            if n_actions is None:
                if width is not None:
                    n_actions = width
                else:
                    n_actions = _scan_num_actions(tasks)
                    print(f"fastrl export: numActions not given; {n_actions} inferred from the "
                          "largest legal id or action in the data (pass --num-actions to skip "
                          "this scan)", file=sys.stderr)
            if mask_pad is not None and mask_pad < n_actions:
                raise FastrlError(f"--mask-pad {mask_pad} is smaller than numActions={n_actions}")
            layout = Layout(obs_dim, n_actions, mask_pad or n_actions, "values" in fields,
                            "logprobs" in fields)
            return layout, first_bad
    return None, first_bad


def _scan_num_actions(tasks) -> int:
    hi = -1
    for path, start, end in tasks:
        for _, obj in _iter_task_episodes(path, start, end):
            steps = obj.get("steps") if isinstance(obj, dict) else obj
            if not isinstance(steps, list):
                continue
            for s in steps:
                if not isinstance(s, dict):
                    continue
                for v in [s.get("action")] + (s.get("legal") if isinstance(s.get("legal"), list)
                                              else []):
                    if isinstance(v, int) and not isinstance(v, bool) and hi < v < F.MAX_DIM:
                        hi = v
    if hi < 0:
        raise FastrlError("cannot infer numActions from the data; pass --num-actions")
    if hi + 1 > _MAX_INFERRED_ACTIONS:
        raise FastrlError(f"the data has action/legal id {hi}; an inferred numActions above "
                          f"{_MAX_INFERRED_ACTIONS} is refused (pass --num-actions if it is real)")
    return hi + 1


# -- the export ---------------------------------------------------------------------------------

class _Progress:
    def __init__(self, enabled, total_files):
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.total_files = total_files

    def update(self, rows, episodes, files_done, final=False):
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self.last < 0.25:
            return
        self.last = now
        rate = rows / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\rexport: {rows:,} transitions, {episodes:,} episodes, "
                         f"{files_done}/{self.total_files} tasks, {rate:,.0f} transitions/s   ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def plan_export(episodes_dir, *, spec=None, encoder=None, n_actions=None, mask_pad=None,
                on_error="fail", resolve=False):
    """What every export (local or Ray) does first: check the options, load the spec/encoder,
    list the files, cut them into tasks and fix the layout from the data. Returns (spec,
    encoder function, files, tasks, layout). ``resolve``: tasks name absolute paths (messages
    still name the files as listed)."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if spec is not None and encoder is not None:
        raise ValueError("give a spec or an encoder, not both")
    if isinstance(spec, (str, os.PathLike, dict)):
        spec = load_spec(spec)
    enc_fn = _load_encoder(encoder) if encoder else None
    files = find_episode_files(episodes_dir)
    if not files:
        raise FastrlError(f"no *.json or *.jsonl episode files in {episodes_dir}")
    shown = {str(p.resolve()): str(p) for p in files}
    tasks = _make_tasks([p.resolve() for p in files] if resolve else files)
    layout, first_bad = _discover_layout(tasks, spec, enc_fn, n_actions, mask_pad)
    if layout is None:
        if on_error == "fail" and first_bad is not None:
            raise first_bad.relocated(source=shown.get(first_bad.source, first_bad.source))
        raise FastrlError(f"no valid episode in {episodes_dir}"
                          + (f" (first problem: {first_bad})" if first_bad else ""))
    return spec, enc_fn, files, tasks, layout


def export_episodes(episodes_dir="dataset/episodes", out_root="data/binary", *, spec=None,
                    encoder: str | None = None, n_actions: int | None = None,
                    mask_pad: int | None = None, workers: int = 1, on_error: str = "fail",
                    checksum: bool = True, progress: bool | None = None,
                    shard_bytes: int | None = None, compression=None,
                    compression_level: int | None = None,
                    flush_bytes: int = F.DEFAULT_FLUSH_BYTES) -> ExportResult:
    """Export every episode file in ``episodes_dir`` into one batch under ``out_root``.

    spec: an ObsSpec (or a path to its JSON) used to re-encode each step's ``state`` (it wins
    over a stored ``obs``); encoder: ``"package.module:function"`` mapping one state to a list of
    floats, used when no spec fits; neither: steps' ``obs`` are stored. n_actions: the game's
    action count (default: the width of the first mask, or inferred from the ids); mask_pad:
    stored mask width (>= n_actions). workers: processes (the output is identical for any
    number). on_error: "fail" (stop at the first bad episode, nothing is committed) or "skip"
    (keep good episodes, report every skipped one on stderr and in meta.json ``skipped``).
    progress: a progress line on stderr (default: when stderr is a terminal). shard_bytes:
    write a sharded batch of shards of about this size; compression, compression_level: as for
    ``BatchWriter``.
    """
    t0 = time.perf_counter()
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    spec, _, files, tasks, layout = plan_export(episodes_dir, spec=spec, encoder=encoder,
                                                n_actions=n_actions, mask_pad=mask_pad,
                                                on_error=on_error)
    opts = _Options(layout, spec.to_json() if spec is not None else None, encoder, on_error)
    progress = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(progress, len(tasks))
    lines = _LineCounter()
    skipped = []
    pool = _start_pool(workers) if workers > 1 else None
    try:
        return _export(tasks, opts, pool, bar, lines, skipped, episodes_dir, files, encoder,
                       on_error, t0, out_root, layout, spec, mask_pad, checksum, flush_bytes,
                       shard_bytes, compression, compression_level)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _export(tasks, opts, pool, bar, lines, skipped, episodes_dir, files, encoder, on_error, t0,
            out_root, layout, spec, mask_pad, checksum, flush_bytes, shard_bytes, compression,
            compression_level):
    writer = BatchWriter(out_root, n_actions=layout.n_actions, obs_dim=layout.obs_dim,
                         spec=spec, mask_pad=mask_pad, checksum=checksum,
                         flush_bytes=flush_bytes, shard_bytes=shard_bytes,
                         compression=compression, compression_level=compression_level)
    with writer:
        writer._set_layout(layout)
        if pool is not None:
            opts.spill_dir = writer._scratch_dir()
        for i, (task, result) in enumerate(_results(tasks, opts, pool, writer)):
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
                if isinstance(cols, tuple):  # spilled to a file by a worker
                    spill_path, layout = cols
                    writer._append_packed(_unspill(spill_path, layout), lengths,
                                          release=lambda p=spill_path: os.unlink(p))
                else:
                    writer._append_packed(cols, lengths)
            bar.update(writer.transitions, writer.episodes, i + 1)
        if writer.episodes == 0:
            raise FastrlError(f"every episode in {episodes_dir} was skipped; nothing exported")
        writer._extra_meta["source"] = {"episodesDir": str(episodes_dir), "files": len(files),
                                        "encoder": encoder}
        if on_error == "skip":
            writer._extra_meta["skippedCount"] = len(skipped)
            writer._extra_meta["skipped"] = skipped[:_MAX_SKIPPED_IN_META]
        transitions, episodes = writer.transitions, writer.episodes
    bar.update(transitions, episodes, len(tasks), final=True)
    return ExportResult(writer.path, transitions, episodes, len(files), skipped,
                        time.perf_counter() - t0)


def _start_pool(workers: int):
    """A process pool whose workers all exist before the writer takes its lock, so none of them
    inherits it (a forked child of a killed export would otherwise keep the temporary folder
    locked). Linux: fork (no ``if __name__ == "__main__"`` guard needed in user scripts), every
    worker started now; elsewhere: the platform's default start method."""
    import multiprocessing as mp
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
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


def _results(tasks, opts, pool, writer):
    """Yield (task, result) in task order; at most 2*workers results held at once. Without a
    pool, tasks run in this process and pack straight into ``writer``."""
    if pool is None:
        for t in tasks:
            yield t, _run_task(t, opts, writer)
        return
    window = 2 * pool._max_workers
    pending = []
    it = iter(tasks)
    for t in it:
        pending.append((t, pool.submit(_run_task, t, opts)))
        if len(pending) >= window:
            break
    while pending:
        t, fut = pending.pop(0)
        res = fut.result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append((nxt, pool.submit(_run_task, nxt, opts)))
        yield t, res


# -- command line ---------------------------------------------------------------------------------

def _cmd_export(args) -> int:
    if args.ray:
        try:
            from ..ray import cmd_export_ray
        except ImportError as exc:
            print(f"fastrl export --ray: {exc}", file=sys.stderr)
            return 1
        return cmd_export_ray(args)
    res = export_episodes(args.episodes_dir, args.out, spec=args.spec, encoder=args.encoder,
                          n_actions=args.num_actions, mask_pad=args.mask_pad,
                          workers=args.workers, on_error=args.on_error,
                          shard_bytes=args.shard_size, compression=_compression_arg(args),
                          compression_level=args.compress_level,
                          progress=None if not args.quiet else False)
    rate = res.transitions / max(res.seconds, 1e-9)
    print(f"exported {res.transitions:,} transitions in {res.episodes:,} episodes from "
          f"{res.files} files ({rate:,.0f} transitions/s)"
          + (f"; skipped {len(res.skipped)} episode(s)" if res.skipped else ""), file=sys.stderr)
    print(res.path)
    return 0


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise __import__("argparse").ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise __import__("argparse").ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _compression_arg(args):
    if args.compress is None and not args.pack_masks:
        return None
    cols = {c: args.compress for c in list(F.ALL_COLUMNS) + [F.EPISODE_INDEX[0]]}
    if args.pack_masks:
        cols["masks"] = "packbits"
    return cols


def parse_size(text):
    """'256MiB', '1G', '4096', '64k' -> bytes (binary units: k/M/G = 1024^1..3)."""
    import argparse
    import re
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB, 1G, 65536)")
    value = float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1 byte, got {text!r}")
    return int(value)


def register(sub) -> None:
    p = sub.add_parser("export", help="episode files -> one binary batch folder")
    p.add_argument("episodes_dir", nargs="?", default="dataset/episodes",
                   help="folder of *.json / *.jsonl episodes (default: dataset/episodes)")
    p.add_argument("--out", default="data/binary",
                   help="output root; the batch is <out>/batch_<ms> (default: data/binary)")
    enc = p.add_mutually_exclusive_group()
    enc.add_argument("--spec", help="ObsSpec JSON file: re-encode each step's 'state'")
    enc.add_argument("--encoder", help="package.module:function mapping a state to a list of floats")
    p.add_argument("--num-actions", type=_positive_int,
                   help="the game's action count (default: width of the first mask)")
    p.add_argument("--mask-pad", type=_positive_int,
                   help="store masks this many columns wide, e.g. 256 for 208 actions")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="parallel processes (output is identical for any number; default 1)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="bad episode: stop with an error (default) or skip it and report it")
    p.add_argument("--shard-size", type=parse_size, metavar="SIZE",
                   help="write a sharded batch, shards of about SIZE (e.g. 256MiB); each shard "
                        "is a complete batch folder, episodes are never split")
    p.add_argument("--compress", choices=("zstd", "gzip"),
                   help="compress every column (not memory-mappable; `fastrl decompress` undoes)")
    p.add_argument("--compress-level", type=int, help="codec level (zstd 3, gzip 6 by default)")
    p.add_argument("--pack-masks", action="store_true",
                   help="store masks bit-packed (np.packbits, 8 actions per byte)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--ray", action="store_true",
                   help='spread the export over Ray tasks (pip install "fastrl[ray]"; joins '
                        "RAY_ADDRESS, else starts a local Ray): one sharded batch with the same "
                        "transitions")
    p.add_argument("--ray-tasks", type=_positive_int, metavar="N",
                   help="with --ray: number of Ray tasks (default: the cluster's CPUs)")
    p.set_defaults(func=_cmd_export)
