"""fastrl.torchrl.as_tensordict: TorchRL's keys over memory-mapped batches, and a SliceSampler."""

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed")
pytest.importorskip("tensordict", reason="tensordict not installed")

import fastrl  # noqa: E402
from fastrl.torchrl import as_tensordict, replay_buffer  # noqa: E402

from conftest import random_episode  # noqa: E402

N_ACTIONS, OBS_DIM = 6, 4


def _write(root, rng, n=10, final=True, **kw):
    with fastrl.BatchWriter(root, n_actions=N_ACTIONS, fsync=False, **kw) as w:
        for i in range(n):
            ep = random_episode(rng, int(rng.integers(1, 12)), obs_dim=OBS_DIM,
                                n_actions=N_ACTIONS, truncated=i % 3 == 1, values=True,
                                logprobs=True)
            if final:
                ep["final_obs"] = rng.standard_normal(OBS_DIM)
            w.add_episode(**ep)
    return w.path


def _expected_next(ds):
    out = []
    for b in ds.parts:
        nxt = np.empty_like(np.asarray(b.obs))
        nxt[:-1] = b.obs[1:]
        ends = np.asarray(b.episode_starts[1:]) - 1
        nxt[ends] = b.final_obs if b.final_obs is not None else b.obs[ends]
        out.append(nxt)
    return np.concatenate(out)


def _check(td, source):
    ds = fastrl.open_dataset(source)
    cat = lambda name: np.concatenate([getattr(b, name) for b in ds.parts])  # noqa: E731
    n = len(ds)
    assert td.batch_size == torch.Size([n])
    np.testing.assert_array_equal(td["observation"].numpy(), cat("obs"))
    np.testing.assert_array_equal(td["action"].numpy(), cat("actions"))
    assert td["action_mask"].dtype == torch.bool
    np.testing.assert_array_equal(td["action_mask"].numpy(), cat("masks")[:, :N_ACTIONS] != 0)
    assert td["next", "reward"].shape == (n, 1)
    np.testing.assert_array_equal(td["next", "reward"][:, 0].numpy(), cat("rewards"))
    dones = cat("dones") != 0
    trunc = np.concatenate([np.zeros(b.count, bool) if b.truncated is None
                            else b.truncated != 0 for b in ds.parts])
    np.testing.assert_array_equal(td["next", "done"][:, 0].numpy(), dones)
    np.testing.assert_array_equal(td["next", "truncated"][:, 0].numpy(), trunc)
    np.testing.assert_array_equal(td["next", "terminated"][:, 0].numpy(), dones & ~trunc)
    np.testing.assert_array_equal(td["next", "observation"].numpy(), _expected_next(ds))
    np.testing.assert_array_equal(td["state_value"].numpy(), cat("values"))
    np.testing.assert_array_equal(td["action_log_prob"].numpy(), cat("logprobs"))


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.bin")}


def test_plain_batch_is_mapped_and_never_written(tmp_path, rng):
    path = _write(tmp_path / "data", rng, mask_pad=8)
    before = _digest(path)
    td = as_tensordict(path)
    _check(td, path)
    assert td.is_locked
    with pytest.raises(RuntimeError):
        td["extra"] = torch.zeros(len(td))
    # in-place writes change only this process's private pages, never the files
    td["observation"][0] += 100
    td["action_mask"][:] = False
    td["next", "reward"].zero_()
    assert _digest(path) == before
    fresh = as_tensordict(fastrl.load_batch(path))
    np.testing.assert_array_equal(fresh["observation"][0].numpy(), fastrl.load_batch(path).obs[0])
    # without next observations
    assert "observation" not in as_tensordict(path, next_obs=False)["next"].keys()


def test_without_final_obs_the_last_step_repeats(tmp_path, rng):
    path = _write(tmp_path / "data", rng, final=False)
    td = as_tensordict(path)
    _check(td, path)
    ends = np.flatnonzero(fastrl.load_batch(path).dones)
    np.testing.assert_array_equal(td["next", "observation"][ends].numpy(),
                                  td["observation"][ends].numpy())


