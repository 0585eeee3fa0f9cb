"""Issue 12, generated inputs (Hypothesis): the kernels called directly with inconsistent
arguments, meta.json bytes, manifests of sharded batches and compressed frames.

Properties:

- kernels: both backends give the same outcome for the same arguments -- the same
  ``ValueError`` message (the contract check), or the same status and the same bytes -- and never
  crash, whatever the arguments;
- readers and ``validate`` agree: whatever ``validate`` accepts, ``load_batch(verify=True)`` and
  ``open_dataset`` read, with the pristine rows; whatever they refuse (always a ``FastrlError``),
  ``validate`` reports (``--quick`` too, where no decoding is involved); what ``validate`` reports
  beyond the readers is only a data rule of docs/FORMAT.md;
- decoding is bounded: a mutated compressed column decodes to the pristine column or is a
  ``BatchFormatError``, and no allocation exceeds the declared size by more than a few MiB.

Profiles as in ``tests/test_fuzz.py``: quick by default (the module runs in well under 60 s),
many more examples with ``FASTRL_FULL=1`` (20,000 per kernel fuzzer, 5,000 per batch fuzzer).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import fastrl
from fastrl import _format as F
from fastrl import _kernels as _backend
from fastrl._batch.episode import Episode
from fastrl._kernels import codes as C
from fastrl.errors import FastrlError

from conftest import random_episode

FULL = os.environ.get("FASTRL_FULL", "").strip().lower() in ("1", "true", "yes", "on")

settings.register_profile("fastrl-fuzz2", max_examples=40, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much,
                                                 HealthCheck.function_scoped_fixture])
PROFILE = settings.get_profile("fastrl-fuzz2")


def fuzz(quick: int, full: int):
    return settings(PROFILE, max_examples=full if FULL else quick)


BACKENDS = _backend.available()
MODULES = {b: _backend.load(b) for b in BACKENDS}

# The problems validate may report that no reader refuses: the data rules of FORMAT.md,
# checksums (open_dataset does not verify them), and folder-content rules.
VALIDATE_ONLY = ("obs:", "masks:", "actions:", "dones:", "truncated:", "rewards:", "values:",
                 "logprobs:", "final_obs:", "checksum mismatch", "folders not listed",
                 "a batch folder holds regular files only")


def _validate_only(problem: str) -> bool:
    text = problem
    while text.startswith("shard_") and ": " in text:  # "shard_00001: <problem>"
        text = text.split(": ", 1)[1]
    return any(k in text for k in VALIDATE_ONLY)


# ================================================================================================
# Kernels called directly
# ================================================================================================

PACK_EP_MUTATIONS = ["length", "obs_rows", "obs_cols", "obs_dtype", "obs_noncontig", "obs_none",
                     "obs_list", "actions_dtype", "actions_len", "rewards_len", "rewards_dtype",
                     "mask_wide", "mask_rows", "mask_dtype", "mask_none_no_legal",
                     "offsets_decreasing", "offsets_start", "offsets_end", "offsets_len",
                     "offsets_dtype", "ids_dtype", "ids_list", "values_len", "values_extra",
                     "logprobs_dtype", "truncated_array", "not_episode", "values_big_endian"]
PACK_OUT_MUTATIONS = ["obs_dtype", "short", "readonly", "noncontig", "missing", "n_actions",
                      "row0", "episodes_tuple", "nthreads", "masks_narrow", "values_col"]
WEIRD_INTS = [0, -1, 1, 2, 3, 7, 2 ** 31, 2 ** 40, 2 ** 62, -2 ** 63, 1.5, True, "3", None]


@st.composite
def pack_recipe(draw):
    D, M = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    eps = [{"T": draw(st.integers(1, 5)), "f64": draw(st.booleans()),
            "legal": draw(st.booleans()), "trunc": draw(st.booleans())}
           for _ in range(draw(st.integers(0, 4)))]
    cols = {"values": draw(st.booleans()), "logprobs": draw(st.booleans()),
            "truncated": draw(st.booleans())}
    muts = draw(st.lists(st.one_of(
        st.tuples(st.just("ep"), st.sampled_from(PACK_EP_MUTATIONS), st.integers(0, 10),
                  st.sampled_from(WEIRD_INTS)),
        st.tuples(st.just("out"), st.sampled_from(PACK_OUT_MUTATIONS), st.integers(0, 10),
                  st.sampled_from(WEIRD_INTS))), max_size=3))
    return {"D": D, "M": M, "A": draw(st.integers(1, M)), "extra": draw(st.integers(0, 3)),
            "eps": eps, "cols": cols, "seed": draw(st.integers(0, 2 ** 16)), "muts": muts,
            "nthreads": draw(st.sampled_from([1, 2]))}


def _build_pack(r):
    """The kernel arguments a recipe describes, built afresh (each backend gets its own)."""
    rng = np.random.default_rng(r["seed"])
    D, M, A = r["D"], r["M"], r["A"]
    episodes = []
    for e in r["eps"]:
        T = e["T"]
        obs = rng.standard_normal((T, D)).astype(np.float64 if e["f64"] else np.float32)
        acts = rng.integers(0, A, T).astype(np.int64)
        if e["legal"]:
            ids = np.concatenate([[a, (a + 1) % A] for a in acts]).astype(np.int64)
            off = np.arange(0, 2 * T + 1, 2, dtype=np.int64)
            mask = None
        else:
            mask = np.zeros((T, A), np.uint8)
            mask[np.arange(T), acts] = 1
            ids = off = None
        vals = rng.standard_normal(T) if r["cols"]["values"] else None
        lps = -rng.random(T) if r["cols"]["logprobs"] else None
        episodes.append(Episode(T, obs, acts, rng.standard_normal(T), mask, ids, off, vals,
                                lps, e["trunc"]))
    rows = sum(e["T"] for e in r["eps"]) + r["extra"]
    out = {"obs": np.zeros((rows, D), "<f4"), "actions": np.zeros(rows, "<i4"),
           "rewards": np.zeros(rows, "<f4"), "masks": np.zeros((rows, M), "u1"),
           "dones": np.zeros(rows, "u1"),
           "truncated": np.zeros(rows, "u1") if r["cols"]["truncated"] else None,
           "values": np.zeros(rows, "<f4") if r["cols"]["values"] else None,
           "logprobs": np.zeros(rows, "<f4") if r["cols"]["logprobs"] else None}
    args = {"episodes": episodes, "row0": 0, "n_actions": A, "nthreads": r["nthreads"]}
    lengths = [e["T"] for e in r["eps"]]
    for where, what, k, v in r["muts"]:
        if where == "out":
            _mutate_pack_out(out, args, what, v, rows)
        elif episodes:
            i = k % len(episodes)
            if isinstance(episodes[i], Episode):
                try:
                    _mutate_pack_ep(episodes, i, what, v, M, lengths[i])
                except (TypeError, ValueError, IndexError, OverflowError, AttributeError):
                    pass  # does not apply after earlier mutations (deterministic)
    return (args["episodes"], out["obs"], out["actions"], out["rewards"], out["masks"],
            out["dones"], out["truncated"], out["values"], out["logprobs"], args["row0"],
            args["n_actions"], args["nthreads"])


def _mutate_pack_out(out, args, what, v, rows):
    if what == "obs_dtype":
        out["obs"] = out["obs"].astype(np.float64)
    elif what == "short":
        out["dones"] = out["dones"][:max(0, rows - 1)]
    elif what == "readonly":
        out["masks"].setflags(write=False)
    elif what == "noncontig":
        out["obs"] = np.zeros((rows, out["obs"].shape[1] * 2), "<f4")[:, ::2]
    elif what == "missing":
        out["actions"] = None
    elif what == "n_actions":
        args["n_actions"] = v
    elif what == "row0":
        args["row0"] = v
    elif what == "episodes_tuple":
        args["episodes"] = tuple(args["episodes"])
    elif what == "nthreads":
        args["nthreads"] = v
    elif what == "masks_narrow":
        out["masks"] = out["masks"][:, :1].copy()
    elif what == "values_col":
        out["values"] = None if out["values"] is not None else np.zeros(rows, "<i4")


def _mutate_pack_ep(episodes, i, what, v, M, T):
    ep = episodes[i]
    if what == "length":
        ep.length = v if not isinstance(v, int) or isinstance(v, bool) else T + v
    elif what == "obs_rows":
        ep.obs = np.zeros((T + 1, 2))
    elif what == "obs_cols":
        ep.obs = np.zeros((T, 7))
    elif what == "obs_dtype" and isinstance(ep.obs, np.ndarray):
        ep.obs = ep.obs.astype([np.float16, np.int64, ">f8", np.complex64][T % 4])
    elif what == "obs_noncontig" and isinstance(ep.obs, np.ndarray):
        ep.obs = np.repeat(ep.obs, 2, axis=1)[:, ::2]
    elif what == "obs_none":
        ep.obs = None
    elif what == "obs_list" and isinstance(ep.obs, np.ndarray):
        ep.obs = ep.obs.tolist()
    elif what == "actions_dtype" and isinstance(ep.actions, np.ndarray):
        ep.actions = ep.actions.astype([np.int32, np.float64, ">i8", np.uint64][T % 4])
    elif what == "actions_len":
        ep.actions = np.zeros(T + 2, np.int64)
    elif what == "rewards_len":
        ep.rewards = np.zeros(max(0, T - 1))
    elif what == "rewards_dtype" and isinstance(ep.rewards, np.ndarray):
        ep.rewards = ep.rewards.astype(np.float32)
    elif what == "mask_wide":
        ep.mask = np.ones((T, M + 1 + (v if isinstance(v, int) and 0 <= v < 9 else 0)),
                          np.uint8)
    elif what == "mask_rows" and isinstance(ep.mask, np.ndarray):
        ep.mask = np.ones((T + 3, ep.mask.shape[1]), np.uint8)
    elif what == "mask_dtype" and isinstance(ep.mask, np.ndarray):
        ep.mask = ep.mask.astype(bool)
    elif what == "mask_none_no_legal":
        ep.mask, ep.legal_ids, ep.legal_offsets = None, None, None
    elif isinstance(ep.legal_offsets, np.ndarray) and ep.legal_offsets.size \
            and what.startswith("offsets"):
        off = ep.legal_offsets.copy()
        if what == "offsets_decreasing" and off.size > 2:
            off[1], off[2] = off[2] + 5, off[1]
        elif what == "offsets_start":
            off[0] = 1 if not isinstance(v, int) or isinstance(v, bool) or v == 0 else v
        elif what == "offsets_end":
            delta = 1 if not isinstance(v, int) or isinstance(v, bool) or v == 0 else v
            off[-1] = max(-2 ** 62, min(2 ** 62, int(off[-1]) + delta))
        elif what == "offsets_len":
            off = np.append(off, off[-1])
        elif what == "offsets_dtype":
            off = off.astype(np.int32)
        ep.legal_offsets = off
    elif what == "ids_dtype" and isinstance(ep.legal_ids, np.ndarray):
        ep.legal_ids = ep.legal_ids.astype(np.int32)
    elif what == "ids_list" and isinstance(ep.legal_ids, np.ndarray):
        ep.legal_ids = ep.legal_ids.tolist()
    elif what == "values_len":
        ep.values = np.zeros(T + 1)
    elif what == "values_extra":
        ep.values = np.zeros(T)
    elif what == "logprobs_dtype":
        ep.logprobs = np.zeros(T, np.float32)
    elif what == "truncated_array":
        ep.truncated = np.array([True, False])
    elif what == "not_episode":
        episodes[i] = object()
    elif what == "values_big_endian":
        ep.values = np.zeros(T, ">f8")


def _outcome(fn, build, outputs_of):
    args = build()
    try:
        res = fn(*args)
    except ValueError as exc:
        return ("ValueError", str(exc))
    except Exception as exc:  # noqa: BLE001 - any other type is a finding
        return (type(exc).__name__, str(exc))
    out = outputs_of(args)
    ok = res[0] == -1
    return ("ok", tuple(int(x) for x in res),
            b"".join(np.ascontiguousarray(a).tobytes() for a in out) if ok else b"")


@fuzz(1000, 20000)
@given(pack_recipe())
def test_fuzz_pack_kernel_contract(r):
    """pack_episodes called directly with inconsistent arguments: the same ValueError on both
    backends, or the same status and bytes; never a crash."""
    outs = {b: _outcome(MODULES[b]["pack"].pack_episodes, lambda: _build_pack(r),
                        lambda a: [x for x in a[1:9] if isinstance(x, np.ndarray)])
            for b in BACKENDS}
    note(repr(outs)[:2000])
    kinds = {o[0] for o in outs.values()}
    event(f"pack: {'/'.join(sorted(kinds))}")
    first = next(iter(outs.values()))
    assert all(o == first for o in outs.values()), outs
    assert first[0] in ("ok", "ValueError"), first
    if first[0] == "ValueError":
        assert first[1].startswith("pack_episodes: ")


ENC_MUTATIONS = ["kind", "off", "size", "cells", "n", "start", "layout", "cell_n", "cell_start",
                 "cell_off", "cell_list", "scale", "offset", "low", "high", "data_dtype",
                 "data_size", "data_noncontig", "data_list", "csr_decreasing", "csr_end",
                 "csr_start", "csr_len", "csr_dtype", "out_dtype", "out_shape", "out_readonly",
                 "out_noncontig", "nrows", "plan_short", "plan_list", "input_not_tuple",
                 "plans_tuple", "nthreads", "cell_off_big", "cell_n_neg", "cell_start_big"]
FIELD_KINDS = ["onehot", "plane", "plane_start", "percell", "multihot", "box", "box_affine",
               "box_clip", "binary"]


@st.composite
def encode_recipe(draw):
    fields = [{"kind": draw(st.sampled_from(FIELD_KINDS)), "cells": draw(st.integers(1, 4)),
               "n": draw(st.integers(1, 4)), "start": draw(st.integers(-2, 2)),
               "dtype": draw(st.sampled_from(["i8", "i1", "u2", "f4", "f8"]))}
              for _ in range(draw(st.integers(1, 3)))]
    muts = draw(st.lists(st.tuples(st.sampled_from(ENC_MUTATIONS), st.integers(0, 10),
                                   st.sampled_from(WEIRD_INTS)), max_size=3))
    return {"nrows": draw(st.integers(0, 4)), "fields": fields, "muts": muts,
            "seed": draw(st.integers(0, 2 ** 16)), "nthreads": draw(st.sampled_from([1, 2]))}


def _build_encode(r):
    rng = np.random.default_rng(r["seed"])
    nrows = r["nrows"]
    plans, inputs, off = [], [], 0
    for f in r["fields"]:
        c, n, s, k = f["cells"], f["n"], f["start"], f["kind"]
        dt = np.dtype(f["dtype"])
        if f["dtype"].startswith("u"):
            s = abs(s)
        arr = np.zeros(14, object)
        arr[:] = None
        cell_n = cell_start = cell_off = scale = offset = low = high = None
        layout, kind, size, n_ = C.LAYOUT_CELL, C.KIND_IDS, n * c, n
        offsets = None
        if k in ("onehot", "plane", "plane_start", "percell"):
            data = (rng.integers(0, n, nrows * c) + s).astype(dt)
            if k.startswith("plane"):
                layout = C.LAYOUT_PLANE
                if k == "plane_start":
                    cell_start = np.full(c, s, np.int64)
            elif k == "percell":
                cell_n = rng.integers(1, 4, c).astype(np.int64)
                cell_start = np.full(c, s, np.int64)
                cell_off = np.concatenate([[0], np.cumsum(cell_n)[:-1]]).astype(np.int64)
                size, n_ = int(cell_n.sum()), 0
                data = (rng.integers(0, 1, nrows * c) + s).astype(dt)
        elif k == "multihot":
            kind, size = C.KIND_MULTI, n
            per = rng.integers(0, n + 1, nrows)
            offsets = np.concatenate([[0], np.cumsum(per)]).astype(np.int64)
            data = rng.integers(0, n, int(offsets[-1])).astype(dt)
        else:
            kind = C.KIND_BOX if k.startswith("box") else C.KIND_BINARY
            size, n_, s = c, 0, 0
            data = (rng.integers(0, 2, nrows * c)).astype(dt)
            if k == "box_affine":
                scale, offset = rng.random(c), rng.random(1)
            elif k == "box_clip":
                low, high = np.zeros(1), np.ones(c)
        plans.append((kind, off, size, c, n_, s, layout, cell_n, cell_start, cell_off, scale,
                      offset, low, high))
        inputs.append((data, offsets))
        off += size
    out = np.zeros((nrows, off + 1), np.float32)
    args = {"out": out, "plans": plans, "inputs": inputs, "nrows": nrows,
            "nthreads": r["nthreads"]}
    for what, i, v in r["muts"]:
        try:
            _mutate_encode(args, i % len(plans), what, v)
        except (TypeError, ValueError, IndexError, OverflowError, AttributeError):
            pass  # this mutation does not apply to what earlier ones left (deterministic)
    return args["out"], args["plans"], args["inputs"], args["nrows"], args["nthreads"]


def _mutate_encode(a, i, what, v):
    plans, inputs = a["plans"], a["inputs"]
    if not isinstance(plans, list) or i >= len(plans) or not isinstance(plans[i], tuple) \
            or len(plans[i]) != 14:
        return
    plan = list(plans[i])
    data, offsets = inputs[i] if isinstance(inputs[i], tuple) else (None, None)
    idx = {"kind": 0, "off": 1, "size": 2, "cells": 3, "n": 4, "start": 5, "layout": 6}
    nrows = a["nrows"] if isinstance(a["nrows"], int) else 0
    if what in idx:
        plan[idx[what]] = v if not isinstance(v, int) or isinstance(v, bool) \
            else plan[idx[what]] + v
    elif what in ("cell_n", "cell_start", "cell_off"):
        j = {"cell_n": 7, "cell_start": 8, "cell_off": 9}[what]
        plan[j] = None if plan[j] is not None else np.arange(3, dtype=np.int64)
    elif what == "cell_list" and plan[7] is not None:
        plan[7] = plan[7].tolist()
    elif what == "cell_off_big" and plan[9] is not None:
        plan[9] = plan[9] + 10 ** 6
    elif what == "cell_n_neg" and plan[7] is not None:
        plan[7] = -plan[7]
    elif what == "cell_start_big" and plan[8] is not None:
        plan[8] = plan[8] + 2 ** 62
    elif what in ("scale", "offset", "low", "high"):
        j = {"scale": 10, "offset": 11, "low": 12, "high": 13}[what]
        plan[j] = None if plan[j] is not None else np.ones(7)
    elif what == "data_dtype" and data is not None:
        data = data.astype([np.float16, ">i4", np.bool_, np.complex64][nrows % 4])
    elif what == "data_size" and data is not None:
        data = np.append(data, data[:1]) if data.size else np.zeros(3, data.dtype)
    elif what == "data_noncontig" and data is not None:
        data = np.repeat(data, 2)[::2]
    elif what == "data_list" and data is not None:
        data = data.tolist()
    elif what.startswith("csr") and offsets is not None:
        offsets = offsets.copy()
        if what == "csr_decreasing" and len(offsets) > 2:
            offsets[1] = offsets[-1] + 3
        elif what == "csr_end":
            offsets[-1] += 1 + abs(v) % 7 if isinstance(v, int) else 5
        elif what == "csr_start":
            offsets[0] = -1
        elif what == "csr_len":
            offsets = offsets[:-1]
        elif what == "csr_dtype":
            offsets = offsets.astype(np.int32)
    elif what == "out_dtype":
        a["out"] = a["out"].astype(np.float64)
    elif what == "out_shape":
        a["out"] = np.zeros((a["out"].shape[0], max(0, a["out"].shape[1] - 2)), np.float32)
    elif what == "out_readonly":
        a["out"].setflags(write=False)
    elif what == "out_noncontig":
        a["out"] = np.zeros((a["out"].shape[0], a["out"].shape[1] * 2), np.float32)[:, ::2]
    elif what == "nrows":
        a["nrows"] = v if not isinstance(v, int) or isinstance(v, bool) else a["nrows"] + v
    elif what == "plan_short":
        plan = plan[:13]
    elif what == "plan_list":
        plans[i] = plan
        return
    elif what == "input_not_tuple":
        inputs[i] = [data, offsets]
        return
    elif what == "plans_tuple":
        a["plans"] = tuple(plans)
        return
    elif what == "nthreads":
        a["nthreads"] = v
    plans[i] = tuple(plan)
    inputs[i] = (data, offsets)


@fuzz(1000, 20000)
@given(encode_recipe())
def test_fuzz_encode_kernel_contract(r):
    """encode_batch called directly with inconsistent arguments: the same ValueError on both
    backends, or the same status and bytes; never a crash."""
    outs = {b: _outcome(MODULES[b]["encode"].encode_batch, lambda: _build_encode(r),
                        lambda a: [a[0]])
            for b in BACKENDS}
    note(repr(outs)[:2000])
    kinds = {o[0] for o in outs.values()}
    event(f"encode: {'/'.join(sorted(kinds))}")
    first = next(iter(outs.values()))
    assert all(o == first for o in outs.values()), outs
    assert first[0] in ("ok", "ValueError"), first
    if first[0] == "ValueError":
        assert first[1].startswith("encode_batch: ")


# ================================================================================================
# Batches: meta.json bytes, manifests, compressed frames
# ================================================================================================

class _Pristine(dict):
    def __repr__(self):
        return "<pristine batches>"


def _rows(obj) -> dict:
    parts = obj.parts if isinstance(obj, fastrl.Dataset) else [obj]
    out = {}
    for name in ("obs", "actions", "rewards", "masks", "dones", "values", "truncated"):
        cols = [getattr(b, name) for b in parts]
        if cols and all(c is not None for c in cols):
            out[name] = np.concatenate([np.asarray(c) for c in cols])
    return out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("pristine2")
    rng = np.random.default_rng(11)
    eps = [random_episode(rng, int(rng.integers(2, 9)), n_actions=5, values=True,
                          truncated=i % 3 == 0) for i in range(10)]
    out = _Pristine()
    for kind, kw in (("plain", {}), ("sharded", {"shard_bytes": 700}),
                     ("gzip", {"compression": {"obs": "gzip", "rewards": "gzip",
                                               "masks": "packbits"}}),
                     ("zstd", {"compression": "zstd"})):
        if kind == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                continue
        with fastrl.BatchWriter(base / kind, n_actions=5, mask_pad=7, **kw) as w:
            for ep in eps:
                w.add_episode(**ep)
        assert fastrl.validate(w.path) == []
        out[kind] = (w.path, _rows(fastrl.open_dataset(w.path)))
    assert len(json.loads((out["sharded"][0] / "meta.json").read_text())["shards"]) >= 3
    return out


def _call(fn, *args, **kw):
    try:
        return "ok", fn(*args, **kw)
    except FastrlError as exc:
        assert "\n" not in str(exc), str(exc)
        return "err", exc


def _check_agreement(root: Path, want: dict, *, data_intact: bool, plain: bool):
    """The readers and validate agree on ``root`` (see the module docstring)."""
    ds = _call(fastrl.open_dataset, root)
    load = _call(fastrl.load_batch, root, verify=True) if plain else None
    probs = fastrl.validate(root)
    quick = fastrl.validate(root, check_data=False)
    note(f"validate: {probs[:5]}; open_dataset: {ds[0]} {str(ds[1])[:300] if ds[0] != 'ok' else ''}")
    assert isinstance(probs, list) and all(isinstance(p, str) and p for p in probs)
    if probs == []:
        assert quick == []
        assert ds[0] == "ok", f"validate passed, open_dataset refused: {ds[1]}"
        if load is not None:
            assert load[0] == "ok", f"validate passed, load_batch refused: {load[1]}"
        if data_intact:  # an optional column unlisted by the edit is absent, never different
            got = _rows(ds[1])
            assert set(got) >= {"obs", "actions", "rewards", "masks", "dones"}
            for name, arr in got.items():
                assert np.array_equal(arr, want[name]), f"column {name} differs"
    if ds[0] == "err" or (load is not None and load[0] == "err"):
        assert probs, "a reader refused what validate accepts"
    if ds[0] == "ok" and (load is None or load[0] == "ok"):
        extra = [p for p in probs if not _validate_only(p)]
        assert not extra, f"validate refuses what the readers read: {extra}"
    return probs, ds


JSON_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b'"\\ud800"', b'"\\udfff"',
               b"\xef\xbb\xbf", b"\xff", b"\xed\xa0\x80", b"true", b"1.0", b'"big"', b'">f4"',
               b'"../x"', b"[[[[[[[[[[", b"]", b"}", b",", b'"count": 0, "count"', b"null",
               b"-1", b"18446744073709551616", b"0.5", b'"|u1"', b"[]", b"{}"]


@st.composite
def meta_mutation(draw):
    how = draw(st.sampled_from(["token", "flip", "delete", "encoding", "deep", "key"]))
    return (how, draw(st.integers(0, 10 ** 6)), draw(st.sampled_from(JSON_TOKENS)),
            draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "utf-8-sig", "latin-1"])))


META_KEY_EDITS = [("formatVersion", [True, 1.0, 2, "1", 1]), ("byteOrder", ["big", "little", 1]),
                  ("format", ["fastrl-batch", "x", None]), ("createdAt", [0, -1, 1.5e12, None,
                                                                          "x", True]),
                  ("sharded", [False, True, "yes", 0]), ("numActions", [1, 5, 7, 8, 0, 5.0]),
                  ("count", [0, -1, 2 ** 40]), ("episodes", [0, 9, 10, 11]),
                  ("columns.obs.dtype", ["<f4", ">f4", "<f8", "f4", None]),
                  ("columns.masks.dtype", ["|u1", "u1", "<u1", ">u1", "b1"]),
                  ("columns.obs.shape", [[1, 1], None, "x", [True]]),
                  ("columns.rewards.file", ["rewards.float32.bin", "../r", "/etc/passwd"]),
                  ("columns.episode_index.shape", [[11], [2], []]),
                  ("checksums.x", ["crc32:00000000"]), ("checksums.../meta.json", ["crc32:1"]),
                  ("user", [{"a": [1, 2]}, None])]


def _set_path(meta, dotted, value):
    keys = dotted.split(".", 2) if not dotted.startswith("checksums.") else \
        ["checksums", dotted[len("checksums."):]]
    d = meta
    for k in keys[:-1]:
        if not isinstance(d, dict) or not isinstance(d.get(k), dict):
            return
        d = d[k]
    if isinstance(d, dict):
        d[keys[-1]] = value


def _mutate_meta_bytes(raw: bytes, mut) -> bytes:
    how, pos, token, enc = mut
    p = pos % max(1, len(raw))
    if how == "token":
        return raw[:p] + token + raw[p:]
    if how == "flip":
        return raw[:p] + bytes([raw[p] ^ (1 + pos % 255)]) + raw[p + 1:] if raw else raw
    if how == "delete":
        return raw[:p] + raw[p + 1 + pos % 7:]
    if how == "encoding":
        return raw.decode("utf-8").encode(enc)
    if how == "deep":
        d = 90 + pos % 20
        return raw.replace(b"{", b'{"deep": ' + b"[" * d + b"]" * d + b", ", 1)
    return raw.replace(b'"count"', b'"count": 1, "count"', 1)  # duplicate key


@fuzz(200, 5000)
@given(edits=st.lists(st.tuples(st.sampled_from(range(len(META_KEY_EDITS))), st.integers(0, 9)),
                      max_size=3),
       raw_muts=st.lists(meta_mutation(), max_size=1))
def test_fuzz_meta_json(pristine, edits, raw_muts):
    """meta.json of a plain batch: key edits (values FORMAT.md rules out or allows) and byte
    mutations (strictness of the JSON itself). Readers and validate agree."""
    src, want = pristine["plain"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / src.name
        shutil.copytree(src, root)
        mpath = root / F.META_FILE
        os.chmod(mpath, 0o644)
        meta = json.loads(mpath.read_text())
        for k, j in edits:
            key, values = META_KEY_EDITS[k]
            _set_path(meta, key, values[j % len(values)])
        raw = json.dumps(meta).encode()
        for m in raw_muts:
            raw = _mutate_meta_bytes(raw, m)
        mpath.write_bytes(raw)
        probs, ds = _check_agreement(root, want, data_intact=True, plain=True)
        event(f"meta: validate {'ok' if not probs else 'problems'}, readers {ds[0]}")


MANIFEST_EDITS = ["drop", "dup", "swap", "count", "firstRow", "path", "obsDim", "maskDim",
                  "numActions", "total", "nested_sharded", "shard_record", "shard_dims",
                  "symlink_shard", "extra_folder", "shard_not_dir", "sharded_false"]


@fuzz(200, 5000)
@given(edits=st.lists(st.tuples(st.sampled_from(MANIFEST_EDITS), st.integers(0, 50)),
                      min_size=1, max_size=3))
def test_fuzz_manifest(pristine, edits):
    """Manifests and shard metas of a sharded batch: entries dropped, repeated, swapped,
    renamed or recounted, dims and totals changed, a shard that is itself sharded, linked or
    not a folder. open_dataset and validate agree."""
    src, want = pristine["sharded"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / src.name
        shutil.copytree(src, root)
        for p in root.rglob("meta.json"):
            os.chmod(p, 0o644)
        manifest = json.loads((root / F.META_FILE).read_text())
        shards = manifest["shards"]
        intact = True
        for what, k in edits:
            i = k % len(shards) if shards else 0
            if not shards:
                break
            name = shards[i]["path"] if isinstance(shards[i], dict) else None
            spath = root / name if isinstance(name, str) and name.startswith("shard_") \
                and name[6:].isdigit() else None  # only real shard folders are edited
            if what == "drop":
                shards.pop(i)
            elif what == "dup":
                shards.insert(i, dict(shards[i]))
            elif what == "swap" and len(shards) > 1:
                j = (i + 1) % len(shards)
                shards[i], shards[j] = shards[j], shards[i]
            elif what in ("count", "firstRow") and isinstance(shards[i], dict):
                shards[i][what] = shards[i].get(what, 0) + (k % 3) - 1
            elif what == "path" and isinstance(shards[i], dict):
                shards[i]["path"] = ["shard_99999", "shard_" + "x" * 300, "../shard_00000",
                                     "shard_00000/..", "shard_é", 5][k % 6]
            elif what in ("obsDim", "maskDim", "numActions"):
                manifest[what] = manifest.get(what, 5) + (k % 3) - 1
            elif what == "total":
                manifest["count"] += (k % 3) - 1
                manifest["steps"] = manifest["count"]
            elif what == "sharded_false":
                manifest["sharded"] = False
            elif spath is None or not _real_dir(spath):
                continue
            elif what in ("nested_sharded", "shard_record", "shard_dims"):
                sm = json.loads((spath / F.META_FILE).read_text())
                if what == "nested_sharded":
                    sm["sharded"] = True
                    sm["shards"] = [{"path": "shard_00000", "firstRow": 0, "firstEpisode": 0,
                                     "count": sm["count"], "episodes": sm["episodes"]}]
                elif what == "shard_record":
                    sm["shard"] = {"index": k % 4, "firstRow": k % 5, "firstEpisode": 0}
                else:
                    sm["numActions"] = sm.get("numActions", 5) - 1
                (spath / F.META_FILE).write_text(json.dumps(sm))
            elif what == "symlink_shard":
                moved = Path(tmp) / f"moved-{name}"
                os.rename(spath, moved)
                os.symlink(moved, spath)
            elif what == "extra_folder":
                (root / "shard_extra").mkdir(exist_ok=True)
            elif what == "shard_not_dir":
                shutil.rmtree(spath)
                spath.write_bytes(b"")
                intact = False
        (root / F.META_FILE).write_text(json.dumps(manifest))
        probs, ds = _check_agreement(root, want, data_intact=intact, plain=False)
        event(f"manifest: validate {'ok' if not probs else 'problems'}, open_dataset {ds[0]}")


def _real_dir(p: Path) -> bool:
    try:
        return p.is_dir() and not p.is_symlink()
    except OSError:  # e.g. a name too long for the filesystem
        return False


FRAME_EDITS = ["truncate", "flip", "append_junk", "append_zeros", "append_frame",
               "append_partial_header", "append_skippable", "bomb", "shorter", "empty",
               "swap_codec"]


def _compress(codec, raw: bytes) -> bytes:
    if codec == "zstd":
        import zstandard
        return zstandard.ZstdCompressor().compress(raw)
    return gzip.compress(raw)


@fuzz(200, 5000)
@given(kind=st.sampled_from(["gzip", "zstd"]), col=st.sampled_from(["obs", "rewards", "actions",
                                                                     "dones", "masks"]),
       edit=st.sampled_from(FRAME_EDITS), n=st.integers(0, 10 ** 6),
       fix_checksum=st.booleans())
def test_fuzz_compressed_frames(pristine, kind, col, edit, n, fix_checksum):
    """A compressed column's stored bytes mutated (truncated, flipped, with trailing junk,
    zeros, a second frame, a partial header, a skippable frame, a bomb, fewer bytes, another
    codec's stream), its stored checksum fixed or not: the column decodes to the pristine data
    or every reader refuses it with one line, validate agrees, and memory stays bounded."""
    if kind not in pristine:
        pytest.skip("zstandard not installed")
    src, want = pristine[kind]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / src.name
        shutil.copytree(src, root)
        meta = json.loads((root / F.META_FILE).read_text())
        entry = meta.get("codecs", {}).get(col)
        if entry is None:
            return
        path = root / entry["file"]
        os.chmod(path, 0o644)
        data = path.read_bytes()
        raw = np.ascontiguousarray(want[col]).tobytes()
        codec = entry["codec"]
        p = n % max(1, len(data))
        if edit == "truncate":
            data = data[:p]
        elif edit == "flip" and data:
            data = data[:p] + bytes([data[p] ^ (1 + n % 255)]) + data[p + 1:]
        elif edit == "append_junk":
            data += b"junk" * (1 + n % 3)
        elif edit == "append_zeros":
            data += b"\0" * (1 + n % 9)
        elif edit == "append_frame" and codec != "packbits":
            data += _compress(codec, raw[: n % (len(raw) + 1)])
        elif edit == "append_partial_header":
            data += (b"\x28\xb5\x2f\xfd" if codec == "zstd" else b"\x1f\x8b\x08")[: 1 + n % 4]
        elif edit == "append_skippable":
            data += b"\x50\x2a\x4d\x18" + (n % 5).to_bytes(4, "little") + b"s" * (n % 5)
        elif edit == "bomb" and codec != "packbits":
            data = _compress(codec, bytes(len(raw) * (2 + n % 50)))
        elif edit == "shorter" and codec != "packbits":
            data = _compress(codec, raw[: max(0, len(raw) - 1 - n % 8)])
        elif edit == "empty":
            data = b""
        elif edit == "swap_codec" and codec != "packbits":
            data = _compress("gzip" if codec == "zstd" else "zstd", raw) \
                if "zstd" in pristine else data
        path.write_bytes(data)
        if fix_checksum:  # only the decoder (and rawChecksum) can tell now
            meta["checksums"][entry["file"]] = f"crc32:{zlib.crc32(data):08x}"
            (root / F.META_FILE).chmod(0o644)
            (root / F.META_FILE).write_text(json.dumps(meta))
        tracemalloc.start()
        try:
            probs, ds = _check_agreement(root, want, data_intact=True, plain=True)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        event(f"frames {kind}/{edit}: validate {'ok' if not probs else 'problems'}")
        assert peak < len(raw) * 3 + (24 << 20), f"{peak} bytes allocated"
        verified = _call(fastrl.load_batch, root, verify=True)
        if verified[0] == "ok":  # verified: the pristine column, never other data
            assert np.array_equal(np.asarray(getattr(verified[1], col)), want[col])
