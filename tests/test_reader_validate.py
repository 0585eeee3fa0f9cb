"""load_batch / validate / to_npz / info on sound and on damaged batches; golden files pin the
on-disk bytes of format v1."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import fastrl
from fastrl import _format as F
from fastrl.errors import BatchFormatError

from conftest import random_episode

GOLDEN = Path(__file__).parent / "golden" / "batch_v1_small"


def golden_episodes():
    """The inputs the golden batch was written from (fixed, no RNG dependence across NumPy)."""
    eps = []
    for e in range(3):
        T = 2 + e
        obs = np.arange(T * 4, dtype=np.float64).reshape(T, 4) / 8.0 - e
        legal = [[(t + e) % 6, (t + e + 2) % 6] for t in range(T)]
        eps.append({"obs": obs, "actions": [ids[t % 2] for t, ids in enumerate(legal)],
                    "rewards": [0.0] * (T - 1) + [(-1.0, 0.0, 1.0)[e]], "legal": legal,
                    "values": [0.25 * t for t in range(T)], "truncated": e == 1})
    return eps


def write_golden(root):
    with fastrl.BatchWriter(root, n_actions=6, mask_pad=8) as w:
        for ep in golden_episodes():
            w.add_episode(**ep)
    return w.path


def test_golden_bytes_unchanged(backend, tmp_path):
    path = write_golden(tmp_path)
    for f in sorted(os.listdir(GOLDEN)):
        if f.endswith(".bin"):
            assert (path / f).read_bytes() == (GOLDEN / f).read_bytes(), f
    assert sorted(f for f in os.listdir(path) if f.endswith(".bin")) == \
        sorted(f for f in os.listdir(GOLDEN) if f.endswith(".bin"))
    gm, m = json.loads((GOLDEN / "meta.json").read_text()), fastrl.load_batch(path).meta
    for key in ("count", "steps", "episodes", "obsDim", "maskDim", "numActions", "columns",
                "checksums", "formatVersion"):
        assert m[key] == gm[key], key


def test_golden_loads(backend):
    b = fastrl.load_batch(GOLDEN, verify=True)
    assert (b.count, b.num_episodes, b.obs_dim, b.mask_dim, b.n_actions) == (9, 3, 4, 8, 6)
    assert b.rewards[b.episode_starts[1:] - 1].tolist() == [-1.0, 0.0, 1.0]
    assert fastrl.validate(GOLDEN) == []


@pytest.fixture
def batch(tmp_path, rng):
    with fastrl.BatchWriter(tmp_path / "root", n_actions=10, mask_pad=12) as w:
        for i in range(8):
            w.add_episode(**random_episode(rng, 5 + i, values=True, truncated=i == 3))
    return w.path


def _meta(path):
    return json.loads((path / "meta.json").read_text())


def _set_meta(path, meta):
    (path / "meta.json").write_text(json.dumps(meta))


def test_load_batch_api(batch):
    b = fastrl.load_batch(batch)
    assert len(b) == b.count == sum(5 + i for i in range(8)) and b.num_episodes == 8
    assert isinstance(b.obs.base, np.memmap) and not b.obs.flags.writeable
    eps = list(b.episodes())
    assert [len(e) for e in eps] == [5 + i for i in range(8)]
    assert b.episode(-1).index == 7
    with pytest.raises(IndexError):
        b.episode(8)
    mb = b.sample(64, rng=0)
    assert mb["obs"].shape == (64, 6) and mb["index"].shape == (64,)
    assert np.array_equal(mb["actions"], np.asarray(b.actions)[mb["index"]])
    assert np.array_equal(b.sample(16, rng=1)["index"], b.sample(16, rng=1)["index"])


@pytest.mark.parametrize("fname", ["obs.float32.bin", "masks.uint8.bin", "dones.uint8.bin",
                                   "values.float32.bin", "episode_index.int64.bin"])
@pytest.mark.parametrize("delta", [-1, 1, -10 ** 9])
def test_resized_file_rejected(batch, fname, delta):
    p = batch / fname
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.truncate(max(0, size + delta))
    with pytest.raises(BatchFormatError, match=f"{fname}: .* bytes on disk, expected {size}"):
        fastrl.load_batch(batch)
    probs = fastrl.validate(batch)
    assert any(fname in p and "expected" in p for p in probs)


def test_missing_file(batch):
    (batch / "actions.int32.bin").unlink()
    with pytest.raises(BatchFormatError, match="actions.int32.bin: missing"):
        fastrl.load_batch(batch)


@pytest.mark.parametrize("edit,msg", [
    (lambda m: m.pop("count"), "'count' missing"),
    (lambda m: m.update(count=-1), "count must be an integer"),
    (lambda m: m.update(count=10 ** 30, steps=10 ** 30), "count must be an integer"),
    (lambda m: m.update(obsDim="7"), "obsDim must be an integer"),
    (lambda m: m.update(maskDim=True), "maskDim must be an integer"),
    (lambda m: m.update(steps=1), "count .* != steps"),
    (lambda m: m.update(numActions=99), "numActions .* > maskDim"),
    (lambda m: m.update(formatVersion=2), "formatVersion 2 is not supported"),
    (lambda m: m.update(count=m["count"] * 2, steps=m["count"] * 2),
     r"columns\['obs'\]: shape must be"),
    (lambda m: (m.update(count=m["count"] * 2, steps=m["count"] * 2), m.pop("columns")),
     "bytes on disk"),
    (lambda m: m.update(formatVersion=True), "formatVersion True is not supported"),
    (lambda m: m.update(formatVersion=1.0), "formatVersion 1.0 is not supported"),
    (lambda m: m.update(byteOrder="big"), "byteOrder must be 'little'"),
    (lambda m: m["columns"]["obs"].update(dtype=">f4"), r"columns\['obs'\]: dtype must be"),
    (lambda m: m["columns"]["rewards"].update(file="../../x"),
     r"columns\['rewards'\]: file must be"),
])
def test_bad_meta(batch, edit, msg):
    m = _meta(batch)
    edit(m)
    _set_meta(batch, m)
    with pytest.raises(BatchFormatError, match=msg):
        fastrl.load_batch(batch)
    assert fastrl.validate(batch)


@pytest.mark.parametrize("content", [b"", b"{", b"[1,2]", b"\xff\xfe", b'{"count": 1e999}',
                                     b"[" * 100000])
def test_garbage_meta(batch, content):
    (batch / "meta.json").write_bytes(content)
    with pytest.raises(BatchFormatError):
        fastrl.load_batch(batch)
    assert fastrl.validate(batch)


def _poke(path, fname, offset, value: bytes):
    with open(path / fname, "r+b") as f:
        f.seek(offset)
        f.write(value)


def test_validate_finds_data_problems(batch):
    b = fastrl.load_batch(batch)
    meta = b.meta
    od, md = meta["obsDim"], meta["maskDim"]
    _poke(batch, "obs.float32.bin", (3 * od + 1) * 4, np.float32(np.nan).tobytes())
    _poke(batch, "masks.uint8.bin", 5 * md + 11, b"\x01")  # padding column
    _poke(batch, "masks.uint8.bin", 6 * md + 2, b"\x07")  # not 0/1
    a = int(b.actions[8])
    _poke(batch, "masks.uint8.bin", 8 * md + a, b"\x00")  # action now illegal
    _poke(batch, "actions.int32.bin", 9 * 4, np.int32(99).tobytes())
    _poke(batch, "dones.uint8.bin", 1, b"\x01")
    _poke(batch, "rewards.float32.bin", 2 * 4, np.float32(np.inf).tobytes())
    probs = "\n".join(fastrl.validate(batch))
    for needle in ("obs: NaN or infinite values: 1 rows, e.g. row 3",
                   "non-zero padding columns", "values other than 0/1",
                   "not legal under the step's own mask", "actions: outside [0, 10)",
                   "dones: not 1 exactly", "rewards: NaN or infinite", "checksum mismatch"):
        assert needle in probs, needle
    assert fastrl.validate(batch, check_data=False)  # checksums still catch it


def test_checksum_verify(batch):
    _poke(batch, "rewards.float32.bin", 0, np.float32(123.0).tobytes())
    fastrl.load_batch(batch)  # plain open does not read the data
    with pytest.raises(BatchFormatError, match="rewards.float32.bin: checksum mismatch"):
        fastrl.load_batch(batch, verify=True)


def test_seed_format_without_extras(tmp_path, batch):
    """A batch from the origin document's Node tool: five files, minimal meta.json."""
    b = fastrl.load_batch(batch)
    node = tmp_path / "batch_1690000000000"
    node.mkdir()
    for name in F.REQUIRED_COLUMNS:
        shutil.copy(batch / F.REQUIRED_COLUMNS[name][0], node)
    _set_meta(node, {k: b.meta[k] for k in F.REQUIRED_META_KEYS})
    nb = fastrl.load_batch(node)
    assert nb.values is None and nb.num_episodes == 8 and nb.n_actions == nb.mask_dim
    assert np.array_equal(nb.episode_starts, b.episode_starts)
    probs = fastrl.validate(node)
    assert probs == []


