"""fastrl.torch: DataLoader workers and distributed ranks read every transition exactly once."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

import fastrl  # noqa: E402
from fastrl.torch import ShardStream, TransitionDataset  # noqa: E402

from conftest import random_episode  # noqa: E402


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("torch")
    with fastrl.BatchWriter(root, n_actions=10, shard_bytes=1500) as w:
        for _ in range(40):
            w.add_episode(**random_episode(rng, int(rng.integers(1, 12))))
    return w.path


def _indices(loader):
    seen = []
    for batch in loader:
        seen.extend(np.atleast_1d(batch["index"].numpy()).tolist())
    return seen


@pytest.mark.parametrize("workers", [0, 2, 4])
def test_map_style_dataloader(sharded, workers):
    ds = TransitionDataset(sharded)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, num_workers=workers)
    seen = _indices(loader)
    assert sorted(seen) == list(range(len(ds)))
    item = ds[5]
    assert item["obs"].dtype == torch.float32 and item["obs"].shape == (6,)
    b = ds.get_batch([3, 1, 2])
    assert b["index"].tolist() == [3, 1, 2] and b["obs"].shape == (3, 6)


@pytest.mark.parametrize("workers", [0, 2, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_stream_each_transition_once(sharded, workers, shuffle):
    stream = ShardStream(sharded, shuffle=shuffle, shuffle_buffer=50 if shuffle else 0,
                         batch_size=8)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    seen = _indices(loader)
    assert sorted(seen) == list(range(len(stream)))
    if not shuffle and workers == 0:
        assert seen == list(range(len(stream)))


def test_stream_two_ranks_split(sharded):
    seen = []
    for rank in range(2):
        stream = ShardStream(sharded, shuffle=True, rank=rank, world_size=2, seed=3)
        stream.set_epoch(1)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
        part = _indices(loader)
        assert part
        seen += part
    assert sorted(seen) == list(range(len(ShardStream(sharded))))


def test_values_match_dataset(sharded):
    ds = fastrl.open_dataset(sharded)
    stream = ShardStream(sharded)
    for item in stream:
        i = int(item["index"])
        assert np.array_equal(item["obs"].numpy(), ds.transition(i)["obs"])
        if i > 30:
            break


# --------------------------------------------------------------------------------------------
# __getitems__: the DataLoader fetches whole minibatches


def test_dataloader_fetches_batches_through_getitems(sharded, monkeypatch):
    ds = TransitionDataset(sharded)
    calls = []
    real = TransitionDataset.get_batch
    monkeypatch.setattr(TransitionDataset, "get_batch",
                        lambda self, idx: calls.append(len(idx)) or real(self, idx))
    monkeypatch.setattr(TransitionDataset, "__getitem__",
                        lambda self, i: pytest.fail("per-item fetch"))
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)
    batches = list(loader)
    assert calls == [len(b["index"]) for b in batches]
    assert sorted(np.concatenate([b["index"].numpy() for b in batches])) == list(range(len(ds)))
    b = batches[0]
    assert b["obs"].shape == (32, 6) and b["obs"].dtype == torch.float32
    assert b["masks"].shape == (32, 10) and b["actions"].dtype == torch.int32
    ref = fastrl.open_dataset(sharded).gather(b["index"].numpy())
    for k in ref:
        np.testing.assert_array_equal(b[k].numpy(), ref[k])


def test_custom_collate_still_gets_items(sharded):
    ds = TransitionDataset(sharded, columns=["obs", "rewards"])
    seen = []

    def collate(items):
        seen.append(len(items))
        return torch.stack([it["obs"] for it in items])

    loader = torch.utils.data.DataLoader(ds, batch_size=10, collate_fn=collate)
    out = next(iter(loader))
    assert seen == [10] and out.shape == (10, 6)
    np.testing.assert_array_equal(out.numpy(), ds.get_batch(range(10))["obs"].numpy())


def test_random_batch_sampler(sharded):
    from fastrl.torch import RandomBatchSampler

    ds = TransitionDataset(sharded)
    sampler = RandomBatchSampler(ds, 16, generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=2)
    epochs = [np.concatenate([b["index"].numpy() for b in loader]) for _ in range(2)]
    assert len(list(loader)) == len(sampler) == -(-len(ds) // 16)
    for e in epochs:
        assert sorted(e) == list(range(len(ds)))
    assert not np.array_equal(epochs[0], epochs[1])
    assert len(RandomBatchSampler(len(ds), 16, drop_last=True)) == len(ds) // 16


# --------------------------------------------------------------------------------------------
# ShardStream: new order every epoch, persistent workers included; parts interleaved


def _epochs(loader, n):
    return [_indices(loader) for _ in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_new_order_every_epoch_persistent_workers(sharded, workers):
    stream = ShardStream(sharded, shuffle=True, batch_size=8, seed=1)
    kw = {"persistent_workers": True} if workers else {}
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, **kw)
    e1, e2 = _epochs(loader, 2)
    for e in (e1, e2):
        assert sorted(e) == list(range(len(stream)))  # each transition once per epoch
    assert e1 != e2
    # the same seed gives the same two epochs again (a fresh object counts from 0)
    again = torch.utils.data.DataLoader(ShardStream(sharded, shuffle=True, batch_size=8, seed=1),
                                        batch_size=None, num_workers=workers, **kw)
    assert _epochs(again, 2) == [e1, e2]


def test_stream_set_epoch_with_fresh_workers(sharded):
    stream = ShardStream(sharded, shuffle=True, batch_size=8, seed=2)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    orders = []
    for epoch in (0, 1, 1):
        stream.set_epoch(epoch)
        orders.append(_indices(loader))
    assert orders[0] != orders[1] and orders[1] == orders[2]
    assert all(sorted(o) == list(range(len(stream))) for o in orders)


@pytest.mark.parametrize("interleave", [1, 4])
def test_stream_interleaves_parts(sharded, interleave):
    ds = fastrl.open_dataset(sharded)
    assert len(ds.parts) >= 8
    stream = ShardStream(sharded, shuffle=True, batch_size=16, interleave=interleave,
                         block_rows=64)
    parts_per_batch = []
    seen = []
    for b in stream:
        idx = b["index"].numpy()
        seen.extend(idx.tolist())
        parts_per_batch.append(len(set(np.searchsorted(ds.row_starts, idx, "right") - 1)))
    assert sorted(seen) == list(range(len(ds)))
    if interleave == 1:
        assert max(parts_per_batch) <= 2  # one part at a time (a batch may straddle two)
    else:
        assert np.mean(parts_per_batch) > 2.5
