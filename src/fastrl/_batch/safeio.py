"""Opening a batch's files safely: the one way every reader path opens data.

- Only **regular files** are data. A file is opened with ``O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
  O_CLOEXEC`` and then checked with ``fstat``: a symbolic link (never followed: a batch folder
  is self-contained), a FIFO (the non-blocking open cannot hang), a device such as
  ``/dev/zero``, a directory or a socket is a :class:`BatchFormatError` naming the file and what
  it is.
- Sizes come from ``fstat`` of the opened file, and reads are capped by the bytes actually read,
  never by an earlier ``stat`` of the path.
- Mapping and copying use the checked file descriptor, so what is mapped is what was checked.

``FileNotFoundError`` is passed through (callers say "missing" in their own words); every other
failure to open is a :class:`BatchFormatError`.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path

import numpy as np

from ..errors import BatchFormatError

__all__ = ["OPEN_FLAGS", "NAME_MAX", "kind_of", "lstat_problem", "open_regular", "read_capped",
           "read_into", "map_array", "read_array", "SafeFile", "name_problem"]

OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
              | getattr(os, "O_CLOEXEC", 0))
NAME_MAX = 255  # bytes in one file name (Linux, macOS)
_CHUNK = 8 << 20


def kind_of(mode: int) -> str:
    """What a file mode says the file is, in words."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _not_regular(name: str, kind: str) -> BatchFormatError:
    if kind == "symbolic link":
        return BatchFormatError(f"{name}: is a symbolic link (a batch folder holds regular files "
                                "only; fastrl never follows a link)")
    return BatchFormatError(f"{name}: is a {kind}, not a regular file")


def name_problem(name) -> str | None:
    """Why ``name`` is not a plain file name inside a folder (None when it is): a non-empty
    string without ``/``, ``\\`` or NUL, not ``.`` or ``..``, at most 255 bytes in UTF-8."""
    if not isinstance(name, str) or not name:
        return "not a non-empty string"
    if name in (".", ".."):
        return "a dot component"
    if "/" in name or "\\" in name or "\0" in name:
        return "contains a path separator or NUL"
    try:
        if len(name.encode("utf-8")) > NAME_MAX:
            return f"longer than {NAME_MAX} bytes"
    except UnicodeEncodeError:
        return "not valid Unicode"
    return None


