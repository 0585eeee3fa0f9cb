"""fastrl.interop.to_minari / from_minari against the real minari (skipped when not installed)."""

import importlib
import json
import os
import sys
import warnings

import numpy as np
import pytest

import fastrl
from fastrl.interop import from_minari, to_minari

from conftest import random_episode

N_ACTIONS, OBS_DIM = 7, 5


def _need(name):
    """The module, or a skip when it (or something it imports) is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        pytest.skip(f"{name} not installed ({e})")


@pytest.fixture
def minari(tmp_path, monkeypatch):
    """minari with its default (hdf5) storage, writing under tmp_path; skip when missing."""
    mod = _need("minari")
    _need("h5py")
    _need("PIL")  # imported by minari's storages, not declared by minari 0.5.4
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return mod


def _episodes(rng, n=6, final=False):
    eps = [random_episode(rng, int(rng.integers(1, 9)), obs_dim=OBS_DIM, n_actions=N_ACTIONS,
                          truncated=bool(i % 3 == 1)) for i in range(n)]
    if final:
        for ep in eps:
            ep["final_obs"] = rng.standard_normal(OBS_DIM)
    return eps


def _write(root, episodes, n_actions=N_ACTIONS, **kw):
    with fastrl.BatchWriter(root, n_actions=n_actions, fsync=False, **kw) as w:
        for ep in episodes:
            w.add_episode(**ep)
    return w.path


def _check_same(dataset, source):
    """Every Minari episode equals the matching fastrl episode (and the documented mapping)."""
    ds = fastrl.open_dataset(source)
    assert dataset.total_episodes == ds.num_episodes
    assert dataset.total_steps == len(ds)
    for i, got in enumerate(dataset.iterate_episodes()):
        ep = ds.episode(i)
        T = len(ep)
        assert got.id == i and len(got) == T
        assert got.observations.shape[0] == T + 1
        obs = got.observations.reshape(T + 1, OBS_DIM)
        np.testing.assert_array_equal(obs[:T], ep.obs)
        if ep.final_obs is not None:
            np.testing.assert_array_equal(obs[T], ep.final_obs)
        else:
            np.testing.assert_array_equal(obs[T], ep.obs[T - 1])  # repeated
        np.testing.assert_array_equal(got.actions, ep.actions)
        np.testing.assert_array_equal(got.rewards, ep.rewards)
        trunc = np.zeros(T, bool) if ep.truncated is None else ep.truncated.astype(bool)
        np.testing.assert_array_equal(got.truncations, trunc)
        np.testing.assert_array_equal(got.terminations, ep.dones.astype(bool) & ~trunc)
        assert got.terminations[-1] != got.truncations[-1]  # exactly one ends the episode
        assert not got.terminations[:-1].any() and not got.truncations[:-1].any()
        mask = got.infos["action_mask"]
        assert mask.shape == (T + 1, N_ACTIONS) and mask.dtype == np.uint8
        np.testing.assert_array_equal(mask[:T], ep.masks[:, :N_ACTIONS])
        np.testing.assert_array_equal(mask[T], mask[T - 1])
        assert mask[np.arange(T), got.actions].all()


def test_plain_batch_round_trip(minari, tmp_path, rng):
    import gymnasium as gym

    # mask_pad: padding columns are dropped so masks match Discrete(numActions)
    path = _write(tmp_path / "data", _episodes(rng), mask_pad=16)
    out = to_minari(path, "fastrl/test/plain-v0", author="bot team", description="unit test")
    assert isinstance(out, minari.MinariDataset)

    dataset = minari.load_dataset("fastrl/test/plain-v0")
    assert (tmp_path / "minari" / "fastrl" / "test" / "plain-v0").is_dir()
    assert dataset.action_space == gym.spaces.Discrete(N_ACTIONS)
    assert dataset.observation_space == gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    _check_same(dataset, path)
    meta = dataset.storage.metadata
    assert meta["description"].startswith("unit test")
    assert "repeats observation T-1" in meta["description"]
    assert meta["author"] == {"bot team"}
    assert meta["fastrl"]["finalObservation"] == "repeat_last"
    assert meta["fastrl"]["numActions"] == N_ACTIONS
    assert dataset.env_spec is None
    assert len(dataset.sample_episodes(2)) == 2  # Minari tooling works on it


def test_final_observations_are_the_last_observation(minari, tmp_path, rng):
    path = _write(tmp_path / "data", _episodes(rng, 5, final=True))
    assert fastrl.load_batch(path).final_obs is not None
    dataset = to_minari(path, "fastrl/final-v0")
    _check_same(dataset, path)  # obs[T] == final_obs
    meta = minari.load_dataset("fastrl/final-v0").storage.metadata
    assert meta["fastrl"]["finalObservation"] == "final_obs"
    assert "repeats observation T-1" not in meta["description"]


def test_sharded_and_many_batches_chunked(minari, tmp_path, rng):
    root = tmp_path / "data"
    sharded = _write(root, _episodes(rng, 5, final=True), shard_bytes=200)  # several shards
    assert len(fastrl.open_dataset(sharded).parts) > 1
    _write(root, _episodes(rng, 3))  # a second, plain batch without truncations/final obs
    out = to_minari(root, "fastrl-many-v1", chunk_steps=7)  # several update_dataset calls
    _check_same(out, root)
    _check_same(minari.load_dataset("fastrl-many-v1"), root)
    record = out.storage.metadata["fastrl"]
    assert record["finalObservation"] == "mixed"
    assert record["repeatedFinalObservation"] == [5, 6, 7]


def test_arrow_format_and_shaped_spaces(minari, tmp_path, rng):
    _need("pyarrow")
    import gymnasium as gym

    path = _write(tmp_path / "data", _episodes(rng, 3))
    space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM, 1), np.float64)
    to_minari(path, "fastrl/arrow-v0", data_format="arrow", observation_space=space)
    dataset = minari.load_dataset("fastrl/arrow-v0")
    assert dataset.storage.metadata["data_format"] == "arrow"
    assert dataset.observation_space == space
    assert dataset[0].observations.dtype == np.float64
    assert dataset[0].observations.shape == (len(dataset[0]) + 1, OBS_DIM, 1)
    _check_same(dataset, path)


# --------------------------------------------------------------------------------------------
# Composite observation spaces


def _composite_spaces():
    import gymnasium as gym
    S = gym.spaces
    d = S.Dict({"pos": S.Box(-1.0, 1.0, (2,), np.float32), "kind": S.Discrete(3, start=1),
                "flags": S.MultiBinary(3)})
    t = S.Tuple((S.Discrete(4), S.Box(0, 10, (2, 2), np.int64), S.MultiDiscrete([2, 3, 2])))
    nested = S.Dict({"board": S.MultiDiscrete([[3, 3], [3, 3]]),
                     "me": S.Tuple((S.Discrete(2), S.Dict({"hp": S.Box(0.0, 5.0, (), np.float32),
                                                           "cards": S.MultiBinary([2, 2])}))),
                     "turn": S.Discrete(5)})
    return {"dict": d, "tuple": t, "nested": nested}


def _stack(values):
    """A list of space samples -> the structure of stacked arrays Minari returns."""
    first = values[0]
    if isinstance(first, dict):
        return {k: _stack([v[k] for v in values]) for k in first}
    if isinstance(first, tuple):
        return tuple(_stack([v[i] for v in values]) for i in range(len(first)))
    return np.stack([np.asarray(v) for v in values])


def _assert_same_structure(got, want):
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want)
        for k in want:
            _assert_same_structure(got[k], want[k])
    elif isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _assert_same_structure(g, w)
    else:
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("data_format", ["hdf5", "arrow"])
@pytest.mark.parametrize("which", ["dict", "tuple", "nested"])
def test_composite_observation_spaces(minari, tmp_path, which, data_format):
    if data_format == "arrow":
        _need("pyarrow")
    space = _composite_spaces()[which]
    space.seed(7)
    spec = fastrl.ObsSpec.from_gymnasium(space)
    rng = np.random.default_rng(3)
    originals = []
    with fastrl.BatchWriter(tmp_path / "data", n_actions=N_ACTIONS, spec=spec,
                            fsync=False) as w:
        for i in range(4):
            T = int(rng.integers(1, 6))
            states = [space.sample() for _ in range(T + 1)]  # T+1: the last is the final obs
            originals.append(states)
            obs = spec.encode(states)
            w.add_episode(obs=obs[:T], actions=rng.integers(0, N_ACTIONS, T),
                          rewards=rng.standard_normal(T), truncated=i % 2 == 1,
                          final_obs=obs[T])
    to_minari(w.path, f"fastrl/{which}-{data_format}-v0", observation_space=space,
              data_format=data_format)
    dataset = minari.load_dataset(f"fastrl/{which}-{data_format}-v0")
    assert dataset.observation_space == space
    for got, states in zip(dataset.iterate_episodes(), originals):
        _assert_same_structure(got.observations, _stack(states))
        assert all(space.contains(s) for s in states)


def test_refuses_spaces_that_cannot_hold_the_batch(minari, tmp_path, rng):
    import gymnasium as gym
    S = gym.spaces
    path = _write(tmp_path / "data", _episodes(rng, 2))
    store = tmp_path / "minari"
    bad = {
        "flattens to 4": S.Box(-1, 1, (4,)),                              # wrong size
        "Text": S.Dict({"a": S.Box(-1, 1, (4,)), "b": S.Text(3)}),        # no flat form
    }
    for msg, space in bad.items():
        with pytest.raises(ValueError, match=msg):
            to_minari(path, "bad-v0", observation_space=space)
    with pytest.raises(ValueError, match="not Discrete"):
        to_minari(path, "bad-v0", action_space=S.Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match="fewer actions"):
        to_minari(path, "bad-v0", action_space=S.Discrete(N_ACTIONS - 1))
    # values outside the space: found while converting, nothing left behind
    with pytest.raises(ValueError, match="not a one-hot"):
        to_minari(path, "bad-v0", observation_space=S.Discrete(OBS_DIM))
    with pytest.raises(ValueError, match="bounds"):
        to_minari(path, "bad-v0", observation_space=S.Box(-0.01, 0.01, (OBS_DIM,)))
    assert not store.exists() or not any(store.rglob("*.hdf5"))


def test_env_id_uses_the_environment_spaces(minari, tmp_path, rng):
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    eps = []
    for i in range(3):
        T = int(rng.integers(2, 6))
        states = np.stack([env.observation_space.sample() for _ in range(T + 1)]) * 0.1
        eps.append({"obs": states[:T], "actions": rng.integers(0, 2, T),
                    "rewards": np.ones(T), "truncated": i == 1, "final_obs": states[T]})
    path = _write(tmp_path / "data", eps, n_actions=2)
    out = to_minari(path, "fastrl/cartpole-v0", env_id="CartPole-v1")
    assert out.env_spec.id == "CartPole-v1"
    loaded = minari.load_dataset("fastrl/cartpole-v0")
    assert loaded.spec.env_spec.id == "CartPole-v1"
    recovered = loaded.recover_environment()
    assert loaded.observation_space == recovered.observation_space == env.observation_space
    assert loaded.action_space == recovered.action_space
    np.testing.assert_array_equal(loaded[1].observations[-1],
                                  eps[1]["final_obs"].astype(np.float32))

    # a batch whose observations do not fit the env's space: a clear error, nothing written
    other = _write(tmp_path / "other", _episodes(rng, 2))
    with pytest.raises(ValueError, match="environment 'CartPole-v1'.*obsDim=5"):
        to_minari(other, "fastrl/cartpole-v1", env_id="CartPole-v1")
    assert not (tmp_path / "minari" / "fastrl" / "cartpole-v1").exists()


def test_refuses_bad_or_existing_ids_and_leaves_nothing(minari, tmp_path, rng):
    path = _write(tmp_path / "data", _episodes(rng, 2))
    store = tmp_path / "minari"
    with pytest.raises(ValueError, match="name-v<version>"):
        to_minari(path, "no-version")
    with pytest.raises(ValueError, match="name-v<version>"):
        to_minari(path, "x/y-v0")  # Minari wants namespaces of 2+ characters
    assert not store.exists() or not any(store.iterdir())

    to_minari(path, "keep-v0")
    before = sorted(p.name for p in (store / "keep-v0").rglob("*"))
    with pytest.raises(ValueError, match="already exists"):
        to_minari(path, "keep-v0")
    assert sorted(p.name for p in (store / "keep-v0").rglob("*")) == before

    # a failure while writing removes the half-written dataset
    with pytest.raises(TypeError):
        to_minari(path, "broken-v0", no_such_minari_argument=1)
    assert not (store / "broken-v0").exists()
    assert [d.id for d in [minari.load_dataset("keep-v0")]] == ["keep-v0"]

    empty = tmp_path / "empty"  # a root without batches
    empty.mkdir()
    with pytest.raises(ValueError, match="no transitions"):
        to_minari(empty, "empty-v0")


def test_missing_storage_backend_fails_before_writing(minari, tmp_path, rng, monkeypatch):
    path = _write(tmp_path / "data", _episodes(rng, 1))
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ImportError
    monkeypatch.delitem(sys.modules, "minari.dataset._storages.hdf5_storage", raising=False)
    with pytest.raises(ImportError, match="pip install h5py"):
        to_minari(path, "fastrl-v0")
    assert not (tmp_path / "minari" / "fastrl-v0").exists()


def test_without_minari_names_the_install(tmp_path, rng, monkeypatch):
    path = _write(tmp_path / "data", _episodes(rng, 1))
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari -> ImportError
    with pytest.raises(ImportError, match="pip install minari"):
        to_minari(path, "fastrl-v0")
    with pytest.raises(ImportError, match="pip install minari"):
        from_minari("some-v0", tmp_path / "out")
    # the d3rlpy arrays still work without minari
    assert len(fastrl.interop.d3rlpy_arrays(path)["observations"]) == len(fastrl.load_batch(path))


# --------------------------------------------------------------------------------------------
# Minari -> fastrl


def _minari_source(minari, space, rng, with_mask=True, n_actions=N_ACTIONS, n=5,
                   dataset_id="src/game-v0"):
    """A Minari dataset made with Minari's own API, and its episodes as written."""
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    space.seed(11)
    buffers = []
    for i in range(n):
        T = int(rng.integers(1, 7))
        states = [space.sample() for _ in range(T + 1)]
        mask = (rng.random((T + 1, n_actions)) < 0.6).astype(np.int8)
        actions = np.empty(T, np.int64)
        for t in range(T):
            mask[t, rng.integers(n_actions)] = 1
            actions[t] = rng.choice(np.flatnonzero(mask[t]))
        term = np.zeros(T, bool)
        trunc = np.zeros(T, bool)
        (trunc if i % 2 else term)[-1] = True
        buffers.append(EpisodeBuffer(
            id=i, observations=_stack(states), actions=actions,
            rewards=rng.standard_normal(T).astype(np.float32),
            terminations=term, truncations=trunc,
            infos={"action_mask": mask} if with_mask else {"other": np.zeros(T + 1)}))
    return _create(minari, dataset_id, buffers, space, gym.spaces.Discrete(n_actions)), buffers


