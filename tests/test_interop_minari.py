"""fastrl.interop.to_minari: a fastrl batch written as a Minari dataset and read back by Minari."""

import importlib
import sys

import numpy as np
import pytest

import fastrl
from fastrl.interop import to_minari

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


def _episodes(rng, n=6):
    return [random_episode(rng, int(rng.integers(1, 9)), obs_dim=OBS_DIM, n_actions=N_ACTIONS,
                           truncated=bool(i % 3 == 1)) for i in range(n)]


def _write(root, episodes, **kw):
    with fastrl.BatchWriter(root, n_actions=N_ACTIONS, fsync=False, **kw) as w:
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
    assert meta["description"].startswith("unit test") and "repeats" in meta["description"]
    assert meta["author"] == {"bot team"}
    assert meta["fastrl"]["finalObservation"] == "repeat_last"
    assert meta["fastrl"]["numActions"] == N_ACTIONS
    assert dataset.env_spec is None
    # Minari tooling works on it
    sampled = dataset.sample_episodes(2)
    assert len(sampled) == 2


def test_sharded_and_many_batches_chunked(minari, tmp_path, rng):
    root = tmp_path / "data"
    sharded = _write(root, _episodes(rng, 5), shard_bytes=200)  # several shards
    assert fastrl.open_dataset(sharded).parts[0].path != sharded
    _write(root, _episodes(rng, 3))  # a second, plain batch without truncations
    out = to_minari(root, "fastrl-many-v1", chunk_steps=7)  # several update_dataset calls
    _check_same(out, root)
    _check_same(minari.load_dataset("fastrl-many-v1"), root)


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


def test_env_id_is_recorded(minari, tmp_path, rng):
    path = _write(tmp_path / "data", _episodes(rng, 2))
    out = to_minari(path, "fastrl/cartpole-v0", env_id="CartPole-v1")
    assert out.env_spec.id == "CartPole-v1"
    assert minari.load_dataset("fastrl/cartpole-v0").spec.env_spec.id == "CartPole-v1"
    # the spaces stay fastrl's unless given
    assert out.action_space.n == N_ACTIONS and out.observation_space.shape == (OBS_DIM,)


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
    # the d3rlpy arrays still work without minari
    assert len(fastrl.interop.d3rlpy_arrays(path)["observations"]) == len(fastrl.load_batch(path))
