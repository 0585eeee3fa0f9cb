"""Export workers hand packed chunks over as files: the CRC-32 combine, the kernel copy and its
fallback, and exports whose chunks take that path (plain batches) or the mapped one (shards)."""

import errno
import json
import os
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrl
from fastrl._batch import chunkfile
from fastrl._batch.checksum import crc32_combine, crc32_combine_py
from fastrl.export import export_episodes

from test_export import bins, write_dir


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=3000))
def test_crc32_combine_is_the_crc_of_the_concatenation(a, b):
    want = zlib.crc32(a + b)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == want
    assert crc32_combine_py(zlib.crc32(a), zlib.crc32(b), len(b)) == want


def _spilled(tmp_path, rng):
    cols = {"obs": rng.standard_normal((37, 5)).astype("<f4"),
            "actions": rng.integers(0, 8, 37).astype("<i4"),
            "dones": (rng.random(37) < 0.2).astype(np.uint8)}
    return cols, chunkfile.spill(cols, str(tmp_path))


@pytest.mark.parametrize("how", ["copy_file_range", "unsupported", "copies_nothing", "absent"])
def test_copy_range_appends_exact_bytes(tmp_path, rng, monkeypatch, how):
    cols, chunk = _spilled(tmp_path, rng)
    if how == "unsupported":  # e.g. an old kernel across file systems
        def refuse(*args):
            raise OSError(errno.EXDEV, "cross-device")
        monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    elif how == "copies_nothing":  # a file system that answers 0 where it cannot copy
        monkeypatch.setattr(os, "copy_file_range", lambda *args: 0, raising=False)
    elif how == "absent":
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    monkeypatch.setattr(chunkfile, "_COPY_BLOCK", 64)  # several blocks in the fallback
    dst = tmp_path / "out.bin"
    src = os.open(chunk.path, os.O_RDONLY)
    try:
        with open(dst, "wb") as f:
            f.write(b"head")
            f.flush()
            for name in ("actions", "obs"):
                offset, nbytes, crc = chunk.column(name)
                assert crc == zlib.crc32(cols[name].tobytes())
                chunkfile.copy_range(src, f.fileno(), offset, nbytes)
            f.write(b"tail")
        with pytest.raises(OSError, match="ended before"):
            with open(tmp_path / "short.bin", "wb") as g:
                chunkfile.copy_range(src, g.fileno(), os.path.getsize(chunk.path) - 4, 40)
    finally:
        os.close(src)
    assert dst.read_bytes() == b"head" + cols["actions"].tobytes() + cols["obs"].tobytes() \
        + b"tail"
    back = chunkfile.unspill(chunk)
    assert all(np.array_equal(back[k], v) for k, v in cols.items())


@pytest.mark.parametrize("shards", [False, True])
def test_worker_chunks_give_the_one_process_batch(tmp_path, rng, monkeypatch, shards):
    """Chunks copied file to file (plain batch) or mapped and cut (shards): same column bytes
    and the same checksums in meta.json as one process writing everything itself."""
    from fastrl._batch.columnset import ColumnSet
    from fastrl.export import tasks
    src = write_dir(tmp_path / "eps", rng, n_files=6, per_file=5)
    monkeypatch.setattr(tasks, "CHUNK_BYTES", 600)  # many chunks per task
    copied = []
    append_file = ColumnSet.append_file
    monkeypatch.setattr(ColumnSet, "append_file",
                        lambda self, chunk, lengths: (copied.append(chunk.path),
                                                      append_file(self, chunk, lengths)))
    kw = {"shard_bytes": 2000} if shards else {}
    one = export_episodes(src, tmp_path / "o1", workers=1, **kw)
    two = export_episodes(src, tmp_path / "o2", workers=2, **kw)
    assert fastrl.validate(two.path) == []
    if shards:
        parts = sorted(p.name for p in one.path.iterdir() if p.is_dir())
        assert parts == sorted(p.name for p in two.path.iterdir() if p.is_dir()) and parts
        pairs = [(one.path / p, two.path / p) for p in parts]
    else:
        pairs = [(one.path, two.path)]
    for a, b in pairs:
        assert bins(a) == bins(b)
        ma, mb = (json.loads((p / "meta.json").read_text()) for p in (a, b))
        assert ma["checksums"] == mb["checksums"]
    assert not list((two.path).rglob("*.chunk"))
    assert (len(copied) == 0) if shards else (len(copied) > 6)  # the kernel copy for plain ones


def test_copy_range_refuses_a_copy_that_did_not_happen(tmp_path, rng, monkeypatch):
    """A file system that reports bytes copied without copying them (known kernel and file
    system bugs) is caught by the size check, not committed as a wrong batch."""
    _, chunk = _spilled(tmp_path, rng)
    monkeypatch.setattr(os, "copy_file_range", lambda src, dst, n, off: n, raising=False)
    src = os.open(chunk.path, os.O_RDONLY)
    try:
        with open(tmp_path / "out.bin", "wb") as f:
            offset, nbytes, _ = chunk.column("obs")
            with pytest.raises(OSError, match="left its target at 0 bytes"):
                chunkfile.copy_range(src, f.fileno(), offset, nbytes)
    finally:
        os.close(src)
