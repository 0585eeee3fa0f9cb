"""Issue 7, "no lost or silently corrupt data": crash safety under SIGKILL, disk full and IO
errors, concurrent writers and readers, and size limits.

Design under test (docs/HARDENING.md): a writer works in a hidden ``.fastrl-tmp-*`` folder whose
``.owner`` file it holds with ``flock`` for its whole life, writes ``meta.json`` last, fsyncs and
renames the folder to ``batch_<ms>`` under the root lock. So after any crash every ``batch_*``
folder is complete, and the temporary folders of dead writers can be proved abandoned (their lock
is free) and removed by the next writer.

Trial counts: a few per variant by default (the module runs in well under 40 s on 2 cores);
``FASTRL_FULL=1`` runs 200 per variant (``FASTRL_CRASH_TRIALS=N`` overrides both). With
``FASTRL_HARDENING_REPORT=FILE`` every crash test appends a JSON line of what it saw.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastrl
from fastrl._batch import commit as _commit
from fastrl import _format as F
from fastrl.errors import BatchFormatError, EpisodeError
from fastrl.export import export_episodes
from fastrl.reader import read_meta
from fastrl.validate import root_notes

import _crash_worker as cw

FULL = os.environ.get("FASTRL_FULL", "").strip().lower() in ("1", "true", "yes", "on")
TRIALS = int(os.environ.get("FASTRL_CRASH_TRIALS", "200" if FULL else "4"))
EXPORT_TRIALS = int(os.environ.get("FASTRL_CRASH_TRIALS", "200" if FULL else "3"))
WORKER = Path(__file__).with_name("_crash_worker.py")
REPORT = os.environ.get("FASTRL_HARDENING_REPORT")


def _env():
    env = dict(os.environ)
    env.pop("FASTRL_HARDENING_REPORT", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _report(name: str, stats: dict) -> None:
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(json.dumps({"test": name, **stats}) + "\n")


def _spawn(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"worker did not start: {line!r} {err[-2000:]}")


def _tmp_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith(F.TMP_PREFIX))


def _batches(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith(F.BATCH_PREFIX))


def _dir_digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(d)}:{st.st_size}:{st.st_mtime_ns}".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


class _Audit:
    """What the crash trials found, and the checks run after every kill."""

    def __init__(self):
        self.trials = 0
        self.committed = 0           # batches checked row by row
        self.stale_removed = 0       # abandoned temp folders the next writer removed
        self.validate_reported = 0   # ... that validate of a good batch had reported first
        self.young_unowned = 0       # killed before its owner lock had a name (10 min grace)
        self.owner_in_batch = 0      # killed after the rename, before .owner was removed
        self.checked: set[str] = set()

    def stats(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "checked"}

    def after_kill(self, root: Path, check) -> None:
        """Everything the issue asks of a root after its writer was SIGKILLed."""
        self.trials += 1
        root.mkdir(exist_ok=True)
        batches = _batches(root)
        for b in batches:  # no batch_* folder that is not complete-looking
            assert (b / F.META_FILE).is_file(), f"{b.name}: batch folder without meta.json"
        tmps = _tmp_folders(root)
        owned = [t for t in tmps if (t / F.OWNER_FILE).exists()]
        young = [t for t in tmps if t not in owned]
        for t in young:  # only a writer killed while creating its folder may leave one
            assert not (t / F.META_FILE).exists() and \
                {p.name for p in t.iterdir()} <= {F.OWNER_FILE + ".new"}, \
                f"{t.name}: temp folder without an owner file: {sorted(os.listdir(t))}"
        for t in owned:
            assert _commit.is_abandoned(t), f"{t.name}: lock still held after the writer died"
        # a folder whose creator died before naming its owner file is abandoned too (its pid
        # is gone); only one whose pid was reused waits for the grace period
        dead_young = [t for t in young if _commit.is_abandoned(t)]
        abandoned = len(owned) + len(dead_young)
        if abandoned and batches:  # validate of a good batch notes the abandoned folders first
            assert fastrl.validate(batches[-1], check_data=False) == []  # not the batch's
            notes = root_notes(batches[-1])
            assert len(notes) == 1 and "abandoned temporary folder" in notes[0] \
                and f"{abandoned} abandoned" in notes[0], notes
            self.validate_reported += abandoned
        # the next writer on the root removes them (and, closed empty, writes nothing)
        w = fastrl.BatchWriter(root)
        assert w.close() is None
        left = _tmp_folders(root)
        assert set(left) == set(young) - set(dead_young), \
            f"not removed: {set(left) - (set(young) - set(dead_young))}"
        self.stale_removed += len(owned)
        self.young_unowned += len(young)
        for t in left:  # do not let the tolerated leftovers pile up over the trials
            shutil.rmtree(t)
        assert _batches(root) == batches
        for b in batches:
            if b.name in self.checked:
                continue
            self.owner_in_batch += (b / F.OWNER_FILE).exists()
            assert fastrl.validate(b) == [], b
            assert check(b) == [], b
            self.checked.add(b.name)
            self.committed += 1
        for b in batches[:-1]:  # keep the root small; the last batch stays for the next trial
            shutil.rmtree(b)


# -- 1. crash safety: SIGKILL at random points -----------------------------------------------------

@pytest.mark.parametrize("shard_bytes", [None, 24_000], ids=["plain", "sharded"])
def test_sigkill_writer_random(tmp_path, shard_bytes):
    """BatchWriter processes (plain and sharded) killed at random points never leave a partial
    batch; what they committed is exactly what they wrote; their temp folders are reported by
    validate and removed by the next writer."""
    root = tmp_path / "root"
    rnd = random.Random(7 if shard_bytes else 11)
    audit = _Audit()
    for trial in range(TRIALS):
        args = ["write", root, "--seed", trial]
        if shard_bytes:
            args += ["--shard-bytes", shard_bytes]
        proc = _spawn(*args)
        _wait_ready(proc)
        time.sleep(rnd.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        audit.after_kill(root, cw.check_batch)
    _report(f"sigkill_writer[{'sharded' if shard_bytes else 'plain'}]", audit.stats())
    assert audit.committed > 0


@pytest.mark.parametrize("point", cw.DIE_POINTS)
def test_sigkill_at_chosen_point(tmp_path, point):
    """Kill the writer at each stage of a batch's life: before the rename nothing is a batch and
    the temp folder is removable; after it the batch is complete."""
    root = tmp_path / "root"
    with fastrl.BatchWriter(root, n_actions=cw.N_ACTIONS, mask_pad=cw.MASK_PAD,
                            meta={"seed": 999, "batch": 0, "episodes": 3}) as w:
        for e in range(3):
            w.add_episode(**cw.episode(999, 0, e))
    good = w.path
    proc = _spawn("write", root, "--seed", 1, "--batches", 1, "--flush-bytes", 4096,
                  "--die-at", point)
    _wait_ready(proc)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    batches = _batches(root)
    tmps = _tmp_folders(root)
    if point == "after-rename":
        assert len(batches) == 2 and tmps == []
        assert fastrl.validate(batches[-1]) == [] and cw.check_batch(batches[-1]) == []
        return
    assert batches == [good], "a killed writer left something that looks like a batch"
    assert len(tmps) == 1
    assert _commit.is_abandoned(tmps[0])
    assert fastrl.validate(good) == []  # the root's leftovers are not the batch's problem
    notes = root_notes(good)
    assert len(notes) == 1 and "abandoned temporary folder" in notes[0] and tmps[0].name in notes[0]
    assert fastrl.BatchWriter(root).close() is None
    assert _tmp_folders(root) == []
    assert fastrl.validate(good) == []


def test_commit_window_orphan_is_removed(tmp_path):
    """Regression: the owner file used to be unlinked before the rename, so a writer killed in
    between left a temp folder nobody could remove for 10 minutes."""
    root = tmp_path / "root"
    proc = _spawn("write", root, "--seed", 1, "--batches", 1, "--die-at", "commit-window")
    _wait_ready(proc)
    proc.communicate(timeout=60)
    assert len(_tmp_folders(root)) == 1 and _batches(root) == []
    assert fastrl.BatchWriter(root).close() is None
    assert _tmp_folders(root) == []


def test_validate_sharded_reports_stale_temp_folders(tmp_path):
    """Regression: validate() of a sharded batch did not report its root's abandoned folders
    (now a note of root_notes, not a problem of the batch)."""
    root = tmp_path / "root"
    with fastrl.BatchWriter(root, n_actions=4, shard_bytes=30_000) as w:
        for ep in _big_episodes(n=4, T=100, D=16):
            w.add_episode(**ep)
    assert len(read_meta(w.path)["shards"]) > 1
    proc = _spawn("write", root, "--seed", 1, "--batches", 1, "--die-at", "mid-write")
    _wait_ready(proc)
    proc.communicate(timeout=60)
    assert len(_tmp_folders(root)) == 1
    assert fastrl.validate(w.path) == []
    notes = root_notes(w.path)
    assert len(notes) == 1 and "abandoned temporary folder" in notes[0], notes


@pytest.mark.parametrize("die_after", [1, 2, 5])
def test_cleaner_killed_midway_leaves_removable_folder(tmp_path, die_after):
    """A cleaner SIGKILLed after removing some of an abandoned folder's files leaves a folder
    that the next writer still proves abandoned and removes (regression: rmtree in directory
    order could remove .owner first)."""
    root = tmp_path / "root"
    proc = _spawn("write", root, "--seed", 1, "--batches", 1, "--die-at", "mid-write")
    _wait_ready(proc)
    proc.communicate(timeout=60)
    (stale,) = _tmp_folders(root)
    before = set(os.listdir(stale))
    proc = _spawn("clean", root, "--die-after-unlinks", die_after)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert stale.exists() and set(os.listdir(stale)) < before
    assert fastrl.BatchWriter(root).close() is None
    assert _tmp_folders(root) == []


# -- export killed at random points ----------------------------------------------------------------

EXPORT_N_ACTIONS = 7


def _make_episode_files(d: Path, n_files=24, per_file=60, seed=3) -> None:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    for f in range(n_files):
        lines = []
        for e in range(per_file if f % 6 else 1):
            T = int(rng.integers(1, 70))
            legal = rng.random((T, EXPORT_N_ACTIONS)) < 0.4
            actions = rng.integers(0, EXPORT_N_ACTIONS, T)
            legal[np.arange(T), actions] = True
            obs = rng.standard_normal((T, 16)).round(4).tolist()
            rewards = rng.standard_normal(T).round(3).tolist()
            values = rng.random(T).round(3).tolist()
            steps = [{"obs": obs[t], "action": int(actions[t]), "reward": rewards[t],
                      "legal": np.flatnonzero(legal[t]).tolist(), "value": values[t]}
                     for t in range(T)]
            ep = {"steps": steps, "truncated": bool(e % 4 == 1)} if e % 3 else steps
            lines.append(json.dumps(ep))
        if f % 6:
            (d / f"ep_{f:03d}.jsonl").write_text("\n".join(lines) + "\n")
        else:
            (d / f"ep_{f:03d}.json").write_text(lines[0])


def _export_cmd(src, root, shard_size=None, workers=1):
    cmd = [sys.executable, "-m", "fastrl", "export", str(src), "--out", str(root), "--quiet",
           "--num-actions", str(EXPORT_N_ACTIONS), "--workers", str(workers)]
    if shard_size:
        cmd += ["--shard-size", str(shard_size)]
    return cmd


def _columns_of(path: Path) -> dict:
    ds = fastrl.open_dataset(path)
    names = ("obs", "actions", "rewards", "masks", "dones", "values", "truncated")
    out = {n: np.concatenate([np.asarray(getattr(b, n)) for b in ds.parts]) for n in names}
    out["episodes"] = np.asarray([ds.num_episodes])
    return out


@pytest.fixture(scope="module")
def episode_source(tmp_path_factory):
    """Episode files, their digest, and the reference export (plain and sharded) of them."""
    base = tmp_path_factory.mktemp("export_src")
    src = base / "episodes"
    _make_episode_files(src)
    ref = {}
    for shard in (None, "256KiB"):
        root = base / f"ref_{shard}"
        t0 = time.perf_counter()
        out = subprocess.run(_export_cmd(src, root, shard), env=_env(), capture_output=True,
                             text=True, timeout=120)
        secs = time.perf_counter() - t0
        assert out.returncode == 0, out.stderr
        path = Path(out.stdout.strip().splitlines()[-1])
        assert fastrl.validate(path) == []
        ref[shard] = (_columns_of(path), secs)
    return src, _dir_digest(src), ref


@pytest.mark.parametrize("shard,workers", [(None, 1), ("256KiB", 1), (None, 2)],
                         ids=["plain", "sharded", "workers2"])
def test_sigkill_export_random(tmp_path, episode_source, shard, workers):
    """`fastrl export` (one process, or with 2 worker processes) killed at random points: every
    batch it left is complete and equals the export that was not killed; the episode files are
    untouched; no worker outlives it."""
    src, digest, ref = episode_source
    want, secs = ref[shard]
    root = tmp_path / "root"
    rnd = random.Random(5)
    audit = _Audit()

    def check(path):
        got = _columns_of(path)
        return [f"{path.name}: {n} differs from the reference export" for n in want
                if not np.array_equal(got[n], want[n])]

    for trial in range(EXPORT_TRIALS):
        # no pipes: a surviving worker would hold them open (and is checked for below)
        proc = subprocess.Popen(_export_cmd(src, root, shard, workers), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kids: list[int] = []
        deadline = time.monotonic() + rnd.uniform(0.1, secs * 1.1)
        while time.monotonic() < deadline:
            kids += [k for k in _children(proc.pid) if k not in kids]
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        t0 = time.monotonic()
        while any(_alive(k) for k in kids) and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        assert not [k for k in kids if _alive(k)], "export workers outlived the killed export"
        root.mkdir(exist_ok=True)
        audit.after_kill(root, check)
    _report(f"sigkill_export[{shard or 'plain'},workers={workers}]", audit.stats())
    assert _dir_digest(src) == digest, "export modified its input files"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_sigkill_export_with_workers_frees_lock(tmp_path, episode_source):
    """`fastrl export --workers 2` SIGKILLed: its workers die too and do not hold the writer's
    lock, so the next writer removes the temp folder (regression: forked workers outlived the
    parent forever, holding the lock)."""
    src, _, _ = episode_source
    root = tmp_path / "root"
    # no pipes: orphaned workers would keep them open
    proc = subprocess.Popen(_export_cmd(src, root, workers=2), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            kids = _children(proc.pid)
            for k in list(kids):  # forkserver: the workers are its children
                kids += [g for g in _children(k) if g not in kids]
            if len(kids) >= 2 and root.exists() and _tmp_folders(root):
                break
            time.sleep(0.005)
        else:
            pytest.skip("export finished before its workers could be observed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.05)
        orphans = [k for k in kids if _alive(k)]
        assert fastrl.BatchWriter(root).close() is None
        assert _tmp_folders(root) == [], "temp folder of the killed export was not removed"
        assert orphans == [], f"worker processes outlived the killed export: {orphans}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for k in kids:  # the pool workers this test's export started
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- 2. disk full and IO errors --------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (root only); skipped where mounting is not permitted."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    try:
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {out.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


def _big_episodes(n=100, T=100, D=64, A=4, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield {"obs": rng.standard_normal((T, D)), "actions": rng.integers(0, A, T),
               "rewards": rng.standard_normal(T), "mask": np.ones((T, A), np.uint8)}


def _assert_nothing_left(root: Path) -> None:
    names = sorted(os.listdir(root)) if root.exists() else []
    assert [n for n in names if n.startswith((F.TMP_PREFIX, F.BATCH_PREFIX))] == [], names


@pytest.mark.parametrize("flush_bytes,shard_bytes", [(64 << 20, None), (128 << 10, None),
                                                      (128 << 10, 256 << 10)],
                         ids=["fail-at-close", "fail-mid-write", "sharded"])
def test_enospc_real_tmpfs(small_tmpfs, flush_bytes, shard_bytes):
    """A real full disk: OSError(ENOSPC) saying the batch was discarded, nothing left behind,
    and the space is given back (a small batch fits afterwards)."""
    root = small_tmpfs / "root"
    with pytest.raises(OSError) as ei:
        with fastrl.BatchWriter(root, n_actions=4, flush_bytes=flush_bytes,
                                shard_bytes=shard_bytes) as w:
            for ep in _big_episodes():
                w.add_episode(**ep)
    assert ei.value.errno == errno.ENOSPC
    assert "discarded" in str(ei.value) and "No space left" in str(ei.value)
    _assert_nothing_left(root)
    with fastrl.BatchWriter(root, n_actions=4) as w:
        w.add_episode(**next(_big_episodes(n=1, T=10)))
    assert fastrl.validate(w.path) == []


def test_enospc_at_writer_creation_leaves_nothing(small_tmpfs):
    """A writer on a full disk: a clear ENOSPC naming the root when its temporary folder is
    made (at the first episode), no temp folder left (regression: the half-made folder stayed,
    its lock fd leaked)."""
    root = small_tmpfs / "root"
    root.mkdir()
    with open(small_tmpfs / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
        w = fastrl.BatchWriter(root, n_actions=4)
        with pytest.raises(OSError) as ei:
            w.add_episode(**next(_big_episodes(n=1, T=10)))
        assert ei.value.errno == errno.ENOSPC and str(root) in str(ei.value)
        os.ftruncate(f.fileno(), 0)
    _assert_nothing_left(root)


def test_enospc_export_real_tmpfs(small_tmpfs, episode_source):
    """Export into a full disk: clear error (API and CLI), nothing left, inputs untouched."""
    src, digest, _ = episode_source
    root = small_tmpfs / "out"
    with pytest.raises(OSError) as ei:
        export_episodes(src, root, n_actions=EXPORT_N_ACTIONS, progress=False)
    assert ei.value.errno == errno.ENOSPC
    _assert_nothing_left(root)
    out = subprocess.run(_export_cmd(src, root), env=_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert "No space left on device" in out.stderr and out.stdout.strip() == ""
    _assert_nothing_left(root)
    assert _dir_digest(src) == digest


def _eio(*_a, **_k):
    raise OSError(errno.EIO, os.strerror(errno.EIO))


@pytest.mark.parametrize("fail_call", [1, 2, 9, 40])
@pytest.mark.parametrize("shard_bytes", [None, 64 << 10], ids=["plain", "sharded"])
def test_eio_column_write(tmp_path, monkeypatch, fail_call, shard_bytes):
    """EIO from the n-th column-file write: OSError naming the folder, nothing left behind."""
    from fastrl._batch import columnset as _columnset
    orig = _columnset._ColumnFile.write
    calls = [0]

    def write(self, arr):
        calls[0] += 1
        if calls[0] == fail_call:
            _eio()
        return orig(self, arr)

    monkeypatch.setattr(_columnset._ColumnFile, "write", write)
    root = tmp_path / "root"
    with pytest.raises(OSError) as ei:
        with fastrl.BatchWriter(root, n_actions=4, flush_bytes=32 << 10,
                                shard_bytes=shard_bytes) as w:
            for ep in _big_episodes(n=20):
                w.add_episode(**ep)
    assert calls[0] >= fail_call
    assert ei.value.errno == errno.EIO
    assert "Input/output error" in str(ei.value)
    _assert_nothing_left(root)


@pytest.mark.parametrize("target", ["fsync", "meta.json"])
def test_eio_at_close(tmp_path, monkeypatch, target):
    """EIO while finishing (fsync of a column, or writing meta.json): OSError with its errno,
    nothing left behind."""
    from fastrl._batch import columnset as _columnset
    from fastrl._batch import engine as engine_mod
    if target == "fsync":
        monkeypatch.setattr(os, "fsync", _eio)
    else:
        monkeypatch.setattr(_columnset, "write_json", _eio)
        monkeypatch.setattr(engine_mod, "write_json", _eio)
    root = tmp_path / "root"
    with pytest.raises(OSError) as ei:
        with fastrl.BatchWriter(root, n_actions=4) as w:
            for ep in _big_episodes(n=3):
                w.add_episode(**ep)
    assert ei.value.errno == errno.EIO
    _assert_nothing_left(root)


def test_eio_at_close_message_is_clear(tmp_path, monkeypatch):
    """Regression: an OSError in close() was re-raised bare (no folder, no 'discarded')."""
    monkeypatch.setattr(os, "fsync", _eio)
    with pytest.raises(OSError) as ei:
        with fastrl.BatchWriter(tmp_path, n_actions=4) as w:
            w.add_episode(**next(_big_episodes(n=1)))
    assert "discarded" in str(ei.value) and str(tmp_path) in str(ei.value)


def test_eio_export_leaves_inputs(tmp_path, monkeypatch, episode_source):
    src, digest, _ = episode_source
    from fastrl._batch import columnset as _columnset
    orig = _columnset._ColumnFile.write
    calls = [0]

    def write(self, arr):
        calls[0] += 1
        if calls[0] == 12:
            _eio()
        return orig(self, arr)

    monkeypatch.setattr(_columnset._ColumnFile, "write", write)
    with pytest.raises(OSError) as ei:
        export_episodes(src, tmp_path / "out", n_actions=EXPORT_N_ACTIONS,
                                      progress=False, flush_bytes=16 << 10)
    assert ei.value.errno == errno.EIO and "discarded" in str(ei.value)
    _assert_nothing_left(tmp_path / "out")
    assert _dir_digest(src) == digest


# -- 3. concurrency --------------------------------------------------------------------------------

def test_owner_lock_race(tmp_path):
    """A writer paused between creating its owner file and locking it while another writer's
    cleaner runs keeps its folder and commits (regression: the cleaner took the free lock and
    deleted the live folder)."""
    root = tmp_path / "root"
    root.mkdir()
    proc = _spawn("write", root, "--seed", 1, "--batches", 1, "--pause-before-owner-lock", 1.0)
    _wait_ready(proc)
    assert proc.stdout.readline().strip() == "paused"
    assert fastrl.BatchWriter(root).close() is None  # another writer starts meanwhile
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    (b,) = _batches(root)
    assert fastrl.validate(b) == [] and cw.check_batch(b) == []


def test_concurrent_writers_and_reader(tmp_path):
    """4 writer processes (2 sharded) commit into one root while a reader keeps listing it and
    opening every batch: distinct, valid, time-sorted names; the reader never sees a partial
    batch."""
    root = tmp_path / "root"
    root.mkdir()
    per_writer = 24 if FULL else 6
    stop, rep = tmp_path / "stop", tmp_path / "reader.json"
    reader = _spawn("read", root, "--stop", stop, "--out", rep)
    writers = []
    for i in range(4):
        args = ["write", root, "--seed", 100 + i, "--batches", per_writer,
                "--log", tmp_path / f"log{i}.jsonl"]
        if i % 2:
            args += ["--shard-bytes", 24_000]
        writers.append(_spawn(*args))
    for w in writers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
    stop.touch()
    out, err = reader.communicate(timeout=300)
    assert reader.returncode == 0, err[-3000:]
    seen = json.loads(rep.read_text())
    assert seen["errors"] == [], seen["errors"]
    assert seen["iterations"] >= 2 and seen["batches"] == 4 * per_writer

    log = [json.loads(line) for i in range(4)
           for line in (tmp_path / f"log{i}.jsonl").read_text().splitlines()]
    _report("concurrent_writers", {"batches": len(log),
                                   "reader_iterations": seen["iterations"],
                                   "reader_opens": seen["checked"]})
    names = [r["path"] for r in log]
    assert len(names) == len(set(names)) == 4 * per_writer
    assert sorted(names) == sorted(p.name for p in _batches(root))
    assert _tmp_folders(root) == []
    for r in log:
        ms = int(r["path"][len(F.BATCH_PREFIX):])
        assert len(r["path"]) == len(F.BATCH_PREFIX) + 13
        assert r["t_close"] <= ms <= r["t_done"] + 1000, r  # named at commit time
    for a in log:  # committed before b started to commit => sorts before b
        for b in log:
            if a["t_done"] < b["t_close"]:
                assert a["path"] < b["path"], (a, b)
    for p in _batches(root):
        assert fastrl.validate(p) == [] and cw.check_batch(p) == [], p
    ds = fastrl.open_dataset(root)
    assert len(ds) == sum(read_meta(p)["count"] for p in _batches(root))


# -- 5. limits -------------------------------------------------------------------------------------

def test_huge_dims_roundtrip(backend, tmp_path):
    """obsDim 100,000 and 65,536 actions: a few rows write and read back exactly."""
    D, A = 100_000, 65_536
    rng = np.random.default_rng(1)
    eps = []
    for T, form in ((3, "mask"), (2, "legal"), (1, "mask")):
        actions = rng.integers(0, A, T)
        ep = {"obs": rng.standard_normal((T, D)).astype(np.float32), "actions": actions,
              "rewards": rng.standard_normal(T)}
        if form == "mask":
            m = np.zeros((T, A), np.uint8)
            m[:, ::97] = 1
            m[np.arange(T), actions] = 1
            ep["mask"] = m
        else:
            ep["legal"] = [sorted({int(a), 0, A - 1}) for a in actions]
        eps.append(ep)
    with fastrl.BatchWriter(tmp_path, n_actions=A) as w:
        for ep in eps:
            w.add_episode(**ep)
    b = fastrl.load_batch(w.path, verify=True)
    assert b.obs.shape == (6, D) and b.masks.shape == (6, A)
    np.testing.assert_array_equal(b.obs, np.concatenate([e["obs"] for e in eps]))
    np.testing.assert_array_equal(b.actions, np.concatenate([e["actions"] for e in eps]))
    assert b.masks[3, 0] == 1 and b.masks[3, A - 1] == 1 and b.masks[3].sum() <= 3
    assert fastrl.validate(w.path) == []


def test_dims_over_limit_refused(tmp_path):
    with pytest.raises(ValueError, match="obs_dim must be an integer in"):
        fastrl.BatchWriter(tmp_path, obs_dim=F.MAX_DIM + 1)
    with pytest.raises(ValueError, match="n_actions must be an integer in"):
        fastrl.BatchWriter(tmp_path, n_actions=F.MAX_DIM + 1)
    w = fastrl.BatchWriter(tmp_path)
    with pytest.raises(EpisodeError, match="obs must have shape"):
        w.add_episode(obs=np.zeros((1, 0)), actions=[0], rewards=[0.0], mask=np.ones((1, 1)))
    w.abort()
    _assert_nothing_left(tmp_path)


def _sparse_batch(path: Path, count: int, obs_dim: int, mask_dim: int, sizes=None) -> None:
    """A batch folder whose column files are sparse (no data blocks) of the sizes ``count``,
    ``obs_dim`` and ``mask_dim`` give (or ``sizes`` overrides), and a real episode index."""
    path.mkdir(parents=True)
    want = {"obs.float32.bin": count * obs_dim * 4, "actions.int32.bin": count * 4,
            "rewards.float32.bin": count * 4, "masks.uint8.bin": count * mask_dim,
            "dones.uint8.bin": count}
    want.update(sizes or {})
    try:
        for name, size in want.items():
            with open(path / name, "wb") as f:
                f.truncate(size)
    except OSError as exc:
        pytest.skip(f"this filesystem cannot hold the sparse files: {exc}")
    np.array([0, count], "<i8").tofile(path / "episode_index.int64.bin")
    meta = {"count": count, "steps": count, "episodes": 1, "obsDim": obs_dim,
            "maskDim": mask_dim, "numActions": mask_dim, "createdAt": "2026-01-01T00:00:00.000Z",
            "format": "fastrl-batch", "formatVersion": 1, "byteOrder": "little",
            "columns": {"episode_index": {"file": "episode_index.int64.bin", "dtype": "<i8",
                                          "shape": [2]}}}
    (path / "meta.json").write_text(json.dumps(meta))


def test_sparse_20gb_batch_opens_fast(tmp_path):
    """A 20 GB batch (sparse files) opens in milliseconds and passes the quick validation."""
    count, D, A = 40_000_000, 64, 256
    p = tmp_path / "batch_1"
    _sparse_batch(p, count, D, A)
    total = sum(f.stat().st_size for f in p.iterdir())
    assert total > 20e9
    t0 = time.perf_counter()
    b = fastrl.load_batch(p)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = fastrl.validate(p, check_data=False)
    t_val = time.perf_counter() - t0
    assert probs == []
    assert len(b) == count and b.obs.shape == (count, D) and b.masks.shape == (count, A)
    assert float(b.obs[-1].sum()) == 0.0 and b.episode(0).stop == count
    assert t_open < 0.5 and t_val < 0.5, (t_open, t_val)  # milliseconds in practice


def test_meta_values_over_limit_refused(tmp_path):
    p = tmp_path / "b"
    _sparse_batch(p, 10, 4, 4)
    meta = json.loads((p / "meta.json").read_text())
    for key, v in (("count", F.MAX_COUNT + 1), ("count", 2**63), ("count", -1),
                   ("obsDim", F.MAX_DIM + 1), ("obsDim", 0), ("maskDim", 2**64),
                   ("episodes", 2**40 + 1), ("obsDim", True), ("count", 1e3)):
        m = dict(meta, **{key: v})
        if key == "count":
            m["steps"] = v
        (p / "meta.json").write_text(json.dumps(m))
        with pytest.raises(BatchFormatError, match=f"{key} must be an integer in"):
            fastrl.load_batch(p)
        assert any(f"{key} must be an integer in" in s for s in fastrl.validate(p))


def test_size_product_overflow_unit(tmp_path):
    """Regression: size_problems used np.prod(int64), which wraps to 0 for 2**40 x 2**24."""
    from fastrl.reader import size_problems
    empty = tmp_path / "obs.float32.bin"
    empty.write_bytes(b"")
    assert size_problems({"obs": (empty, np.dtype("<f4"), (2**40, 2**24))}) != []


def test_size_product_overflow_end_to_end(tmp_path):
    """count=2**40, obsDim=2**24 (each within its own limit; the product overflows int64) is
    refused clearly by load_batch and validate, without mapping or allocating anything."""
    p = tmp_path / "batch_1"
    _sparse_batch(p, 2**40, 2**24, 1, sizes={"obs.float32.bin": 0})
    probs = fastrl.validate(p, check_data=False)
    assert probs and any("obsDim" in x or "obs.float32.bin" in x for x in probs), probs
    with pytest.raises(BatchFormatError, match="obs"):
        fastrl.load_batch(p)
    assert fastrl.validate(p) == probs


def _memory_run(tmp_path, mb):
    out = subprocess.run([sys.executable, str(WORKER), "memory", str(tmp_path / "mem"),
                          "--mb", str(mb)], env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    try:
        assert fastrl.validate(res["path"], check_data=False) == []
    finally:
        shutil.rmtree(tmp_path / "mem")
    assert res["bytes"] >= mb * 1e6
    # ru_maxrss counts the parent's peak when the parent (pytest) was bigger at fork time; the
    # peak of the worker's own image is VmHWM (Linux), and ru_maxrss when it grew past that.
    peak = res["vmhwm_mb"] if res["vmhwm_mb"] is not None else res["maxrss_mb"]
    if res["maxrss_mb"] > res["baseline_mb"]:
        peak = max(peak, res["maxrss_mb"])
    assert peak < 300, res
    return res


def test_writer_peak_memory_quick(tmp_path):
    """~200 MB through a default BatchWriter: peak RSS stays far below the data size."""
    _memory_run(tmp_path, 200)


@pytest.mark.skipif(not FULL, reason="1.5 GB write; FASTRL_FULL=1 only")
def test_writer_peak_memory_full(tmp_path):
    res = _memory_run(tmp_path, 1500)
    _report("writer_peak_memory_full", res)


def test_counts_survive_close(tmp_path):
    """Regression: .episodes / .transitions read 0 after close() of a plain batch."""
    with fastrl.BatchWriter(tmp_path, n_actions=4) as w:
        w.add_episode(**next(_big_episodes(n=1, T=5)))
    assert (w.episodes, w.transitions) == (1, 5)
