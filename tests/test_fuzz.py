"""Hostile input (issue 7): garbage episode files for ``export``, damaged batches for the readers,
random arrays for ``BatchWriter.add_episode``. Every outcome is either a correct result, checked
against an independent oracle, or a fastrl error of the documented kind -- never another
exception, a warning, a crash, a hang or a huge allocation.

Hypothesis profiles: ``fastrl-fuzz`` (default, the module runs in well under 30 s) and
``fastrl-fuzz-full`` (``FASTRL_FULL=1``: many more examples). They are applied per test, so other
modules' Hypothesis settings are left alone. The bugs these fuzzers found are pinned by
regression tests at the end.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastrl
from fastrl import _kernels as _backend
from fastrl import _format as F
from fastrl.errors import BatchFormatError, EpisodeError, FastrlError
from fastrl.export.parse import loads as export_loads
from fastrl.export import export_episodes

FULL = os.environ.get("FASTRL_FULL", "").strip().lower() in ("1", "true", "yes", "on")

settings.register_profile("fastrl-fuzz", max_examples=40, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])
settings.register_profile("fastrl-fuzz-full", parent=settings.get_profile("fastrl-fuzz"),
                          max_examples=1500)
PROFILE = settings.get_profile("fastrl-fuzz-full" if FULL else "fastrl-fuzz")


def fuzz(quick: int, full: int | None = None):
    """Settings of this module's profile with a per-test example count."""
    return settings(PROFILE, max_examples=(full or PROFILE.max_examples) if FULL else quick)


_FAST_WRITE = {"fsync": False} if "fsync" in inspect.signature(fastrl.BatchWriter).parameters \
    else {}

# ------------------------------------------------------------------------------------------------
# JSON garbage
# ------------------------------------------------------------------------------------------------

STEP_KEYS = ["obs", "action", "reward", "mask", "legal", "done", "value", "logprob", "state",
             "truncated", "steps"]
SPECIAL_NUMBERS = [0, 1, -1, 2, 3.0, 3.5, -0.0, 2 ** 31 - 1, 2 ** 31, -2 ** 31 - 1, 2 ** 53 + 1,
                   2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30, 1e38, 3.5e38, 1e300, -1e300,
                   float("nan"), float("inf"), float("-inf"), 5e-324, True, False]
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                         st.sampled_from(SPECIAL_NUMBERS),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6))
json_garbage = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(
        st.sampled_from(STEP_KEYS) | st.text(max_size=4), c, max_size=4),
    max_leaves=12)
finite = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False) | st.integers(-1000, 1000)


@st.composite
def good_episode(draw, D, A, form, extras):
    T = draw(st.integers(1, 5))
    steps = []
    for _ in range(T):
        legal = draw(st.lists(st.integers(0, A - 1), min_size=1, max_size=A, unique=True))
        s = {"obs": draw(st.lists(finite, min_size=D, max_size=D)),
             "action": draw(st.sampled_from(legal)), "reward": draw(finite)}
        if form == "mask":
            s["mask"] = [int(i in legal) for i in range(A)]
        else:
            s["legal"] = legal
        if extras:
            s["value"] = draw(finite)
            s["logprob"] = draw(finite)
        steps.append(s)
    if draw(st.booleans()):
        steps[-1]["done"] = True
    if draw(st.booleans()):
        return {"steps": steps, "truncated": draw(st.booleans())}
    return steps


@st.composite
def mutated_episode(draw, D, A, form, extras):
    """A valid episode, then 0-3 structural mutations aimed at every check in export."""
    ep = draw(good_episode(D, A, form, extras))
    steps = ep["steps"] if isinstance(ep, dict) else ep
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["set", "special", "del", "whole", "steps", "truncated",
                                     "done", "width", "nested"]))
        t = draw(st.integers(0, len(steps) - 1))
        key = draw(st.sampled_from(STEP_KEYS))
        if kind == "set":
            steps[t][key] = draw(json_garbage)
        elif kind == "special":
            target = draw(st.sampled_from(["action", "reward", "obs", "legal", "mask", "value"]))
            v = draw(st.sampled_from(SPECIAL_NUMBERS))
            if target in ("obs", "legal", "mask") and isinstance(steps[t].get(target), list) \
                    and steps[t][target]:
                row = steps[t][target]
                row[draw(st.integers(0, len(row) - 1))] = v
            else:
                steps[t][target] = v
        elif kind == "del":
            steps[t].pop(key, None)
        elif kind == "whole":
            return draw(json_garbage)
        elif kind == "steps" and isinstance(ep, dict):
            ep["steps"] = draw(json_garbage)
            return ep
        elif kind == "truncated" and isinstance(ep, dict):
            ep["truncated"] = draw(json_garbage)
        elif kind == "done":
            steps[t]["done"] = True
        elif kind == "width":
            target = draw(st.sampled_from(["obs", "mask", "legal"]))
            if isinstance(steps[t].get(target), list):
                steps[t][target] = steps[t][target][:-1] if draw(st.booleans()) \
                    else steps[t][target] + [0]
        elif kind == "nested":  # around the parsers' depth limits (orjson: 1024)
            depth = draw(st.sampled_from([2, 20, 200, 990, 1020]))
            steps[t][draw(st.sampled_from(["obs", "reward", "legal", "action"]))] = \
                json.loads("[" * depth + "1" + "]" * depth)
    return ep


