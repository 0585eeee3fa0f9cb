"""The export's JSON scanner (fastrl._kernels.jscan, via fastrl.export.scan) against the orjson
path it falls back to: whatever the scanner takes, the orjson path takes too and packs into the
same bytes; whatever it does not take goes to the orjson path, so errors are that path's
(checked end to end: same batches, same errors with the scanner on and off)."""

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrl
from fastrl._batch.stager import Layout, Stager
from fastrl.errors import EpisodeError
from fastrl.export import export_episodes, scan
from fastrl.export.parse import episode_fields, loads
from fastrl.spec import ObsSpec

pytestmark = pytest.mark.skipif(scan.scanner_plan(None, None) is scan.NO_SCAN,
                                reason="jscan kernel not built, or the NumPy backend runs")

SPEC = ObsSpec.from_json({"fields": [
    {"name": "board", "kind": "onehot_array", "shape": [2, 3], "n": 3},
    {"name": "hand", "kind": "multihot", "n": 5},
    {"name": "phase", "kind": "onehot", "n": 4},
    {"name": "scalars", "kind": "box", "shape": [2]},
    {"name": "flag", "kind": "binary", "shape": [2]},
]})
N_ACTIONS = 6
OBS_DIM = 3


def pack(kw, spec, layout):
    """Columns packed from Stager.prepare keyword arguments, or the EpisodeError's text."""
    stager = Stager(layout, capacity=256, spec=spec, threads=1)
    try:
        ep, states = stager.prepare(0, **kw)
        stager.put(ep, states, 0)
    except EpisodeError as exc:
        return str(exc)
    return {k: v.copy() for k, v in stager.view().items()}


def reference(raw, spec):
    obj = loads(raw)
    return episode_fields(obj, use_states=spec is not None)


def check_same(raw: bytes, spec, layout):
    """Scanner taken => the orjson path takes it too and packs the same bytes."""
    plan = scan.scanner_plan(spec, None)
    assert plan is not scan.NO_SCAN
    kw = scan.scan_episode(raw, plan)
    if kw is None:
        return "rejected"
    got = pack(kw, spec, layout)
    try:
        ref_kw = reference(raw, spec)
    except (ValueError, RecursionError, EpisodeError) as exc:
        raise AssertionError(f"scanner took {raw[:200]!r}, the orjson path refuses it: {exc}")
    want = pack(ref_kw, spec, layout)
    if isinstance(got, str):  # the export falls back: the orjson path's outcome is reported
        return "fallback"
    assert not isinstance(want, str), f"scanner packed {raw[:200]!r}; orjson path: {want}"
    assert got.keys() == want.keys()
    for k in got:
        assert got[k].dtype == want[k].dtype and got[k].tobytes() == want[k].tobytes(), k
    return "same"


# -- strategies: mostly valid episodes, with every kind of deviation --------------------------

ints = st.integers(-3, 8)  # noqa: E305
nums = st.one_of(st.integers(-3, 8), st.floats(-1e6, 1e6, allow_nan=False, width=32),
                 st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                 st.integers(-(2 ** 70), 2 ** 70))
odd = st.one_of(st.none(), st.text(max_size=3), st.lists(ints, max_size=2), st.just({}))


class Maybe:
    """Draws ``good`` values, and with probability ``rate`` (drawn once per episode: 0 for
    about half of them) anything from ``bad`` instead."""

    def __init__(self, draw):
        self.draw = draw
        self.rate = draw(st.sampled_from([0.0, 0.0, 0.0, 0.02, 0.1, 0.4]))

    def __call__(self, bad, good):
        if self.rate and self.draw(st.integers(0, 999)) < self.rate * 1000:
            return self.draw(bad)
        return self.draw(good)


