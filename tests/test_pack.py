"""The packing kernels: both paths give the same bytes and the same errors (differential and
property tests), and bad values are reported with episode and step."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrl import _format as F
from fastrl import _kernels as _backend
from fastrl._kernels import codes
from fastrl._batch.episode import normalize_episode
from fastrl._batch.packing import allocate_columns, pack
from fastrl.errors import EpisodeError

from conftest import random_episode

IMPLS = {name: _backend.load(name)["pack"] for name in _backend.available()}


def _normalize(eps, obs_dim, n_actions):
    out = []
    for i, ep in enumerate(eps):
        ep = dict(ep)
        mask = ep.pop("mask", None)
        out.append(normalize_episode(i, obs_dim=obs_dim, n_actions=n_actions, mask=mask, **ep))
    return out


def _pack_with(impl, eps, obs_dim, n_actions, mask_dim, values, logprobs, threads=1):
    norm = _normalize(eps, obs_dim, n_actions)
    rows = sum(e.length for e in norm)
    cols = allocate_columns(rows + 3, obs_dim, mask_dim, values=values, logprobs=logprobs)
    for c in cols.values():
        c.fill(0xAB)  # garbage: every byte of the packed rows must be overwritten
    try:
        pack(norm, cols, 2, n_actions, threads=threads, impl=impl)
    except EpisodeError as exc:
        return "error", type(exc), str(exc)
    return "ok", {k: v[2:2 + rows].tobytes() for k, v in cols.items()}, rows


def test_error_codes_match_format():
    if "cython" in IMPLS:
        assert IMPLS["cython"].ERROR_CODES == codes.PACK_ERROR_CODES
    assert codes.PACK_ERROR_CODES == tuple(range(9))


@pytest.mark.parametrize("form", ["legal", "mask", "bool"])
@pytest.mark.parametrize("obs_dtype", [np.float32, np.float64, np.int16])
@pytest.mark.parametrize("threads", [1, 2])
def test_paths_byte_identical(form, obs_dtype, threads):
    rng = np.random.default_rng(7)
    eps = [random_episode(rng, int(rng.integers(1, 40)), obs_dim=5, n_actions=9, form=form,
                          values=True, logprobs=True, obs_dtype=obs_dtype,
                          truncated=bool(i % 2)) for i in range(25)]
    results = {name: _pack_with(impl, eps, 5, 9, 16, True, True, threads)
               for name, impl in IMPLS.items()}
    ref = results["numpy"]
    assert ref[0] == "ok"
    for name, res in results.items():
        assert res == ref, name
    cols = ref[1]
    masks = np.frombuffer(cols["masks"], np.uint8).reshape(-1, 16)
    assert not masks[:, 9:].any()  # padding columns are zero
    dones = np.frombuffer(cols["dones"], np.uint8)
    assert dones.sum() == len(eps)


def test_large_parallel_pack_identical():
    rng = np.random.default_rng(1)
    eps = [random_episode(rng, 300, obs_dim=32, n_actions=20, form="mask") for _ in range(40)]
    res = {n: _pack_with(i, eps, 32, 20, 24, False, False, threads=2) for n, i in IMPLS.items()}
    assert len({repr(r) for r in res.values()}) == 1


BAD_CASES = {
    "nan_obs": lambda ep: ep["obs"].__setitem__((3, 2), np.nan),
    "inf_obs": lambda ep: ep["obs"].__setitem__((0, 0), -np.inf),
    "overflow_obs": lambda ep: ep["obs"].__setitem__((1, 4), 1e300),
    "nan_reward": lambda ep: ep["rewards"].__setitem__(4, np.nan),
    "nan_value": lambda ep: ep["values"].__setitem__(2, np.inf),
    "action_range": lambda ep: ep["actions"].__setitem__(5, 10),
    "action_negative": lambda ep: ep["actions"].__setitem__(1, -1),
    "illegal": lambda ep: (ep["legal"][3].clear(), ep["legal"][3].append((ep["actions"][3] + 1) % 10)),
    "legal_id_range": lambda ep: ep["legal"][2].append(10),
    "legal_id_negative": lambda ep: ep["legal"][6].append(-3),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_values_same_error_both_paths(case):
    rng = np.random.default_rng(3)
    eps = [random_episode(rng, 8, obs_dim=5, n_actions=10, values=True) for _ in range(4)]
    BAD_CASES[case](eps[2])
    results = {name: _pack_with(impl, eps, 5, 10, 10, True, False) for name, impl in IMPLS.items()}
    ref = results["numpy"]
    assert ref[0] == "error" and ref[1] is EpisodeError
    assert ref[2].startswith("episode 2, step ")
    for res in results.values():
        assert res == ref


def test_dense_mask_value_error_and_first_error_wins():
    rng = np.random.default_rng(4)
    ep = random_episode(rng, 6, n_actions=10, form="mask")
    ep["mask"][4, 7] = 2  # uint8 mask with a 2: the kernel must report it
    ep["rewards"][4] = np.nan  # same step: reward is checked before the mask
    ep["obs"][5, 0] = np.nan  # later step
    results = {n: _pack_with(i, [ep], 6, 10, 10, False, False) for n, i in IMPLS.items()}
    for res in results.values():
        assert res == ("error", EpisodeError, "episode 0, step 4: reward is NaN")


@pytest.mark.parametrize("bad,msg", [
    ({"obs": [[1.0, 2.0], [3.0]]}, "obs"),
    ({"obs": np.zeros((3, 4))}, "obs rows have 4 values"),
    ({"actions": [0, 1]}, "rewards has 3 values for 2 steps"),
    ({"actions": [0.5, 1, 1]}, "actions must be integers"),
    ({"rewards": ["a", "b", "c"]}, "rewards must be numbers"),
    ({"legal": [[0], [1]]}, "legal has 2 entries"),
    ({"legal": [[0], [1], [[2]]]}, "flat list"),
    ({"legal": None, "mask": np.ones((3, 5))}, "numActions=10"),
    ({"legal": None, "mask": np.full((3, 10), 3)}, "not 0 or 1"),
    ({"mask": np.ones((3, 10))}, "not both"),
    ({"actions": np.array([2 ** 40, 0, 0])}, "outside [0, 10)"),
])
def test_shape_and_type_errors(backend, bad, msg):
    ep = {"obs": np.zeros((3, 6)), "actions": [0, 1, 1], "rewards": [0.0, 0.0, 1.0],
          "legal": [[0], [1], [1, 2]]}
    ep.update(bad)
    mask = ep.pop("mask", None)
    with pytest.raises(EpisodeError, match=re.escape(msg)) as info:
        norm = normalize_episode(0, obs_dim=6, n_actions=10, mask=mask, **ep)
        cols = allocate_columns(3, 6, 10, values=False, logprobs=False)
        pack([norm], cols, 0, 10)
    assert info.value.episode == 0


def test_inputs_not_modified():
    rng = np.random.default_rng(9)
    eps = [random_episode(rng, 10, form=f) for f in ("legal", "mask")]
    before = [{k: np.array(v, copy=True) if not isinstance(v, list) else repr(v)
               for k, v in ep.items()} for ep in eps]
    for impl in IMPLS.values():
        _pack_with(impl, eps, 6, 10, 12, False, False)
    for ep, snap in zip(eps, before):
        for k, v in ep.items():
            if isinstance(v, list):
                assert repr(v) == snap[k]
            else:
                assert np.array_equal(np.asarray(v), snap[k])


# -- property tests -----------------------------------------------------------------------------

@st.composite
def ragged_batches(draw):
    obs_dim = draw(st.integers(1, 9))
    n_actions = draw(st.integers(1, 12))
    pad = draw(st.integers(0, 5))
    values = draw(st.booleans())
    n_eps = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n_eps):
        T = draw(st.integers(1, 20))
        ep = random_episode(rng, T, obs_dim=obs_dim, n_actions=n_actions,
                            form=draw(st.sampled_from(["legal", "mask", "bool"])), values=values,
                            obs_dtype=draw(st.sampled_from([np.float32, np.float64])),
                            truncated=draw(st.booleans()))
        corrupt = draw(st.sampled_from([None, "obs", "reward", "action", "legal", "illegal"]))
        t = int(rng.integers(0, T))
        if corrupt == "obs":
            bad = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e39]))
            if ep["obs"].dtype == np.float32 and bad == 1e39:
                bad = np.inf
            ep["obs"][t, int(rng.integers(0, obs_dim))] = bad
        elif corrupt == "reward":
            ep["rewards"][t] = np.nan
        elif corrupt == "action":
            ep["actions"][t] = draw(st.sampled_from([-1, n_actions, 2 ** 31, -2 ** 31 - 1]))
        elif corrupt == "legal" and "legal" in ep:
            ep["legal"][t].append(draw(st.sampled_from([-1, n_actions, 2 ** 40])))
        elif corrupt == "illegal" and "legal" in ep and n_actions > 1:
            ep["legal"][t] = [i for i in range(n_actions) if i != ep["actions"][t]]
        eps.append(ep)
    return eps, obs_dim, n_actions, n_actions + pad, values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ragged_batches())
def test_property_paths_agree(batch):
    eps, obs_dim, n_actions, mask_dim, values = batch
    results = {n: _pack_with(i, eps, obs_dim, n_actions, mask_dim, values, False)
               for n, i in IMPLS.items()}
    ref = results["numpy"]
    for res in results.values():
        assert res == ref
    if ref[0] == "ok":
        rows = ref[2]
        obs = np.frombuffer(ref[1]["obs"], "<f4").reshape(rows, obs_dim)
        want = np.concatenate([np.asarray(e["obs"], np.float32) for e in eps])
        assert np.array_equal(obs, want)
        acts = np.frombuffer(ref[1]["actions"], "<i4")
        assert acts.tolist() == [a for e in eps for a in e["actions"]]


class _Sub(np.ndarray):
    """An ndarray subclass: normalize_episode's fast path for plain arrays does not take it."""