@st.composite
def episode_dir(draw):
    """(files: name -> bytes, n_actions to pass or None, on_error)."""
    D, A = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    form = draw(st.sampled_from(["legal", "mask"]))
    extras = draw(st.booleans())
    files = {}
    for i in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            name = f"f{i}.json"
            data = json.dumps(draw(mutated_episode(D, A, form, extras))).encode()
        else:
            name = f"f{i}.jsonl"
            lines = [json.dumps(draw(mutated_episode(D, A, form, extras)))
                     for _ in range(draw(st.integers(1, 3)))]
            if draw(st.booleans()):
                lines.insert(draw(st.integers(0, len(lines))), "")
            data = "\n".join(lines).encode()
        byte_op = draw(st.sampled_from(["none"] * 6 + ["truncate", "flip", "insert", "empty",
                                                        "deep", "bignum", "utf8", "append"]))
        if byte_op == "truncate" and data:
            data = data[:draw(st.integers(0, len(data) - 1))]
        elif byte_op == "flip" and data:
            k = draw(st.integers(0, len(data) - 1))
            data = data[:k] + bytes([data[k] ^ draw(st.integers(1, 255))]) + data[k + 1:]
        elif byte_op == "insert":
            k = draw(st.integers(0, len(data)))
            data = data[:k] + draw(st.binary(min_size=1, max_size=8)) + data[k:]
        elif byte_op == "empty":
            data = b""
        elif byte_op == "deep":  # at and past the parsers' depth limits
            n = draw(st.sampled_from([1000, 1023, 5000]))
            data = b"[" * n + b"]" * n
        elif byte_op == "bignum":
            data = b'[{"obs":[' + b"9" * 5000 + b'],"action":0,"reward":0,"legal":[0]}]'
        elif byte_op == "utf8":
            data = b'[{"obs":[1],"action":0,"reward":0,"legal":[0],"x":"\xff\xfe"}]'
        elif byte_op == "append":
            data = data + b"\n" + draw(st.binary(min_size=1, max_size=12))
        files[name] = data
    n_actions = A if draw(st.integers(0, 4)) else None
    return files, n_actions, draw(st.sampled_from(["fail", "skip"]))


def _source_episodes(d: Path, files: dict):
    """(file path, episode number, parsed object) in export order, parsed as export parses."""
    out = []
    for name in sorted(files):
        path = str(d / name)
        data = files[name]
        chunks = [(0, data)] if name.endswith(".json") else \
            [(i, line) for i, line in enumerate(data.split(b"\n")) if line.strip()]
        for i, chunk in chunks:
            try:
                out.append((path, i, export_loads(chunk)))
            except (ValueError, RecursionError):
                out.append((path, i, None))  # export must have skipped (or failed on) it
    return out


def _expected_columns(objs, mask_dim):
    obs, act, rew, masks, dones, trunc, vals = [], [], [], [], [], [], []
    for obj in objs:
        steps = obj["steps"] if isinstance(obj, dict) else obj
        T = len(steps)
        obs.append(np.asarray([s["obs"] for s in steps], np.float64).astype(np.float32))
        act.append(np.asarray([s["action"] for s in steps]).astype(np.int64).astype(np.int32))
        rew.append(np.asarray([s["reward"] for s in steps], np.float64).astype(np.float32))
        m = np.zeros((T, mask_dim), np.uint8)
        if any("mask" in s for s in steps):
            mm = np.asarray([s["mask"] for s in steps], np.float64).astype(np.uint8)
            m[:, :mm.shape[1]] = mm
        else:
            for t, s in enumerate(steps):
                m[t, np.asarray(s["legal"], np.float64).astype(np.int64)] = 1
        masks.append(m)
        d = np.zeros(T, np.uint8)
        d[-1] = 1
        dones.append(d)
        tr = np.zeros(T, np.uint8)
        tr[-1] = (isinstance(obj, dict) and obj.get("truncated") is True) \
            or steps[-1].get("truncated") is True
        trunc.append(tr)
        if "value" in steps[0]:
            vals.append(np.asarray([s["value"] for s in steps], np.float64).astype(np.float32))
    cols = {"obs": obs, "actions": act, "rewards": rew, "masks": masks, "dones": dones,
            "truncated": trunc}
    if vals and len(vals) == len(objs):
        cols["values"] = vals
    return {k: np.concatenate(v) for k, v in cols.items()}


