"""fastrl.interop.to_parquet: read back exactly by pyarrow, and by Hugging Face datasets."""

import json
import os

import numpy as np
import pytest

import fastrl
from fastrl.interop import to_parquet

from conftest import random_episode

pa = pytest.importorskip("pyarrow", reason="pyarrow not installed")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed")

N_ACTIONS, OBS_DIM = 6, 4


def _episodes(rng, n, final=True, values=False):
    eps = []
    for i in range(n):
        ep = random_episode(rng, int(rng.integers(1, 9)), obs_dim=OBS_DIM, n_actions=N_ACTIONS,
                            truncated=i % 3 == 2, values=values, logprobs=values)
        if final:
            ep["final_obs"] = rng.standard_normal(OBS_DIM)
        eps.append(ep)
    return eps


def _write(root, eps, **kw):
    with fastrl.BatchWriter(root, n_actions=N_ACTIONS, fsync=False, **kw) as w:
        for ep in eps:
            w.add_episode(**ep)
    return w.path


def _check(table, source):
    ds = fastrl.open_dataset(source)
    n = len(ds)
    assert table.num_rows == n
    cols = {name: table.column(name) for name in table.column_names}
    obs = np.concatenate([b.obs for b in ds.parts])
    np.testing.assert_array_equal(
        cols["obs"].combine_chunks().flatten().to_numpy().reshape(n, OBS_DIM), obs)
    masks = np.concatenate([b.masks[:, :N_ACTIONS] for b in ds.parts]).astype(bool)
    got_masks = np.asarray(cols["mask"].combine_chunks().flatten().to_numpy(
        zero_copy_only=False)).reshape(n, N_ACTIONS)
    np.testing.assert_array_equal(got_masks, masks)
    for name, col in (("action", "actions"), ("reward", "rewards")):
        np.testing.assert_array_equal(cols[name].to_numpy(),
                                      np.concatenate([getattr(b, col) for b in ds.parts]))
    dones = np.concatenate([b.dones for b in ds.parts]).astype(bool)
    trunc = np.concatenate([np.zeros(b.count, bool) if b.truncated is None
                            else b.truncated.astype(bool) for b in ds.parts])
    np.testing.assert_array_equal(cols["done"].to_numpy(), dones)
    np.testing.assert_array_equal(cols["timeout"].to_numpy(), trunc)
    np.testing.assert_array_equal(cols["terminal"].to_numpy(), dones & ~trunc)
    episode = cols["episode"].to_numpy()
    step = cols["step"].to_numpy()
    for e in range(ds.num_episodes):
        ep = ds.episode(e)
        rows = np.flatnonzero(episode == e)
        assert len(rows) == len(ep)
        np.testing.assert_array_equal(step[rows], np.arange(len(ep)))
        if "final_obs" in cols:
            fo = cols["final_obs"].combine_chunks()
            for r in rows[:-1]:
                assert not fo[int(r)].is_valid
            last = fo[int(rows[-1])]
            if ep.final_obs is None:
                assert not last.is_valid
            else:
                np.testing.assert_array_equal(np.array(last.as_py(), np.float32), ep.final_obs)


def test_pyarrow_reads_it_back_exactly(tmp_path, rng):
    path = _write(tmp_path / "data", _episodes(rng, 12, values=True), mask_pad=16)
    out = to_parquet(path, tmp_path / "t.parquet", row_group_rows=7)
    assert out == tmp_path / "t.parquet"
    f = pq.ParquetFile(out)
    assert f.metadata.num_row_groups == -(-len(fastrl.load_batch(path)) // 7)
    table = pq.read_table(out)
    assert table.column_names == ["episode", "step", "obs", "action", "reward", "done",
                                  "terminal", "timeout", "mask", "value", "logprob",
                                  "final_obs"]
    assert table.schema.field("obs").type == pa.list_(pa.float32(), OBS_DIM)
    assert table.schema.field("mask").type == pa.list_(pa.bool_(), N_ACTIONS)
    _check(table, path)
    b = fastrl.load_batch(path)
    np.testing.assert_array_equal(table.column("value").to_numpy(), b.values)
    np.testing.assert_array_equal(table.column("logprob").to_numpy(), b.logprobs)
    info = json.loads(table.schema.metadata[b"fastrl"])
    assert info["obsDim"] == OBS_DIM and info["numActions"] == N_ACTIONS
    assert info["maskDim"] == 16 and info["count"] == table.num_rows
    # no temporary file left beside it
    assert sorted(os.listdir(tmp_path)) == ["data", "t.parquet"]


def test_sharded_mixed_sources_and_uint8_masks(tmp_path, rng):
    root = tmp_path / "data"
    _write(root, _episodes(rng, 6), shard_bytes=300)
    _write(root, _episodes(rng, 4, final=False))
    out = to_parquet(root, tmp_path / "all.parquet", mask_dtype="uint8", compression=None)
    table = pq.read_table(out)
    assert table.schema.field("mask").type == pa.list_(pa.uint8(), N_ACTIONS)
    assert "value" not in table.column_names
    _check(table, root)


def test_without_final_obs_there_is_no_column(tmp_path, rng):
    path = _write(tmp_path / "data", _episodes(rng, 3, final=False))
    table = pq.read_table(to_parquet(path, tmp_path / "x.parquet"))
    assert "final_obs" not in table.column_names
    _check(table, path)


def test_failure_leaves_no_file(tmp_path, rng, monkeypatch):
    path = _write(tmp_path / "data", _episodes(rng, 3))
    (tmp_path / "old.parquet").write_bytes(b"old")
    import fastrl.interop._parquet as P

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(P, "_table", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        to_parquet(path, tmp_path / "old.parquet")
    assert (tmp_path / "old.parquet").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["data", "old.parquet"]
    with pytest.raises(ValueError, match="row_group_rows"):
        to_parquet(path, tmp_path / "y.parquet", row_group_rows=0)


def test_hugging_face_datasets_reads_it(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets not installed")
    path = _write(tmp_path / "data", _episodes(rng, 5))
    out = to_parquet(path, tmp_path / "t.parquet")
    hf = datasets.load_dataset("parquet", data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    b = fastrl.load_batch(path)
    assert len(hf) == b.count
    hf_np = hf.with_format("numpy")
    np.testing.assert_array_equal(np.stack(hf_np["obs"]), b.obs)
    np.testing.assert_array_equal(hf_np["action"], b.actions)
    np.testing.assert_array_equal(np.stack(hf_np["mask"]), b.masks.astype(bool))
    last = int(np.flatnonzero(b.dones)[0])
    assert hf[0]["final_obs"] is None if last > 0 else True
    np.testing.assert_array_equal(np.array(hf[last]["final_obs"], np.float32), b.final_obs[0])
