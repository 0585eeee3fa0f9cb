"""fastrl.storage: batches on fsspec URLs. Round trips through ``memory://`` always, and through a
real S3-compatible server on loopback (moto's server mode + s3fs) when those are installed."""

import json
import os
import sys
import uuid

import numpy as np
import pytest

import fastrl
from fastrl import storage
from fastrl.errors import BatchFormatError

from conftest import random_episode

COLUMNS = ("obs", "actions", "rewards", "masks", "dones", "values", "truncated")


def _write(root, episodes, **kw):
    with fastrl.BatchWriter(root, n_actions=10, mask_pad=16, fsync=False, **kw) as w:
        for ep in episodes:
            w.add_episode(**ep)
    return w.path


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """A plain and a sharded batch (several shards) in one local root."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("local") / "data"
    eps = [random_episode(rng, int(rng.integers(1, 30)), values=True, truncated=i % 7 == 0)
           for i in range(40)]
    plain = _write(root, eps[:15])
    sharded = _write(root, eps[15:], shard_bytes=2500, flush_bytes=3000)
    assert json.loads((sharded / "meta.json").read_text())["sharded"] is True
    return root, plain, sharded


def _same(ds, ref):
    assert len(ds) == len(ref) and ds.num_episodes == ref.num_episodes
    idx = np.arange(len(ref))
    a, b = ds.gather(idx), ref.gather(idx)
    for name in COLUMNS:
        assert np.array_equal(a[name], b[name]), name


def _mapped(a) -> bool:
    """True when the array's memory is a file mapping (not a copy in RAM)."""
    import mmap
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


def _kill_at_manifest(monkeypatch, name):
    """Make the upload of ``name`` die just before its top-level meta.json (a killed writer)."""
    real = storage._put

    def put(fs, lpaths, rpaths, *args):
        if any(r.endswith(f"/{name}/meta.json") for r in rpaths):
            raise KeyboardInterrupt("killed before the manifest")
        return real(fs, lpaths, rpaths, *args)

    monkeypatch.setattr(storage, "_put", put)


# -- memory:// (always) ------------------------------------------------------------------------

@pytest.fixture
def mem_root():
    fsspec = pytest.importorskip("fsspec")
    url = f"memory://fastrl-test-{uuid.uuid4().hex}/root"
    yield url
    fs = fsspec.filesystem("memory")
    path = url[len("memory://"):].split("/")[0]
    if fs.exists("/" + path):
        fs.rm("/" + path, recursive=True)


def test_memory_round_trip(batches, mem_root, tmp_path):
    root, plain, sharded = batches
    u1 = storage.upload_batch(plain, mem_root)
    u2 = storage.upload_batch(sharded, mem_root)
    assert u1 == f"{mem_root}/{plain.name}" and u2 == f"{mem_root}/{sharded.name}"
    assert storage.list_batches(mem_root) == sorted([u1, u2])
    ds = storage.open_remote_dataset(mem_root, cache_dir=tmp_path / "cache")
    _same(ds, fastrl.open_dataset(root))
    for p in ds.parts:  # local copies, memory-mapped, inside the cache
        assert _mapped(p.obs) and (tmp_path / "cache") in p.path.parents
    cached = storage.fetch_batch(u2, cache_dir=tmp_path / "cache")
    assert fastrl.validate(cached) == []
    assert not [e for e in os.listdir(tmp_path / "cache") if e.startswith(".fastrl-tmp")]
    # the same batch again is a no-op; another batch under that name is refused
    assert storage.upload_batch(plain, mem_root) == u1
    other = tmp_path / "other" / plain.name
    other.parent.mkdir()
    os.rename(_write(tmp_path / "x", [random_episode(np.random.default_rng(1), 5)]), other)
    with pytest.raises(FileExistsError):
        storage.upload_batch(other, mem_root)