# Errors about the whole input rather than one file may name neither.
DATASET_LEVEL_MESSAGES = ("cannot infer numActions",)


@fuzz(50, 1500)
@given(episode_dir())
def test_fuzz_export_garbage(case):
    files, n_actions, on_error = case
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "episodes"
        d.mkdir()
        for name, data in files.items():
            (d / name).write_bytes(data)
        out = Path(tmp) / "out"
        try:
            res = export_episodes(d, out, n_actions=n_actions, on_error=on_error,
                                  progress=False)
        except FastrlError as exc:
            msg = str(exc)
            note(msg)
            event(f"export error: {msg.split(': ')[-1][:30]}")
            named = any(str(d / n) in msg for n in files) or str(d) in msg \
                or any(m in msg for m in DATASET_LEVEL_MESSAGES)
            assert named, f"error names no file: {msg}"
            if isinstance(exc, EpisodeError):
                assert exc.source is not None and Path(exc.source).parent == d
            left = os.listdir(out) if out.exists() else []
            assert not [n for n in left if n.startswith((F.BATCH_PREFIX, F.TMP_PREFIX))], left
            return
        # success: a valid batch holding exactly the episodes that were not skipped
        event(f"export ok ({'with' if res.skipped else 'no'} skips)")
        assert fastrl.validate(res.path) == []
        b = fastrl.load_batch(res.path, verify=True)
        skipped = {(s["file"], s["episode"]) for s in res.skipped}
        if on_error == "fail":
            assert not skipped
        src = _source_episodes(d, files)
        kept = [obj for path, i, obj in src if (path, i) not in skipped]
        assert len(kept) + len(skipped) == len(src) and b.num_episodes == len(kept)
        want = _expected_columns(kept, b.mask_dim)
        for name, arr in want.items():
            got = getattr(b, name)
            assert got is not None and np.array_equal(np.asarray(got), arr), name
        assert b.n_actions == (n_actions if n_actions is not None else b.n_actions)


# ------------------------------------------------------------------------------------------------
# damaged batches for load_batch / validate / open_dataset / info
# ------------------------------------------------------------------------------------------------

def _write_batch(root, kind):
    rng = np.random.default_rng(5)
    kw = dict(n_actions=5, mask_pad=8, **_FAST_WRITE)
    if kind == "sharded":
        kw["shard_bytes"] = 300
    elif kind == "compressed":
        kw["compression"] = {"obs": "gzip", "actions": "gzip", "rewards": "gzip",
                             "masks": "packbits", "dones": "gzip", "values": "gzip",
                             "truncated": "gzip", "episode_index": "gzip"}
    with fastrl.BatchWriter(root, **kw) as w:
        for e in range(6):
            T = int(rng.integers(2, 9))
            acts = rng.integers(0, 5, T)
            mask = rng.random((T, 5)) < 0.5
            mask[np.arange(T), acts] = True
            w.add_episode(obs=rng.standard_normal((T, 3)), actions=acts,
                          rewards=rng.standard_normal(T), mask=mask,
                          values=rng.standard_normal(T), truncated=bool(e % 2))
    return w.path


def _all_columns(ds_or_batch):
    parts = ds_or_batch.parts if isinstance(ds_or_batch, fastrl.Dataset) else [ds_or_batch]
    out = {}
    for name in ("obs", "actions", "rewards", "masks", "dones", "values", "truncated"):
        cols = [getattr(b, name) for b in parts]
        if all(c is not None for c in cols) and cols:
            out[name] = np.concatenate([np.asarray(c) for c in cols])
    if parts:
        starts = [np.asarray(parts[0].episode_starts)]
        for b in parts[1:]:
            starts.append(np.asarray(b.episode_starts[1:]) + starts[-1][-1])
        out["episode_starts"] = np.concatenate(starts)
    return out


class _Pristine(dict):
    def __repr__(self):  # keep Hypothesis' falsifying-example report short
        return "<pristine batches>"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("pristine")
    out = _Pristine()
    for kind in ("plain", "sharded", "compressed"):
        p = _write_batch(base / kind, kind)
        assert fastrl.validate(p) == []
        out[kind] = (p, _all_columns(fastrl.open_dataset(p)))
    assert len(fastrl.reader.read_meta(out["sharded"][0])["shards"]) >= 3
    return out


META_KEYS = ["count", "steps", "episodes", "obsDim", "maskDim", "numActions", "createdAt",
             "format", "formatVersion", "byteOrder", "columns", "checksums", "codecs", "sharded",
             "shards", "episodeLength", "user", "shard"]
