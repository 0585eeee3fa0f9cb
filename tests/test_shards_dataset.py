"""Sharded batches and open_dataset: every shard is a seed-format batch; the dataset over shards
equals the unsharded batch transition for transition."""

import json
import os

import numpy as np
import pytest

import fastrl
from fastrl.errors import BatchFormatError
from fastrl.cli.export import parse_size

from conftest import random_episode
from test_writer import seed_loader


@pytest.fixture
def episodes(rng):
    return [random_episode(rng, int(rng.integers(1, 40)), values=True, truncated=i % 5 == 0)
            for i in range(60)]


def write(root, eps, **kw):
    with fastrl.BatchWriter(root, n_actions=10, mask_pad=16, **kw) as w:
        for ep in eps:
            w.add_episode(**ep)
    return w.path


@pytest.mark.parametrize("shard_bytes", [1, 2000, 20000])
def test_sharded_equals_plain(backend, tmp_path, episodes, shard_bytes):
    plain = fastrl.load_batch(write(tmp_path / "a", episodes))
    spath = write(tmp_path / "b", episodes, shard_bytes=shard_bytes, flush_bytes=3000)
    manifest = json.loads((spath / "meta.json").read_text())
    assert manifest["sharded"] and manifest["count"] == plain.count
    shards = manifest["shards"]
    assert len(shards) > 1
    row = ep = 0
    for entry in shards:
        meta, obs, actions, rewards, masks, dones = seed_loader(spath / entry["path"])
        assert entry["firstRow"] == row and entry["firstEpisode"] == ep
        assert dones[-1] == 1 and dones.sum() == entry["episodes"]  # never splits an episode
        if entry["episodes"] > 1:
            per = 6 * 4 + 4 + 4 + 16 + 1 + 4 + 1
            assert entry["count"] * per <= max(shard_bytes, per * 40)
        assert np.array_equal(obs, plain.obs[row:row + len(obs)])
        assert sum(entry["stats"]["actionHistogram"]) == entry["count"]
        row += entry["count"]
        ep += entry["episodes"]
    ds = fastrl.open_dataset(spath)
    assert len(ds) == plain.count and ds.num_episodes == plain.num_episodes
    idx = np.arange(plain.count)
    got = ds.gather(idx[::-1])
    for name in ("obs", "actions", "rewards", "masks", "dones", "values", "truncated"):
        assert np.array_equal(got[name], np.asarray(getattr(plain, name))[::-1]), name
    for i in (0, 17, plain.num_episodes - 1):
        assert np.array_equal(ds.episode(i).obs, plain.episode(i).obs)
    assert ds.locate(plain.count - 1)[0] == len(ds.parts) - 1
    assert fastrl.validate(spath) == []
    with pytest.raises(BatchFormatError, match="sharded batch .*open_dataset"):
        fastrl.load_batch(spath)
    info = fastrl.info(spath)
    assert info["shards"] == len(shards) and info["transitions"] == plain.count
    z = np.load(fastrl.to_npz(spath, tmp_path / "s.npz"))
    assert np.array_equal(z["obs"], plain.obs)
    assert np.array_equal(z["episode_starts"], plain.episode_starts)


def test_sharded_validate_detects_damage(tmp_path, episodes):
    spath = write(tmp_path, episodes, shard_bytes=3000)
    m = json.loads((spath / "meta.json").read_text())
    victim = spath / m["shards"][1]["path"] / "rewards.float32.bin"
    with open(victim, "r+b") as f:
        f.truncate(3)
    probs = fastrl.validate(spath)
    assert any(p.startswith(m["shards"][1]["path"] + ": rewards.float32.bin") for p in probs)
    m["shards"][2]["firstRow"] += 1
    (spath / "meta.json").write_text(json.dumps(m))
    assert any("firstRow" in p for p in fastrl.validate(spath))
    m["shards"][0]["path"] = "../../etc"
    (spath / "meta.json").write_text(json.dumps(m))
    assert any("bad shard entry" in p for p in fastrl.validate(spath))


def test_dataset_over_root_picks_up_new_batches(tmp_path, episodes):
    root = tmp_path / "root"
    write(root, episodes[:10])
    ds = fastrl.open_dataset(root)
    n0 = len(ds)
    write(root, episodes[10:30], shard_bytes=2000)
    (root / ".fastrl-tmp-batch-1-2-x").mkdir()  # a writer in progress is invisible
    assert ds.refresh() > 1
    assert ds.num_episodes == 30 and len(ds) > n0
    assert ds.refresh() == 0
    mb = ds.sample(256, rng=0)
    assert np.array_equal(mb["obs"], ds.gather(mb["index"])["obs"])
    assert fastrl.open_dataset([root / os.listdir(root)[0]]) is not None


def test_parse_size():
    assert parse_size("256MiB") == 256 << 20 and parse_size("1G") == 1 << 30
    assert parse_size("4096") == 4096 and parse_size("64k") == 65536
    import argparse
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("lots")


def test_d3rlpy_arrays_terminals_and_timeouts(tmp_path, rng):
    from fastrl.interop import d3rlpy_arrays
    with fastrl.BatchWriter(tmp_path, n_actions=10) as w:
        w.add_episode(**random_episode(rng, 3))
        w.add_episode(**random_episode(rng, 2, truncated=True))
    arr = d3rlpy_arrays(w.path)
    assert arr["terminals"].tolist() == [0, 0, 1, 0, 0]
    assert arr["timeouts"].tolist() == [0, 0, 0, 0, 1]
    assert isinstance(arr["observations"].base, np.memmap)  # no copy of the big column
