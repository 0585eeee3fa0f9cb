"""Per-column compression: zstd / gzip / bit-packed masks round-trip byte-identical through
load_batch, open_dataset and `fastrl decompress`; validate checks compressed batches too."""

import json
import os

import numpy as np
import pytest

import fastrl
from fastrl.cli import main
from fastrl.errors import BatchFormatError

from conftest import random_episode
from test_writer import seed_loader

CODECS = ["gzip", "zstd", "brotli"]


def write(root, eps, **kw):
    with fastrl.BatchWriter(root, n_actions=10, mask_pad=13, **kw) as w:
        for ep in eps:
            w.add_episode(**ep)
    return w.path


@pytest.fixture
def eps(rng):
    return [random_episode(rng, int(rng.integers(1, 30)), values=True, truncated=i == 2)
            for i in range(25)]


def _bins(path):
    return {f: (path / f).read_bytes() for f in sorted(os.listdir(path)) if f.endswith(".bin")}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("pack_masks", [False, True])
@pytest.mark.parametrize("shard_bytes", [None, 3000])
def test_roundtrip(tmp_path, eps, codec, pack_masks, shard_bytes):
    pytest.importorskip({"zstd": "zstandard", "brotli": "brotli", "gzip": "zlib"}[codec])
    comp = {c: codec for c in ("obs", "actions", "rewards", "dones", "values", "truncated")}
    comp["masks"] = "packbits" if pack_masks else codec
    plain = write(tmp_path / "p", eps, shard_bytes=shard_bytes)
    packed = write(tmp_path / "c", eps, compression=comp, shard_bytes=shard_bytes)
    assert fastrl.validate(packed) == []
    a, b = fastrl.open_dataset(plain), fastrl.open_dataset(packed)
    assert len(a) == len(b)
    for name in ("obs", "actions", "rewards", "masks", "dones", "values", "truncated"):
        assert np.array_equal(a.gather(np.arange(len(a)))[name],
                              b.gather(np.arange(len(b)))[name]), name
    out = fastrl.convert.decompress(packed, tmp_path / "d")
    assert fastrl.validate(out) == []
    parts = [""] if shard_bytes is None else sorted(p.name for p in plain.iterdir() if p.is_dir())
    for part in parts:
        assert _bins(plain / part) == _bins(out / part)
        seed_loader(out / part)


def test_sizes_shrink_and_meta(tmp_path, eps):
    plain = write(tmp_path / "p", eps)
    packed = write(tmp_path / "c", eps, compression={"masks": "packbits", "dones": "gzip"})
    meta = json.loads((packed / "meta.json").read_text())
    assert meta["codecs"]["masks"]["codec"] == "packbits"
    assert (packed / "masks.bits.bin").stat().st_size == meta["count"] * 2  # 13 cols -> 2 bytes
    assert not (packed / "masks.uint8.bin").exists()
    assert "masks.bits.bin" in meta["checksums"] and "masks.uint8.bin" not in meta["checksums"]
    assert (packed / "dones.uint8.bin.gz").exists()
    b = fastrl.load_batch(packed, verify=True)
    assert not isinstance(b.masks.base, np.memmap)
    assert np.array_equal(b.masks, fastrl.load_batch(plain).masks)


@pytest.mark.parametrize("damage", ["truncate", "flip", "extend", "remove"])
def test_damaged_compressed_column(tmp_path, eps, damage):
    packed = write(tmp_path, eps, compression="gzip")
    victim = packed / "rewards.float32.bin.gz"
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "extend":
        victim.write_bytes(bytes(data) + bytes(data))
    else:
        victim.unlink()
    with pytest.raises(BatchFormatError, match="rewards.float32.bin.gz"):
        fastrl.load_batch(packed, verify=True)
    assert any("rewards.float32.bin.gz" in p for p in fastrl.validate(packed))


def test_codec_meta_cannot_escape_folder(tmp_path, eps):
    packed = write(tmp_path, eps, compression={"obs": "gzip"})
    meta = json.loads((packed / "meta.json").read_text())
    meta["codecs"]["obs"]["file"] = "../../../etc/passwd"
    (packed / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BatchFormatError, match="codecs\\['obs'\\]: file must be"):
        fastrl.load_batch(packed)


def test_bad_compression_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown codec"):
        fastrl.BatchWriter(tmp_path, compression="lz4")
    with pytest.raises(ValueError, match="masks only"):
        fastrl.BatchWriter(tmp_path, compression={"obs": "packbits"})
    with pytest.raises(ValueError, match="unknown column"):
        fastrl.BatchWriter(tmp_path, compression={"nope": "gzip"})


def test_cli_export_compressed_and_decompress(tmp_path, rng, capsys):
    from test_export import write_dir
    src = write_dir(tmp_path / "eps", rng)
    assert main(["export", str(src), "--out", str(tmp_path / "o"), "--compress", "gzip",
                 "--pack-masks", "--quiet"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["validate", path]) == 0
    assert main(["decompress", path]) == 0
    plain = capsys.readouterr().out.strip().splitlines()[-1]
    assert plain != path and fastrl.validate(plain) == []


def test_brotli_bomb_and_trailing_bytes(tmp_path, eps):
    """A brotli column decodes to exactly rawBytes: a stream that inflates further, trailing
    bytes, or a truncated stream are one-line errors naming the file."""
    brotli = pytest.importorskip("brotli")
    path = write(tmp_path, eps, compression={"obs": "brotli"})
    stored = path / "obs.float32.bin.br"
    good = stored.read_bytes()
    for data, why in ((brotli.compress(bytes(50 << 20)), "more than the declared"),
                      (good + b"\0\0", "bytes after its end"), (good[:len(good) // 2], "truncated")):
        os.chmod(stored, 0o644)
        stored.write_bytes(data)
        with pytest.raises(fastrl.BatchFormatError, match=why) as info:
            fastrl.load_batch(path)
        assert "obs.float32.bin.br" in str(info.value)
