"""Issue 12, reliability round 2: nothing outside the target, bounded work on any input,
``validate`` agrees with the readers. One section per class of the issue; generated inputs live
in ``tests/test_fuzz2.py``.

Every test that could hang on a special file runs under :func:`deadline` (SIGALRM), so a
regression fails the test instead of blocking the run.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

import fastrl
from fastrl import _format as F
from fastrl import _kernels as _backend
from fastrl import storage
from fastrl._batch import commit as _commit
from fastrl._batch import safeio
from fastrl._batch.meta import (MAX_META_DEPTH, MAX_USER_META_BYTES, MAX_USER_META_DEPTH,
                                parse_meta, user_meta_problem)
from fastrl.convert import NPZ_TMP_PREFIX, decompress
from fastrl.errors import BatchFormatError
from fastrl.validate import root_notes

from conftest import random_episode

DATA_PREFIXES = ("obs:", "masks:", "actions:", "dones:", "truncated:", "rewards:", "values:",
                 "logprobs:", "final_obs:")


@contextlib.contextmanager
def deadline(seconds: float = 10.0):
    """Fail (TimeoutError) instead of hanging: SIGALRM interrupts a blocking open or read."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _write(root, n=4, *, seed=0, **kw):
    rng = np.random.default_rng(seed)
    with fastrl.BatchWriter(root, n_actions=6, mask_pad=8, **kw) as w:
        for i in range(n):
            w.add_episode(**random_episode(rng, 3 + i, n_actions=6, values=True,
                                           truncated=i == 1))
    return w.path


def _meta(path) -> dict:
    return json.loads((Path(path) / F.META_FILE).read_text())


def _set_meta(path, meta) -> None:
    p = Path(path) / F.META_FILE
    os.chmod(p, 0o644)
    p.write_text(json.dumps(meta))


def _set_raw(path, raw: bytes) -> None:
    p = Path(path) / F.META_FILE
    os.chmod(p, 0o644)
    p.write_bytes(raw)


def _readers_refuse(path, match=None):
    """load_batch (plain), open_dataset and validate all refuse ``path``, each with a
    fastrl error (one line) or a problem list; ``match`` must appear in each."""
    sharded = _meta_or_none(path, "sharded") is True
    if not sharded:
        with pytest.raises(BatchFormatError) as e1:
            fastrl.load_batch(path, verify=True)
        assert "\n" not in str(e1.value)
        if match:
            assert match in str(e1.value), str(e1.value)
    with pytest.raises(BatchFormatError) as e2:
        fastrl.open_dataset(path)
    probs = fastrl.validate(path)
    assert probs, "validate accepted what a reader refuses"
    assert fastrl.validate(path, check_data=False), "validate --quick accepted it"
    if match:
        assert match in str(e2.value), str(e2.value)
        assert any(match in p for p in probs), probs
    return probs


def _meta_or_none(path, key):
    try:
        return fastrl.reader.read_meta(path).get(key)  # never reads a FIFO or device
    except (OSError, ValueError):
        return None


@pytest.fixture
def plain(tmp_path):
    return _write(tmp_path / "root")


@pytest.fixture
def sharded(tmp_path):
    rng = np.random.default_rng(3)
    with fastrl.BatchWriter(tmp_path / "sroot", n_actions=6, shard_bytes=800) as w:
        for i in range(8):
            w.add_episode(**random_episode(rng, 4 + i, n_actions=6))
    assert len(_meta(w.path)["shards"]) >= 3
    return w.path


# =================================================================================================
# 1. Nothing written, created or read outside the target
# =================================================================================================

# -- storage.fetch_batch: hostile remote keys ---------------------------------------------------

HOSTILE_KEYS = ["/etc/fastrl-owned", "../escaped", "shard_00000/../../escaped", "a\\b",
                "./dot", "x//y", "sub/.", "n" * 300, "ok/" + "m" * 256, "a\0b"]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda k: repr(k[:12]))
def test_fetch_refuses_hostile_remote_keys(plain, tmp_path, key):
    """A remote listing with an absolute, ``..``, ``.``, empty, backslash, NUL or over-long key
    fails the fetch with an error naming the key, and nothing is written anywhere."""
    fsspec = pytest.importorskip("fsspec")
    url = storage.upload_batch(plain, f"memory://h12-{abs(hash(key))}/root")
    fs = fsspec.filesystem("memory")
    rpath = url[len("memory://"):]
    fs.pipe_file(f"{rpath}/{key}", b"owned")
    cache = tmp_path / "cache"
    outside = tmp_path / "escaped"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BatchFormatError) as exc:
        storage.fetch_batch(url, cache_dir=cache)
    msg = str(exc.value)
    assert "remote key" in msg and "nothing fetched" in msg and "\n" not in msg
    assert os.listdir(cache) == []  # no cached copy, no temporary folder left
    assert not outside.exists() and not Path("/etc/fastrl-owned").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["cache"])
    fs.rm(rpath, recursive=True)


