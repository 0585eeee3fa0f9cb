"""BatchWriter: the seed's loader reads what it writes, bit for bit; bounded buffers; atomic
commit; bad input leaves nothing half-written."""

import json
import os

import numpy as np
import pytest

import fastrl
from fastrl import _format as F
from fastrl.errors import EpisodeError

from conftest import random_episode


def seed_loader(root):
    """The origin document's loader, unchanged."""
    with open(os.path.join(root, 'meta.json')) as f: meta = json.load(f)  # noqa: E701
    obs = np.fromfile(os.path.join(root, 'obs.float32.bin'), dtype='<f4').reshape(meta['count'], meta['obsDim'])
    actions = np.fromfile(os.path.join(root, 'actions.int32.bin'), dtype='<i4')
    rewards = np.fromfile(os.path.join(root, 'rewards.float32.bin'), dtype='<f4')
    masks = np.fromfile(os.path.join(root, 'masks.uint8.bin'), dtype='uint8').reshape(meta['count'], meta['maskDim'])
    dones = np.fromfile(os.path.join(root, 'dones.uint8.bin'), dtype='uint8')
    return meta, obs, actions, rewards, masks, dones


def expected(eps, n_actions, mask_dim):
    obs = np.concatenate([np.asarray(e["obs"], np.float32) for e in eps])
    acts = np.concatenate([np.asarray(e["actions"], np.int32) for e in eps])
    rews = np.concatenate([np.asarray(e["rewards"]).astype(np.float32) for e in eps])
    masks = np.zeros((len(acts), mask_dim), np.uint8)
    dones = np.zeros(len(acts), np.uint8)
    r = 0
    for e in eps:
        T = len(e["actions"])
        if "legal" in e:
            for t, ids in enumerate(e["legal"]):
                masks[r + t, ids] = 1
        else:
            masks[r:r + T, :n_actions] = np.asarray(e["mask"], np.uint8)
        dones[r + T - 1] = 1
        r += T
    return obs, acts, rews, masks, dones


@pytest.mark.parametrize("flush_bytes", [1, 500, 64 << 20])
@pytest.mark.parametrize("mask_pad", [None, 16])
def test_roundtrip_seed_loader(backend, tmp_path, rng, flush_bytes, mask_pad):
    eps = [random_episode(rng, int(rng.integers(1, 30)), form=("legal", "mask")[i % 2],
                          values=True, logprobs=True) for i in range(20)]
    with fastrl.BatchWriter(tmp_path, n_actions=10, mask_pad=mask_pad,
                            flush_bytes=flush_bytes) as w:
        for ep in eps:
            w.add_episode(**ep)
    path = w.path
    assert path.name.startswith("batch_") and path.parent == tmp_path
    meta, obs, actions, rewards, masks, dones = seed_loader(path)
    mask_dim = mask_pad or 10
    want = expected(eps, 10, mask_dim)
    for got, exp in zip((obs, actions, rewards, masks, dones), want):
        assert got.dtype == exp.dtype and np.array_equal(got, exp)
    assert meta["count"] == meta["steps"] == len(actions)
    assert meta["episodes"] == 20 and meta["maskDim"] == mask_dim and meta["numActions"] == 10
    per = F.row_bytes(meta["obsDim"], meta["maskDim"])
    sizes = sum(os.path.getsize(path / F.REQUIRED_COLUMNS[c][0]) for c in F.REQUIRED_COLUMNS)
    assert sizes == meta["count"] * per
    b = fastrl.load_batch(path, verify=True)
    assert np.array_equal(b.values, np.concatenate([e["values"] for e in eps]).astype(np.float32))
    assert fastrl.validate(path) == []
    ep7 = b.episode(7)
    assert np.array_equal(ep7.obs, np.asarray(eps[7]["obs"], np.float32))
    assert ep7.dones[-1] == 1 and not ep7.dones[:-1].any()


def test_add_step_equals_add_episode(backend, tmp_path, rng):
    eps = [random_episode(rng, int(rng.integers(1, 12)), values=True) for _ in range(6)]
    with fastrl.BatchWriter(tmp_path / "a", n_actions=10) as w1:
        for ep in eps:
            w1.add_episode(**ep)
    with fastrl.BatchWriter(tmp_path / "b", n_actions=10) as w2:
        for ep in eps:
            for t in range(len(ep["actions"])):
                w2.add_step(obs=ep["obs"][t], action=ep["actions"][t], reward=ep["rewards"][t],
                            legal=ep["legal"][t], value=ep["values"][t])
            w2.end_episode(truncated=ep["truncated"])
    for f in sorted(os.listdir(w1.path)):
        if f.endswith(".bin"):
            assert (w1.path / f).read_bytes() == (w2.path / f).read_bytes(), f


def test_truncated_and_episode_index(backend, tmp_path, rng):
    with fastrl.BatchWriter(tmp_path, n_actions=10) as w:
        w.add_episode(**random_episode(rng, 3))
        w.add_episode(**random_episode(rng, 4, truncated=True))
    b = fastrl.load_batch(w.path)
    assert b.truncated.tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert b.episode_starts.tolist() == [0, 3, 7]
    assert b.episode(1).is_truncated and not b.episode(0).is_truncated
    assert b.meta["columns"]["episode_index"]["shape"] == [3]