LIMIT_NUMBERS = [0, 1, -1, 2, 7, 2 ** 24, 2 ** 24 + 1, 2 ** 31, 2 ** 40, 2 ** 40 + 1, 2 ** 62,
                 2 ** 63, 2 ** 64, 1.0, 1e300, True, None, "5"]

mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(META_KEYS),
              st.sampled_from(LIMIT_NUMBERS) | json_garbage),
    st.tuples(st.just("bump"), st.sampled_from(["count", "obsDim", "maskDim", "episodes",
                                                "numActions"]), st.integers(-3, 3)),
    st.tuples(st.just("zero"), st.none(), st.none()),
    st.tuples(st.just("del"), st.sampled_from(META_KEYS), st.none()),
    st.tuples(st.just("columns"), st.sampled_from(["drop", "garbage", "empty"]),
              st.integers(0, 20)),
    st.tuples(st.just("raw"), st.sampled_from(["truncate", "garbage", "empty", "utf8", "deep",
                                               "list", "nan"]), st.integers(0, 10 ** 6)),
    st.tuples(st.just("file"), st.sampled_from(["truncate", "extend", "delete", "flip", "dir",
                                                "empty"]),
              st.tuples(st.integers(0, 10 ** 6), st.integers(0, 10 ** 6))),
    st.tuples(st.just("shards"), st.sampled_from(["drop", "dup", "swap", "badpath", "escape",
                                                  "nonlist", "entry", "count"]),
              st.integers(0, 10)),
)

def _meta_targets(root: Path) -> list[Path]:
    return sorted(root.rglob("meta.json"))


def _apply(root: Path, mut, flags: dict) -> None:
    kind, a, b = mut
    metas = _meta_targets(root)
    mpath = metas[(b if isinstance(b, int) else 0) % len(metas)] if metas else None
    if kind in ("set", "bump", "zero", "del", "columns", "shards"):
        if mpath is None:
            return
        try:
            meta = json.loads(mpath.read_bytes())
        except (ValueError, RecursionError):
            return
        if not isinstance(meta, dict):
            return
        if kind == "set":
            meta[a] = b
            flags["meta_keys"].add(a)
        elif kind == "bump":
            v = meta.get(a)
            if isinstance(v, int) and not isinstance(v, bool):
                meta[a] = v + b
                if a == "count":
                    meta["steps"] = v + b
            flags["meta_keys"].add(a)
        elif kind == "zero":
            meta.update(count=0, steps=0, episodes=0)
            flags["meta_keys"].update(("count", "steps", "episodes"))
        elif kind == "del":
            meta.pop(a, None)
            flags["meta_keys"].add(a)
        elif kind == "columns":
            cols = meta.get("columns")
            if a == "drop" and isinstance(cols, dict) and cols:
                cols.pop(sorted(cols)[b % len(cols)])
            elif a == "garbage":
                meta["columns"] = {"obs": b, "nonsense": [b]}
            else:
                meta["columns"] = {}
            flags["meta_keys"].add("columns")
        elif kind == "shards":
            sh = meta.get("shards")
            flags["meta_keys"].add("shards")
            if not isinstance(sh, list) or not sh:
                if a == "nonlist":
                    meta["shards"] = b
                else:
                    return
            elif a == "drop":
                sh.pop(b % len(sh))
            elif a == "dup":
                sh.insert(b % len(sh), copy.deepcopy(sh[b % len(sh)]))
            elif a == "swap" and len(sh) > 1:
                i = b % (len(sh) - 1)
                sh[i], sh[i + 1] = sh[i + 1], sh[i]
            elif a == "badpath" and isinstance(sh[b % len(sh)], dict):
                sh[b % len(sh)]["path"] = "shard_99999"
            elif a == "escape" and isinstance(sh[b % len(sh)], dict):
                sh[b % len(sh)]["path"] = ["../x", "/etc", "", ".", "shard_00000/..", 5][b % 6]
            elif a == "nonlist":
                meta["shards"] = b
            elif a == "entry":
                sh[b % len(sh)] = [None, 5, "shard_00000", {}][b % 4]
            elif a == "count" and isinstance(sh[b % len(sh)], dict):
                sh[b % len(sh)]["count"] = b
        mpath.write_text(json.dumps(meta))
        return
    if kind == "raw":
        if mpath is None:
            return
        data = mpath.read_bytes()
        flags["meta_keys"].add("*raw*")
        new = {"truncate": data[:b % max(1, len(data))], "garbage": b"\x00garbage{",
               "empty": b"", "utf8": b'{"count": "\xff"}', "deep": b"[" * 100_000,
               "list": b"[1, 2, 3]", "nan": data.replace(b'"count": ', b'"count": NaN, "x": ')}
        mpath.write_bytes(new[a])
        return
    # column files (any folder)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "meta.json"
                   and not p.name.startswith("."))
    if not files:
        return
    i, n = b
    f = files[i % len(files)]
    size = f.stat().st_size
    flags["files"].add(f.name)
    if a == "truncate":
        os.truncate(f, n % max(1, size))
    elif a == "extend":
        with open(f, "ab") as fh:
            fh.write(bytes([n % 256]) * (1 + n % 9))
    elif a == "delete":
        f.unlink()
    elif a == "empty":
        os.truncate(f, 0)
    elif a == "dir":
        f.unlink()
        f.mkdir()
    elif a == "flip" and size:
        with open(f, "r+b") as fh:
            fh.seek(n % size)
            byte = fh.read(1)[0]
            fh.seek(n % size)
            fh.write(bytes([byte ^ (1 + n % 255)]))