@pytest.mark.parametrize("materialize", ["memory", "disk"])
def test_sharded_and_root_sources(tmp_path, rng, materialize):
    root = tmp_path / "data"
    sharded = _write(root, rng, shard_bytes=400)
    _write(root, rng, n=4, final=False)
    ds = fastrl.open_dataset(root)
    assert len(ds.parts) > 2
    td = as_tensordict(root, materialize=materialize, tmpdir=tmp_path)
    _check(td, root)
    assert not list(tmp_path.glob(".fastrl-torchrl-*"))  # temporary files already unlinked
    _check(as_tensordict(ds), root)  # a Dataset object works too
    one = as_tensordict(sharded, part=1)
    _check(one, fastrl.open_dataset(sharded).parts[1].path)


def test_slice_sampler_by_episode(tmp_path, rng):
    pytest.importorskip("torchrl", reason="torchrl not installed")
    from torchrl.data import ReplayBuffer, SliceSampler, TensorStorage

    path = _write(tmp_path / "data", rng, n=30)
    b = fastrl.load_batch(path)
    episode_of = np.searchsorted(b.episode_starts, np.arange(b.count), "right") - 1
    td = as_tensordict(path)
    rb = ReplayBuffer(storage=TensorStorage(td), batch_size=32,
                      sampler=SliceSampler(slice_len=4, end_key=("next", "done"),
                                           cache_values=True))
    helper = replay_buffer(path, batch_size=32, slice_len=4, strict_length=True)
    for buffer in (rb, helper):
        for _ in range(5):
            sample, info = buffer.sample(return_info=True)
            idx = info["index"]
            idx = (idx[0] if isinstance(idx, tuple) else idx).numpy().reshape(8, 4)
            for sl in idx:
                assert (np.diff(sl) == 1).all()                 # consecutive steps
                assert len(set(episode_of[sl])) == 1            # never across an episode end
            np.testing.assert_array_equal(sample["observation"].numpy(), b.obs[idx.reshape(-1)])
            np.testing.assert_array_equal(sample["next", "done"][:, 0].numpy(),
                                          b.dones[idx.reshape(-1)] != 0)
    uniform = replay_buffer(path, batch_size=16)
    assert uniform.sample().batch_size == torch.Size([16])


def _raw_batch(folder, rng, count=9, obs_dim=OBS_DIM, n_actions=N_ACTIONS):
    """A batch with only the origin document's five files (no truncated, no final_obs)."""
    import json
    folder.mkdir(parents=True)
    rng.standard_normal((count, obs_dim)).astype("<f4").tofile(folder / "obs.float32.bin")
    np.zeros(count, "<i4").tofile(folder / "actions.int32.bin")
    rng.standard_normal(count).astype("<f4").tofile(folder / "rewards.float32.bin")
    np.ones((count, n_actions), np.uint8).tofile(folder / "masks.uint8.bin")
    dones = np.zeros(count, np.uint8)
    dones[[3, count - 1]] = 1
    dones.tofile(folder / "dones.uint8.bin")
    (folder / "meta.json").write_text(json.dumps(
        {"count": count, "steps": count, "obsDim": obs_dim, "maskDim": n_actions,
         "episodes": 2, "createdAt": "2023-11-14T22:13:20.000Z"}))
    return folder


def test_parts_without_a_truncated_column(tmp_path, rng):
    root = tmp_path / "data"
    _raw_batch(root / "batch_1000000000000", rng)  # sorts first
    _write(root, rng, n=6)
    ds = fastrl.open_dataset(root)
    assert ds.parts[0].truncated is None and ds.parts[1].truncated is not None
    td = as_tensordict(root)
    want = np.concatenate([np.zeros(9, bool), ds.parts[1].truncated != 0])
    np.testing.assert_array_equal(td["next", "truncated"][:, 0].numpy(), want)
    assert "state_value" not in td.keys()  # not in every part
    td0 = as_tensordict(ds.parts[0].path)
    assert not td0["next", "truncated"].any()
    np.testing.assert_array_equal(td0["next", "terminated"].numpy(), td0["next", "done"].numpy())
