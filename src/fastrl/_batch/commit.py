"""Crash-safe batch folders: hidden temporary folders owned by a live process, and an atomic,
uniquely named commit.

- A writer works in ``<root>/.fastrl-tmp-<ms>-<pid>-<random>/`` and holds an exclusive ``flock`` on
  the ``.owner`` file inside it for its whole life. The kernel drops that lock when the process
  dies, even on SIGKILL, so any other process can *prove* a temporary folder is abandoned by taking
  the lock, and then delete it.
- Commit: fsync every file and the folder, then, under an exclusive lock on ``<root>/.fastrl.lock``,
  pick ``batch_<ms>`` with ``ms = max(now, last committed + 1)`` (unique and sorted by commit
  time even with many writers in one root) and ``rename`` the folder, then fsync the root.
  Readers therefore see either no folder or a complete one.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
from pathlib import Path

from .. import _format as F

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None

# A temporary folder without an owner file is only removed once it is this old (seconds): it may
# be a writer that has just created it and not yet taken its lock.
_ORPHAN_GRACE_S = 600.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_owner_last(folder: Path) -> None:
    """Delete ``folder`` with its ``.owner`` file last: a process killed half-way leaves a folder
    that still has a free owner lock, which the next cleaner recognizes as abandoned."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    except OSError:
        entries = []
    for e in entries:
        if e.name == F.OWNER_FILE:
            continue
        if e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path, ignore_errors=True)
        else:
            try:
                os.unlink(e.path)
            except OSError:
                pass
    try:
        os.unlink(folder / F.OWNER_FILE)
    except OSError:
        pass
    try:
        os.rmdir(folder)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


class TempFolder:
    """A hidden temporary folder in ``root``, owned (flock) by this process until released.

    The owner file is created under another name, locked, and only then renamed to ``.owner``,
    so no cleaner can ever see an unlocked ``.owner`` in a live writer's folder. The lock fd is
    close-on-exec; export starts its worker processes before the lock exists, so none inherits it.
    """

    def __init__(self, root: Path, kind: str = "batch"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{F.TMP_PREFIX}{kind}-{now_ms()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path = self.root / name
        self._owner_fd = None
        self.path.mkdir()
        try:
            pending = self.path / (F.OWNER_FILE + ".new")
            self._owner_fd = os.open(pending, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                                     0o644)
            if fcntl is not None:
                fcntl.flock(self._owner_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._owner_fd, f"{os.getpid()}\n".encode())
            os.rename(pending, self.path / F.OWNER_FILE)
        except OSError as exc:
            self._release_owner()
            shutil.rmtree(self.path, ignore_errors=True)
            raise OSError(exc.errno, f"fastrl: cannot create a temporary folder in {self.root} "
                          f"({exc.strerror or exc})") from exc

    def _release_owner(self):
        if self._owner_fd is not None:
            os.close(self._owner_fd)  # drops the flock
            self._owner_fd = None

    def discard(self) -> None:
        """Remove the folder and everything in it (abort)."""
        _remove_owner_last(self.path)  # while still holding the lock
        self._release_owner()

    def commit(self, prefix: str = F.BATCH_PREFIX, fsync: bool = True) -> Path:
        """Rename the folder to ``<prefix><ms>`` atomically and return the new path. With
        ``fsync`` (the default) the folder's files (already fsynced by their writers) and
        entries are flushed to disk first, and the root after the rename. The owner file goes
        along (the lock follows the inode) and is removed from the committed folder last."""
        if fsync:
            for dirpath, _, _ in os.walk(self.path):
                fsync_dir(Path(dirpath))
        final = commit_rename(self.path, self.root, prefix, fsync=fsync)
        self._finish(final)
        return final


    def commit_as(self, final: Path, fsync: bool = True) -> Path:
        """Rename the folder to exactly ``final`` (in the same root; FileExistsError when it
        exists), with the same flushing as :meth:`commit`; return ``final``."""
        final = Path(final)
        if fsync:
            for dirpath, _, _ in os.walk(self.path):
                fsync_dir(Path(dirpath))
        if os.path.lexists(final):
            raise FileExistsError(f"{final} exists (an uncommitted leftover? see "
                                  "fastrl.storage.clean_incomplete)")
        os.rename(self.path, final)
        self._finish(final)
        if fsync:
            fsync_dir(final.parent)
        return final

    def _finish(self, final: Path) -> None:
        try:
            os.unlink(final / F.OWNER_FILE)
        except OSError:
            pass
        self._release_owner()
        self.path = final


def commit_rename(src: Path, root: Path, prefix: str = F.BATCH_PREFIX, fsync: bool = True) -> Path:
    """Rename ``src`` to a fresh ``root/<prefix><ms>`` under the root lock; fsync the root."""
    lock_path = root / F.LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        last = int(raw) if raw.isdigit() else 0
        ms = max(now_ms(), last + 1)
        while True:
            final = root / f"{prefix}{ms}"
            if not os.path.lexists(final):
                try:
                    os.rename(src, final)
                    break
                except OSError as exc:  # lost a race with a writer that ignores the lock
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            ms += 1
        data = f"{ms}\n".encode()
        os.pwrite(fd, data.ljust(24), 0)
    finally:
        os.close(fd)  # drops the flock
    if fsync:
        fsync_dir(root)
    return final


def is_abandoned(tmp: Path) -> bool:
    """True when no live process owns the temporary folder ``tmp`` (its owner lock is free)."""
    owner = tmp / F.OWNER_FILE
    try:
        fd = os.open(owner, os.O_RDWR)
    except FileNotFoundError:
        # No owner file yet (killed while creating the folder): abandoned when the process
        # named in the folder name is gone, or, failing that, after a grace period.
        if _creator_dead(tmp.name):
            return True
        try:
            return time.time() - tmp.stat().st_mtime > _ORPHAN_GRACE_S
        except OSError:
            return False
    except OSError:
        return False
    try:
        if fcntl is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live writer holds it
        return True
    finally:
        os.close(fd)


def _creator_dead(name: str) -> bool:
    """True when ``.fastrl-tmp-<kind>-<ms>-<pid>-<hex>`` names a pid that no longer exists."""
    parts = name.split("-")
    try:
        pid = int(parts[-2])
    except (IndexError, ValueError):
        return False
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def stale_temp_folders(root: Path) -> list[Path]:
    """Temporary folders in ``root`` left behind by dead writers."""
    root = Path(root)
    try:
        entries = [Path(e.path) for e in os.scandir(root)
                   if e.name.startswith(F.TMP_PREFIX) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return [p for p in entries if is_abandoned(p)]


def clean_stale(root: Path) -> list[Path]:
    """Delete abandoned temporary folders in ``root``; return what was removed."""
    removed = []
    for p in stale_temp_folders(root):
        _remove_owner_last(p)
        if not p.exists():
            removed.append(p)
    return removed
