"""Helper process for ``tests/test_hardening.py`` (not a test module): writes, reads or cleans
batches in a root folder so that the tests can SIGKILL it at random or chosen points and then
check what is left on disk.

Every batch this script writes is *deterministic*: batch ``k`` of writer ``seed`` holds the
episodes :func:`episode` gives for ``(seed, k, e)``, and its ``meta.json`` says so under ``user``
(``{"seed", "batch", "episodes"}``), so :func:`check_batch` can rebuild the exact contents any
committed batch must have, whoever wrote it and however it was interrupted.

Commands (``python tests/_crash_worker.py COMMAND ...``)::

    write ROOT --seed S [--batches N] [--shard-bytes B] [--flush-bytes F] [--log FILE]
          [--die-at POINT]
        write batches 0, 1, ... (N of them, or until killed when N is 0); prints "ready" once
        imports are done; appends one JSON line per committed batch to FILE.
        POINT makes the process SIGKILL itself at a chosen place (see DIE_POINTS).
    read ROOT --stop FILE --out FILE
        reader loop: until FILE exists, list ROOT, open every batch_* that has a meta.json with
        load_batch and the whole root with open_dataset, and check every row; writes a JSON
        summary {"iterations", "checked", "errors"} to --out.
    clean ROOT --die-after-unlinks N
        run fastrl._batch.commit.clean_stale(ROOT) and SIGKILL itself right after its N-th file
        removal (a cleaner that dies half-way).
    memory ROOT --mb M
        write about M megabytes of episodes generated on the fly (default flush size) and print
        a JSON line {"bytes", "transitions", "maxrss_mb", "baseline_mb"}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

OBS_DIM = 24
N_ACTIONS = 6
MASK_PAD = 8
MAX_T = 120

DIE_POINTS = (
    "mid-write",       # inside the 3rd column-file write of the first batch (owner lock held)
    "before-commit",   # meta.json written and fsynced, commit not started (owner lock held)
    "commit-window",   # inside TempFolder.commit, just before the rename
    "after-rename",    # right after the batch folder got its final name (root not yet fsynced)
)


def _die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


# -- deterministic data --------------------------------------------------------------------------

def episodes_in_batch(seed: int, k: int) -> int:
    return int(np.random.default_rng([seed, k, 0]).integers(1, 9))


def episode(seed: int, k: int, e: int) -> dict:
    """Keyword arguments for ``BatchWriter.add_episode``: episode ``e`` of batch ``k``."""
    rng = np.random.default_rng([seed, k, e + 1])
    T = int(rng.integers(1, MAX_T))
    mask = rng.random((T, N_ACTIONS)) < 0.5
    actions = rng.integers(0, N_ACTIONS, T)
    mask[np.arange(T), actions] = True
    ep = {"obs": rng.standard_normal((T, OBS_DIM)).astype(np.float32 if e % 2 else np.float64),
          "actions": actions, "rewards": rng.standard_normal(T),
          "values": rng.standard_normal(T), "truncated": bool(e % 3 == 2)}
    if e % 2:
        ep["mask"] = mask
    else:
        ep["legal"] = [np.flatnonzero(row).tolist() for row in mask]
    return ep


def expected_columns(seed: int, k: int, n: int) -> dict:
    """The exact column contents batch ``k`` of writer ``seed`` with ``n`` episodes must have."""
    eps = [episode(seed, k, e) for e in range(n)]
    lengths = [len(ep["actions"]) for ep in eps]
    count = sum(lengths)
    masks = np.zeros((count, MASK_PAD), np.uint8)
    dones = np.zeros(count, np.uint8)
    trunc = np.zeros(count, np.uint8)
    r = 0
    for ep, T in zip(eps, lengths):
        if "mask" in ep:
            masks[r:r + T, :N_ACTIONS] = ep["mask"]
        else:
            for t, ids in enumerate(ep["legal"]):
                masks[r + t, ids] = 1
        dones[r + T - 1] = 1
        trunc[r + T - 1] = ep["truncated"]
        r += T
    return {
        "obs": np.concatenate([np.asarray(ep["obs"]).astype(np.float32) for ep in eps]),
        "actions": np.concatenate([ep["actions"] for ep in eps]).astype(np.int32),
        "rewards": np.concatenate([ep["rewards"] for ep in eps]).astype(np.float32),
        "values": np.concatenate([ep["values"] for ep in eps]).astype(np.float32),
        "masks": masks, "dones": dones, "truncated": trunc,
        "episode_starts": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    }


def check_batch(path) -> list[str]:
    """Compare every row of the committed batch at ``path`` (plain or sharded) with what the
    deterministic writer put in it. Returns problems (empty when it is exactly right)."""
    import fastrl
    from fastrl.reader import read_meta
    path = Path(path)
    meta = read_meta(path)
    user = meta.get("user")
    if not isinstance(user, dict) or "seed" not in user:
        return [f"{path.name}: meta.json has no user seed/batch (not written by this worker)"]
    want = expected_columns(user["seed"], user["batch"], user["episodes"])
    if meta.get("sharded") is True:
        parts = fastrl.open_dataset(path).parts
    else:
        parts = [fastrl.load_batch(path)]
    probs = []
    if meta["count"] != len(want["actions"]) or meta["episodes"] != user["episodes"]:
        probs.append(f"{path.name}: count/episodes {meta['count']}/{meta['episodes']}, "
                     f"expected {len(want['actions'])}/{user['episodes']}")
    for name in ("obs", "actions", "rewards", "values", "masks", "dones", "truncated"):
        cols = [getattr(b, name) for b in parts]
        if any(c is None for c in cols):
            probs.append(f"{path.name}: column {name} missing")
            continue
        got = np.concatenate([np.asarray(c) for c in cols]) if cols else np.zeros(0)
        if got.shape != want[name].shape or not np.array_equal(got, want[name]):
            probs.append(f"{path.name}: column {name} differs from what was written")
    starts = [np.asarray(parts[0].episode_starts)] if parts else []
    for b in parts[1:]:
        starts.append(np.asarray(b.episode_starts[1:]) + starts[-1][-1])
    got = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    if not np.array_equal(got, want["episode_starts"]):
        probs.append(f"{path.name}: episode boundaries differ from what was written")
    return probs


# -- commands --------------------------------------------------------------------------------

def _install_die_point(point: str):
    import fastrl._batch.columnset as cs
    import fastrl._batch.commit as cm
    if point == "mid-write":
        orig = cs._ColumnFile.write
        calls = [0]

        def write(self, arr):
            calls[0] += 1
            if calls[0] == 3:
                self.f.flush()
                _die()
            return orig(self, arr)
        cs._ColumnFile.write = write
    elif point == "before-commit":
        def commit(self, *a, **kw):
            _die()
        cm.TempFolder.commit = commit
    elif point in ("commit-window", "after-rename"):
        orig = cm.commit_rename

        def commit_rename(*a, **kw):
            if point == "commit-window":
                _die()
            final = orig(*a, **kw)
            _die()
            return final
        cm.commit_rename = commit_rename
    else:
        raise SystemExit(f"unknown --die-at {point!r}")


def _install_owner_lock_pause(seconds: float):
    """Sleep between creating our temp folder's .owner and locking it (the first time), saying
    "paused" on stdout: another process's stale-folder cleaner may run in that window."""
    import fcntl
    orig = fcntl.flock
    done = [False]

    def flock(fd, op):
        if not done[0] and op == fcntl.LOCK_EX | fcntl.LOCK_NB:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.endswith(("/.owner", "/.owner.new")) and f"-{os.getpid()}-" in target:
                done[0] = True
                print("paused", flush=True)
                time.sleep(seconds)
        return orig(fd, op)
    fcntl.flock = flock