@pytest.mark.parametrize("url", ["memory://h12/root/..", "memory://h12/root/.hidden"])
def test_fetch_refuses_batch_names_that_are_not_folder_names(tmp_path, url):
    with pytest.raises(BatchFormatError, match="not a plain folder name"):
        storage.fetch_batch(url, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []


def test_fetch_meta_read_is_capped(plain, tmp_path, monkeypatch):
    """The remote meta.json is read up to the size limit, never more."""
    fsspec = pytest.importorskip("fsspec")
    from fastrl._batch import meta as meta_mod
    url = storage.upload_batch(plain, "memory://h12cap/root")
    monkeypatch.setattr(meta_mod, "MAX_META_BYTES", 1000)
    fs = fsspec.filesystem("memory")
    fs.pipe_file(url[len("memory://"):] + "/meta.json", b" " * 5000 + b"{}")
    with pytest.raises(BatchFormatError, match="larger than the 1000-byte limit"):
        storage.fetch_batch(url, cache_dir=tmp_path / "c")
    fs.rm(url[len("memory://"):], recursive=True)


def test_remote_key_problem_unit():
    ok = ["obs.float32.bin", "shard_00000/meta.json", "é" * 100]
    for k in ok:
        assert storage.remote_key_problem(k) is None, k
    for k in HOSTILE_KEYS + ["", "a/", "/"]:
        assert storage.remote_key_problem(k), k


# -- the commit lock, owner files and temporary folders ------------------------------------------

def test_commit_lock_symlink_refused(tmp_path, rng):
    """A symlink at <root>/.fastrl.lock is never followed: the commit fails with a clear
    OSError, the link's target is untouched and nothing is created elsewhere."""
    root = tmp_path / "root"
    root.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious data")
    os.symlink(victim, root / F.LOCK_FILE)
    dangling = tmp_path / "created-elsewhere"
    w = fastrl.BatchWriter(root, n_actions=10)
    w.add_episode(**random_episode(rng, 3))
    with pytest.raises(OSError) as exc:
        w.close()
    assert "symbolic link" in str(exc.value) and ".fastrl.lock" in str(exc.value)
    assert victim.read_bytes() == b"precious data"
    os.unlink(root / F.LOCK_FILE)
    os.symlink(dangling, root / F.LOCK_FILE)  # a dangling link: no file created through it
    w = fastrl.BatchWriter(root, n_actions=10)
    w.add_episode(**random_episode(rng, 3))
    with pytest.raises(OSError):
        w.close()
    assert not dangling.exists()
    assert not [p for p in root.iterdir() if p.name.startswith(F.BATCH_PREFIX)]


def test_commit_lock_fifo_refused_without_hanging(tmp_path, rng):
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / F.LOCK_FILE)
    w = fastrl.BatchWriter(root, n_actions=10)
    w.add_episode(**random_episode(rng, 3))
    with deadline(), pytest.raises(OSError, match="FIFO, not a regular file"):
        w.close()


def test_owner_symlink_never_followed(tmp_path):
    """A temp folder whose .owner is a link (to a FIFO, or to a file elsewhere) is not
    fastrl's: never judged abandoned, never opened through the link, never removed."""
    root = tmp_path / "root"
    root.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t1 = root / f"{F.TMP_PREFIX}batch-1-999999-aaaa"
    t1.mkdir()
    os.symlink(fifo, t1 / F.OWNER_FILE)
    t2 = root / f"{F.TMP_PREFIX}batch-1-999998-bbbb"
    t2.mkdir()
    os.mkfifo(t2 / F.OWNER_FILE)
    with deadline():
        assert not _commit.is_abandoned(t1) and not _commit.is_abandoned(t2)
        assert _commit.clean_stale(root) == []
    assert t1.exists() and t2.exists()


def test_stale_temp_folder_cleaning_never_follows_links(tmp_path):
    """Removing an abandoned temp folder removes links inside it, never what they point to,
    and a temp-folder name that is itself a link is left alone."""
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "keep.txt").write_text("keep")
    (outside / "deep" / "keep2.txt").write_text("keep")
    stale = root / f"{F.TMP_PREFIX}batch-1-999999-cccc"
    stale.mkdir()
    (stale / F.OWNER_FILE).write_text("999999\n")  # its lock is free: abandoned
    os.symlink(outside, stale / "link-to-dir")
    os.symlink(outside / "keep.txt", stale / "link-to-file")
    (stale / "sub").mkdir()
    os.symlink(outside / "deep", stale / "sub" / "nested-link")
    linked = root / f"{F.TMP_PREFIX}batch-2-999999-dddd"
    os.symlink(outside, linked)
    removed = _commit.clean_stale(root)
    assert removed == [stale] and not os.path.lexists(stale)
    assert os.path.islink(linked)
    assert (outside / "keep.txt").read_text() == "keep"
    assert (outside / "deep" / "keep2.txt").read_text() == "keep"


def test_node_style_temp_folder_kept_while_its_process_lives(tmp_path):
    """A temp folder without .owner (a Node.js writer cannot flock) whose creator pid lives is
    not abandoned, however old; once that process is gone, it is."""
    root = tmp_path / "root"
    root.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tmp = root / f"{F.TMP_PREFIX}batch-{_commit.now_ms()}-{child.pid}-0a1b2c3d"
        tmp.mkdir()
        (tmp / "obs.float32.bin").write_bytes(b"\0" * 16)
        old = time.time() - 7 * 24 * 3600
        os.utime(tmp, (old, old))
        assert not _commit.is_abandoned(tmp)
        assert fastrl.BatchWriter(root).close() is None  # its cleaner leaves it alone
        assert tmp.exists()
    finally:
        child.kill()
        child.wait()
    assert _commit.is_abandoned(tmp)
    assert fastrl.BatchWriter(root).close() is None
    assert not tmp.exists()


def test_reused_pid_counts_as_dead(tmp_path):
    """The pid in a temp folder's name now belongs to a process that started later: the
    creator is gone (this process started long after 'ms=1000')."""
    tmp = tmp_path / f"{F.TMP_PREFIX}batch-1000-{os.getppid()}-abcd0123"
    tmp.mkdir()
    assert _commit.is_abandoned(tmp)


def test_forked_child_discard_keeps_parents_folder(tmp_path):
    tmp = _commit.TempFolder(tmp_path)
    (tmp.path / "data.bin").write_bytes(b"x")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            tmp.discard()
            try:
                tmp.commit()
                os._exit(3)
            except RuntimeError:
                os._exit(0)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (tmp.path / "data.bin").exists() and not _commit.is_abandoned(tmp.path)
    final = tmp.commit()
    assert (final / "data.bin").exists()


