"""Reading episode files (contract section 2): finding them, cutting them into tasks (a ``.json``
file, or a byte range of a ``.jsonl`` file cut at line ends), parsing each episode and turning it
into the keyword arguments of ``Stager.prepare``, with errors that name the step at fault.

Episode numbers in messages: for ``.json`` files 0; for ``.jsonl`` files the 0-based line number.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import EpisodeError, FastrlError
from .sidecar import SIDECAR_NAME

try:  # optional fast JSON parser
    import orjson
except ImportError:  # pragma: no cover - depends on the install
    orjson = None

TASK_BYTES = 16 << 20  # a .jsonl file is cut into tasks of about this many bytes


def loads(data):
    """Parse JSON bytes (orjson when installed, else the standard library).

    What orjson refuses but the standard library reads (``NaN``/``Infinity`` literals, integers
    beyond 64 bits, lone surrogates) is re-read by the standard library, so the same input gives
    the same result, and the same errors naming the step at fault, whichever parser is
    installed; only input neither parser reads is "not valid JSON"."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the standard library decides, and words the error
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")  # UnicodeDecodeError is a ValueError
    return json.loads(data)


def find_episode_files(episodes_dir) -> list[Path]:
    """``*.json`` and ``*.jsonl`` files directly in ``episodes_dir``, sorted by name (hidden
    files and the folder's sidecar ``fastrl-episodes.json`` excluded)."""
    d = Path(episodes_dir)
    if not d.is_dir():
        raise FastrlError(f"episodes folder {d} does not exist (run `fastrl bot` to make some)")
    files = [p for p in d.iterdir() if p.suffix in (".json", ".jsonl")
             and not p.name.startswith(".") and p.name != SIDECAR_NAME and p.is_file()]
    return sorted(files, key=lambda p: p.name)



# -- parsing one episode ----------------------------------------------------------------------

def bad(reason, step=None):
    return EpisodeError(reason, step=step)


def short(v) -> str:
    """A short JSON rendering of a bad value for a message (safe on deeply nested values)."""
    if isinstance(v, (list, dict)):
        return f"a JSON {'list' if isinstance(v, list) else 'object'}"
    try:
        return json.dumps(v)[:40]
    except (TypeError, ValueError, RecursionError):
        return type(v).__name__


def step_column(steps, key, required=True):
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
            raise bad(f"step is a {type(s).__name__}, not an object", t)
        if key not in s:
            raise bad(f"step has no {key!r}" if required or any(present)
                       else f"{key!r} missing", t)
    raise AssertionError("unreachable")


def check_numbers(values, key, integer):
    """Name the first step whose ``key`` is not a number (JSON bools and strings refused)."""
    ok_types = (int,) if integer else (int, float)
    if set(map(type, values)) <= set(ok_types):
        return  # the common case, checked at C speed
    for t, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, ok_types):
            if integer and isinstance(v, float) and v.is_integer():
                continue
            raise bad(f"{key} must be {'an integer' if integer else 'a number'}, "
                       f"got {short(v)}", t)


NO_OBS_HINT = ("step has 'state' but no 'obs', and nothing says how to encode states: pass "
               "--spec SPEC.json or --encoder package.module:function (spec=/encoder= in "
               "Python), or write the folder's sidecar " + SIDECAR_NAME + " with "
               "fastrl.export.write_sidecar(folder, spec=..., n_actions=...)")


def episode_fields(obj, *, use_states: bool, encoder=None) -> dict:
    """Keyword arguments for ``Stager.prepare`` from one parsed JSON episode (contract §2)."""
    truncated = False
    if isinstance(obj, dict):
        if "steps" not in obj:
            raise bad("episode object has no 'steps' list")
        steps = obj["steps"]
        truncated = obj.get("truncated", False)
        if not isinstance(truncated, bool):
            raise bad(f"'truncated' must be true or false, got {short(truncated)}")
    else:
        steps = obj
    if not isinstance(steps, list):
        raise bad(f"steps must be a list, got {type(steps).__name__}")
    if not steps:
        raise bad("episode has no steps")
    actions = step_column(steps, "action")
    check_numbers(actions, "action", integer=True)
    rewards = step_column(steps, "reward")
    check_numbers(rewards, "reward", integer=False)
    out = {"actions": actions, "rewards": rewards, "truncated": truncated}
    for t, s in enumerate(steps[:-1]):
        if s.get("done"):
            raise bad("done is true before the episode's last step", t)
    last = steps[-1]
    if last.get("truncated") is True:
        out["truncated"] = True
    masks = step_column(steps, "mask", required=False)
    legal = step_column(steps, "legal", required=False) if masks is None else None
    if masks is not None:
        widths = {len(m) if isinstance(m, list) else -1 for m in masks}
        if len(widths) != 1 or -1 in widths:
            t = next(t for t, m in enumerate(masks)
                     if not isinstance(m, list) or len(m) != len(masks[0]))
            raise bad("mask must be a list of 0/1 of the same length on every step", t)
        out["mask"] = masks
    elif legal is not None:
        for t, ids in enumerate(legal):
            if not isinstance(ids, list):
                raise bad("legal must be a list of action ids", t)
        out["legal"] = legal
    for key, name in (("value", "values"), ("logprob", "logprobs")):
        col = step_column(steps, key, required=False)
        if col is not None:
            check_numbers(col, key, integer=False)
            out[name] = col
    if use_states:
        states = step_column(steps, "state")
        if encoder is not None:
            rows = []
            for t, st in enumerate(states):
                try:
                    row = np.asarray(encoder(st))
                except Exception as exc:  # the user's encoder failed on this state
                    raise bad(f"encoder failed: {type(exc).__name__}: {exc}", t) from None
                if row.dtype.kind not in "fiub":
                    raise bad(f"encoder returned {row.dtype.name} values "
                              + ("(complex numbers are not observations)"
                                 if row.dtype.kind == "c" else "(numbers expected)"), t)
                rows.append(row.astype(np.float64, copy=False))
                if rows[-1].ndim != 1 or rows[-1].shape != rows[0].shape:
                    raise bad(f"encoder returned shape {rows[-1].shape}, expected "
                               f"{rows[0].shape}", t)
            out["obs"] = np.stack(rows)
        else:
            out["states"] = states
    else:
        obs = step_column(steps, "obs", required=False)
        if obs is None:
            if isinstance(steps[0], dict) and "state" in steps[0]:
                raise bad(NO_OBS_HINT, 0)
            raise bad("step has no 'obs'", 0)
        width = len(obs[0]) if isinstance(obs[0], list) else -1
        for t, row in enumerate(obs):
            if not isinstance(row, list) or len(row) != width:
                raise bad(f"obs must be a list of {max(width, 0)} numbers on every step", t)
        out["obs"] = obs
    return out