def _content_changed(src: Path, root: Path) -> bool:
    """Some column file kept its name and size but not its bytes (only checksums can tell)."""
    for p in src.rglob("*"):
        q = root / p.relative_to(src)
        if p.is_file() and p.name != "meta.json" and q.is_file() \
                and p.stat().st_size == q.stat().st_size and p.read_bytes() != q.read_bytes():
            return True
    return False


def _call(fn, *args, **kw):
    try:
        return "ok", fn(*args, **kw)
    except FastrlError as exc:
        return "err", exc
    except TypeError as exc:
        return "typeerror", exc


@fuzz(70, 2500)
@given(kind=st.sampled_from(["plain", "sharded", "compressed"]),
       muts=st.lists(mutation, min_size=1, max_size=3))
def test_fuzz_damaged_batch(pristine, kind, muts):
    src, want = pristine[kind]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / src.name
        shutil.copytree(src, root)
        flags = {"meta_keys": set(), "files": set(), "content": False}
        for m in muts:
            _apply(root, m, flags)
        flags["content"] = _content_changed(src, root)
        note(f"flags: {flags}")
        # allocations are traced (slow) when a size field was touched: none may be huge
        track = bool(flags["meta_keys"] & {"count", "steps", "episodes", "obsDim", "maskDim"})
        if track:
            tracemalloc.start()
        peak = 0
        try:
            res = {
                "load_verify": _call(fastrl.load_batch, root, verify=True),
                "load": _call(fastrl.load_batch, root),
                "open_dataset": _call(fastrl.open_dataset, root),
                "info": _call(fastrl.info, root),
            }
            probs = fastrl.validate(root)  # must never raise
            quick = fastrl.validate(root, check_data=False)
            if track:
                _, peak = tracemalloc.get_traced_memory()
        finally:
            if track:
                tracemalloc.stop()
        note(f"validate: {probs}")
        event(f"{kind}: validate {'ok' if not probs else 'problems'}, load "
              f"{res['load'][0]}, open_dataset {res['open_dataset'][0]}")
        note({k: (v[0], str(v[1])[:300] if v[0] != "ok" else "") for k, v in res.items()})
        assert peak < 48 << 20, f"{peak} bytes allocated while reading a tiny damaged batch"
        assert isinstance(probs, list) and all(isinstance(p, str) and p for p in probs)
        if probs == []:
            assert quick == [], quick

        for name, (status, val) in res.items():
            assert status != "typeerror", f"{name}: TypeError {val}"
        checksums_intact = not (flags["meta_keys"] & {"checksums", "codecs", "*raw*"})
        undetectable = flags["content"] and not checksums_intact

        def same_as_pristine(obj, name):
            got = _all_columns(obj)
            assert set(got) >= {"obs", "actions", "rewards", "masks", "dones",
                                "episode_starts"}, name
            for col, arr in got.items():
                assert np.array_equal(arr, want[col]), f"{name}: column {col} differs"

        # whatever opened without verification has the right shapes; verified opens the data
        for name in ("load", "open_dataset"):
            status, val = res[name]
            if status == "ok" and not flags["content"]:
                same_as_pristine(val, name)
        if res["load_verify"][0] == "ok" and not undetectable:
            same_as_pristine(res["load_verify"][1], "load_verify")
        if flags["content"] and checksums_intact:
            assert probs != [], "validate missed a changed byte under intact checksums"
            assert res["load_verify"][0] != "ok"
        if probs == [] and not undetectable:
            status, val = res["open_dataset"]
            assert status == "ok", f"validate passed but open_dataset failed: {val}"
            same_as_pristine(val, "open_dataset (validated)")
            if kind != "sharded":
                assert res["load_verify"][0] == "ok", res["load_verify"][1]
            assert res["info"][0] == "ok", res["info"][1]
            assert res["info"][1]["transitions"] == len(want["actions"])


# ------------------------------------------------------------------------------------------------
# random arrays for BatchWriter.add_episode, on both kernel paths
# ------------------------------------------------------------------------------------------------