def _create(minari, dataset_id, buffers, observation_space, action_space):
    with warnings.catch_warnings():  # Minari's reminders about optional metadata
        warnings.simplefilter("ignore", UserWarning)
        return minari.create_dataset_from_buffers(dataset_id, buffers,
                                                  observation_space=observation_space,
                                                  action_space=action_space)


def test_from_minari_then_back(minari, tmp_path):
    space = _composite_spaces()["nested"]
    src, buffers = _minari_source(minari, space, np.random.default_rng(5))
    spec = fastrl.ObsSpec.from_gymnasium(space)
    path = from_minari("src/game-v0", tmp_path / "data")
    b = fastrl.load_batch(path)
    assert b.num_episodes == len(buffers) and b.n_actions == N_ACTIONS
    assert b.meta["obsSpec"] == spec.to_dict()
    assert b.meta["user"]["minari"]["datasetId"] == "src/game-v0"
    for ep, buf in zip(b.episodes(), buffers):
        T = len(buf.rewards)
        flat = spec.encode({f.name: _leaf(buf.observations, f.path) for f in spec.fields})
        np.testing.assert_array_equal(ep.obs, flat[:T])
        np.testing.assert_array_equal(ep.final_obs, flat[T])
        np.testing.assert_array_equal(ep.actions, buf.actions)
        np.testing.assert_array_equal(ep.rewards, buf.rewards)
        np.testing.assert_array_equal(ep.masks, buf.infos["action_mask"][:T])
        assert ep.is_truncated == bool(buf.truncations[-1])
    assert fastrl.validate(path) == []

    # back to Minari: the recorded spaces come back, and so does every episode
    back = to_minari(path, "src/game-back-v0")
    assert back.observation_space == space and back.action_space == src.action_space
    for a, c in zip(src.iterate_episodes(), back.iterate_episodes()):
        _assert_same_structure(c.observations, a.observations)
        np.testing.assert_array_equal(c.actions, a.actions)
        np.testing.assert_array_equal(c.rewards, a.rewards)
        np.testing.assert_array_equal(c.terminations, a.terminations)
        np.testing.assert_array_equal(c.truncations, a.truncations)
        T = len(a)
        np.testing.assert_array_equal(c.infos["action_mask"][:T], a.infos["action_mask"][:T])