# -- tasks ------------------------------------------------------------------------------------

def make_tasks(files):
    """(path, start, end) byte ranges: whole .json files; .jsonl cut after a newline."""
    tasks = []
    for p in files:
        size = p.stat().st_size
        if p.suffix != ".jsonl" or size <= TASK_BYTES:
            tasks.append((str(p), 0, size))
            continue
        with open(p, "rb") as f:
            start = 0
            while start < size:
                end = min(size, start + TASK_BYTES)
                if end < size:
                    f.seek(end)
                    rest = f.readline()
                    end += len(rest)
                tasks.append((str(p), start, end))
                start = end
    return tasks



def read_range(path, start, end):
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)



def iter_task_episodes(path, start, end, known=None):
    """Yield (episode number in file or None, parsed object or exception) for one task.
    For .jsonl ranges the number is relative to the range (line within the range). known:
    {episode number: object already parsed} (the episode the layout was taken from), not
    parsed again."""
    if known:
        if not path.endswith(".jsonl"):
            yield 0, known[0]
            return
        last = max(known)
    data = read_range(path, start, end)
    if not path.endswith(".jsonl"):
        try:
            yield 0, loads(data)
        except (ValueError, RecursionError) as exc:
            yield 0, bad(f"not valid JSON ({exc})")
        return
    for i, line in enumerate(data.split(b"\n")):
        if known and i <= last and i in known:
            yield i, known[i]
            continue
        if not line or line.isspace():
            continue
        try:
            yield i, loads(line)
        except (ValueError, RecursionError) as exc:
            yield i, bad(f"not valid JSON ({str(exc)[:200]})")


def iter_task_raw(path, start, end):
    """Yield (episode number in file or range, data, start, stop) for one task: the episode's
    bytes are ``data[start:stop]``, the whole file for .json, each non-blank line for .jsonl
    (numbers as in :func:`iter_task_episodes`); no copy of the lines is made."""
    data = read_range(path, start, end)
    if not path.endswith(".jsonl"):
        yield 0, data, 0, len(data)
        return
    pos, i, n = 0, 0, len(data)
    find = data.find
    while pos < n:
        stop = find(b"\n", pos)
        if stop < 0:
            stop = n
        if not _blank(data, pos, stop):
            yield i, data, pos, stop
        pos = stop + 1
        i += 1


_WS = frozenset(b" \t\r\x0b\x0c")


def _blank(data: bytes, start: int, stop: int) -> bool:
    """``not data[start:stop].strip()`` without copying the line (only whitespace is copied)."""
    if start == stop:
        return True
    if data[start] not in _WS and data[stop - 1] not in _WS:
        return False
    return not data[start:stop].strip()


def parse_raw(path, raw):
    """One episode's bytes (from :func:`iter_task_raw`) parsed, or the EpisodeError saying why
    they are not valid JSON (as :func:`iter_task_episodes` yields them)."""
    try:
        return loads(raw)
    except (ValueError, RecursionError) as exc:
        if path.endswith(".jsonl"):
            return bad(f"not valid JSON ({str(exc)[:200]})")
        return bad(f"not valid JSON ({exc})")


def locate_step(kw: dict, exc: EpisodeError) -> EpisodeError:
    """``exc`` (from ``Stager.prepare``) naming the step when it says only that ``obs`` or
    ``mask`` holds something other than numbers: the first step whose row does."""
    if exc.step is not None:
        return exc
    for key in ("obs", "mask"):
        rows = kw.get(key)
        if rows is None or isinstance(rows, np.ndarray) or not exc.reason.startswith(key):
            continue
        for t, row in enumerate(rows):
            if not isinstance(row, list):
                return EpisodeError(exc.reason, episode=exc.episode, step=t, source=exc.source)
            for v in row:
                if type(v) is not int and type(v) is not float and type(v) is not bool:
                    return EpisodeError(f"{key} holds {short(v)}, not a number",
                                        episode=exc.episode, step=t, source=exc.source)
    return exc



class LineCounter:
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


