"""fastrl.interop.d3rlpy_arrays / to_d3rlpy: terminals, timeouts and final observations."""

import importlib
import warnings

import numpy as np
import pytest

import fastrl
from fastrl.interop import d3rlpy_arrays, to_d3rlpy

from conftest import random_episode

N_ACTIONS, OBS_DIM = 5, 3


def _write(root, rng, final, n=6, **kw):
    eps = []
    with fastrl.BatchWriter(root, n_actions=N_ACTIONS, fsync=False, **kw) as w:
        for i in range(n):
            ep = random_episode(rng, int(rng.integers(2, 7)), obs_dim=OBS_DIM,
                                n_actions=N_ACTIONS, truncated=i % 2 == 1)
            if final:
                ep["final_obs"] = rng.standard_normal(OBS_DIM)
            w.add_episode(**ep)
            eps.append(ep)
    return w.path, eps


def test_arrays_without_final_obs_are_the_columns(tmp_path, rng):
    path, eps = _write(tmp_path, rng, final=False)
    b = fastrl.load_batch(path)
    a = d3rlpy_arrays(path)
    assert not a["observations"].flags.writeable  # the read-only map itself, no copy
    assert len(a["observations"]) == b.count
    trunc = b.truncated.astype(bool)
    np.testing.assert_array_equal(a["timeouts"], trunc)
    np.testing.assert_array_equal(a["terminals"], b.dones.astype(bool) & ~trunc)


def test_final_obs_keeps_the_last_step_of_timeout_episodes(tmp_path, rng):
    path, eps = _write(tmp_path, rng, final=True)
    b = fastrl.load_batch(path)
    a = d3rlpy_arrays(path)
    n_timeouts = sum(ep["truncated"] for ep in eps)
    assert len(a["observations"]) == b.count + n_timeouts
    assert a["terminals"].sum() + a["timeouts"].sum() == len(eps)
    # episode by episode: the real steps, then (timeouts) the final observation row
    row = 0
    for ep in eps:
        T = len(ep["actions"])
        np.testing.assert_array_equal(a["observations"][row:row + T],
                                      np.asarray(ep["obs"], np.float32))
        np.testing.assert_array_equal(a["actions"][row:row + T], ep["actions"])
        row += T
        if ep["truncated"]:
            np.testing.assert_array_equal(a["observations"][row],
                                          np.asarray(ep["final_obs"], np.float32))
            assert a["rewards"][row] == 0 and a["timeouts"][row] == 1
            assert a["timeouts"][row - 1] == 0 and a["terminals"][row] == 0
            row += 1
        else:
            assert a["terminals"][row - 1] == 1
    assert row == len(a["observations"])
    plain = d3rlpy_arrays(path, final_obs=False)
    assert len(plain["observations"]) == b.count


def test_d3rlpy_learns_every_real_step(tmp_path, rng):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("d3rlpy")
    except ImportError as e:
        pytest.skip(f"d3rlpy not installed ({e})")
    from d3rlpy.dataset import BasicTransitionPicker

    path, eps = _write(tmp_path / "a", rng, final=True)
    mdp = to_d3rlpy(path)
    assert len(mdp.episodes) == len(eps)
    assert mdp.transition_count == sum(len(ep["actions"]) for ep in eps)
    pick = BasicTransitionPicker()
    for episode, ep in zip(mdp.episodes, eps):
        T = len(ep["actions"])
        assert episode.transition_count == T
        last = pick(episode, T - 1)
        if ep["truncated"]:
            assert last.terminal == 0
            np.testing.assert_array_equal(last.next_observation,
                                          np.asarray(ep["final_obs"], np.float32))
        else:
            assert last.terminal == 1
    # without final observations d3rlpy drops the last step of each timeout episode
    path2, eps2 = _write(tmp_path / "b", rng, final=False)
    mdp2 = to_d3rlpy(path2)
    assert mdp2.transition_count == sum(len(ep["actions"]) - ep["truncated"] for ep in eps2)