def _leaf(value, path):
    for p in path:
        value = value[p]
    return value


def test_from_minari_without_masks_and_box_space(minari, tmp_path):
    import gymnasium as gym

    space = gym.spaces.Box(-1, 1, (2, 3), np.float32)
    src, buffers = _minari_source(minari, space, np.random.default_rng(6), with_mask=False,
                                  dataset_id="src/box-v0")
    path = from_minari(src, tmp_path / "data", shard_bytes=300)
    ds = fastrl.open_dataset(path)
    assert len(ds.parts) > 1
    assert ds.num_episodes == len(buffers)
    for i, buf in enumerate(buffers):
        ep = ds.episode(i)
        T = len(buf.rewards)
        np.testing.assert_array_equal(ep.obs, buf.observations[:T].reshape(T, 6))
        np.testing.assert_array_equal(ep.final_obs, buf.observations[T].reshape(6))
        assert ep.masks.all()  # no action_mask in infos: every action legal


def test_from_minari_refuses_what_fastrl_cannot_store(minari, tmp_path):
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    obs = np.zeros((3, 2), np.float32)
    _create(minari, "src/cont-v0",
            [EpisodeBuffer(observations=obs, actions=np.zeros((2, 1), np.float32),
                           rewards=[0.0, 1.0], terminations=[False, True],
                           truncations=[False, False])],
            gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-1, 1, (1,)))
    with pytest.raises(ValueError, match="Discrete action space"):
        from_minari("src/cont-v0", tmp_path / "data")
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").glob("batch_*"))


# --------------------------------------------------------------------------------------------
# docs/INTEROP.md: every python block runs as written

_RUNNER = r"""
import json, os, re, sys, traceback
text = open(sys.argv[1], encoding="utf-8").read()
results = []
for i, code in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
    os.makedirs(f"block{i}"); os.chdir(f"block{i}")
    try:
        exec(compile(code, f"docs/INTEROP.md python block {i}", "exec"), {"__name__": "__main__"})
        results.append(["ok", ""])
    except ImportError as e:  # an optional client is not installed
        results.append(["missing", str(e)])
    except BaseException:
        results.append(["error", traceback.format_exc()])
    os.chdir("..")
print("RESULTS" + json.dumps(results))
"""


def test_interop_md_recipes_run(tmp_path):
    import subprocess
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "INTEROP.md"
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(doc)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULTS")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(line[-1][len("RESULTS"):])
    assert len(results) >= 6
    errors = [f"block {i}:\n{msg}" for i, (status, msg) in enumerate(results) if status == "error"]
    assert not errors, "\n".join(errors)
    if all(status == "missing" for status, _ in results):
        pytest.skip("no interop client installed: " + "; ".join(m for _, m in results))