def cmd_write(args) -> int:
    import fastrl
    if args.die_at:
        _install_die_point(args.die_at)
    if args.pause_before_owner_lock:
        _install_owner_lock_pause(args.pause_before_owner_lock)
    print("ready", flush=True)
    log = open(args.log, "a") if args.log else None
    k = args.first
    while args.batches == 0 or k < args.first + args.batches:
        n = episodes_in_batch(args.seed, k)
        user = {"seed": args.seed, "batch": k, "episodes": n}
        w = fastrl.BatchWriter(args.root, n_actions=N_ACTIONS, mask_pad=MASK_PAD,
                               flush_bytes=args.flush_bytes, shard_bytes=args.shard_bytes,
                               meta=user)
        with w:
            for e in range(n):
                w.add_episode(**episode(args.seed, k, e))
            t_close = time.time_ns() // 1_000_000
        t_done = time.time_ns() // 1_000_000
        if log is not None:
            log.write(json.dumps({"path": w.path.name, "seed": args.seed, "batch": k,
                                  "t_close": t_close, "t_done": t_done}) + "\n")
            log.flush()
        k += 1
    return 0


def cmd_read(args) -> int:
    import fastrl
    import fastrl.reader
    root = Path(args.root)
    stop = Path(args.stop)
    iterations = checked = 0
    errors: list[str] = []
    seen_ok: set[str] = set()
    last = False
    while not last:
        last = stop.exists()  # one more full pass after the writers are done
        try:
            names = sorted(e.name for e in os.scandir(root) if e.name.startswith("batch_"))
        except FileNotFoundError:
            names = []
        for name in names:
            p = root / name
            if not (p / "meta.json").exists():
                errors.append(f"{name}: batch folder without meta.json")
                continue
            try:
                if fastrl.reader.read_meta(p).get("sharded") is True:
                    fastrl.open_dataset(p)
                else:
                    fastrl.load_batch(p)
                if name not in seen_ok:  # full row check once per batch, open it every pass
                    probs = check_batch(p)
                    errors += probs
                    if not probs:
                        seen_ok.add(name)
                checked += 1
            except Exception as exc:  # any failure to open a listed batch is a finding
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
        try:
            ds = fastrl.open_dataset(root)
            total = sum(b.count for b in ds.parts)
            if len(ds) != total:
                errors.append(f"open_dataset: len {len(ds)} != sum of parts {total}")
        except Exception as exc:
            errors.append(f"open_dataset: {type(exc).__name__}: {exc}")
        iterations += 1
    Path(args.out).write_text(json.dumps({"iterations": iterations, "checked": checked,
                                          "batches": len(seen_ok), "errors": errors[:50]}))
    return 0


