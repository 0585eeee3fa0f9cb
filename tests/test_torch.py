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