# dtypes a caller might hand in
OBS_DTYPES = ["f2", "f4", "f8", "g", "i1", "i8", "u8", "b1", "c8", "c16", "O", "U3", "S2",
              "M8[s]"]
INT_DTYPES = ["f2", "f4", "f8", "i1", "i4", "i8", "u1", "u8", "b1", "c8", "O", "U3", "M8[s]"]
FLOAT_DTYPES = ["f2", "f4", "f8", "i8", "u8", "b1", "c16", "O", "U3", "S2"]


def _elements(dtype):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return st.floats(width=min(64, dt.itemsize * 8) if dt.itemsize <= 8 else 64,
                         allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, 2.0])
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return st.integers(int(info.min), int(info.max)) | st.sampled_from(
            [int(info.min), int(info.max), 0, 1])
    if dt.kind == "b":
        return st.booleans()
    if dt.kind == "c":
        return st.complex_numbers(allow_nan=True, allow_infinity=True, width=dt.itemsize * 8)
    if dt.kind == "O":
        return st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=2),
                         st.floats(allow_nan=True))
    if dt.kind == "U":  # numpy strips trailing NULs, which hypothesis refuses to round-trip
        return st.text(st.characters(exclude_characters="\x00"), max_size=3)
    if dt.kind == "S":
        return st.binary(max_size=2).filter(lambda b: not b.endswith(b"\x00"))
    return None  # datetime: hypothesis' default


@st.composite
def array_like(draw, dtypes, shape):
    dtype = draw(st.sampled_from(dtypes))
    arr = draw(hnp.arrays(np.dtype(dtype), shape, elements=_elements(dtype)))
    return arr.tolist() if draw(st.integers(0, 4)) == 0 and arr.dtype.kind not in "MS" else arr


@st.composite
def add_episode_args(draw):
    T, D, A = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    actions = rng.integers(0, A, T)
    mask = rng.random((T, A)) < 0.5
    mask[np.arange(T), actions] = True
    ep = {"obs": rng.standard_normal((T, D)), "actions": actions, "rewards": rng.standard_normal(T),
          "values": rng.standard_normal(T)}
    form = draw(st.sampled_from(["mask", "legal"]))
    if form == "mask":
        ep["mask"] = mask
    else:
        ep["legal"] = [np.flatnonzero(r).tolist() for r in mask]
    if draw(st.booleans()):  # an extreme value in an otherwise valid column
        col = draw(st.sampled_from(["actions", "rewards", "obs", "values"]))
        arr = ep[col]
        idx = tuple(draw(st.integers(0, n - 1)) for n in arr.shape)
        arr[idx] = draw(st.sampled_from(
            [np.iinfo(np.int64).min, np.iinfo(np.int64).max, -1, A, 2 ** 31]
            if col == "actions" else [np.nan, np.inf, -np.inf, 1e39, -1e300, 3.4e38]))
    good_shape = st.sampled_from(["good", "good", "any"])
    any_shape = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    for name in draw(st.lists(st.sampled_from(["obs", "actions", "rewards", "values", "mask",
                                               "legal", "scalar-values"]),
                              max_size=3, unique=True)):
        shaped = draw(good_shape) == "good"
        if name == "obs":
            ep["obs"] = draw(array_like(OBS_DTYPES, (T, D) if shaped else draw(any_shape)))
        elif name in ("actions",):
            ep[name] = draw(array_like(INT_DTYPES, (T,) if shaped else draw(any_shape)))
        elif name in ("rewards", "values"):
            ep[name] = draw(array_like(FLOAT_DTYPES, (T,) if shaped else draw(any_shape)))
        elif name == "mask" and "mask" in ep:
            ep["mask"] = draw(array_like(["b1", "u1", "i8", "f8", "O", "U3", "c8"],
                                         (T, A) if shaped else draw(any_shape)))
        elif name == "legal" and "legal" in ep:
            t = draw(st.integers(0, T - 1))
            ep["legal"][t] = draw(st.one_of(
                st.lists(st.integers(-2 ** 63, 2 ** 63 - 1) | st.sampled_from(
                    [-1, A, 2 ** 31, -2 ** 63, 2 ** 63 - 1]), max_size=4),
                st.lists(st.floats(allow_nan=True) | st.text(max_size=2), max_size=3),
                array_like(["i8", "u8", "f2", "f8", "O", "b1", "c8"], draw(any_shape)),
                json_scalars))
        elif name == "scalar-values":
            ep["values"] = draw(json_scalars)
    if draw(st.booleans()):
        ep["truncated"] = draw(st.booleans())
    return ep, D, A, draw(st.booleans())