def cmd_clean(args) -> int:
    import fastrl._batch.commit as cm
    real_unlink = os.unlink
    calls = [0]

    def unlink(*a, **kw):  # the cleaner removes this many files, then dies
        real_unlink(*a, **kw)
        calls[0] += 1
        if calls[0] >= args.die_after_unlinks:
            _die()
    os.unlink = unlink
    cm.clean_stale(Path(args.root))
    return 0


def _vmhwm_mb() -> float | None:
    """Peak RSS of this process image (``VmHWM``). Unlike ``ru_maxrss``, which Linux carries
    over from the parent across fork + exec (a child of a big pytest process starts with the
    parent's peak), it starts afresh at exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cmd_memory(args) -> int:
    import resource

    import fastrl
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    T, D, A = 1000, 256, 16
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((T, D)).astype(np.float32)
    actions = rng.integers(0, A, T)
    mask = np.ones((T, A), np.uint8)
    rewards = rng.standard_normal(T)
    target = args.mb * 1_000_000
    with fastrl.BatchWriter(args.root, n_actions=A) as w:
        e = 0
        while w.layout is None or w.transitions * w.layout.row_bytes() < target:
            obs[0, 0] = e  # a different episode each time, generated in place
            w.add_episode(obs=obs, actions=actions, rewards=rewards, mask=mask)
            e += 1
    size = sum(f.stat().st_size for f in Path(w.path).iterdir())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"bytes": size, "episodes": e, "maxrss_mb": peak, "baseline_mb": baseline,
                      "vmhwm_mb": _vmhwm_mb(), "path": str(w.path)}))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("root")
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--first", type=int, default=0)
    w.add_argument("--batches", type=int, default=0)
    w.add_argument("--shard-bytes", type=int)
    w.add_argument("--flush-bytes", type=int, default=32 << 10)
    w.add_argument("--log")
    w.add_argument("--die-at", choices=DIE_POINTS)
    w.add_argument("--pause-before-owner-lock", type=float, default=0.0)
    r = sub.add_parser("read")
    r.add_argument("root")
    r.add_argument("--stop", required=True)
    r.add_argument("--out", required=True)
    c = sub.add_parser("clean")
    c.add_argument("root")
    c.add_argument("--die-after-unlinks", type=int, required=True)
    m = sub.add_parser("memory")
    m.add_argument("root")
    m.add_argument("--mb", type=float, required=True)
    args = p.parse_args(argv)
    return {"write": cmd_write, "read": cmd_read, "clean": cmd_clean,
            "memory": cmd_memory}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