def state(m):
    s = {"board": m(st.one_of(nums, odd, st.lists(st.lists(nums, max_size=4), max_size=3)),
                    st.lists(st.lists(st.integers(0, 2), min_size=3, max_size=3),
                             min_size=2, max_size=2)),
         "hand": m(st.one_of(odd, st.lists(nums, max_size=3)),
                   st.lists(st.integers(0, 4), max_size=4)),
         "phase": m(st.one_of(nums, odd), st.integers(0, 3)),
         "scalars": m(st.one_of(odd, st.lists(nums, max_size=3)),
                      st.lists(st.one_of(st.floats(-100, 100, allow_nan=False),
                                         st.integers(-9, 9)), min_size=2, max_size=2)),
         "flag": m(st.one_of(odd, st.lists(nums, max_size=3)),
                   st.lists(st.integers(0, 1), min_size=2, max_size=2))}
    for k in m(st.lists(st.sampled_from(sorted(s)), max_size=1), st.just([])):
        del s[k]
    if m.draw(st.integers(0, 3)) == 0:
        s["extra"] = m.draw(st.one_of(odd, nums, st.text(max_size=3)))
    return s


@st.composite
def episode(draw, use_states):
    m = Maybe(draw)
    T = draw(st.integers(1, 4))
    form = m(st.sampled_from(["both", "none"]), st.sampled_from(["mask", "legal"]))
    extras = draw(st.booleans())
    steps = []
    for t in range(T):
        legal = draw(st.lists(st.integers(0, N_ACTIONS - 1), min_size=1, max_size=4,
                              unique=True))
        s = {"action": m(st.one_of(nums, odd), st.sampled_from(legal)),
             "reward": m(st.one_of(nums, odd), st.one_of(st.floats(-10, 10, allow_nan=False),
                                                         st.integers(-5, 5)))}
        if form in ("mask", "both"):
            s["mask"] = m(st.lists(st.one_of(ints, st.booleans()), max_size=7),
                          st.just([int(i in legal) for i in range(N_ACTIONS)]))
            if draw(st.integers(0, 4)) == 0:
                s["mask"] = [bool(x) for x in s["mask"]]
        if form in ("legal", "both"):
            s["legal"] = m(st.lists(st.one_of(nums, odd), max_size=3), st.just(legal))
        if extras:
            s["value"] = m(st.one_of(nums, odd), st.floats(-5, 5, allow_nan=False))
            s["logprob"] = m(nums, st.floats(-5, 0, allow_nan=False))
        if use_states:
            s["state"] = state(m)
            if draw(st.integers(0, 5)) == 0:
                s["obs"] = [1, 2]  # a stored obs: the spec wins
        else:
            s["obs"] = m(st.lists(nums, max_size=4),
                         st.lists(st.one_of(st.floats(-9, 9, allow_nan=False, width=32),
                                            st.integers(-9, 9), st.booleans()),
                                  min_size=OBS_DIM, max_size=OBS_DIM))
        if draw(st.integers(0, 6)) == 0:
            s["done"] = m(nums, st.booleans() if t == T - 1 else st.just(False))
        if draw(st.integers(0, 6)) == 0:
            s["truncated"] = m(nums, st.booleans())
        for k in m(st.lists(st.sampled_from(sorted(s)), max_size=1), st.just([])):
            del s[k]
        steps.append(s)
    if draw(st.booleans()):
        return steps
    ep = {"steps": steps}
    if draw(st.booleans()):
        ep["truncated"] = m(nums, st.booleans())
    if draw(st.booleans()):
        ep["info"] = draw(st.one_of(odd, st.text(max_size=4)))
    return ep