def _outcome(ep, D, A, give_dims, backend):
    with _backend.use(backend), tempfile.TemporaryDirectory() as tmp:
        w = fastrl.BatchWriter(tmp, n_actions=A, obs_dim=D if give_dims else None, **_FAST_WRITE)
        try:
            w.add_episode(**copy.deepcopy(ep))
        except (EpisodeError, ValueError, TypeError) as exc:
            w.abort()
            return "error", type(exc), str(exc)
        path = w.close()
        b = fastrl.load_batch(path, verify=True)
        return "ok", {k: np.asarray(v).copy() for k, v in b.columns.items()}, fastrl.validate(path)


@fuzz(100, 3000)
@given(add_episode_args())
def test_fuzz_add_episode_arrays(args):
    ep, D, A, give_dims = args
    outs = {b: _outcome(ep, D, A, give_dims, b) for b in _backend.available()}
    first = next(iter(outs.values()))
    note(f"outcome: {first[0]} {first[2] if first[0] == 'error' else ''}")
    event(first[0] if first[0] == "ok" else f"{first[1].__name__}: {first[2].split(':')[-1][:40]}")
    for b, o in outs.items():  # both kernel paths: the same type and message, or the same bytes
        assert o[0] == first[0], (b, o, first)
        if o[0] == "error":
            assert (o[1], o[2]) == (first[1], first[2]), b
        else:
            assert o[1].keys() == first[1].keys()
            for k in o[1]:
                assert np.array_equal(o[1][k], first[1][k], equal_nan=False), (b, k)
    if first[0] == "error":
        msg = first[2]
        assert msg and len(msg) < 2000
        if first[1] is EpisodeError:
            assert msg.startswith("episode 0"), msg
        return
    cols, probs = first[1], first[2]
    assert probs == [], probs  # whatever was accepted is a sound batch...
    # ... holding exactly what was given (no silent conversion beyond float32 rounding)
    obs = np.asarray(ep["obs"])
    assert obs.dtype.kind in "fiub", f"obs of dtype {obs.dtype} was accepted"
    assert np.array_equal(cols["obs"], obs.astype(np.float64).astype(np.float32))
    acts = np.asarray(ep["actions"])
    assert np.array_equal(cols["actions"].astype(np.int64), acts.astype(np.int64))
    assert np.array_equal(cols["rewards"],
                          np.asarray(ep["rewards"]).astype(np.float64).astype(np.float32))
    T = len(cols["actions"])
    m = np.zeros((T, A), np.uint8)
    if "mask" in ep:
        m = np.asarray(ep["mask"]).astype(np.float64).astype(np.uint8)
    else:
        for t, ids in enumerate(ep["legal"]):
            m[t, np.asarray(ids, np.int64)] = 1
    assert np.array_equal(cols["masks"], m)


# ------------------------------------------------------------------------------------------------
# bugs found by the fuzzers and the hardening review (fixed in b653d26): regression tests
# ------------------------------------------------------------------------------------------------

