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
import stat
import time
from pathlib import Path

from .. import _format as F

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None

# A temporary folder without an owner file whose name carries no creator pid is only removed
# once it is this old (seconds). One whose name carries a pid is removed exactly when that
# process is gone (Node.js writers cannot flock, so they name their pid and write no .owner).
_ORPHAN_GRACE_S = 600.0

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
_MAX_CLEAN_DEPTH = 64  # deeper trees inside a temp folder are not fastrl's: left alone


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


def _rmtree_at(dfd: int, name: str, depth: int = 0) -> None:
    """Remove ``name`` (in the folder open as ``dfd``) and everything below it, through file
    descriptors: a symbolic link is unlinked, never followed, so nothing outside is touched
    even if an entry is swapped for a link meanwhile."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    except OSError:  # not a folder (a file, a link): unlink the entry itself
        try:
            os.unlink(name, dir_fd=dfd)
        except OSError:
            pass
        return
    try:
        if depth >= _MAX_CLEAN_DEPTH:
            return
        _clear_at(fd, depth + 1)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dfd)
    except OSError:
        pass


def _clear_at(dfd: int, child_depth: int, keep: str | None = None) -> None:
    """Remove every entry of the folder open as ``dfd`` but ``keep`` (links unlinked, never
    followed; sub-folders through :func:`_rmtree_at` at ``child_depth``). Best effort: an entry
    that cannot be listed or removed stays."""
    try:
        with os.scandir(dfd) as it:
            entries = list(it)
    except OSError:
        entries = []
    for e in entries:
        if e.name == keep:
            continue
        if e.is_dir(follow_symlinks=False):
            _rmtree_at(dfd, e.name, child_depth)
        else:
            try:
                os.unlink(e.name, dir_fd=dfd)
            except OSError:
                pass


def _remove_owner_last(folder: Path) -> None:
    """Delete ``folder`` with its ``.owner`` file last: a process killed half-way leaves a folder
    that still has a free owner lock, which the next cleaner recognizes as abandoned. Works
    through a descriptor of the folder opened without following links: a folder that is (or
    becomes) a symbolic link is never followed out of the root."""
    try:
        dfd = os.open(folder, _DIR_FLAGS)
    except OSError:
        return  # gone, or a link / not a folder: never followed, never removed
    try:
        _clear_at(dfd, 0, keep=F.OWNER_FILE)
        try:
            os.unlink(F.OWNER_FILE, dir_fd=dfd)
        except OSError:
            pass
    finally:
        os.close(dfd)
    try:
        os.rmdir(folder)
    except OSError:
        pass


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
        self._pid = os.getpid()
        self.path.mkdir()
        try:
            pending = self.path / (F.OWNER_FILE + ".new")
            self._owner_fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW
                                     | _CLOEXEC, 0o644)
            if fcntl is not None:
                fcntl.flock(self._owner_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._owner_fd, f"{os.getpid()}\n".encode())
            os.rename(pending, self.path / F.OWNER_FILE)
        except BaseException as exc:
            self._release_owner()
            _remove_owner_last(self.path)
            if isinstance(exc, OSError):
                raise OSError(exc.errno, f"fastrl: cannot create a temporary folder in "
                              f"{self.root} ({exc.strerror or exc})") from exc
            raise

    def _release_owner(self):
        if self._owner_fd is not None:
            os.close(self._owner_fd)  # drops the flock
            self._owner_fd = None

    def _check_owner(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError(f"fastrl: the temporary folder {self.path} belongs to process "
                               f"{self._pid}; a forked child (process {os.getpid()}) cannot "
                               "commit it")

    def discard(self) -> None:
        """Remove the folder and everything in it (abort). In a forked child this does nothing
        to the folder (it is the parent's): only the child's copy of the lock fd is closed,
        which leaves the parent's lock in place."""
        if os.getpid() != self._pid:
            self._release_owner()
            return
        _remove_owner_last(self.path)  # while still holding the lock
        self._release_owner()

    def commit(self, prefix: str = F.BATCH_PREFIX, fsync: bool = True) -> Path:
        """Rename the folder to ``<prefix><ms>`` atomically and return the new path. With
        ``fsync`` (the default) the folder's files (already fsynced by their writers) and
        entries are flushed to disk first, and the root after the rename. The owner file goes
        along (the lock follows the inode) and is removed from the committed folder last."""
        self._check_owner()
        if fsync:
            for dirpath, _, _ in os.walk(self.path):
                fsync_dir(Path(dirpath))
        final = commit_rename(self.path, self.root, prefix, fsync=fsync)
        self._finish(final)
        return final


    def commit_as(self, final: Path, fsync: bool = True) -> Path:
        """Rename the folder to exactly ``final`` (in the same root; FileExistsError when it
        exists), with the same flushing as :meth:`commit`; return ``final``."""
        self._check_owner()
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


def open_root_lock(root: Path) -> int:
    """Open (creating it) ``<root>/.fastrl.lock`` for the commit lock, never through a symbolic
    link (O_NOFOLLOW) and only when it is a regular file; close-on-exec."""
    lock_path = Path(root) / F.LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC
                     | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(lock_path):
            raise OSError(exc.errno, f"fastrl: {lock_path} is a symbolic link; refused (fastrl "
                          "never follows a link out of the output root; remove it)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            from .safeio import kind_of
            raise OSError(errno.EINVAL, f"fastrl: {lock_path} is a {kind_of(st.st_mode)}, not a "
                          "regular file; refused (remove it)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def commit_rename(src: Path, root: Path, prefix: str = F.BATCH_PREFIX, fsync: bool = True) -> Path:
    """Rename ``src`` to a fresh ``root/<prefix><ms>`` under the root lock; fsync the root."""
    fd = open_root_lock(root)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        last = int(raw) if raw.isdigit() and len(raw) < 20 else 0
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
    """True when no live process owns the temporary folder ``tmp``.

    - With an ``.owner`` file (Python writers): its flock is free. An ``.owner`` that is not a
      regular file (a link, a FIFO...) is not fastrl's: never abandoned (never removed).
    - Without one (a Python writer killed before naming its lock file, or a Node.js writer,
      which cannot flock): the process whose pid the name carries
      (``.fastrl-tmp-<kind>-<ms>-<pid>-<hex>``) is gone, or is a newer process that reused
      the pid. While it lives the folder is not abandoned, whatever its age. A name without a
      pid: older than the grace period (10 minutes).
    """
    owner = tmp / F.OWNER_FILE
    try:
        fd = os.open(owner, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC)
    except FileNotFoundError:
        dead = creator_dead(tmp.name)
        if dead is not None:
            return dead
        try:
            return time.time() - os.lstat(tmp).st_mtime > _ORPHAN_GRACE_S
        except OSError:
            return False
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or fcntl is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live writer holds it
        return True
    finally:
        os.close(fd)


_PID_MAX = 1 << 22  # Linux's highest pid_max


def _name_ms_pid(name: str):
    """``(ms, pid)`` from ``<prefix><kind>-<ms>-<pid>-<hex>``, or None."""
    parts = name.split("-")
    if len(parts) < 4 or not parts[-2].isdigit() or not parts[-3].isdigit():
        return None
    ms, pid = int(parts[-3]), int(parts[-2])
    if not 0 < pid < _PID_MAX or len(parts[-3]) > 16:
        return None
    return ms, pid


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (Unix seconds, +-1 s), from /proc; None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def creator_dead(name: str) -> bool | None:
    """Whether the process named in ``.fastrl-tmp-<kind>-<ms>-<pid>-<hex>`` is gone: True when
    no process has that pid, or the one that has it started after the folder was named (the
    pid was reused); False while it lives (and for this process); None when the name carries
    no pid."""
    got = _name_ms_pid(name)
    if got is None:
        return None
    ms, pid = got
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # exists (EPERM: another user's process)
    started = _start_time(pid)
    if started is not None and started > ms / 1000.0 + 2.0:
        return True  # a newer process reused the pid
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
        if not os.path.lexists(p):
            removed.append(p)
    return removed