def test_to_npz_and_info(batch, tmp_path):
    out = fastrl.to_npz(batch, tmp_path / "b.npz")
    z = np.load(out)
    b = fastrl.load_batch(batch)
    for k in ("obs", "actions", "rewards", "masks", "dones", "values", "truncated"):
        assert np.array_equal(z[k], getattr(b, k)), k
    assert json.loads(str(z["meta"]))["count"] == b.count
    d = fastrl.info(batch)
    assert d["transitions"] == b.count and d["episodes"] == 8
    assert d["episodeLength"]["min"] == 5 and d["truncatedEpisodes"] == 1


def test_stale_temp_folder_reported_and_cleaned(tmp_path, rng):
    root = tmp_path / "r"
    root.mkdir()
    stale = root / (F.TMP_PREFIX + "batch-1-999999-dead")
    stale.mkdir()
    (stale / F.OWNER_FILE).write_text("999999\n")  # nobody holds its lock
    (stale / "obs.float32.bin").write_bytes(b"\0" * 40)
    with fastrl.BatchWriter(root, n_actions=10) as w:
        assert not stale.exists()  # cleaned by the next writer
        w.add_episode(**random_episode(rng, 3))
    stale.mkdir()
    (stale / F.OWNER_FILE).write_text("1\n")
    # a problem of the root, not of the batch: a note beside validate's verdict
    assert fastrl.validate(w.path) == []
    from fastrl.validate import root_notes
    notes = root_notes(w.path)
    assert len(notes) == 1 and "abandoned temporary" in notes[0] and stale.name in notes[0]


def test_not_a_batch(tmp_path):
    with pytest.raises(BatchFormatError, match="not a folder"):
        fastrl.load_batch(tmp_path / "nope")
    with pytest.raises(BatchFormatError, match="meta.json: missing"):
        fastrl.load_batch(tmp_path)
    assert fastrl.validate(tmp_path / "nope") == [f"{tmp_path / 'nope'}: not a folder"]