# -- upload: links inside a batch ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["file-link", "column-link", "fifo"])
def test_upload_refuses_links_and_special_files(plain, tmp_path, kind):
    """upload never sends what a link points to: a link (or FIFO) inside the batch is refused
    with an error naming it, before anything is uploaded."""
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    if kind == "file-link":
        os.symlink(secret, plain / "notes.txt")
        name = "notes.txt"
    elif kind == "column-link":
        target = tmp_path / "rewards.copy"
        os.rename(plain / "rewards.float32.bin", target)
        os.symlink(target, plain / "rewards.float32.bin")
        name = "rewards.float32.bin"
    else:
        os.mkfifo(plain / "pipe")
        name = "pipe"
    dest = tmp_path / "remote"
    for verify in (True, False):
        with deadline(), pytest.raises(BatchFormatError) as exc:
            storage.upload_batch(plain, dest, verify=verify)
        assert name in str(exc.value)
    assert not dest.exists() or not any(p.name.startswith("batch_") for p in dest.iterdir())
    pytest.importorskip("fsspec")
    with deadline(), pytest.raises(BatchFormatError, match=name):
        storage.upload_batch(plain, "memory://h12up/root", verify=False)
    import fsspec
    assert not fsspec.filesystem("memory").exists("/h12up/root")


# -- symlinked column files are refused (a batch folder is self-contained) -----------------------

@pytest.mark.parametrize("fname", ["obs.float32.bin", "meta.json", "episode_index.int64.bin"])
def test_symlinked_batch_files_refused(plain, tmp_path, fname):
    moved = tmp_path / ("moved-" + fname)
    os.rename(plain / fname, moved)
    os.symlink(moved, plain / fname)
    _readers_refuse(plain, "symbolic link")