def test_cache_is_reused_and_repaired(batches, mem_root, tmp_path):
    fsspec = pytest.importorskip("fsspec")
    _, plain, _ = batches
    url = storage.upload_batch(plain, mem_root)
    first = storage.fetch_batch(url, cache_dir=tmp_path)
    fs = fsspec.filesystem("memory")
    fs.rm(url[len("memory://"):], recursive=True)  # no network needed for a complete copy
    assert storage.fetch_batch(url, cache_dir=tmp_path) == first
    url = storage.upload_batch(plain, mem_root)
    with open(first / "rewards.float32.bin", "r+b") as f:  # a damaged copy is fetched again
        f.truncate(4)
    again = storage.fetch_batch(url, cache_dir=tmp_path)
    assert again == first and fastrl.validate(again) == []


def test_corrupt_remote_object_is_never_used(batches, mem_root, tmp_path):
    fsspec = pytest.importorskip("fsspec")
    _, plain, _ = batches
    url = storage.upload_batch(plain, mem_root)
    fs = fsspec.filesystem("memory")
    key = url[len("memory://"):] + "/rewards.float32.bin"
    data = bytearray(fs.cat_file(key))
    data[0] ^= 0xFF  # same size, wrong checksum
    fs.pipe_file(key, bytes(data))
    with pytest.raises(BatchFormatError, match="checksum"):
        storage.fetch_batch(url, cache_dir=tmp_path)
    assert os.listdir(tmp_path) == []  # no cached copy, no temporary folder left


def test_killed_upload_is_invisible_then_cleaned(batches, mem_root, tmp_path, monkeypatch):
    _, plain, sharded = batches
    good = storage.upload_batch(plain, mem_root)
    with monkeypatch.context() as m:
        _kill_at_manifest(m, sharded.name)
        with pytest.raises(KeyboardInterrupt):
            storage.upload_batch(sharded, mem_root)
    assert storage.list_batches(mem_root) == [good]
    ds = storage.open_remote_dataset(mem_root, cache_dir=tmp_path)
    assert len(ds.parts) == 1
    with pytest.raises(BatchFormatError, match="not committed"):
        storage.fetch_batch(f"{mem_root}/{sharded.name}", cache_dir=tmp_path)
    bad = f"{mem_root}/{sharded.name}"
    assert storage.clean_incomplete(mem_root) == []  # younger than the grace period
    assert storage.clean_incomplete(mem_root, grace_s=0, dry_run=True) == [bad]
    assert storage.clean_incomplete(mem_root, grace_s=0) == [bad]
    assert storage.clean_incomplete(mem_root, grace_s=0) == []
    assert storage.list_batches(mem_root) == [good]
    # the upload can simply be run again
    assert storage.upload_batch(sharded, mem_root) == bad
    assert storage.list_batches(mem_root) == [good, bad]


def test_upload_order_puts_manifest_last(batches, mem_root, monkeypatch):
    _, _, sharded = batches
    calls = []
    real = storage._put
    monkeypatch.setattr(storage, "_put", lambda fs, lp, rp, *a: (calls.append(list(rp)),
                                                                 real(fs, lp, rp, *a)))
    storage.upload_batch(sharded, mem_root)
    flat = [r.split(f"/{sharded.name}/", 1)[1] for c in calls for r in c]
    assert flat[-1] == "meta.json" and flat.count("meta.json") == 1
    shard_metas = [i for i, r in enumerate(flat) if r.endswith("/meta.json")]
    data = [i for i, r in enumerate(flat) if not r.endswith("meta.json")]
    assert len(shard_metas) == len(json.loads((sharded / "meta.json").read_text())["shards"])
    assert max(data) < min(shard_metas)


# -- local paths: no copy, no fsspec needed -----------------------------------------------------

def test_local_paths_fast_path(batches, tmp_path, monkeypatch):
    root, plain, sharded = batches
    monkeypatch.setitem(sys.modules, "fsspec", None)  # local paths never import it
    monkeypatch.setitem(sys.modules, "fsspec.core", None)
    assert storage.fetch_batch(plain) == plain
    assert storage.list_batches(root) == [str(plain), str(sharded)]
    ds = storage.open_remote_dataset(root)
    assert [p.path for p in ds.parts][0] == plain and _mapped(ds.parts[0].obs)
    # upload to a local root: copied into a hidden folder, then renamed
    dest = tmp_path / "mirror"
    out = storage.upload_batch(sharded, f"file://{dest}")
    assert out == str(dest / sharded.name) and fastrl.validate(out) == []
    assert storage.list_batches(dest) == [out]
    assert sorted(os.listdir(dest)) == [sharded.name]
    with pytest.raises(ImportError, match=r"fastrl\[remote\]"):
        storage.list_batches("memory://x/y")