@st.composite
def episode_bytes(draw, use_states):
    obj = draw(episode(use_states))
    style = draw(st.sampled_from(["compact", "spaced", "indent", "ascii"]))
    if style == "compact":
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    elif style == "spaced":
        text = json.dumps(obj, ensure_ascii=False)
    elif style == "indent":
        text = json.dumps(obj, indent=1)
    else:
        text = json.dumps(obj)
    raw = text.encode("utf-8", "surrogatepass")
    # sometimes byte-level damage: truncation, a changed byte, a duplicated key, an escaped
    # key, surrounding whitespace, an overflowing number
    op = draw(st.integers(0, 15))
    if op == 0 and raw:
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif op == 1 and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:]
    elif op == 2:
        raw = raw.replace(b'"reward":', b'"reward": 1, "reward":', 1)
    elif op == 3:
        raw = raw.replace(b'"action"', b'"\\u0061ction"', 1)
    elif op == 4:
        raw = b" \r\n" + raw + b" \t"
    elif op == 5:
        raw = raw.replace(b"1", b"1e400", 1)
    elif op == 6:
        raw = raw.replace(b'"phase"', b'"phase": 1, "phase"', 1)
    return raw


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(episode_bytes(use_states=True))
def test_scanner_matches_orjson_path_states(raw):
    check_same(raw, SPEC, Layout(SPEC.dim, N_ACTIONS, N_ACTIONS + 2, True, True))


@SETTINGS
@given(episode_bytes(use_states=False))
def test_scanner_matches_orjson_path_obs(raw):
    for extras in (True, False):
        check_same(raw, None, Layout(OBS_DIM, N_ACTIONS, N_ACTIONS, extras, extras))


def test_scanner_takes_the_bot_output():
    from fastrl.bot import play_episode
    from fastrl.game import N_ACTIONS as A, game_spec
    spec = game_spec()
    lay = Layout(spec.dim, A, 256, True, True)
    for i in range(5):
        raw = json.dumps(play_episode(i, with_obs=i % 2 == 1)).encode()
        assert check_same(raw, spec, lay) == "same"
    obs_lay = Layout(spec.dim, A, A, True, True)
    raw = json.dumps(play_episode(9, with_obs=True)).encode()
    assert check_same(raw, None, obs_lay) == "same"


def _write(d, lines):
    d.mkdir(parents=True, exist_ok=True)
    (d / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return d


def _export(monkeypatch, src, out, scanner, **kw):
    monkeypatch.setenv("FASTRL_EXPORT_SCANNER", scanner)
    try:
        res = export_episodes(src, out, progress=False, **kw)
    except EpisodeError as exc:
        return str(exc)
    return {f: (res.path / f).read_bytes() for f in sorted(os.listdir(res.path))
            if f.endswith(".bin")}, res.skipped


BAD_STEPS = [("action", b'"x"'), ("action", b"1.5"), ("reward", b"NaN"),
             ("reward", b"-Infinity"), ("reward", b"true"), ("action", b"99"),
             ("action", b"123456789012345678901234"), ("legal", b"[1, 2.5]"),
             ("state", b'{"board": 3}'), ("value", b"null")]


@pytest.mark.parametrize("key,literal", BAD_STEPS)
@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_export_same_batches_and_errors_scanner_on_and_off(tmp_path, monkeypatch, key, literal,
                                                           on_error):
    """End to end: the same bytes and the same errors (file, episode, step) either way."""
    from fastrl.bot import play_episode
    from fastrl.game import N_ACTIONS as A, game_spec
    eps = [play_episode(i) for i in range(3)]
    eps[1]["steps"][2][key] = "@@BAD@@"
    lines = [json.dumps(e).encode().replace(b'"@@BAD@@"', literal) for e in eps]
    src = _write(tmp_path / "eps", lines)
    kw = dict(spec=game_spec(), n_actions=A, on_error=on_error)
    a = _export(monkeypatch, src, tmp_path / "a", "1", **kw)
    b = _export(monkeypatch, src, tmp_path / "b", "0", **kw)
    assert a == b
    if on_error == "fail":
        assert isinstance(a, str) and "episode 1, step 2" in a, a
    else:
        assert a[1] and a[1][0]["episode"] == 1 and a[1][0]["step"] == 2, a[1]


def test_export_valid_input_byte_identical_scanner_on_and_off(tmp_path, monkeypatch):
    from fastrl.bot import write_episodes
    src = tmp_path / "eps"
    write_episodes(src, episodes=12, seed=5, per_file=5, fsync=False)
    write_episodes(src, episodes=3, seed=6, fmt="json", with_obs=True, fsync=False)
    a = _export(monkeypatch, src, tmp_path / "a", "1", workers=2)
    b = _export(monkeypatch, src, tmp_path / "b", "0")
    assert isinstance(a, tuple) and a == b
    a = _export(monkeypatch, src, tmp_path / "c", "1", use_sidecar=False, n_actions=208)
    b = _export(monkeypatch, src, tmp_path / "d", "0", use_sidecar=False, n_actions=208)
    assert isinstance(a, str) and a == b  # states without obs in the first files
    batch = next(p for p in (tmp_path / "a").iterdir() if p.name.startswith("batch_"))
    assert np.isnan(fastrl.load_batch(batch).obs).sum() == 0


number_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-(10 ** 20), 10 ** 20).map(str),
    st.builds(lambda sign, i, f, e: f"{sign}{i}{'.' + f if f else ''}{e}",
              st.sampled_from(["", "-"]), st.integers(0, 10 ** 17).map(str),
              st.text("0123456789", max_size=22),
              st.one_of(st.just(""), st.builds(lambda s, x: f"e{s}{x}",
                                               st.sampled_from(["", "+", "-"]),
                                               st.integers(0, 400)))))


