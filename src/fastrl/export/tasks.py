"""One export task run start to end: parse, check, encode and pack the episodes of one byte range
into column buffers, either straight into the write engine's buffers (one process) or into packed
chunks a worker hands over as files (:func:`~fastrl._batch.chunkfile.spill`), which the parent's
engine copies into the column files (``WriteEngine.append_spilled``).
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from dataclasses import dataclass


from .._batch.chunkfile import spill
from .._batch.stager import Layout, Stager
from ..errors import EpisodeError, FastrlError
from .parse import episode_fields, iter_task_episodes, iter_task_raw, locate_step, parse_raw
from .scan import NO_SCAN, scan_episode, scanner_plan

CHUNK_BYTES = 16 << 20  # worker results are shipped in packed chunks of about this size


@dataclass
class Options:
    """What every task of one export shares (picklable, sent to the workers)."""
    layout: Layout | None
    spec_json: str | None
    encoder: str | None
    on_error: str
    spill_dir: str | None = None  # workers hand packed chunks over as files here


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


def load_encoder(name: str):
    """The function named ``package.module:function`` (the current folder is importable)."""
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


WORKER_CACHE: dict = {}  # (spec JSON, encoder name) -> (ObsSpec, encoder), one per process


def seed_tools(opts: Options, spec, encoder_fn) -> None:
    """Record the ObsSpec and encoder the parent already holds, so that neither this process
    nor the workers forked from it rebuild them from ``opts``."""
    WORKER_CACHE.clear()
    WORKER_CACHE[(opts.spec_json, opts.encoder)] = (spec, encoder_fn)


def worker_tools(opts: Options):
    """The ObsSpec and encoder function of an export, built once per process (inherited from
    the parent by forked workers when it called :func:`seed_tools`)."""
    key = (opts.spec_json, opts.encoder)
    if key not in WORKER_CACHE:
        spec = None
        if opts.spec_json is not None:
            from ..spec import ObsSpec
            spec = ObsSpec.from_json(opts.spec_json)
        enc = load_encoder(opts.encoder) if opts.encoder else None
        WORKER_CACHE.clear()
        WORKER_CACHE[key] = (spec, enc)
    return WORKER_CACHE[key]


def run_task(task, opts: Options, engine=None, known=None):
    """Parse, check, encode and pack one task. With ``engine`` (one process), episodes go
    straight into the write engine's buffers; otherwise (a worker) into packed chunks that are
    returned. Returns (chunks, skipped, failed): chunks is a list of (cols, lengths); skipped
    entries are (line-in-range, step, reason), line numbers relative to the task for .jsonl
    files; failed is True when on_error="fail" stopped at the (single) skipped entry.
    known: {episode number in task: parsed object} not to parse again."""
    path, start, end = task
    spec, encoder = worker_tools(opts)
    if engine is not None:
        stager = engine.stager
    else:
        lay = opts.layout
        stager = Stager(lay, capacity=max(1, CHUNK_BYTES // lay.row_bytes()), spec=spec,
                        threads=1)
        chunks = []

        def flush():
            cols, lengths = stager.take()
            if opts.spill_dir is not None:
                chunks.append((spill(cols, opts.spill_dir), list(lengths)))
            else:
                chunks.append(({k: v.copy() for k, v in cols.items()}, list(lengths)))
    gc_was_enabled = gc.isenabled()
    gc.disable()  # parsed JSON holds no cycles: the collector's passes are pure overhead here
    try:
        return _run(path, start, end, opts, engine, known, spec, encoder, stager,
                    None if engine is not None else (chunks, flush))
    finally:
        if gc_was_enabled:
            gc.enable()


def _put(stager, engine, flush, ep, states, ep_no):
    if engine is not None:
        engine.put(ep, states, ep_no)
        return
    if not stager.fits(ep.length):
        flush()
    stager.put(ep, states, ep_no)


def _run(path, start, end, opts, engine, known, spec, encoder, stager, shipping):
    use_states = spec is not None or encoder is not None
    skipped = []
    flush = None
    if shipping is not None:
        chunks, flush = shipping
    plan = scanner_plan(spec, encoder)
    if plan is NO_SCAN:
        episodes = iter_task_episodes(path, start, end, known)
    else:
        episodes = iter_task_raw(path, start, end)
    for item in episodes:
        ep_no, obj = item[0], item[1]
        try:
            if plan is not NO_SCAN:
                if known and ep_no in known:
                    obj = known[ep_no]
                else:
                    kw = scan_episode(obj, plan, item[2], item[3])
                    if kw is not None:
                        try:
                            ep, states = stager.prepare(ep_no, **kw)
                            _put(stager, engine, flush, ep, states, ep_no)
                            continue
                        except EpisodeError:
                            pass  # the orjson path below reports it
                    obj = parse_raw(path, obj[item[2]:item[3]])
            if isinstance(obj, EpisodeError):
                raise obj
            kw = episode_fields(obj, use_states=use_states, encoder=encoder)
            try:
                ep, states = stager.prepare(ep_no, **kw)
            except EpisodeError as exc:
                raise locate_step(kw, exc) from None
            _put(stager, engine, flush, ep, states, ep_no)
        except EpisodeError as exc:
            if opts.on_error == "fail":
                return [], [(ep_no, exc.step, exc.reason)], True
            skipped.append((ep_no, exc.step, exc.reason))
    if engine is not None:
        return [], skipped, False
    if stager.used:
        flush()
    return chunks, skipped, False


