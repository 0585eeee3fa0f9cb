"""ObsSpec: every field kind, JSON, hostile specs and states, both kernel paths byte for byte,
and parity with gymnasium.spaces.flatten."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrl
from fastrl import _kernels as _backend
from fastrl._kernels import codes as _encode_numpy
from fastrl.errors import EncodeError, SpecError
from fastrl.spec import Field, ObsSpec

# Both kernel paths, except in the FASTRL_PURE_NUMPY=1 run, which proves the NumPy path alone.
FORCED_NUMPY = _backend.BACKEND == "numpy" and _backend.REASON.startswith("forced")
BACKENDS = ["numpy"] if FORCED_NUMPY else _backend.available()
HAVE_CYTHON = "cython" in BACKENDS
needs_cython = pytest.mark.skipif(not HAVE_CYTHON, reason="compiled kernels not built")
HYP = settings(max_examples=60, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GAME_SPEC = {
    "version": 1,
    "fields": [
        {"name": "board", "kind": "onehot_array", "shape": [13, 16], "n": 3, "layout": "plane"},
        {"name": "hand", "kind": "multihot", "n": 52},
        {"name": "phase", "kind": "onehot", "n": 4},
        {"name": "scalars", "kind": "box", "shape": [8]},
    ],
}


@pytest.fixture(params=BACKENDS)
def backend(request):
    with _backend.use(request.param):
        yield request.param


def on_each_backend(fn):
    """Run ``fn()`` on every backend: ('ok', bytes) or ('error', type, message, field, row)."""
    results = {}
    for b in BACKENDS:
        with _backend.use(b):
            try:
                out = fn()
                results[b] = ("ok", out.shape, out.dtype.str, out.tobytes())
            except EncodeError as exc:
                results[b] = ("error", type(exc), str(exc), exc.field, exc.row)
    return results


def assert_same_everywhere(fn):
    results = on_each_backend(fn)
    first = results[BACKENDS[0]]
    for b, r in results.items():
        assert r == first, f"{b} differs from {BACKENDS[0]}: {r[:3]} vs {first[:3]}"
    return first


def game_states(n, seed=0):
    rng = np.random.default_rng(seed)
    states = []
    for _ in range(n):
        states.append({
            "board": rng.integers(0, 3, (13, 16)).tolist(),
            "hand": sorted(rng.choice(52, int(rng.integers(0, 14)), replace=False).tolist()),
            "phase": int(rng.integers(0, 4)),
            "scalars": rng.normal(size=8).tolist(),
        })
    return json.loads(json.dumps(states))


# ------------------------------------------------------------------------------------------
# The shared constants and the reference spec

@needs_cython
def test_constants_in_sync():
    from fastrl._kernels import encode as _encode
    assert _encode.ERROR_CODES == _encode_numpy.ERROR_CODES
    assert _encode.KINDS == _encode_numpy.KINDS
    assert _encode.LAYOUTS == _encode_numpy.LAYOUTS
    assert _encode.INPUT_DTYPES == _encode_numpy.INPUT_DTYPES


def test_reference_game_spec_is_688(backend):
    spec = ObsSpec.from_json(json.dumps(GAME_SPEC))
    assert spec.dim == 688
    assert spec.slices == {"board": slice(0, 624), "hand": slice(624, 676),
                           "phase": slice(676, 680), "scalars": slice(680, 688)}
    states = game_states(50)
    out = spec.encode(states)
    assert out.shape == (50, 688) and out.dtype == np.float32 and out.flags.c_contiguous
    for s, row in zip(states, out):
        board = np.array(s["board"]).reshape(-1)
        planes = row[:624].reshape(3, 208)
        assert (planes.sum(axis=0) == 1).all() and (planes.argmax(axis=0) == board).all()
        hand = np.zeros(52, np.float32)
        hand[s["hand"]] = 1
        assert np.array_equal(row[624:676], hand)
        assert np.array_equal(row[676:680], np.eye(4, dtype=np.float32)[s["phase"]])
        assert np.array_equal(row[680:], np.array(s["scalars"], dtype=np.float32))


def test_reference_game_columns_match_states(backend):
    spec = ObsSpec.from_json(GAME_SPEC)
    states = game_states(40, seed=3)
    cols = {"board": np.array([s["board"] for s in states], dtype=np.int8),
            "hand": [s["hand"] for s in states],
            "phase": np.array([s["phase"] for s in states], dtype=np.int32),
            "scalars": np.array([s["scalars"] for s in states], dtype=np.float64)}
    expected = spec.encode(states)
    assert np.array_equal(spec.encode(cols), expected)
    # CSR and flat-board forms of the same columns
    lengths = [len(s["hand"]) for s in states]
    csr = (np.concatenate([np.array(s["hand"], dtype=np.int64) for s in states]),
           np.concatenate([[0], np.cumsum(lengths)]))
    cols2 = dict(cols, hand=csr, board=cols["board"].reshape(40, 208))
    assert np.array_equal(spec.encode(cols2), expected)


# ------------------------------------------------------------------------------------------
# Each kind

def test_onehot_with_start(backend):
    spec = ObsSpec([{"name": "a", "kind": "onehot", "n": 3, "start": -1}])
    out = spec.encode([{"a": -1}, {"a": 0}, {"a": 1}, {"a": 1.0}, {"a": True}])
    assert np.array_equal(out, np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]],
                                        dtype=np.float32))


@pytest.mark.parametrize("layout", ["plane", "cell"])
def test_onehot_array_layouts(backend, layout):
    spec = ObsSpec([{"name": "b", "kind": "onehot_array", "shape": [2, 3], "n": 3, "start": 1,
                     "layout": layout}])
    board = np.array([[1, 2, 3], [3, 3, 1]])
    got = spec.encode([{"b": board.tolist()}])[0]
    onehot = np.eye(3, dtype=np.float32)[board.reshape(-1) - 1]  # (cells, n)
    want = onehot.T.reshape(-1) if layout == "plane" else onehot.reshape(-1)
    assert np.array_equal(got, want)
    assert spec.dim == 18


def test_onehot_array_per_cell_n_and_start(backend):
    spec = ObsSpec([{"name": "m", "kind": "onehot_array", "shape": [3], "n": [2, 4, 1],
                     "start": [0, -2, 5], "layout": "cell"}])
    assert spec.dim == 7
    out = spec.encode([{"m": [1, -2, 5]}, {"m": [0, 1, 5]}])
    assert np.array_equal(out, np.array([[0, 1, 1, 0, 0, 0, 1], [1, 0, 0, 0, 0, 1, 1]],
                                        dtype=np.float32))
    with pytest.raises(EncodeError, match=r"value 2 at index \(1,\) out of range \[-2, 2\)"):
        spec.encode([{"m": [1, 2, 5]}])


def test_plane_layout_with_per_cell_start(backend):
    spec = ObsSpec([{"name": "p", "kind": "onehot_array", "shape": [2], "n": 2, "start": [0, 10]}])
    out = spec.encode([{"p": [1, 10]}])
    # plane 0: cells with value start+0, plane 1: cells with value start+1
    assert np.array_equal(out[0], np.array([0, 1, 1, 0], dtype=np.float32))


def test_plane_layout_needs_uniform_n():
    with pytest.raises(SpecError, match="same n"):
        ObsSpec([{"name": "p", "kind": "onehot_array", "shape": [2], "n": [2, 3]}])


def test_multihot_duplicates_and_empty(backend):
    spec = ObsSpec([{"name": "h", "kind": "multihot", "n": 5}])
    out = spec.encode([{"h": [4, 0, 4]}, {"h": []}, {"h": (1,)}, {"h": np.array([2, 3])}])
    assert np.array_equal(out, np.array([[1, 0, 0, 0, 1], [0] * 5, [0, 1, 0, 0, 0],
                                         [0, 0, 1, 1, 0]], dtype=np.float32))
    cols = {"h": np.array([[4, 4], [0, 1]], dtype=np.uint8)}
    assert np.array_equal(spec.encode(cols), np.array([[0, 0, 0, 0, 1], [1, 1, 0, 0, 0]],
                                                      dtype=np.float32))


def test_box_scale_offset_clip(backend):
    spec = ObsSpec([{"name": "x", "kind": "box", "shape": [3], "scale": [1, 2, 0.5],
                     "offset": 1, "low": -2, "high": [10, 3, 10]}])
    out = spec.encode([{"x": [1.0, 5.0, -100.0]}])
    assert np.array_equal(out[0], np.array([2.0, 3.0, -2.0], dtype=np.float32))
    scalar = ObsSpec([{"name": "t", "kind": "box", "shape": []}])
    assert np.array_equal(scalar.encode([{"t": 0.1}, {"t": [2]}, {"t": -0.0}]),
                          np.array([[np.float32(0.1)], [2], [-0.0]], dtype=np.float32))
    assert np.signbit(scalar.encode([{"t": -0.0}])[0, 0])  # no transform: bytes kept


def test_box_float64_rounding_and_int_input(backend):
    spec = ObsSpec([{"name": "x", "kind": "box", "shape": [2]}])
    vals = np.array([[0.1, 1e30], [2**40 + 1, -3]], dtype=np.float64)
    assert np.array_equal(spec.encode({"x": vals}), vals.astype(np.float32))
    ints = np.array([[2**40 + 1, -(2**62) + 7]], dtype=np.int64)
    assert np.array_equal(spec.encode({"x": ints}), ints.astype(np.float32))


def test_binary(backend):
    spec = ObsSpec([{"name": "m", "kind": "binary", "shape": [2, 2]}])
    out = spec.encode([{"m": [[True, False], [0, 1]]}, {"m": [[1.0, 0.0], [-0.0, 1]]}])
    assert np.array_equal(out, np.array([[1, 0, 0, 1], [1, 0, 0, 1]], dtype=np.float32))
    assert not np.signbit(out).any()
    with pytest.raises(EncodeError,
                       match=r"row 1, field 'm': value 2 at index \(0, 1\) is not 0 or 1"):
        spec.encode([{"m": [[1, 1], [1, 1]]}, {"m": [[1, 2], [1, 1]]}])


def test_nested_paths_and_column_keys(backend):
    spec = ObsSpec([{"name": "pos", "kind": "box", "shape": [2], "path": ["agent", "pos"]},
                    {"name": "kind", "kind": "onehot", "n": 2, "path": ["agent", "meta", 1]},
                    {"name": "whole", "kind": "box", "shape": [], "path": ["v"]}])
    states = [{"agent": {"pos": [1, 2], "meta": ("x", 1)}, "v": 3},
              {"agent": {"pos": [3, 4], "meta": ["y", 0]}, "v": 4}]
    want = np.array([[1, 2, 0, 1, 3], [3, 4, 1, 0, 4]], dtype=np.float32)
    assert np.array_equal(spec.encode(states), want)
    cols = {"agent/pos": np.array([[1, 2], [3, 4]]), "kind": np.array([1, 0]),
            "v": np.array([3.0, 4.0])}
    assert np.array_equal(spec.encode(cols), want)
    assert np.array_equal(spec.encode_one(states[1]), want[1])


def test_list_gathering_matches_columns(backend):
    """The compiled gatherer (plain lists) and the general path (anything else) agree."""
    spec = ObsSpec([{"name": "ids", "kind": "onehot_array", "shape": [2, 2], "n": 3000,
                     "start": -1000, "layout": "cell"},
                    {"name": "x", "kind": "box", "shape": [3]},
                    {"name": "h", "kind": "multihot", "n": 3000}])
    rows = [[[0, 5], [-1000, 7]], [[100, 1999], [3, 4]], [[1, 2], [3, 4]]]  # widens at row 1
    xs = [[1, 2.5, True], [2**53 + 1, -3, 0], [1e30, 1e-45, -0.0]]
    hs = [[2999, 0, 0], [], [127, 128] + list(range(40))]  # 45 ids: the id buffer grows
    states = [{"ids": r, "x": x, "h": h} for r, x, h in zip(rows, xs, hs)]
    want = spec.encode({"ids": np.array(rows), "x": np.array(xs, dtype=np.float64),
                        "h": (np.array(sum(hs, [])), np.cumsum([0] + [len(h) for h in hs]))})
    assert spec.encode(states).tobytes() == want.tobytes()
    # other containers and leaf types take the general path, with the same result
    odd = [{"ids": tuple(map(tuple, r)), "x": np.array(x), "h": tuple(h)}
           for r, x, h in zip(rows, xs, hs)]
    assert spec.encode(odd).tobytes() == want.tobytes()
    mixed = [{"ids": np.array(r).reshape(-1).tolist(), "x": [np.float64(v) for v in x],
              "h": [np.int64(v) for v in h]} for r, x, h in zip(rows, xs, hs)]
    assert spec.encode(mixed).tobytes() == want.tobytes()
    huge = [dict(states[0], ids=[[0, 0], [0, 2**64]])]
    with pytest.raises(EncodeError, match="row 0, field 'ids': number too large"):
        spec.encode(huge)
    big = [dict(states[0], ids=[[0, 0], [0, 2**63]])]  # NumPy makes this float64
    with pytest.raises(EncodeError, match=r"row 0, field 'ids': value .* at index \(1, 1\) out of"):
        spec.encode(big)


def test_out_parameter_writes_every_byte(backend):
    spec = ObsSpec.from_json(GAME_SPEC)
    states = game_states(7, seed=1)
    buf = np.full((20, 688), np.nan, dtype=np.float32)
    view = buf[5:12]
    got = spec.encode(states, out=view)
    assert got is view
    assert np.array_equal(buf[5:12], spec.encode(states))
    assert np.isnan(buf[:5]).all() and np.isnan(buf[12:]).all()
    for bad in (np.zeros((7, 688), np.float64), np.zeros((7, 687), np.float32),
                np.zeros((688, 7), np.float32).T, np.zeros((8, 688), np.float32)):
        with pytest.raises(ValueError):
            spec.encode(states, out=bad)
    ro = np.zeros((7, 688), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        spec.encode(states, out=ro)


def test_empty_batch_and_threads(backend):
    spec = ObsSpec.from_json(GAME_SPEC)
    assert spec.encode([]).shape == (0, 688)
    states = game_states(600, seed=5)
    one = spec.encode(states, threads=1)
    assert np.array_equal(spec.encode(states, threads=2), one)
    with pytest.raises(ValueError):
        spec.encode(states, threads=0)


def test_parallel_error_is_first_row(backend):
    spec = ObsSpec.from_json(GAME_SPEC)
    n = 3000  # big enough for the threaded loop (3000 * 688 floats)
    rng = np.random.default_rng(0)
    cols = {"board": rng.integers(0, 3, (n, 13, 16)).astype(np.int8),
            "hand": rng.integers(0, 52, (n, 5)),
            "phase": rng.integers(0, 4, n), "scalars": rng.normal(size=(n, 8))}
    cols["scalars"][2500, 3] = np.inf
    cols["board"][1700, 4, 5] = 3
    cols["phase"][1700] = 9
    for threads in (1, 2, 4):
        with pytest.raises(EncodeError) as ei:
            spec.encode(cols, threads=threads)
        assert (ei.value.row, ei.value.field) == (1700, "board")
        assert str(ei.value) == \
            "row 1700, field 'board': value 3 at index (4, 5) out of range [0, 3)"


# ------------------------------------------------------------------------------------------
# JSON

def test_json_round_trip_and_equality():
    spec = ObsSpec.from_json(GAME_SPEC)
    text = spec.to_json()
    assert isinstance(text, str)
    again = ObsSpec.from_json(text)
    assert again == spec and hash(again) == hash(spec)
    assert again.to_dict() == spec.to_dict() == json.loads(text)
    assert ObsSpec.from_json(text.encode()) == spec
    assert ObsSpec.from_dict(GAME_SPEC["fields"]) == spec  # bare list of fields
    assert spec != ObsSpec.from_json({"fields": GAME_SPEC["fields"][:3]})
    rich = ObsSpec([
        {"name": "m", "kind": "onehot_array", "shape": [2, 2], "n": [[2, 3], [4, 5]],
         "start": [1, 2, 3, 4], "layout": "cell", "path": ["a", 0]},
        {"name": "x", "kind": "box", "shape": [2], "scale": [0.1, 1e-7], "offset": -3.25,
         "low": [-1, -2], "high": 7},
        Field("f", "binary", shape=[3]),
        Field("o", "onehot", n=2, start=5),
        {"name": "same", "kind": "onehot_array", "shape": [2], "n": [3, 3]},
    ])
    back = ObsSpec.from_json(rich.to_json(indent=2))
    assert back == rich
    assert back.fields[0].n == (2, 3, 4, 5) and back.fields[0].start == (1, 2, 3, 4)
    assert back.to_dict()["fields"][0]["n"] == [[2, 3], [4, 5]]
    assert back.fields[4].n == 3  # uniform per-cell list collapses to one number
    assert rich.dim == 14 + 2 + 3 + 2 + 6
    assert [f.name for f in rich.fields] == ["m", "x", "f", "o", "same"]
    with pytest.raises(AttributeError):
        rich.fields[0].n = 3


HOSTILE_SPECS = [
    "not json",
    "[1, 2",
    "[" * 100000,
    "42",
    '{"fields": 3}',
    '{"fields": [], "version": 2}',
    '{"fields": [], "extra": 1}',
    '{"version": 1}',
    '[{"name": "a", "kind": "onehot"}]',
    '[{"name": "a", "kind": "nope", "n": 2}]',
    '[{"name": "a", "kind": "onehot", "n": 0}]',
    '[{"name": "a", "kind": "onehot", "n": -5}]',
    '[{"name": "a", "kind": "onehot", "n": 2.0}]',
    '[{"name": "a", "kind": "onehot", "n": true}]',
    '[{"name": "a", "kind": "onehot", "n": "3"}]',
    '[{"name": "a", "kind": "onehot", "n": 99999999999999999999999}]',
    '[{"name": "a", "kind": "multihot", "n": 16777217}]',
    '[{"name": "a", "kind": "onehot", "n": 2, "start": 1e3}]',
    '[{"name": "a", "kind": "onehot", "n": 2, "start": 9007199254740993}]',
    '[{"name": "a", "kind": "onehot", "n": 2}, {"name": "a", "kind": "onehot", "n": 2}]',
    '[{"name": "", "kind": "onehot", "n": 2}]',
    '[{"name": 5, "kind": "onehot", "n": 2}]',
    '[{"kind": "onehot", "n": 2}]',
    '["onehot"]',
    '[{"name": "a", "kind": "onehot", "n": 2, "shape": [2]}]',
    '[{"name": "a", "kind": "onehot", "n": 2, "typo": 1}]',
    '[{"name": "a", "kind": "onehot", "n": 2, "path": "a"}]',
    '[{"name": "a", "kind": "onehot", "n": 2, "path": [1.5]}]',
    '[{"name": "a", "kind": "onehot", "n": 2, "path": [-1]}]',
    '[{"name": "a", "kind": "onehot", "n": 2, "path": [null]}]',
    '[{"name": "a", "kind": "onehot_array", "n": 2}]',
    '[{"name": "a", "kind": "onehot_array", "n": 2, "shape": [-1]}]',
    '[{"name": "a", "kind": "onehot_array", "n": 2, "shape": 4}]',
    '[{"name": "a", "kind": "onehot_array", "n": 2, "shape": [4096, 4096, 2]}]',
    '[{"name": "a", "kind": "onehot_array", "n": 1024, "shape": [4096, 8]}]',
    '[{"name": "a", "kind": "onehot_array", "n": 2, "shape": [' + ",".join(["1"] * 33) + ']}]',
    '[{"name": "a", "kind": "onehot_array", "n": 2, "shape": [2], "layout": "row"}]',
    '[{"name": "a", "kind": "onehot_array", "n": [2, 2, 2], "shape": [2]}]',
    '[{"name": "a", "kind": "onehot_array", "n": [2, [2]], "shape": [2], "layout": "cell"}]',
    '[{"name": "a", "kind": "onehot_array", "n": [2, 0], "shape": [2], "layout": "cell"}]',
    '[{"name": "a", "kind": "box", "shape": [2], "scale": NaN}]',
    '[{"name": "a", "kind": "box", "shape": [2], "offset": Infinity}]',
    '[{"name": "a", "kind": "box", "shape": [2], "low": 1, "high": 0}]',
    '[{"name": "a", "kind": "box", "shape": [2], "low": [0, "x"]}]',
    '[{"name": "a", "kind": "box", "shape": [2], "scale": [1, 2, 3]}]',
    '[{"name": "a", "kind": "box", "shape": [2], "high": 1e400}]',
    '[{"name": "a", "kind": "binary", "shape": [2], "n": 2}]',
    '[{"name": "a", "kind": "box", "shape": [16777216]}, {"name": "b", "kind": "onehot", "n": 1}]',
    '{"fields": {"name": "a"}}',
    '[{"name": "' + "x" * 300 + '", "kind": "onehot", "n": 2}]',
]


@pytest.mark.parametrize("text", HOSTILE_SPECS, ids=range(len(HOSTILE_SPECS)))
def test_hostile_spec_json(text):
    with pytest.raises(SpecError):
        ObsSpec.from_json(text)


def test_hostile_spec_objects():
    for bad in (None, 3, "x", {"fields": None}, [None], [[]], [{"name": "a", "kind": ["onehot"]}]):
        with pytest.raises(SpecError):
            ObsSpec.from_json(bad) if not isinstance(bad, str) else ObsSpec.from_json(bad)
    with pytest.raises(SpecError):
        ObsSpec.from_json(b"\xff\xfe")
    with pytest.raises(SpecError):
        ObsSpec({"fields": []})
    assert ObsSpec([]).dim == 0


# ------------------------------------------------------------------------------------------
# Bad states

BAD_STATES = [
    # (state patch on a good game state, field, row, message fragment)
    (lambda s: s["board"][2].__setitem__(5, 3), "board",
     "value 3 at index (2, 5) out of range [0, 3)"),
    (lambda s: s["board"][0].__setitem__(0, -1), "board", "value -1 at index (0, 0) out of range"),
    (lambda s: s["board"][0].__setitem__(1, 1.5), "board",
     "value 1.5 at index (0, 1) is not an integer"),
    (lambda s: s["board"][0].__setitem__(1, float("nan")), "board",
     "value nan at index (0, 1) out of range"),
    (lambda s: s["board"].pop(), "board", "expected an array of shape (13, 16)"),
    (lambda s: s["board"][4].append(0), "board", "expected an array of shape (13, 16)"),
    (lambda s: s["board"][4].__setitem__(3, "x"), "board", "non-numeric value"),
    (lambda s: s["board"][4].__setitem__(3, None), "board", "non-numeric value"),
    (lambda s: s.__setitem__("board", 7), "board",
     "expected an array of shape (13, 16), got int 7"),
    (lambda s: s.pop("board"), "board", "missing ['board']"),
    (lambda s: s["hand"].append(52), "hand", "out of range [0, 52)"),
    (lambda s: s["hand"].append(-1), "hand", "value -1 at position"),
    (lambda s: s["hand"].append("7"), "hand", "non-numeric id"),
    (lambda s: s["hand"].append([1]), "hand", "expected a flat list of ids"),
    (lambda s: s.__setitem__("hand", 3), "hand", "expected a list of ids, got int 3"),
    (lambda s: s.__setitem__("hand", {"a": 1}), "hand", "expected a list of ids, got dict"),
    (lambda s: s.__setitem__("phase", 4), "phase", "value 4 out of range [0, 4)"),
    (lambda s: s.__setitem__("phase", [1, 2]), "phase", "expected a number, got list of length 2"),
    (lambda s: s.__setitem__("phase", None), "phase", "non-numeric value NoneType None"),
    (lambda s: s.__setitem__("phase", 10**30), "phase", "number too large"),
    (lambda s: s["scalars"].__setitem__(3, float("nan")), "scalars",
     "value nan at index (3,) is not finite"),
    (lambda s: s["scalars"].__setitem__(3, float("-inf")), "scalars",
     "value -inf at index (3,) is not finite"),
    (lambda s: s["scalars"].__setitem__(3, 1e300), "scalars",
     "is not finite once scaled and rounded"),
    (lambda s: s["scalars"].__setitem__(3, 10**400), "scalars", "number too large"),
    (lambda s: s["scalars"].pop(), "scalars", "expected an array of shape (8,)"),
    (lambda s: s["scalars"].__setitem__(3, True), None, None),  # fine: True is 1
]


@pytest.mark.parametrize("case", range(len(BAD_STATES)))
def test_bad_state_named_and_identical_on_both_paths(case):
    patch, field, fragment = BAD_STATES[case]
    spec = ObsSpec.from_json(GAME_SPEC)
    states = game_states(6, seed=case)
    patch(states[4])
    if field is None:
        assert_same_everywhere(lambda: spec.encode(states))
        return
    r = assert_same_everywhere(lambda: spec.encode(states))
    assert r[0] == "error", r[:3]
    _, typ, msg, got_field, row = r
    assert typ is EncodeError
    assert (got_field, row) == (field, 4)
    assert msg.startswith(f"row 4, field {field!r}: ")
    assert fragment in msg, msg


def test_first_bad_row_then_first_field(backend):
    spec = ObsSpec.from_json(GAME_SPEC)
    states = game_states(5)
    states[3]["scalars"][0] = math.nan
    states[3]["phase"] = 7
    states[4]["board"][0][0] = 9
    with pytest.raises(EncodeError) as ei:
        spec.encode(states)
    assert (ei.value.row, ei.value.field) == (3, "phase")
    assert isinstance(ei.value, ValueError)


def test_bad_columns(backend):
    spec = ObsSpec.from_json(GAME_SPEC)
    n = 4
    good = {"board": np.zeros((n, 13, 16), np.int8), "hand": np.zeros((n, 2), np.int64),
            "phase": np.zeros(n, np.int64), "scalars": np.zeros((n, 8))}
    spec.encode(good)
    cases = [
        ({"board": None}, "board", "missing column 'board'"),
        ({"phase": np.zeros(n + 1)}, "phase", "column has 5 rows, expected 4"),
        ({"scalars": np.zeros((n, 7))}, "scalars", "column has shape (4, 7)"),
        ({"scalars": np.full((n, 8), "a")}, "scalars", "not numeric"),
        ({"scalars": 3.0}, "scalars", "leading batch axis"),
        ({"hand": (np.array([1, 2]), np.array([0, 2, 1, 2, 2]))}, "hand", "offsets decrease"),
        ({"hand": (np.array([1, 2]), np.array([0, 1, 2, 3, 3]))}, "hand", "go past the 2 ids"),
        ({"hand": (np.array([1, 2]), np.array([0, 1]))}, "hand", "column has 1 rows"),
        ({"hand": (np.array([1, 2]), 5)}, "hand", "offsets must be"),
        ({"hand": 5}, "hand", "one id list per row"),
        ({"hand": np.zeros((n, 2), np.int64) + 60}, "hand", "value 60 at position 0 out of range"),
        ({"board": np.full((n, 13, 16), 2**63, dtype=np.uint64)}, "board",
         "value 9223372036854775808 at index (0, 0) out of range"),
    ]
    for patch, field, fragment in cases:
        cols = {k: v for k, v in {**good, **patch}.items() if v is not None}
        r = assert_same_everywhere(lambda: spec.encode(cols))
        assert r[0] == "error" and r[3] == field and fragment in r[2], (fragment, r[:3])


def test_garbage_batches_raise_encode_error(backend):
    spec = ObsSpec.from_json(GAME_SPEC)
    for states in ([None], [3], ["board"], [[1, 2]], [{"board": {}}]):
        with pytest.raises(EncodeError) as ei:
            spec.encode(states)
        assert ei.value.row == 0 and ei.value.field == "board"
    with pytest.raises(TypeError):
        spec.encode(5)


def test_inputs_not_modified(backend):
    spec = ObsSpec.from_json(GAME_SPEC)
    states = game_states(5)
    snapshot = json.dumps(states)
    cols = {"board": np.ones((5, 13, 16), np.int8), "hand": [[1, 1], [], [3], [4], [5]],
            "phase": np.arange(5) % 4, "scalars": np.ones((5, 8), np.float32)}
    copies = {k: (v.copy() if isinstance(v, np.ndarray) else json.dumps(v))
              for k, v in cols.items()}
    spec.encode(states)
    spec.encode(cols)
    assert json.dumps(states) == snapshot
    for k, v in cols.items():
        assert (np.array_equal(v, copies[k]) if isinstance(v, np.ndarray)
                else json.dumps(v) == copies[k])


# ------------------------------------------------------------------------------------------
# Property tests: random specs and states, both kernels byte for byte

_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
           np.float32, np.float64, np.bool_, np.float16]


@st.composite
def field_dicts(draw, name):
    kind = draw(st.sampled_from(["onehot", "onehot_array", "multihot", "box", "binary"]))
    d = {"name": name, "kind": kind}
    shape = draw(st.lists(st.integers(0, 3), min_size=0, max_size=3))
    cells = math.prod(shape)
    if kind == "onehot":
        d.update(n=draw(st.integers(1, 5)), start=draw(st.integers(-3, 3)))
    elif kind == "multihot":
        d["n"] = draw(st.integers(1, 6))
    elif kind == "onehot_array":
        layout = draw(st.sampled_from(["plane", "cell"]))
        d.update(shape=shape, layout=layout)
        if cells and layout == "cell" and draw(st.booleans()):
            d["n"] = draw(st.lists(st.integers(1, 4), min_size=cells, max_size=cells))
        else:
            d["n"] = draw(st.integers(1, 4))
        if cells and draw(st.booleans()):
            d["start"] = draw(st.lists(st.integers(-3, 3), min_size=cells, max_size=cells))
        else:
            d["start"] = draw(st.integers(-3, 3))
    elif kind == "box":
        d["shape"] = shape
        num = st.floats(-4, 4, allow_nan=False, width=64)
        for key in ("scale", "offset"):
            if draw(st.booleans()):
                d[key] = draw(num) if not cells or draw(st.booleans()) else \
                    draw(st.lists(num, min_size=cells, max_size=cells))
        if draw(st.booleans()):
            d["low"] = draw(st.floats(-3, 0, width=64))
        if draw(st.booleans()):
            d["high"] = draw(st.floats(0, 3, width=64))
    else:
        d["shape"] = shape
    return d


@st.composite
def specs(draw):
    k = draw(st.integers(1, 4))
    return ObsSpec([draw(field_dicts(f"f{i}")) for i in range(k)])


def _values_for(draw, f: Field, nrows: int, rng):
    """A column for field ``f``: mostly valid values, sometimes bad ones."""
    bad = draw(st.integers(0, 5)) == 0
    if f.kind == "multihot":
        lengths = rng.integers(0, 5, nrows)
        hi = f.n + (2 if bad else 0)
        rows = [rng.integers(-1 if bad else 0, hi, int(m)).tolist() for m in lengths]
        if draw(st.booleans()):
            rows = [[float(v) + (0.5 if bad and rng.random() < 0.2 else 0.0) for v in r]
                    for r in rows]
        return rows
    shape = (nrows,) + f.shape
    if f.kind in ("onehot", "onehot_array"):
        lo = np.broadcast_to(np.asarray(f.start if f.start is not None else 0).reshape(-1)
                             if isinstance(f.start, tuple) else f.start, (f.cells,))
        n = np.broadcast_to(np.asarray(f.n) if isinstance(f.n, tuple) else f.n, (f.cells,))
        u = rng.random((nrows, f.cells))
        vals = lo + np.floor(u * (n + (2 if bad else 0))).astype(np.int64) - (1 if bad else 0)
        vals = vals.reshape(shape)
    elif f.kind == "box":
        vals = rng.normal(0, 3, shape)
        if bad and vals.size:
            vals.reshape(-1)[rng.integers(0, vals.size, 2)] = \
                rng.choice([np.nan, np.inf, -np.inf, 1e300])
    else:
        vals = rng.integers(0, 3 if bad else 2, shape)
    dtype = draw(st.sampled_from(_DTYPES))
    with np.errstate(all="ignore"):
        if f.kind == "box" and np.dtype(dtype).kind != "f":
            vals = np.round(np.nan_to_num(vals, posinf=100, neginf=-100)).clip(-100, 100)
        if np.dtype(dtype).kind == "u":
            vals = np.where(vals < 0, 0, vals) if not bad else vals
        if np.dtype(dtype).kind == "b":
            vals = vals != 0
        return np.asarray(vals).astype(dtype)


@needs_cython
@HYP
@given(spec=specs(), nrows=st.integers(0, 6), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_differential_kernels(spec, nrows, seed, data):
    rng = np.random.default_rng(seed)
    cols = {f.name: _values_for(data.draw, f, nrows, rng) for f in spec.fields}
    r_cols = assert_same_everywhere(lambda: spec.encode(cols))
    # the same batch as a list of JSON-like states takes the list-gathering path
    states = [{name: (v[i] if isinstance(v, list) else v[i].tolist()) for name, v in cols.items()}
              for i in range(nrows)]
    r_states = assert_same_everywhere(lambda: spec.encode(states))
    if r_cols[0] == "ok" and r_states[0] == "ok":
        assert r_cols == r_states
        # every byte of `out` is written, whatever it held before
        garbage = np.full((nrows, spec.dim), -1, dtype=np.int32).view(np.float32)
        r_out = assert_same_everywhere(lambda: spec.encode(cols, out=garbage.copy()))
        assert r_out == r_cols
    elif r_cols[0] == "error" and r_states[0] == "error":
        assert r_cols[3:] == r_states[3:]  # same field and row (values may print as int/float)


# ------------------------------------------------------------------------------------------
# Fuzz: garbage states never crash

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                  max_size=3),
    max_leaves=12)


@HYP
@given(garbage=st.lists(st.dictionaries(st.sampled_from(["board", "hand", "phase", "scalars"]),
                                        json_values, max_size=4) | json_values, max_size=4),
       data=st.data())
def test_fuzz_garbage_states(garbage, data):
    spec = ObsSpec.from_json(GAME_SPEC)
    good = game_states(len(garbage) + 1, seed=len(garbage))
    # mix garbage fields into otherwise valid states
    states = []
    for g, s in zip(garbage, good):
        if isinstance(g, dict):
            s = {**s, **g}
        else:
            s = g if data.draw(st.booleans()) else {**s, data.draw(st.sampled_from(list(s))): g}
        states.append(s)
    r = assert_same_everywhere(lambda: spec.encode(states))
    if r[0] == "ok":
        assert r[1] == (len(states), 688)


# ------------------------------------------------------------------------------------------
# gymnasium parity

def _gym_spaces(S):
    def box(draw):
        shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        dtype = draw(st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8,
                                      np.float16]))
        if np.dtype(dtype).kind == "f":
            bounded = draw(st.booleans())
            lo, hi = (-2.5, 3.5) if bounded else (-np.inf, np.inf)
        else:
            lo, hi = (0, 200) if dtype == np.uint8 else (-50, 50)
        return S.Box(low=lo, high=hi, shape=shape, dtype=dtype)

    @st.composite
    def leaf(draw):
        which = draw(st.sampled_from(["discrete", "multidiscrete", "multibinary", "box"]))
        if which == "discrete":
            return S.Discrete(draw(st.integers(1, 6)), start=draw(st.integers(-3, 3)))
        if which == "multidiscrete":
            shape = draw(st.sampled_from([(1,), (3,), (2, 2)]))
            nvec = np.array(draw(st.lists(st.integers(1, 4), min_size=math.prod(shape),
                                          max_size=math.prod(shape)))).reshape(shape)
            start = np.array(draw(st.lists(st.integers(-2, 2), min_size=math.prod(shape),
                                           max_size=math.prod(shape)))).reshape(shape)
            return S.MultiDiscrete(nvec, start=start)
        if which == "multibinary":
            return S.MultiBinary(draw(st.sampled_from([1, 4, [2, 3]])))
        return box(draw)

    keys = st.text(alphabet="abcxyz", min_size=1, max_size=3)
    return st.recursive(
        leaf(),
        lambda inner: st.dictionaries(keys, inner, min_size=1, max_size=3).map(S.Dict)
        | st.lists(inner, min_size=1, max_size=3).map(lambda xs: S.Tuple(xs)),
        max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_gymnasium_flatten_parity(data, seed):
    gym = pytest.importorskip("gymnasium")
    from gymnasium import spaces as S
    space = data.draw(_gym_spaces(S))
    space.seed(seed)
    samples = [space.sample() for _ in range(3)]
    spec = ObsSpec.from_gymnasium(space)
    assert spec.dim == gym.spaces.flatdim(space)
    assert ObsSpec.from_json(spec.to_json()) == spec
    want = np.stack([gym.spaces.flatten(space, s).astype(np.float32) for s in samples])
    for b in BACKENDS:
        with _backend.use(b):
            got = spec.encode(samples)
            assert got.tobytes() == want.tobytes(), b
            assert spec.encode_one(samples[0]).tobytes() == want[0].tobytes()


def test_gymnasium_dict_order_and_unsupported():
    gym = pytest.importorskip("gymnasium")
    from gymnasium import spaces as S
    space = S.Dict({"z": S.Discrete(2), "a": S.Box(0, 1, (2,)),
                    "m": S.Tuple([S.MultiBinary(2), S.Discrete(3, start=1)])})
    spec = ObsSpec.from_gymnasium(space)
    assert [f.name for f in spec.fields] == ["a", "m/0", "m/1", "z"]
    assert spec.fields[1].path == ("m", 0)
    s = space.sample()
    assert np.array_equal(spec.encode_one(s), gym.spaces.flatten(space, s).astype(np.float32))
    unordered = S.Dict({"z": S.Discrete(2), "a": S.Discrete(3)}, sort_keys=False)
    assert [f.name for f in ObsSpec.from_gymnasium(unordered).fields] == ["z", "a"]
    assert [f.name for f in ObsSpec.from_gymnasium(S.Discrete(3)).fields] == ["obs"]
    with pytest.raises(SpecError, match="unsupported gymnasium space Text"):
        ObsSpec.from_gymnasium(S.Dict({"t": S.Text(5)}))


def test_public_export():
    assert fastrl.ObsSpec is ObsSpec