@settings(max_examples=1000, deadline=None)
@given(number_text)
def test_scanner_numbers_equal_python_float(text):
    """Every number the scanner takes is the double Python's parser gives (bit for bit)."""
    raw = ('[{"action": 0, "reward": %s, "obs": [%s], "mask": [1]}]' % (text, text)).encode()
    kw = scan.scan_episode(raw, None)
    try:
        want = float(json.loads(text))
    except (ValueError, OverflowError):
        assert kw is None
        return
    if kw is None:  # refused (too many digits, not finite): the orjson path decides
        return
    assert kw["rewards"][0].tobytes() == np.float64(want).tobytes(), text
    assert kw["obs"][0, 0].tobytes() == np.float64(want).tobytes(), text


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=400), st.integers(0, 40))
def test_scanner_on_any_bytes(raw, cut):
    """Arbitrary bytes (and a valid episode cut short, with a byte range): never a crash, and
    whatever is taken agrees with the orjson path."""
    base = json.dumps([{"action": 0, "reward": 1, "mask": [1], "obs": [1, 2, 3]}]).encode()
    for data in (raw, base[:len(base) - cut] + raw[:cut]):
        for spec, lay in ((SPEC, Layout(SPEC.dim, N_ACTIONS, N_ACTIONS, False, False)),
                          (None, Layout(OBS_DIM, 1, 1, False, False))):
            plan = scan.scanner_plan(spec, None)
            if scan.scan_episode(data, plan) is not None:
                check_same(data, spec, lay)
            n = len(data)
            assert scan.scan_episode(data, plan, n, n) is None  # an empty range
            assert scan.scan_episode(data, plan, n + 5, -1) is None


def test_scanner_deep_nesting_and_ranges():
    deep = b'{"steps": [{"action": 0, "reward": 0, "obs": [1, 2, 3], "mask": [1]}], "info": ' \
        + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert scan.scan_episode(deep, None) is None
    ok = b'{"steps": [{"action": 0, "reward": 0, "obs": [1, 2, 3], "mask": [1]}], "info": ' \
        + b"[" * 50 + b"]" * 50 + b"}"
    kw = scan.scan_episode(ok, None)
    assert kw is not None and kw["obs"].tolist() == [[1.0, 2.0, 3.0]]
    framed = b"xx\n" + ok + b"\nyy"
    kw = scan.scan_episode(framed, None, 3, 3 + len(ok))
    assert kw is not None and kw["actions"].tolist() == [0]


@pytest.mark.parametrize("info,taken", [
    ('"José 漢字 😀"'.encode(), True), (b'"a\\n\\u00e9\\ud800\\/"', True),
    (b'"\xff"', False), (b'"\xed\xa0\x80"', False), (b'"\xc0\xaf"', False),
    (b'"\xf4\x90\x80\x80"', False), (b'"tab\there"', False), (b'"\\x"', False),
    (b'"\\u12g4"', False)])