def test_complex_obs_refused(tmp_path):
    """Regression: complex obs were cast to float (imaginary part dropped, only a warning)."""
    import warnings
    w = fastrl.BatchWriter(tmp_path, n_actions=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with pytest.raises(EpisodeError, match="obs"):
                w.add_episode(obs=np.array([[1 + 2j, 3 - 1j]]), actions=[0], rewards=[0.0],
                              legal=[[0]])
        finally:
            w.abort()


@pytest.mark.parametrize("col", ["actions", "legal"])
def test_float16_ids_no_warning(tmp_path, col):
    """Regression: float16 ids raised a RuntimeWarning (overflow in the 2**62 range check)."""
    ep = {"obs": np.zeros((2, 1)), "actions": np.array([0, 1]), "rewards": [0.0, 0.0],
          "legal": [[0, 1], [1]]}
    if col == "actions":
        ep["actions"] = ep["actions"].astype(np.float16)
    else:
        ep["legal"] = [np.array(ids, np.float16) for ids in ep["legal"]]
    with fastrl.BatchWriter(tmp_path, n_actions=2, **_FAST_WRITE) as w:
        w.add_episode(**ep)  # filterwarnings=error turns the stray warning into a failure
    assert fastrl.validate(w.path) == []


def test_deeply_nested_value_gives_episode_error(tmp_path):
    """Regression: a value nested ~1000 deep (orjson parses up to 1024 levels) crashed the error
    message's json.dumps with RecursionError."""
    d = tmp_path / "ep"
    d.mkdir()
    deep = b"[" * 1000 + b"]" * 1000
    (d / "a.json").write_bytes(b'[{"obs":[1.0],"action":0,"reward":' + deep + b',"legal":[0]}]')
    with pytest.raises(EpisodeError, match="a.json"):
        export_episodes(d, tmp_path / "out", n_actions=2, progress=False)


@pytest.mark.parametrize("step", [
    {"obs": [], "action": 0, "reward": 0, "legal": [0]},
    {"obs": [1.0], "action": 0, "reward": 0, "mask": []},
    {"obs": [[1]], "action": 0, "reward": 0, "legal": [0]}])
def test_empty_first_obs_row_names_file(tmp_path, step):
    """Regression: an empty obs row / mask in the first episode gave "obsDim=0 ... out of
    range" naming no file; a nested obs row gave numpy's ValueError (found by the fuzzer)."""
    d = tmp_path / "ep"
    d.mkdir()
    (d / "a.json").write_text(json.dumps([step, {"obs": [0.0], "action": 0, "reward": 0,
                                                 "legal": [0]}]))
    with pytest.raises(FastrlError, match="a.json"):
        export_episodes(d, tmp_path / "out", n_actions=2, progress=False)


@pytest.mark.parametrize("shards", [5, None, 1.5])
def test_load_batch_shards_not_a_list(pristine, tmp_path, shards):
    """Regression: sharded=true with a non-list 'shards' raised TypeError."""
    p = tmp_path / "b"
    shutil.copytree(pristine["plain"][0], p)
    meta = json.loads((p / "meta.json").read_text())
    meta.update(sharded=True, shards=shards)
    (p / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BatchFormatError):
        fastrl.load_batch(p)


def test_packbits_mask_width_checked(pristine, tmp_path):
    """Regression: a packbits mask column decoded with any maskDim of the same packed width."""
    p = tmp_path / "b"
    shutil.copytree(pristine["compressed"][0], p)
    meta = json.loads((p / "meta.json").read_text())
    assert meta["codecs"]["masks"]["codec"] == "packbits" and meta["maskDim"] == 8
    meta["maskDim"] = 7
    (p / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BatchFormatError):
        fastrl.load_batch(p)


@pytest.mark.parametrize("shards", [[{}], [{"path": 5}], [{"path": None}, {"path": "shard_1"}]])
def test_load_batch_sharded_entry_path_not_a_string(pristine, tmp_path, shards):
    """Regression (found by the long fuzz run): a shard entry without a string path made
    load_batch's message compute Path / None (TypeError)."""
    p = tmp_path / "b"
    shutil.copytree(pristine["plain"][0], p)
    meta = json.loads((p / "meta.json").read_text())
    meta.update(sharded=True, shards=shards)
    (p / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BatchFormatError, match="sharded"):
        fastrl.load_batch(p)


@pytest.mark.parametrize("record", [1, None, "delete", {"index": 1, "firstRow": 999,
                                                        "firstEpisode": 1}])
def test_validate_checks_shard_record(pristine, tmp_path, record):
    """Regression (found by the long fuzz run): validate() passed a shard whose own "shard"
    record was wrong or missing, which open_dataset() refuses."""
    p = tmp_path / "b"
    shutil.copytree(pristine["sharded"][0], p)
    mpath = p / "shard_00001" / "meta.json"
    meta = json.loads(mpath.read_text())
    if record == "delete":
        meta.pop("shard")
    else:
        meta["shard"] = record
    mpath.write_text(json.dumps(meta))
    with pytest.raises(BatchFormatError, match="shard"):
        fastrl.open_dataset(p)
    assert fastrl.validate(p) != []


@pytest.mark.parametrize("edit", ["drop", "dup", "swap"])
def test_open_dataset_checks_manifest(pristine, tmp_path, edit):
    """Regression: open_dataset/info trusted the manifest's shard list (a dropped, repeated or
    reordered entry silently gave fewer or reordered transitions)."""
    src, want = pristine["sharded"]
    p = tmp_path / "b"
    shutil.copytree(src, p)
    meta = json.loads((p / "meta.json").read_text())
    sh = meta["shards"]
    if edit == "drop":
        sh.pop()
    elif edit == "dup":
        sh[1] = copy.deepcopy(sh[0])
    else:
        sh[0], sh[1] = sh[1], sh[0]
    (p / "meta.json").write_text(json.dumps(meta))
    assert fastrl.validate(p) != []
    try:
        ds = fastrl.open_dataset(p)
    except BatchFormatError:
        return
    got = _all_columns(ds)
    assert len(ds) == meta["count"] and np.array_equal(got["obs"], want["obs"])


# ------------------------------------------------------------------------------------------------
# optional coverage-guided harness (atheris)
# ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not FULL, reason="atheris smoke run: FASTRL_FULL=1 only")
def test_atheris_harness_smoke(tmp_path):
    pytest.importorskip("atheris")
    import subprocess
    import sys
    harness = Path(__file__).with_name("atheris_harness.py")
    out = subprocess.run([sys.executable, str(harness), "-runs=3000",
                          f"-artifact_prefix={tmp_path}/"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