def test_symlinked_batch_in_root_refused_by_open_dataset(plain, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    os.rename(plain, elsewhere)
    os.symlink(elsewhere, plain)
    with pytest.raises(BatchFormatError, match="symbolic link"):
        fastrl.open_dataset(plain.parent)
    assert len(fastrl.open_dataset(plain)) > 0  # named explicitly: the user's choice


def test_symlinked_shard_refused(sharded, tmp_path):
    shard = sharded / "shard_00001"
    moved = tmp_path / "moved-shard"
    os.rename(shard, moved)
    os.symlink(moved, shard)
    _readers_refuse(sharded, "not a shard folder")


# =================================================================================================
# 2. No hangs on special files
# =================================================================================================

def test_fifo_as_meta_json(plain):
    os.unlink(plain / F.META_FILE)
    os.mkfifo(plain / F.META_FILE)
    with deadline():
        _readers_refuse(plain, "is a FIFO, not a regular file")
        assert fastrl.validate(plain.parent) and root_notes(plain) == []


def test_fifo_as_checksummed_file(plain):
    meta = _meta(plain)
    os.mkfifo(plain / "extra.bin")
    meta["checksums"]["extra.bin"] = "crc32:00000000"
    _set_meta(plain, meta)
    with deadline():
        probs = fastrl.validate(plain)
        assert any("extra.bin: is a FIFO" in p for p in probs), probs
        with pytest.raises(BatchFormatError, match="FIFO"):
            fastrl.load_batch(plain, verify=True)


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/null"])
def test_device_link_in_empty_batch(tmp_path, target):
    """A count-0 batch whose column is a link to /dev/zero (stat says 0 bytes) is refused at
    once by every reader."""
    p = tmp_path / "batch_1"
    p.mkdir()
    meta = {"count": 0, "steps": 0, "episodes": 0, "obsDim": 2, "maskDim": 2,
            "createdAt": "2026-01-01T00:00:00Z"}
    for name in F.REQUIRED_COLUMNS:
        (p / F.REQUIRED_COLUMNS[name][0]).write_bytes(b"")
    os.unlink(p / "obs.float32.bin")
    os.symlink(target, p / "obs.float32.bin")
    (p / F.META_FILE).write_text(json.dumps(meta))
    with deadline():
        _readers_refuse(p, "symbolic link")
    os.unlink(p / "obs.float32.bin")  # and a link as meta.json
    (p / "obs.float32.bin").write_bytes(b"")
    os.unlink(p / F.META_FILE)
    os.symlink(target, p / F.META_FILE)
    with deadline():
        _readers_refuse(p, "symbolic link")


def test_character_device_as_meta_json(tmp_path):
    p = tmp_path / "batch_1"
    p.mkdir()
    try:
        os.mknod(p / F.META_FILE, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here")
    with deadline():
        _readers_refuse(p, "character device")


def test_directory_in_place_of_column_with_matching_size(tmp_path):
    """A directory whose st_size happens to equal the column's size: a clear one-line error
    everywhere (used to be IsADirectoryError from np.memmap)."""
    d = tmp_path / "probe"
    d.mkdir()
    dir_size = d.stat().st_size
    if dir_size % 4 or dir_size == 0:
        pytest.skip(f"directory size {dir_size} is not a whole number of float32 rows")
    count = dir_size // 4
    p = tmp_path / "batch_1"
    p.mkdir()
    meta = {"count": count, "steps": count, "episodes": 1, "obsDim": 1, "maskDim": 1,
            "createdAt": 0}
    np.zeros(count, "<f4").tofile(p / "obs.float32.bin")
    np.zeros(count, "<i4").tofile(p / "actions.int32.bin")
    np.ones((count, 1), "u1").tofile(p / "masks.uint8.bin")
    dones = np.zeros(count, "u1")
    dones[-1] = 1
    dones.tofile(p / "dones.uint8.bin")
    (p / "rewards.float32.bin").mkdir()
    assert (p / "rewards.float32.bin").stat().st_size == count * 4
    (p / F.META_FILE).write_text(json.dumps(meta))
    _readers_refuse(p, "rewards.float32.bin: is a directory")
    out = subprocess.run([sys.executable, "-m", "fastrl", "info", str(p)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "is a directory" in out.stderr and len(out.stderr.strip().splitlines()) == 1


# =================================================================================================
# 3. Bounded memory
# =================================================================================================

def test_meta_json_read_capped_by_bytes_read(plain, monkeypatch):
    """A meta.json larger than the limit is refused as it is read (not trusted from stat)."""
    from fastrl._batch import meta as meta_mod
    monkeypatch.setattr(meta_mod, "MAX_META_BYTES", 4096)
    _set_raw(plain, b" " * 5000 + json.dumps(_meta(plain)).encode())
    with pytest.raises(BatchFormatError, match="larger than the 4096 limit"):
        fastrl.load_batch(plain)


def test_read_capped_counts_bytes_not_stat():
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        with pytest.raises(BatchFormatError, match="more than 1000 bytes"):
            safeio.read_capped(fd, 1000, "/dev/zero")
    finally:
        os.close(fd)


def _compressed_batch(root, codec, count=256, obs_dim=1 << 12):
    """A batch whose obs column (count x obs_dim zeros) is compressed with ``codec``."""
    eps = [{"obs": np.zeros((count // 4, obs_dim), np.float32),
            "actions": np.zeros(count // 4, int), "rewards": np.zeros(count // 4),
            "legal": [[0]] * (count // 4)} for _ in range(4)]
    with fastrl.BatchWriter(root, n_actions=2, compression={"obs": codec}) as w:
        for ep in eps:
            w.add_episode(**ep)
    return w.path


def _inflate_to_declared(path, codec, factor):
    """Rewrite the compressed obs so that meta declares ``factor`` x the rows (a bomb whose
    declared shape is far larger than the stored file)."""
    meta = _meta(path)
    n = meta["count"] * factor
    raw = bytes(n * meta["obsDim"] * 4)
    name = meta["codecs"]["obs"]["file"]
    if codec == "zstd":
        import zstandard
        blob = zstandard.ZstdCompressor(level=19).compress(raw)
    else:
        blob = gzip.compress(raw, 9)
    os.chmod(path / name, 0o644)
    (path / name).write_bytes(blob)
    return len(raw), len(blob)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_decode_budget_refuses_before_inflating(tmp_path, monkeypatch, codec):
    """A compressed column whose declared size exceeds the decode budget is refused before a
    byte is inflated: no allocation of that size."""
    if codec == "zstd":
        pytest.importorskip("zstandard")
    path = _compressed_batch(tmp_path / "r", codec)
    want = _meta(path)["codecs"]["obs"]["rawBytes"]
    monkeypatch.setenv("FASTRL_MAX_DECODE_BYTES", str(want - 1))
    tracemalloc.start()
    try:
        with pytest.raises(BatchFormatError, match="decode budget"):
            fastrl.load_batch(path)
        probs = fastrl.validate(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert any("decode budget" in p for p in probs)
    assert peak < want // 2
    monkeypatch.setenv("FASTRL_MAX_DECODE_BYTES", f"{(want >> 10) + 1}K")
    assert fastrl.validate(path) == []
    monkeypatch.setenv("FASTRL_MAX_DECODE_BYTES", "lots")
    with pytest.raises(BatchFormatError, match="not a byte count"):
        fastrl.load_batch(path)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_stream_longer_than_declared_stops_there(tmp_path, codec):
    """The stored stream decodes to 4x the declared size: decoding stops at the declared size
    (never holds the rest) and says so."""
    if codec == "zstd":
        pytest.importorskip("zstandard")
    path = _compressed_batch(tmp_path / "r", codec)
    want = _meta(path)["codecs"]["obs"]["rawBytes"]
    _inflate_to_declared(path, codec, 4)
    tracemalloc.start()
    try:
        with pytest.raises(BatchFormatError, match="more than the declared"):
            fastrl.load_batch(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < want + (10 << 20)
    assert any("more than the declared" in p for p in fastrl.validate(path))


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("tail", [b"junk", b"\0" * 8, b"\x28\xb5\x2f\xfd"])
def test_trailing_bytes_one_line_error(tmp_path, codec, tail):
    if codec == "zstd":
        pytest.importorskip("zstandard")
    path = _compressed_batch(tmp_path / "r", codec)
    name = _meta(path)["codecs"]["obs"]["file"]
    os.chmod(path / name, 0o644)
    with open(path / name, "ab") as f:
        f.write(tail)
    meta = _meta(path)
    meta["checksums"].pop(name)  # only the decoder can tell
    _set_meta(path, meta)
    with pytest.raises(BatchFormatError) as exc:
        fastrl.load_batch(path)
    assert name in str(exc.value) and "\n" not in str(exc.value)
    assert any(name in p for p in fastrl.validate(path))
    out = subprocess.run([sys.executable, "-m", "fastrl", "validate", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_concatenated_members_are_valid(tmp_path, codec):
    """Two gzip members / zstd frames are one valid stream (what the gzip and zstd tools
    read)."""
    if codec == "zstd":
        pytest.importorskip("zstandard")
        import zstandard
        comp = zstandard.ZstdCompressor().compress
    else:
        comp = gzip.compress
    path = _compressed_batch(tmp_path / "r", codec)
    meta = _meta(path)
    name = meta["codecs"]["obs"]["file"]
    raw = np.asarray(fastrl.load_batch(path).obs).tobytes()
    half = len(raw) // 3
    os.chmod(path / name, 0o644)
    blob = comp(raw[:half]) + comp(raw[half:])
    (path / name).write_bytes(blob)
    meta["checksums"][name] = f"crc32:{zlib.crc32(blob):08x}"
    _set_meta(path, meta)
    assert fastrl.validate(path) == []
    assert np.asarray(fastrl.load_batch(path, verify=True).obs).tobytes() == raw


# =================================================================================================
# 4. validate == readers
# =================================================================================================

STRICT_JSON_CASES = {
    "nan": lambda raw: raw.replace(b'"count": ', b'"x": NaN, "count": ', 1),
    "infinity": lambda raw: raw.replace(b'"count": ', b'"x": Infinity, "count": ', 1),
    "neg-infinity": lambda raw: raw.replace(b'"count": ', b'"x": -Infinity, "count": ', 1),
    "huge-float": lambda raw: raw.replace(b'"count": ', b'"x": 1e999, "count": ', 1),
    "bom": lambda raw: b"\xef\xbb\xbf" + raw,
    "utf16-le": lambda raw: raw.decode().encode("utf-16-le"),
    "utf16-bom": lambda raw: raw.decode().encode("utf-16"),
    "utf32": lambda raw: raw.decode().encode("utf-32"),
    "lone-surrogate-escape": lambda raw: raw.replace(b'"count": ', b'"x": "\\ud800", "count": ', 1),
    "lone-surrogate-key": lambda raw: raw.replace(b'"count": ', b'"\\udc00": 1, "count": ', 1),
    "surrogate-bytes": lambda raw: raw.replace(b'"count": ', b'"x": "\xed\xa0\x80", "count": ', 1),
    "invalid-utf8": lambda raw: raw.replace(b'"count": ', b'"x": "\xff", "count": ', 1),
    "duplicate-key": lambda raw: raw.replace(b'"count": ', b'"count": 0, "count": ', 1),
    "too-deep": lambda raw: raw.replace(b'"count": ', b'"x": ' + b"[" * (MAX_META_DEPTH + 1)
                                        + b"]" * (MAX_META_DEPTH + 1) + b', "count": ', 1),
}


@pytest.mark.parametrize("case", sorted(STRICT_JSON_CASES))
def test_meta_json_must_be_strict_utf8_json(plain, case):
    raw = (plain / F.META_FILE).read_bytes()
    _set_raw(plain, STRICT_JSON_CASES[case](raw))
    _readers_refuse(plain, "meta.json")


def test_strict_json_accepts_valid_escapes():
    meta = parse_meta('{"a": "\\ud83d\\ude00 caf\\u00e9", "b": [1.5, -0.0, 2e-300]}'.encode(),
                      "x")
    assert meta["a"] == "\U0001F600 café"
    deep = b'{"a": ' + b"[" * (MAX_META_DEPTH - 1) + b"]" * (MAX_META_DEPTH - 1) + b"}"
    assert parse_meta(deep, "x")


META_VALUE_CASES = [
    ("formatVersion", True, "formatVersion True"),
    ("formatVersion", 1.0, "formatVersion 1.0"),
    ("formatVersion", "1", "formatVersion 1"),
    ("byteOrder", "big", "byteOrder must be 'little'"),
    ("format", "other", "format must be"),
    ("sharded", "yes", "sharded must be true or false"),
    ("createdAt", None, "createdAt must be"),
    ("createdAt", -5, "createdAt must be"),
    ("createdAt", True, "createdAt must be"),
]


@pytest.mark.parametrize("key,value,msg", META_VALUE_CASES, ids=lambda v: str(v)[:14])
def test_meta_values_format_rules_out(plain, key, value, msg):
    meta = _meta(plain)
    meta[key] = value
    _set_meta(plain, meta)
    _readers_refuse(plain, msg)


COLUMN_TABLE_CASES = [
    (("obs", "dtype"), ">f4", "dtype must be '<f4'"),
    (("obs", "dtype"), "<f8", "dtype must be '<f4'"),
    (("actions", "dtype"), ">i4", "dtype must be '<i4'"),
    (("masks", "dtype"), "bool", "dtype must be '|u1'"),
    (("obs", "shape"), [1, 1], "shape must be"),
    (("episode_index", "shape"), [2], "shape must be"),
    (("rewards", "shape"), "9", "shape must be"),
    (("rewards", "file"), "../../../etc/passwd", "file must be"),
    (("rewards", "file"), "/etc/passwd", "file must be"),
    (("values", "file"), "rewards.float32.bin", "file must be"),
]


@pytest.mark.parametrize("where,value,msg", COLUMN_TABLE_CASES, ids=lambda v: str(v)[:14])
def test_columns_table_checked(plain, where, value, msg):
    meta = _meta(plain)
    meta["columns"][where[0]][where[1]] = value
    _set_meta(plain, meta)
    _readers_refuse(plain, msg)


def test_columns_table_other_spellings_accepted(plain):
    meta = _meta(plain)
    meta["columns"]["masks"]["dtype"] = "u1"
    meta["columns"]["dones"]["dtype"] = "<u1"
    meta["columns"]["future_column"] = {"file": "/anything", "dtype": ">f8"}  # unknown: ignored
    _set_meta(plain, meta)
    assert fastrl.validate(plain) == []
    fastrl.load_batch(plain, verify=True)


@pytest.mark.parametrize("created", [1690000000000, 1690000000000.5, "2026-01-01T00:00:00Z"])
def test_origin_producer_meta_validates(plain, tmp_path, created):
    """A batch from another producer of this format (the origin document's Node tool): only
    the six keys, createdAt a number of milliseconds (JavaScript's Date.now())."""
    b = fastrl.load_batch(plain)
    node = tmp_path / "node" / "batch_1690000000000"
    node.mkdir(parents=True)
    for name in F.REQUIRED_COLUMNS:
        fname = F.REQUIRED_COLUMNS[name][0]
        (node / fname).write_bytes((plain / fname).read_bytes())
    meta = {k: b.meta[k] for k in F.REQUIRED_META_KEYS}
    meta["createdAt"] = created
    (node / F.META_FILE).write_text(json.dumps(meta))
    assert fastrl.validate(node) == []
    assert fastrl.load_batch(node, verify=True).num_episodes == b.num_episodes
    assert fastrl.open_dataset(node.parent).num_episodes == b.num_episodes


def test_shard_that_is_itself_sharded_refused(sharded, tmp_path):
    shard = sharded / "shard_00001"
    inner = tmp_path / "inner"
    os.rename(shard, inner)
    shard.mkdir()
    os.rename(inner, shard / "shard_00000")
    m = _meta(shard / "shard_00000")
    manifest = {k: v for k, v in m.items() if k not in ("shard", "columns", "checksums")}
    manifest.update(sharded=True, shard=m["shard"],
                    shards=[{"path": "shard_00000", "firstRow": 0, "firstEpisode": 0,
                             "count": m["count"], "episodes": m["episodes"]}])
    m["shard"] = {"index": 0, "firstRow": 0, "firstEpisode": 0}
    _set_meta(shard / "shard_00000", m)
    (shard / F.META_FILE).write_text(json.dumps(manifest))
    _readers_refuse(sharded, "a shard must not itself be sharded")


@pytest.mark.parametrize("key", ["obsDim", "maskDim", "numActions"])
def test_manifest_dims_must_equal_every_shards(sharded, key):
    meta = _meta(sharded)
    meta[key] = meta["maskDim"] + 1 if key == "maskDim" else meta[key] + (1 if key == "obsDim"
                                                                          else -1)
    _set_meta(sharded, meta)
    _readers_refuse(sharded, "disagrees with the manifest")


@pytest.mark.parametrize("codec", ["gzip", "packbits"])
def test_plain_column_beside_compressed_twin_refused(tmp_path, codec):
    path = _write(tmp_path / "r", compression={"masks": codec})
    plain_masks = np.asarray(fastrl.load_batch(path).masks)
    other = plain_masks.copy()
    other[:, 0] ^= 1  # the raw loader would read this file, fastrl the compressed one
    other.tofile(path / "masks.uint8.bin")
    _readers_refuse(path, "beside its compressed form")


def test_anything_validate_accepts_readers_read(plain, sharded):
    for p in (plain, sharded):
        assert fastrl.validate(p) == [] and fastrl.validate(p, check_data=False) == []
        fastrl.open_dataset(p)
    fastrl.load_batch(plain, verify=True)


def test_quick_validate_checks_episode_index(plain):
    """--quick reads what load_batch reads besides the sizes: a bad episode index."""
    idx = np.fromfile(plain / "episode_index.int64.bin", "<i8")
    idx[1], idx[2] = idx[2], idx[1]
    meta = _meta(plain)
    meta["checksums"].pop("episode_index.int64.bin")
    _set_meta(plain, meta)
    os.chmod(plain / "episode_index.int64.bin", 0o644)
    idx.tofile(plain / "episode_index.int64.bin")
    with pytest.raises(BatchFormatError, match="strictly increasing"):
        fastrl.load_batch(plain)
    assert any("strictly increasing" in p for p in fastrl.validate(plain, check_data=False))


def test_root_notes_not_problems(plain):
    stale = plain.parent / f"{F.TMP_PREFIX}batch-1-999999-eeee"
    stale.mkdir()
    (stale / F.OWNER_FILE).write_text("1\n")
    assert fastrl.validate(plain) == []
    notes = root_notes(plain)
    assert len(notes) == 1 and stale.name in notes[0]


# =================================================================================================
# 5. Writer side: user meta
# =================================================================================================

def _nested(depth):
    v = 0
    for _ in range(depth):
        v = [v]
    return v


@pytest.mark.parametrize("obj,msg", [
    ({"x": float("nan")}, "NaN/Infinity"),
    ({"x": [1, float("inf")]}, "NaN/Infinity"),
    ({1: "a"}, "keys are strings"),
    ({("a",): 1}, "keys are strings"),
    ({"x": "\ud800"}, "lone surrogate"),
    ({"\udc00": 1}, "lone surrogate"),
    ({"x": np.int64(3)}, "numpy.int64"),
    ({"x": {1, 2}}, "builtins.set"),
    ({"x": b"bytes"}, "bytes"),
    ({"x": 10 ** 4100}, "digits"),
    (_nested(MAX_USER_META_DEPTH + 1), "nested deeper"),
    (_nested(5000), "nested deeper"),
])
def test_user_meta_problem_refuses(obj, msg):
    problem = user_meta_problem(obj)
    assert problem and msg in problem, problem


def test_user_meta_problem_cycle_and_size():
    a = []
    a.append(a)
    assert "nested deeper" in user_meta_problem({"a": a})
    assert "bytes as JSON" in user_meta_problem({"x": "y" * (MAX_USER_META_BYTES + 10)})


@pytest.mark.parametrize("obj", [None, 1, "s", {"run": "abc", "lr": 3e-4, "tags": ["a", "é"],
                                                "nested": {"ok": True, "n": None}},
                                 _nested(MAX_USER_META_DEPTH), {"x": np.float64(1.5)},
                                 {"emoji": "\U0001F600"}, (1, 2)])
def test_user_meta_problem_accepts(obj, tmp_path):
    assert user_meta_problem(obj) is None
    text = json.dumps({"count": 0, "user": obj}, indent=1, allow_nan=False).encode()
    assert parse_meta(text, "x")["user"] == json.loads(text)["user"]


# =================================================================================================
# 6. decompress
# =================================================================================================

def test_decompress_refuses_plain_batch(plain):
    with pytest.raises(BatchFormatError, match="not compressed"):
        decompress(plain)
    assert not (plain.parent.parent / (plain.parent.name + "-decompressed")).exists() or \
        not any((plain.parent.parent / (plain.parent.name + "-decompressed")).iterdir())


def test_decompress_default_root_is_a_sibling(tmp_path):
    path = _write(tmp_path / "data" / "binary", compression="gzip")
    out = decompress(path)
    assert out == tmp_path / "data" / "binary-decompressed" / path.name
    assert fastrl.validate(out) == []
    assert [n for n in os.listdir(path.parent) if not n.startswith(".")] == [path.name]
    with pytest.raises(FileExistsError):
        decompress(path)
    with pytest.raises(BatchFormatError, match="own root"):
        decompress(path, path.parent)


def test_decompress_refuses_damaged_plain_column(tmp_path):
    """A compressed batch whose plain (uncompressed) column is damaged under its checksum: no
    copy is committed."""
    path = _write(tmp_path / "r", compression={"obs": "gzip"})
    os.chmod(path / "rewards.float32.bin", 0o644)
    with open(path / "rewards.float32.bin", "r+b") as f:
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(BatchFormatError, match="checksum"):
        decompress(path, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").iterdir()] if (tmp_path / "out").exists() else True


def test_decompress_refuses_manifest_with_wrong_totals(tmp_path):
    rng = np.random.default_rng(3)
    with fastrl.BatchWriter(tmp_path / "r", n_actions=6, shard_bytes=1500,
                            compression="gzip") as w:
        for i in range(8):
            w.add_episode(**random_episode(rng, 4 + i, n_actions=6))
    meta = _meta(w.path)
    meta["count"] += 1
    meta["steps"] += 1
    _set_meta(w.path, meta)
    with pytest.raises(BatchFormatError):
        decompress(w.path, tmp_path / "out")
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir())


def test_decompress_sharded_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    eps = [random_episode(rng, 4 + i, n_actions=6, values=True) for i in range(8)]
    roots = {}
    for kind, comp in (("plain", None), ("comp", {"obs": "gzip", "masks": "packbits"})):
        with fastrl.BatchWriter(tmp_path / kind, n_actions=6, shard_bytes=1500,
                                compression=comp) as w:
            for ep in eps:
                w.add_episode(**ep)
        roots[kind] = w.path
    out = decompress(roots["comp"], tmp_path / "out")
    assert fastrl.validate(out) == []
    a, b = fastrl.open_dataset(roots["plain"]), fastrl.open_dataset(out)
    idx = np.arange(len(a))
    for name, col in a.gather(idx).items():
        assert np.array_equal(col, b.gather(idx)[name]), name


# =================================================================================================
# 7. to_npz killed by SIGKILL
# =================================================================================================

def test_to_npz_sigkill_leftover_is_recognised_and_cleaned(tmp_path):
    path = _write(tmp_path / "r", n=40, seed=1)
    out_dir = tmp_path / "npz"
    out_dir.mkdir()
    code = (f"import fastrl, os, signal\n"
            f"def replace(src, dst):  # killed after writing, before the rename\n"
            f"    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"os.replace = replace\n"
            f"fastrl.to_npz({str(path)!r}, {str(out_dir / 'b.npz')!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    left = [p for p in out_dir.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(NPZ_TMP_PREFIX), left
    live = out_dir / f"{NPZ_TMP_PREFIX}{_commit.now_ms()}-{os.getpid()}-00000000.npz"
    live.write_bytes(b"in progress")  # a live process's temporary file is kept
    fastrl.to_npz(path, out_dir / "c.npz")
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(["c.npz", live.name])


# =================================================================================================
# 8. SIGBUS: copy=True
# =================================================================================================

def test_load_batch_copy_reads_into_memory(plain):
    mapped = fastrl.load_batch(plain)
    copied = fastrl.load_batch(plain, copy=True, verify=True)
    for name, col in copied.columns.items():
        assert not isinstance(col.base, np.memmap) and not col.flags.writeable
        assert np.array_equal(col, getattr(mapped, name))
    ds = fastrl.open_dataset(plain.parent, copy=True)
    assert all(not isinstance(p.obs.base, np.memmap) for p in ds.parts)


def test_truncated_while_mapped_sigbus_vs_copy(plain):
    """A column truncated by another process while mapped kills a mapped reader with SIGBUS
    (documented); a copy=True reader is unaffected."""
    code = ("import fastrl, os, sys, numpy as np\n"
            "b = fastrl.load_batch(sys.argv[1], copy=sys.argv[2] == '1')\n"
            "p = os.path.join(sys.argv[1], 'obs.float32.bin')\n"
            "os.chmod(p, 0o644); os.truncate(p, 0)\n"
            "print(float(np.asarray(b.obs).sum()))\n")
    for copy, want in (("1", 0), ("0", -signal.SIGBUS)):
        data = (plain / "obs.float32.bin").read_bytes()
        r = subprocess.run([sys.executable, "-c", code, str(plain), copy], capture_output=True,
                           timeout=120)
        assert r.returncode == want, r.stderr[-2000:]
        os.chmod(plain / "obs.float32.bin", 0o644)
        (plain / "obs.float32.bin").write_bytes(data)


# =================================================================================================
# 9. Kernels check their own contract (examples; generated cases in test_fuzz2.py)
# =================================================================================================

def _kernel_modules():
    return [_backend.load(b) for b in _backend.available()]


def _pack_setup(T=3, D=2, A=4, legal=True):
    from fastrl._batch.episode import normalize_episode
    from fastrl._batch.packing import allocate_columns
    kw = {"legal": [[0, 1]] * T} if legal else {"mask": np.ones((T, A), np.uint8)}
    ep = normalize_episode(0, obs=np.zeros((T, D)), actions=[0] * T, rewards=[0.0] * T,
                           obs_dim=D, n_actions=A, **kw)
    cols = allocate_columns(T, D, A, values=False, logprobs=False)
    return ep, cols


@pytest.mark.parametrize("breakage", ["offsets-decreasing", "offsets-past-ids", "obs-width",
                                      "mask-wider", "rows", "row0", "n_actions", "length",
                                      "values-without-column", "not-an-array"])
def test_pack_kernel_contract_examples(breakage):
    msgs = []
    for mods in _kernel_modules():
        ep, cols = _pack_setup(legal=breakage.startswith("offsets") or breakage == "not-an-array")
        row0, A = 0, 4
        if breakage == "offsets-decreasing":
            ep.legal_offsets = np.array([0, 6, 2, 6], np.int64)
        elif breakage == "offsets-past-ids":
            ep.legal_offsets = np.array([0, 2, 4, 10 ** 9], np.int64)
        elif breakage == "obs-width":
            ep.obs = np.zeros((3, 50))
        elif breakage == "mask-wider":
            ep.mask = np.ones((3, 99), np.uint8)
        elif breakage == "rows":
            cols = {k: v[:1] for k, v in cols.items()}
        elif breakage == "row0":
            row0 = 2
        elif breakage == "n_actions":
            A = 10 ** 6
        elif breakage == "length":
            ep.length = 10 ** 6
        elif breakage == "values-without-column":
            ep.values = np.zeros(3)
        else:
            ep.legal_ids = [0, 1] * 3
        with pytest.raises(ValueError) as exc:
            mods["pack"].pack_episodes([ep], cols["obs"], cols["actions"], cols["rewards"],
                                       cols["masks"], cols["dones"], cols.get("truncated"),
                                       None, None, row0, A, 1)
        msgs.append(str(exc.value))
    assert len(set(msgs)) == 1 and msgs[0].startswith("pack_episodes: "), msgs


@pytest.mark.parametrize("breakage", ["csr-decreasing", "csr-past-data", "cell-off-outside",
                                      "scale-short", "scale-without-offset", "plan-not-array",
                                      "field-outside", "nrows"])
def test_encode_kernel_contract_examples(breakage):
    from fastrl._kernels import codes as C
    msgs = []
    for mods in _kernel_modules():
        out = np.zeros((3, 8), np.float32)
        nrows = 3
        if breakage.startswith("csr"):
            plan = (C.KIND_MULTI, 0, 8, 0, 8, 0, C.LAYOUT_CELL) + (None,) * 7
            ids = np.arange(6, dtype=np.int64) % 8
            offs = np.array([0, 4, 2, 6] if breakage == "csr-decreasing" else [0, 2, 4, 99],
                            np.int64)
            inp = (ids, offs)
        elif breakage == "cell-off-outside":
            plan = (C.KIND_IDS, 0, 4, 2, 0, 0, C.LAYOUT_CELL, np.array([2, 2]),
                    np.array([0, 0]), np.array([0, 10 ** 6]), None, None, None, None)
            inp = (np.zeros(6, np.int64), None)
        elif breakage.startswith("scale"):
            scale = np.ones(2) if breakage == "scale-short" else np.ones(1)
            offset = np.zeros(1) if breakage == "scale-short" else None
            plan = (C.KIND_BOX, 0, 4, 4, 0, 0, C.LAYOUT_CELL, None, None, None, scale, offset,
                    None, None)
            inp = (np.zeros(12), None)
        elif breakage == "plan-not-array":
            plan = (C.KIND_IDS, 0, 4, 2, 2, 0, C.LAYOUT_CELL, [2, 2], None, None, None, None,
                    None, None)
            inp = (np.zeros(6, np.int64), None)
        elif breakage == "field-outside":
            plan = (C.KIND_BOX, 6, 4, 4, 0, 0, C.LAYOUT_CELL) + (None,) * 7
            inp = (np.zeros(12), None)
        else:
            plan = (C.KIND_BOX, 0, 4, 4, 0, 0, C.LAYOUT_CELL) + (None,) * 7
            inp = (np.zeros(12), None)
            nrows = 4
        with pytest.raises(ValueError) as exc:
            mods["encode"].encode_batch(out, [plan], [inp], nrows, 1)
        msgs.append(str(exc.value))
    assert len(set(msgs)) == 1 and msgs[0].startswith("encode_batch: "), msgs


# =================================================================================================
# 10. One-line errors (no traceback) for the classes above
# =================================================================================================

@pytest.mark.parametrize("entry", ["shard_" + "x" * 300, "shard_é", "shard_00000/../x"])
def test_bad_shard_entry_names_one_line(sharded, entry):
    meta = _meta(sharded)
    meta["shards"][0]["path"] = entry
    _set_meta(sharded, meta)
    _readers_refuse(sharded, "bad shard entry 0")
    out = subprocess.run([sys.executable, "-m", "fastrl", "info", str(sharded)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr


def test_shard_symlink_loop_one_line(sharded):
    shard = sharded / "shard_00002"
    import shutil
    shutil.rmtree(shard)
    os.symlink(shard, shard)  # ELOOP
    _readers_refuse(sharded, "shard_00002")
    out = subprocess.run([sys.executable, "-m", "fastrl", "validate", str(sharded)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