def test_local_clean_incomplete(tmp_path):
    (tmp_path / "batch_123").mkdir()
    (tmp_path / "batch_123" / "obs.float32.bin").write_bytes(b"1234")
    assert storage.clean_incomplete(tmp_path) == []
    assert storage.clean_incomplete(tmp_path, grace_s=0) == [str(tmp_path / "batch_123")]
    assert not (tmp_path / "batch_123").exists()


# -- a real S3 API on loopback (moto server + s3fs) ---------------------------------------------

def test_s3_round_trip(batches, s3, tmp_path):
    bucket, opts = s3
    root_url = f"{bucket}/rt"
    root, plain, sharded = batches
    urls = [storage.upload_batch(b, root_url, opts) for b in (plain, sharded)]
    assert storage.list_batches(root_url, opts) == urls
    ds = storage.open_remote_dataset(root_url, cache_dir=tmp_path, fs_options=opts)
    _same(ds, fastrl.open_dataset(root))
    one = storage.open_remote_dataset(urls[1], cache_dir=tmp_path, fs_options=opts)
    _same(one, fastrl.open_dataset(sharded))


def test_s3_killed_writer_leaves_no_visible_batch(batches, s3, tmp_path, monkeypatch):
    bucket, opts = s3
    root_url = f"{bucket}/killed"
    _, plain, sharded = batches
    with monkeypatch.context() as m:
        _kill_at_manifest(m, plain.name)
        with pytest.raises(KeyboardInterrupt):
            storage.upload_batch(plain, root_url, opts)
    import s3fs
    fs = s3fs.S3FileSystem(**opts)
    assert fs.find(f"{root_url}/{plain.name}")  # its column files are there ...
    assert storage.list_batches(root_url, opts) == []  # ... but no reader sees a batch
    assert len(storage.open_remote_dataset(root_url, cache_dir=tmp_path, fs_options=opts)) == 0
    assert storage.clean_incomplete(root_url, fs_options=opts) == []  # within the grace period
    assert storage.clean_incomplete(root_url, grace_s=0, fs_options=opts) == \
        [f"{root_url}/{plain.name}"]
    assert fs.find(root_url) == []


def test_cli_commands(batches, mem_root, tmp_path, monkeypatch, capsys):
    """``fastrl upload | ls | fetch | clean-remote``."""
    from fastrl import cli
    assert "fastrl.cli.storage" in cli._COMMAND_MODULES
    _, plain, sharded = batches
    assert cli.main(["upload", str(plain), mem_root]) == 0
    assert capsys.readouterr().out.strip() == f"{mem_root}/{plain.name}"
    assert cli.main(["ls", mem_root, "--fs-options", "{}"]) == 0
    assert capsys.readouterr().out.split() == [f"{mem_root}/{plain.name}"]
    assert cli.main(["fetch", mem_root, "--cache-dir", str(tmp_path)]) == 0
    fetched = capsys.readouterr().out.split()
    assert len(fetched) == 1 and fastrl.validate(fetched[0]) == []
    with monkeypatch.context() as m:
        _kill_at_manifest(m, sharded.name)
        with pytest.raises(KeyboardInterrupt):
            storage.upload_batch(sharded, mem_root)
    assert cli.main(["clean-remote", mem_root, "--grace", "0", "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == [f"{mem_root}/{sharded.name}"]
    assert cli.main(["clean-remote", mem_root, "--grace", "0"]) == 0
    assert storage.list_batches(mem_root) == [f"{mem_root}/{plain.name}"]
    assert storage.clean_incomplete(mem_root, grace_s=0) == []


def test_cli_missing_paths_fail_in_one_line(mem_root, tmp_path, capsys):
    from fastrl import cli
    assert cli.main(["ls", str(tmp_path / "nothing-here")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.main(["fetch", f"{mem_root}/no-such-root", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no such batch or root" in err and err.count("\n") == 1