@settings(max_examples=150, deadline=None)
@given(dtype=st.sampled_from(["i1", "i2", "i4", "<i8", ">i8", "u1", "u2", "u4", "u8", "f2",
                              "f4", "<f8", ">f8", "?", "c8"]),
       n=st.integers(0, 6), big=st.booleans(), strided=st.booleans(),
       kind=st.sampled_from(["int", "float"]))
def test_vector_fast_path_equals_generic_path(dtype, n, big, strided, kind):
    """Per-step columns given as plain arrays (the fast path) normalize exactly as any other
    array-like does (the generic checks): same values and dtype, or the same error."""
    from fastrl._batch.episode import _vector
    base = np.arange(2 * n, dtype=np.float64) * (2.0 ** 62 if big else 1.5)
    with np.errstate(all="ignore"):
        x = base.astype(dtype)
    x = x[::2] if strided else x[:n]

    def run(arr):
        try:
            out = _vector(arr, "actions", n, 3, kind=kind)
            return out.dtype, out.tolist(), out.flags.c_contiguous
        except EpisodeError as exc:
            return str(exc)

    assert run(x) == run(x.view(_Sub))


def test_empty_legal_ids_of_any_number_dtype_but_bool():
    """An episode whose steps have no legal ids at all (flat form): accepted whatever the
    number dtype of the empty ids array (it is then illegal to act, named at step 0); booleans
    are not action ids."""
    from fastrl._batch.episode import _vector
    for dt in ("i4", "u8", "f8", "c8"):
        out = _vector(np.zeros(0, dt), "legal ids", 0, 1, kind="int")
        assert out.dtype == np.int64 and out.shape == (0,)
    with pytest.raises(EpisodeError, match="must be integers, got dtype bool"):
        _vector(np.zeros(0, bool), "legal ids", 0, 1, kind="int")