def test_bad_episode_rejected_writer_usable(backend, tmp_path, rng):
    w = fastrl.BatchWriter(tmp_path, n_actions=10)
    good = random_episode(rng, 5)
    w.add_episode(**good)
    bad = random_episode(rng, 5)
    bad["obs"][2, 1] = np.nan
    with pytest.raises(EpisodeError, match=r"episode 1, step 2: obs\[1\] is NaN"):
        w.add_episode(**bad)
    w.add_episode(**good)
    path = w.close()
    assert fastrl.load_batch(path).num_episodes == 2
    assert fastrl.validate(path) == []


def test_exception_in_with_leaves_nothing(backend, tmp_path, rng):
    with pytest.raises(RuntimeError):
        with fastrl.BatchWriter(tmp_path, n_actions=10, flush_bytes=100) as w:
            for _ in range(5):
                w.add_episode(**random_episode(rng, 10))
            raise RuntimeError("harness crashed")
    assert [p for p in tmp_path.iterdir() if p.name != F.LOCK_FILE] == []


def test_illegal_action_error_leaves_nothing(backend, tmp_path, rng):
    ep = random_episode(rng, 6)
    ep["legal"][4] = [i for i in range(10) if i != ep["actions"][4]]
    with pytest.raises(EpisodeError, match="episode 0, step 4: action .* not legal"):
        with fastrl.BatchWriter(tmp_path, n_actions=10) as w:
            w.add_episode(**ep)
    assert not any(p.name.startswith("batch_") for p in tmp_path.iterdir())
    assert not any(p.name.startswith(F.TMP_PREFIX) for p in tmp_path.iterdir())


def test_dims_inferred_and_checked(backend, tmp_path, rng):
    ep = random_episode(rng, 4, form="mask", obs_dim=3)
    with fastrl.BatchWriter(tmp_path) as w:
        w.add_episode(**ep)
        other = random_episode(rng, 4, form="mask", obs_dim=5)
        with pytest.raises(EpisodeError, match="expected obsDim=3"):
            w.add_episode(**other)
        with pytest.raises(EpisodeError, match="values given, but earlier episodes"):
            w.add_episode(**random_episode(rng, 2, form="mask", obs_dim=3, values=True))
    assert fastrl.load_batch(w.path).n_actions == 10
    with pytest.raises(EpisodeError, match="n_actions is required"):
        fastrl.BatchWriter(tmp_path).add_episode(**random_episode(rng, 2))


@pytest.mark.parametrize("kwargs,msg", [
    ({"n_actions": 0}, "n_actions"), ({"n_actions": 2.5}, "n_actions"),
    ({"obs_dim": -1}, "obs_dim"), ({"n_actions": 10, "mask_pad": 8}, "mask_pad"),
    ({"flush_bytes": 0}, "flush_bytes"), ({"meta": {"x": object()}}, "is not JSON"),
])
def test_bad_writer_arguments(tmp_path, kwargs, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        fastrl.BatchWriter(tmp_path, **kwargs)


def test_empty_writer_writes_nothing(tmp_path):
    with fastrl.BatchWriter(tmp_path, n_actions=4) as w:
        pass
    assert w.path is None
    assert not any(p.name.startswith(("batch_", F.TMP_PREFIX)) for p in tmp_path.iterdir())


def test_close_with_open_episode_discards(tmp_path):
    w = fastrl.BatchWriter(tmp_path, n_actions=4)
    w.add_step(obs=[1.0], action=0, reward=0.0, legal=[0])
    with pytest.raises(RuntimeError, match="end_episode"):
        w.close()
    assert not any(p.name.startswith(("batch_", F.TMP_PREFIX)) for p in tmp_path.iterdir())


def test_names_unique_and_sorted(tmp_path, rng):
    paths = []
    for _ in range(5):
        with fastrl.BatchWriter(tmp_path, n_actions=10) as w:
            w.add_episode(**random_episode(rng, 2))
        paths.append(w.path.name)
    assert len(set(paths)) == 5 and paths == sorted(paths)
    ms = [int(p.split("_")[1]) for p in paths]
    assert ms == sorted(ms)


def test_user_meta_and_spec_fields(tmp_path, rng):
    with fastrl.BatchWriter(tmp_path, n_actions=10, meta={"run": "abc"}) as w:
        w.add_episode(**random_episode(rng, 2))
    meta = fastrl.load_batch(w.path).meta
    assert meta["user"] == {"run": "abc"} and meta["formatVersion"] == 1
    assert meta["createdAt"].endswith("Z")


def test_disk_error_discards_batch(tmp_path, rng, monkeypatch):
    from fastrl._batch import columnset as wmod
    w = fastrl.BatchWriter(tmp_path, n_actions=10, flush_bytes=200)
    calls = {"n": 0}
    real = wmod._ColumnFile.write

    def failing(self, arr):
        calls["n"] += 1
        if calls["n"] > 7:
            raise OSError(28, "No space left on device")
        return real(self, arr)

    monkeypatch.setattr(wmod._ColumnFile, "write", failing)
    with pytest.raises(OSError, match="No space left on device.*discarded"):
        for _ in range(50):
            w.add_episode(**random_episode(rng, 5))
    assert [p for p in tmp_path.iterdir() if p.name != F.LOCK_FILE] == []
