"""Group ``writer``: BatchWriter end to end (episodes in RAM -> committed batch folder: checks,
packing, CRC32, files, fsync, meta.json, atomic rename) beside raw ``ndarray.tofile`` of the five
packed columns (with and without fsync), ``np.savez``, ``np.savez_compressed`` (a subset: it is
slow; throughput is per transition) and h5py when installed. The rows with a speed target also
time ``tofile`` in alternation with their own rounds (``bench(paired=...)``): on a shared VM
whose speed drifts by 20% within minutes, that pair is the ratio to trust."""

import shutil

import numpy as np
import pytest

from . import _benchlib as B

pytestmark = pytest.mark.bench


@pytest.fixture
def out_dir(wl):
    d = B.output_root(wl, "writer-out")
    shutil.rmtree(d, ignore_errors=True)
    yield d
    shutil.rmtree(d.parent if d.parent != wl.workdir else d, ignore_errors=True)


def _clean(d):
    return lambda: shutil.rmtree(d, ignore_errors=True)


def _tofile_pair(wl, out_dir, *, fsync: bool):
    """``tofile`` of the same five columns into a fresh folder beside ``out_dir``, timed in
    alternation with the writer (``bench(paired=...)``)."""
    cols, d = wl.packed, out_dir.with_name(out_dir.name + "-tofile")
    label = "`tofile` + fsync" if fsync else "`tofile`"
    return (label, lambda: B.tofile_columns(d, cols, fsync=fsync), _clean(d), wl.n)


@pytest.mark.parametrize("backend", B.backends())
def test_writer(bench, wl, out_dir, backend):
    """Legal ids given as (ids, offsets) arrays per episode."""
    eps = wl.raw_episodes
    bench(lambda: B.write_batch(out_dir, eps), group="writer", key=f"writer:{backend}:arrays",
          items=wl.n, unit="transitions", nbytes=wl.n * B.ROW_BYTES, backend=backend,
          teardown=_clean(out_dir), slow=True, paired=_tofile_pair(wl, out_dir, fsync=True))


def test_writer_no_fsync(bench, wl, out_dir):
    """BatchWriter(fsync=False): the same work without waiting for the disk (compare with
    tofile without fsync)."""
    if not B.writer_supports("fsync"):
        pytest.skip("this BatchWriter has no fsync option")
    eps = wl.raw_episodes
    bench(lambda: B.write_batch(out_dir, eps, fsync=False), group="writer",
          key="writer:nofsync", items=wl.n, unit="transitions", nbytes=wl.n * B.ROW_BYTES,
          teardown=_clean(out_dir), slow=True)


def test_writer_crc_no_fsync(bench, wl, out_dir):
    """The issue-11 target: BatchWriter with its default checksums and fsync=False beside
    ``tofile`` of the same five columns into a fresh folder (fsync off for both)."""
    eps = wl.raw_episodes
    bench(lambda: B.write_batch(out_dir, eps, fsync=False, checksum=True), group="writer",
          key="writer:crc_nofsync", items=wl.n, unit="transitions", nbytes=wl.n * B.ROW_BYTES,
          teardown=_clean(out_dir), slow=True, paired=_tofile_pair(wl, out_dir, fsync=False))


def test_writer_dense_masks(bench, wl, out_dir):
    """As writer:crc_nofsync, with dense masks instead of legal-id arrays."""
    eps = wl.raw_episodes_dense
    bench(lambda: B.write_batch(out_dir, eps, fsync=False, checksum=True), group="writer",
          key="writer:dense_crc_nofsync", items=wl.n, unit="transitions",
          nbytes=wl.n * B.ROW_BYTES, teardown=_clean(out_dir), slow=True,
          paired=_tofile_pair(wl, out_dir, fsync=False))


def test_writer_add_steps(bench, wl, out_dir):
    """add_steps of 64 vector environments (one call per step of all of them), fsync off."""
    steps = wl.vector_steps
    items = len(steps) * B.VECTOR_ENVS
    bench(lambda: B.write_vector(out_dir, steps), group="writer", key="writer:add_steps64",
          items=items, unit="transitions", nbytes=items * B.ROW_BYTES, teardown=_clean(out_dir),
          slow=True, paired=_tofile_pair(wl, out_dir, fsync=False))


def test_writer_short_episodes(bench, wl, out_dir):
    """Per-call overhead: add_episode of 8-step episodes (time per call = time per episode)."""
    eps = wl.short_episodes
    bench(lambda: B.write_batch(out_dir, eps, fsync=False), group="writer",
          key="writer:short_episodes", items=len(eps), unit="episodes",
          nbytes=sum(len(e["actions"]) for e in eps) * B.ROW_BYTES, teardown=_clean(out_dir),
          slow=True)


def test_writer_legal_lists(bench, wl, out_dir):
    """Legal ids given as one Python list per step (the README's plainest form)."""
    eps = wl.raw_episodes_lists
    bench(lambda: B.write_batch(out_dir, eps), group="writer", key="writer:lists", items=wl.n,
          unit="transitions", nbytes=wl.n * B.ROW_BYTES, teardown=_clean(out_dir), slow=True)


@pytest.mark.parametrize("fsync", (False, True), ids=("tofile", "tofile+fsync"))
def test_writer_tofile(bench, wl, out_dir, fsync):
    cols = wl.packed
    bench(lambda: B.tofile_columns(out_dir, cols, fsync=fsync), group="writer",
          key="writer:tofile_fsync" if fsync else "writer:tofile", items=wl.n,
          unit="transitions", nbytes=wl.n * B.ROW_BYTES, teardown=_clean(out_dir), slow=True)


def test_writer_savez(bench, wl, out_dir):
    cols = {k: wl.packed[k] for k in B.FIVE}

    def run():
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / "batch.npz", **cols)

    bench(run, group="writer", key="writer:savez", items=wl.n, unit="transitions",
          nbytes=wl.n * B.ROW_BYTES, teardown=_clean(out_dir), slow=True)


def test_writer_savez_compressed(bench, wl, out_dir):
    rows = min(wl.sizes.savez_compressed_rows, wl.n)
    cols = {k: wl.packed[k][:rows] for k in B.FIVE}

    def run():
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out_dir / "batch.npz", **cols)

    bench(run, group="writer", key="writer:savez_compressed", items=rows, unit="transitions",
          nbytes=rows * B.ROW_BYTES, teardown=_clean(out_dir), slow=True)


def test_writer_h5py(bench, wl, out_dir):
    pytest.importorskip("h5py")
    cols = wl.packed

    def run():
        out_dir.mkdir(parents=True, exist_ok=True)
        B.h5py_write(out_dir / "batch.h5", cols)

    bench(run, group="writer", key="writer:h5py", items=wl.n, unit="transitions",
          nbytes=wl.n * B.ROW_BYTES, teardown=_clean(out_dir), slow=True)