def lstat_problem(path: Path, name: str | None = None) -> str | None:
    """Why ``path`` is not an existing regular file (without following a link), or None.
    Missing: ``"<name>: missing"``."""
    name = name or str(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"{name}: missing"
    except (OSError, ValueError) as exc:
        return f"{name}: cannot stat ({getattr(exc, 'strerror', None) or exc})"
    if not stat.S_ISREG(st.st_mode):
        return str(_not_regular(name, kind_of(st.st_mode)))
    return None


def open_regular(path, name: str | None = None) -> tuple[int, os.stat_result]:
    """``(fd, fstat)`` of the regular file ``path``, opened read-only without following a
    link and without blocking. The caller closes ``fd``. FileNotFoundError when absent;
    BatchFormatError naming ``name`` (default: the path) otherwise."""
    name = name or str(path)
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except ValueError:  # an embedded NUL
        raise BatchFormatError(f"{name}: not a valid file name") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK, getattr(errno, "EFTYPE", -1)):
            try:
                is_link = stat.S_ISLNK(os.lstat(path).st_mode)
            except OSError:
                is_link = False
            if is_link:
                raise _not_regular(name, "symbolic link") from None
            raise BatchFormatError(f"{name}: too many levels of symbolic links") from None
        if exc.errno == errno.ENAMETOOLONG:
            raise BatchFormatError(f"{name}: file name too long") from None
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO opened for writing
            raise _not_regular(name, "socket") from None
        raise BatchFormatError(f"{name}: cannot open ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(name, kind_of(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


class SafeFile:
    """``with SafeFile(path) as f``: ``f.fd``, ``f.size`` (from fstat), ``f.name``;
    :meth:`read_capped`, :meth:`read_into`, :meth:`chunks`."""

    def __init__(self, path, name: str | None = None):
        self.path = path
        self.name = name or str(path)
        self.fd, st = open_regular(path, self.name)
        self.size = st.st_size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def fileobj(self):
        """An unbuffered binary file object on the checked fd (not closing it)."""
        return os.fdopen(self.fd, "rb", buffering=0, closefd=False)

    def read_capped(self, limit: int) -> bytes:
        return read_capped(self.fd, limit, self.name)

    def read_into(self, buf) -> int:
        return read_into(self.fd, buf, self.name)

    def chunks(self, chunk: int = _CHUNK, limit: int | None = None):
        """The file's bytes in pieces until EOF, at most ``limit`` bytes (default: the size
        fstat gave at open); BatchFormatError when the file holds more (it grew)."""
        limit = self.size if limit is None else limit
        got = 0
        with self.fileobj() as f:
            while True:
                buf = f.read(max(1, min(chunk, limit - got + 1)))
                if not buf:
                    return
                got += len(buf)
                if got > limit:
                    raise BatchFormatError(f"{self.name}: grew while being read (more than "
                                           f"{limit} bytes)")
                yield buf


def read_capped(fd: int, limit: int, name: str) -> bytes:
    """Every byte up to EOF; BatchFormatError when there are more than ``limit`` (counted as
    read, so a file whose stat says 0 bytes but that never ends is refused too)."""
    parts, got, step = [], 0, 64 << 10
    with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
        while True:
            buf = f.read(min(step, limit + 1 - got))  # growing reads: a small file costs little
            step = min(step * 2, _CHUNK)
            if not buf:
                break
            got += len(buf)
            parts.append(buf)
            if got > limit:
                raise BatchFormatError(f"{name}: more than {limit} bytes, the limit")
    return b"".join(parts)


def read_into(fd: int, buf, name: str) -> int:
    """Fill ``buf`` (a writable buffer) from ``fd``; BatchFormatError when the file ends
    first. Returns the bytes read (``len(buf)``)."""
    view = memoryview(buf).cast("B")
    want, got = len(view), 0
    with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
        while got < want:
            n = f.readinto(view[got:got + _CHUNK])
            if not n:
                raise BatchFormatError(f"{name}: ended after {got} bytes, expected {want} "
                                       "(truncated while being read?)")
            got += n
    return got


def _expected(dtype, shape) -> int:
    return math.prod(int(x) for x in shape) * np.dtype(dtype).itemsize


def _size_error(name: str, found: int, expected: int, dtype, shape) -> BatchFormatError:
    return BatchFormatError(f"{name}: {found} bytes on disk, expected {expected} "
                            f"({' x '.join(map(str, shape))} x {np.dtype(dtype).itemsize} bytes)")


def map_array(path: Path, dtype, shape: tuple, name: str | None = None, *,
              copy_on_write: bool = False) -> np.ndarray:
    """A read-only array memory-mapped from the regular file ``path``, whose size (fstat of
    the opened file) must be exactly the shape's. A plain ndarray view of the np.memmap (which
    it keeps alive). An empty shape maps nothing, but the file is still checked.
    ``copy_on_write``: a writable private mapping instead (``MAP_PRIVATE``): writes change this
    process's pages only, never the file."""
    name = name or Path(path).name
    expected = _expected(dtype, shape)
    fd, st = open_regular(path, name)
    try:
        if st.st_size != expected:
            raise _size_error(name, st.st_size, expected, dtype, shape)
        if expected == 0:
            out = np.zeros(shape, dtype=dtype)
            out.setflags(write=False)
            return out
        with os.fdopen(fd, "rb", closefd=False) as f:
            mm = np.memmap(f, dtype=dtype, mode="c" if copy_on_write else "r",
                           shape=tuple(shape))
        return mm.view(np.ndarray)
    finally:
        os.close(fd)


def read_array(path: Path, dtype, shape: tuple, name: str | None = None) -> np.ndarray:
    """The regular file ``path`` read into memory (no mapping: a file truncated by another
    process later cannot fault the reader) as a read-only array; its size must be exactly
    the shape's."""
    name = name or Path(path).name
    expected = _expected(dtype, shape)
    fd, st = open_regular(path, name)
    try:
        if st.st_size != expected:
            raise _size_error(name, st.st_size, expected, dtype, shape)
        try:
            out = np.empty(shape, dtype=dtype)
        except MemoryError:
            raise BatchFormatError(f"{name}: cannot allocate {expected} bytes to read it") \
                from None
        if expected:
            read_into(fd, out, name)
        out.setflags(write=False)
        return out
    finally:
        os.close(fd)