def test_scanner_strings(info, taken):
    """Strings the scanner skips: strict UTF-8 and valid escapes taken; the rest refused."""
    raw = b'{"steps": [{"action": 0, "reward": 0, "obs": [1, 2, 3], "mask": [1], "note": ' \
        + info + b"}]}"
    assert (scan.scan_episode(raw, None) is not None) == taken
    outcome = check_same(raw, None, Layout(OBS_DIM, 1, 1, False, False))
    assert outcome == ("same" if taken else "rejected")
    escaped_key = raw.replace(b'"action"', b'"\\u0061ction"')
    assert scan.scan_episode(escaped_key, None) is None


NESTED = ObsSpec.from_json({"fields": [
    {"name": "a", "kind": "box", "shape": [2]},
    {"name": "b/c", "kind": "onehot", "n": 3, "path": ["b", "c"]},
    {"name": "b/h", "kind": "multihot", "n": 4, "path": ["b", "h"]},
    {"name": "t/0", "kind": "onehot", "n": 2, "path": ["t", 0]},
    {"name": "t/1", "kind": "box", "shape": [2, 2], "path": ["t", 1]},
]})


@st.composite
def nested_episode_bytes(draw):
    m = Maybe(draw)
    steps = []
    for t in range(draw(st.integers(1, 3))):
        b = {"c": m(st.one_of(nums, odd), st.integers(0, 2)),
             "h": m(st.one_of(odd, st.lists(nums, max_size=3)),
                    st.lists(st.integers(0, 3), max_size=3))}
        if draw(st.booleans()):
            b["x"] = draw(st.one_of(odd, nums))
        tup = [m(st.one_of(nums, odd), st.integers(0, 1)),
               m(st.one_of(odd, st.lists(st.lists(nums, max_size=3), max_size=3)),
                 st.lists(st.lists(st.floats(-9, 9, allow_nan=False), min_size=2, max_size=2),
                          min_size=2, max_size=2))]
        if draw(st.integers(0, 3)) == 0:
            tup.append(draw(st.one_of(odd, nums)))  # an element no field reads
        state = {"a": m(st.one_of(odd, st.lists(nums, max_size=3)),
                        st.lists(st.integers(-3, 3), min_size=2, max_size=2)),
                 "b": m(st.one_of(odd, st.just([1, 2])), st.just(b)),
                 "t": m(st.one_of(odd, st.just({"0": 1})), st.just(tup))}
        for k in m(st.lists(st.sampled_from(sorted(state)), max_size=1), st.just([])):
            del state[k]
        steps.append({"state": state, "action": 0, "reward": 1.0, "legal": [0]})
    return json.dumps({"steps": steps}).encode()


@SETTINGS
@given(nested_episode_bytes())
def test_scanner_matches_orjson_path_nested_paths(raw):
    check_same(raw, NESTED, Layout(NESTED.dim, 1, 1, False, False))


def test_scanner_nested_paths_taken_and_plans_refused():
    state = {"a": [1, 2], "b": {"c": 2, "h": [3, 0]}, "t": [1, [[0.5, 1], [2, 3]], "x"]}
    raw = json.dumps([{"state": state, "action": 0, "reward": 0, "legal": [0]}] * 2).encode()
    assert check_same(raw, NESTED, Layout(NESTED.dim, 1, 1, False, False)) == "same"
    root = ObsSpec.from_json({"fields": [{"name": "v", "kind": "box", "shape": [3],
                                          "path": []}]})
    raw = json.dumps([{"state": [1, 2, 3.5], "action": 0, "reward": 0, "legal": [0]}]).encode()
    assert check_same(raw, root, Layout(3, 1, 1, False, False)) == "same"
    only_ids = ObsSpec.from_json({"fields": [{"name": "h", "kind": "multihot", "n": 3}]})
    assert scan.scanner_plan(only_ids, None) is scan.NO_SCAN
    assert scan.scanner_plan(NESTED, "mod:fn") is scan.NO_SCAN
