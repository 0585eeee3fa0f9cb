"""Packed rows handed from one process to another as one file: what an export worker packs
(``spill``), and how the writing process gets it back, either copied file to file by the
kernel into the column files (:func:`copy_range`, no pass through Python or user memory) or
mapped as arrays (:func:`unspill`).

The file holds each column's bytes one after the other, exactly as they go into the column
files; the worker records each column's offset and CRC-32 (computed while the bytes are still
in its cache), so the writing process only combines CRCs (:func:`~.checksum.crc32_combine`).
"""

from __future__ import annotations

import errno
import itertools
import os
from dataclasses import dataclass

import numpy as np

from .checksum import crc32

__all__ = ["SpilledChunk", "spill", "unspill", "copy_range"]

_COUNTER = itertools.count(1)
_COPY_BLOCK = 8 << 20  # bytes per read/write when copy_file_range is not available


@dataclass(frozen=True)
class SpilledChunk:
    """One chunk file: ``columns`` = ((name, dtype str, shape, byte offset, byte count,
    CRC-32), ...)."""
    path: str
    columns: tuple

    def _entry(self, name: str) -> tuple:
        for entry in self.columns:
            if entry[0] == name:
                return entry
        raise KeyError(f"chunk {self.path} has no column {name!r}")

    def column(self, name: str) -> tuple:
        """(offset, nbytes, crc) of column ``name`` in the file (KeyError when absent)."""
        return self._entry(name)[3:]

    def read(self, fd: int, name: str) -> np.ndarray:
        """Column ``name`` read from the open chunk file ``fd`` (for small columns)."""
        _, dtype, shape, offset, nbytes, _ = self._entry(name)
        data = os.pread(fd, nbytes, offset) if nbytes else b""
        if len(data) != nbytes:
            raise OSError(errno.EIO, f"chunk file {self.path} is shorter than recorded")
        return np.frombuffer(data, dtype=dtype).reshape(shape)


def spill(cols: dict, spill_dir: str) -> SpilledChunk:
    """Write packed columns (name -> C-contiguous array) to a new file in ``spill_dir``, one
    after the other, with each one's CRC-32; no pickling of big arrays through pipes."""
    path = os.path.join(spill_dir, f"{os.getpid()}-{next(_COUNTER)}.chunk")
    entries, offset = [], 0
    with open(path, "xb") as f:
        for name, arr in cols.items():
            mv = memoryview(np.ascontiguousarray(arr)).cast("B")
            f.write(mv)
            entries.append((name, arr.dtype.str, tuple(arr.shape), offset, mv.nbytes,
                            crc32(mv)))
            offset += mv.nbytes
    return SpilledChunk(path, tuple(entries))


def unspill(chunk: SpilledChunk) -> dict:
    """Read-only views of a chunk's columns, mapped from its file."""
    total = sum(entry[4] for entry in chunk.columns)
    mm = np.memmap(chunk.path, dtype=np.uint8, mode="r", shape=(total,)) if total else \
        np.zeros(0, np.uint8)
    return {name: mm[off:off + n].view(dt).reshape(shape)
            for name, dt, shape, off, n, _ in chunk.columns}


def copy_range(src_fd: int, dst_fd: int, offset: int, nbytes: int) -> None:
    """Append ``nbytes`` of ``src_fd`` from ``offset`` at the end of ``dst_fd`` (its position
    must be its end), with ``copy_file_range`` (the kernel copies page to page) where the system
    has it, else by reading and writing blocks; OSError when the source is short or the target
    did not grow by ``nbytes``."""
    done = 0
    start = os.fstat(dst_fd).st_size
    if hasattr(os, "copy_file_range"):
        try:
            while done < nbytes:
                n = os.copy_file_range(src_fd, dst_fd, nbytes - done, offset + done)
                if n == 0:  # a short file, or a file system that copies nothing: by hand
                    break
                done += n
        except OSError as exc:
            # not supported between these files (old kernels across file systems, some file
            # systems): copy by hand, unless some bytes already went
            if done or exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                         errno.EOPNOTSUPP, errno.EPERM):
                raise
    while done < nbytes:
        block = os.pread(src_fd, min(_COPY_BLOCK, nbytes - done), offset + done)
        if not block:
            raise OSError(errno.EIO, "chunk file ended before its recorded size")
        view = memoryview(block)
        while view:
            view = view[os.write(dst_fd, view):]
        done += len(block)
    # Some file systems have reported copies they did not make: the size must have grown.
    if os.fstat(dst_fd).st_size != start + nbytes:
        raise OSError(errno.EIO, f"copying {nbytes} bytes of a chunk file left its target at "
                                 f"{os.fstat(dst_fd).st_size} bytes, {start + nbytes} expected")
