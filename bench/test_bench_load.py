"""Group ``load``: a committed batch of the workload opened with fastrl.load_batch (memory-mapped;
its files are in the page cache, as right after writing them): open time, per-episode access,
a random minibatch of 4,096 transitions (``Batch.sample``) beside the same gather from in-RAM
arrays, and np.fromfile of the whole batch."""

import itertools

import numpy as np
import pytest

import fastrl

from . import _benchlib as B

pytestmark = pytest.mark.bench


def test_load_open(bench, wl):
    path = wl.batch_path
    b = bench(lambda: fastrl.load_batch(path), group="load", key="load:open", items=1,
              unit="opens", iterations=20)
    assert len(b) == wl.n


@pytest.mark.parametrize("where", ("disk", "ram"))
def test_load_episodes(bench, wl, where):
    """Every episode's views, in order: Batch.episode(i) (memmap columns) vs slicing the same
    columns held in RAM by the episode index."""
    b = fastrl.load_batch(wl.batch_path)
    if where == "disk":
        def run():
            for i in range(b.num_episodes):
                b.episode(i)
    else:
        cols = list(wl.batch_in_ram.values())
        bounds = list(zip(b.episode_starts[:-1].tolist(), b.episode_starts[1:].tolist()))

        def run():
            for s, e in bounds:
                [c[s:e] for c in cols]
    bench(run, group="load", key=f"load:episodes:{where}", items=b.num_episodes,
          unit="episodes")


@pytest.mark.parametrize("where", ("disk", "disk-fresh", "ram"))
def test_load_sample(bench, wl, where):
    """A random minibatch of 4,096 transitions (sorted gather of every column). disk: one open
    Batch sampled again and again (a training loop); disk-fresh: load_batch + sample each time;
    ram: the same indices gathered from in-RAM arrays."""
    seeds = itertools.count()
    path = wl.batch_path
    b = fastrl.load_batch(path)
    if where == "disk":
        def run():
            return b.sample(B.MINIBATCH, rng=next(seeds))
    elif where == "disk-fresh":
        def run():
            return fastrl.load_batch(path).sample(B.MINIBATCH, rng=next(seeds))
    else:
        cols, n = wl.batch_in_ram, wl.n

        def run():
            return B.sample_columns(cols, n, B.MINIBATCH, next(seeds))
    row = sum(c.itemsize * (c.shape[1] if c.ndim == 2 else 1) for c in b.columns.values())
    mb = bench(run, group="load", key=f"load:sample:{where}", items=B.MINIBATCH,
               unit="transitions", nbytes=B.MINIBATCH * row, rounds=5 * wl.sizes.rounds)
    ref = b.sample(B.MINIBATCH, rng=12)
    same = B.sample_columns(wl.batch_in_ram, wl.n, B.MINIBATCH, 12)
    assert all(np.array_equal(ref[k], same[k]) for k in ref)
    assert mb["obs"].shape == (B.MINIBATCH, B.OBS_DIM)


def test_load_fromfile(bench, wl):
    """np.fromfile of the five required columns: the whole batch into RAM."""
    path, n = wl.batch_path, wl.n
    bench(lambda: B.fromfile_columns(path, n), group="load", key="load:fromfile", items=n,
          unit="transitions", nbytes=n * B.ROW_BYTES)


def test_load_materialize(bench, wl):
    """load_batch, then copy the five required columns into RAM (np.array of each memmap)."""
    path, n = wl.batch_path, wl.n

    def run():
        b = fastrl.load_batch(path)
        return {k: np.array(getattr(b, k)) for k in B.FIVE}

    bench(run, group="load", key="load:materialize", items=n, unit="transitions",
          nbytes=n * B.ROW_BYTES)
