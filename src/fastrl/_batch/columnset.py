"""One folder of column files being written: the files of a plain batch, or of one shard.

Appends packed rows (whole episodes), keeps a running CRC32 per file (no second read pass) and
the statistics that go into ``meta.json``, and writes that ``meta.json`` last.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import stat
from array import array
from pathlib import Path

import numpy as np

from .. import _format as F
from .. import _kernels
from .._version import __version__
from .checksum import crc32, crc32_combine, format_crc
from .chunkfile import SpilledChunk, copy_range
from .codecs import compress_column
from .stager import Layout

# Action histograms are kept per shard only up to this many actions (manifest size stays small).
_MAX_HISTOGRAM_ACTIONS = 4096


def iso_utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH  # 0444: committed files are not changed


class _ColumnFile:
    """One ``name.dtype.bin`` file being appended to, with a running CRC32."""

    def __init__(self, path: Path, checksum: bool, fsync: bool = True):
        self.path = path
        self.f = open(path, "wb")
        self.crc = 0 if checksum else None
        self.crc_after = None  # the running CRC after the next write, when computed elsewhere
        self.fsync = fsync

    def write(self, arr: np.ndarray) -> None:
        """Append ``arr``'s bytes and update the running CRC-32 (taken from ``crc_after`` when
        the caller computed it for this write)."""
        mv = memoryview(np.ascontiguousarray(arr)).cast("B")
        self.f.write(mv)
        if self.crc is not None:
            if self.crc_after is not None:
                self.crc, self.crc_after = self.crc_after, None
            else:
                self.crc = crc32(mv, self.crc)

    def append_from(self, src_fd: int, offset: int, nbytes: int, crc: int) -> None:
        """Append ``nbytes`` of the open file ``src_fd`` from ``offset``, whose CRC-32 is
        ``crc`` (copied by the kernel; the running CRC is combined, not recomputed)."""
        self.f.flush()  # what is buffered goes first; the copy moves the file's position
        copy_range(src_fd, self.f.fileno(), offset, nbytes)
        if self.crc is not None:
            self.crc = crc32_combine(self.crc, crc, nbytes)

    def close(self) -> None:
        if not self.f.closed:
            self.f.flush()
            os.fchmod(self.f.fileno(), READ_ONLY)
            if self.fsync:
                os.fsync(self.f.fileno())
            self.f.close()

    def discard(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass


class ColumnSet:
    """Column files of one folder, appended to episode by episode."""

    def __init__(self, folder: Path, layout: Layout, checksum: bool, codecs: dict | None = None,
                 level: int | None = None, fsync: bool = True):
        self.folder = folder
        self.fsync = fsync
        self.layout = layout
        self.checksum = checksum
        self.level = level
        folder.mkdir(parents=True, exist_ok=True)
        self.names = ["obs", "actions", "rewards", "masks", "dones"]
        if layout.has_values:
            self.names.append("values")
        if layout.has_logprobs:
            self.names.append("logprobs")
        self.names.append("truncated")
        if layout.has_final_obs:
            self.names.append(F.FINAL_OBS[0])
        # column -> codec, applied once the folder is complete; columns this folder lacks
        # (e.g. values when the episodes have none) are ignored
        self.codecs = {c: k for c, k in (codecs or {}).items()
                       if c in self.names or c == F.EPISODE_INDEX[0]}
        self.files = {n: _ColumnFile(folder / file_name(n), checksum, fsync) for n in self.names}
        self.count = 0
        self.lengths = array("q")
        self.returns = array("d")
        self.truncated_episodes = 0
        self.hist = np.zeros(layout.n_actions, np.int64) \
            if layout.n_actions <= _MAX_HISTOGRAM_ACTIONS else None

    @property
    def nbytes(self) -> int:
        return self.count * self.layout.row_bytes()

    def append(self, cols: dict, lengths, crcs: dict | None = None) -> None:
        """Write rows of whole episodes (``sum(lengths)`` rows of each per-transition column in
        ``cols``, and ``len(lengths)`` rows of ``final_obs`` when the batch has it). ``crcs``:
        column -> the file's running CRC-32 after these rows, when the caller computed them."""
        rows = int(sum(lengths))
        for name, f in self.files.items():
            if crcs is not None:
                f.crc_after = crcs[name]
            f.write(cols[name][:len(lengths) if name == F.FINAL_OBS[0] else rows])
        self._add_stats(cols, lengths, rows)

    def append_file(self, chunk: SpilledChunk, lengths) -> None:
        """Append the rows of whole episodes that another process packed into ``chunk`` (every
        column of this folder, exactly ``sum(lengths)`` rows): copied file to file by the
        kernel, with the CRC-32s the packer recorded."""
        rows = int(sum(lengths))
        lay = self.layout
        fd = os.open(chunk.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            for name, f in self.files.items():
                offset, nbytes, crc = chunk.column(name)
                if name == F.FINAL_OBS[0]:  # one row per episode
                    want = len(lengths) * lay.obs_dim * F.FINAL_OBS[2].itemsize
                else:
                    _, dtype, width = F.ALL_COLUMNS[name]
                    want = rows * (lay.width(width) or 1) * np.dtype(dtype).itemsize
                if nbytes != want:
                    raise ValueError(f"chunk {chunk.path}: column {name!r} holds {nbytes} "
                                     f"bytes, {want} expected for {rows} rows")
                f.append_from(fd, offset, nbytes, crc)
            stats_cols = {k: chunk.read(fd, k) for k in ("rewards", "truncated", "actions")}
        finally:
            os.close(fd)
        self._add_stats(stats_cols, lengths, rows)

    def _add_stats(self, cols: dict, lengths, rows: int) -> None:
        """Per-episode returns, truncated count and the action histogram of appended rows."""
        starts = np.zeros(len(lengths), np.int64)
        np.cumsum(np.asarray(lengths[:-1], np.int64), out=starts[1:])
        rew = np.asarray(cols["rewards"][:rows], np.float64)
        self.returns.extend(np.add.reduceat(rew, starts) if rows else [])
        self.truncated_episodes += int(np.count_nonzero(cols["truncated"][:rows]))
        if self.hist is not None:
            self.hist += np.bincount(cols["actions"][:rows], minlength=self.layout.n_actions)
        self.lengths.extend(lengths)
        self.count += rows

    def stats(self) -> dict:
        """Per-folder summary stored in meta.json (and in a sharded batch's manifest)."""
        lengths = np.frombuffer(self.lengths, np.int64)
        returns = np.frombuffer(self.returns, np.float64)

        def summary(x):
            if not x.size:
                return None
            return {"min": float(x.min()), "mean": float(x.mean()), "max": float(x.max())}

        st = {"transitions": self.count, "episodes": len(self.lengths),
              "truncatedEpisodes": self.truncated_episodes,
              "episodeLength": summary(lengths), "episodeReturn": summary(returns)}
        if self.hist is not None:
            st["actionHistogram"] = self.hist.tolist()
        return st

    def finish(self, extra_meta: dict) -> dict:
        """Write the episode index and meta.json, close (fsync) every file; return the meta."""
        index = np.zeros(len(self.lengths) + 1, dtype="<i8")
        np.cumsum(np.frombuffer(self.lengths, np.int64), out=index[1:])
        name, fname, _ = F.EPISODE_INDEX
        f = _ColumnFile(self.folder / fname, self.checksum, self.fsync)
        self.files[name] = f
        f.write(index)
        for f in self.files.values():
            f.close()
        meta = self._meta()
        if self.codecs:
            meta["codecs"] = {}
            for col, codec in self.codecs.items():
                plain = file_name(col)
                entry = compress_column(self.folder, plain, codec, self.level,
                                        mask_dim=self.layout.mask_dim)
                meta["codecs"][col] = entry
                sums = meta.get("checksums")
                if sums is not None:
                    sums.pop(plain, None)
                    sums[entry["file"]] = entry["storedChecksum"]
        meta.update(extra_meta)
        write_json(self.folder / F.META_FILE, meta, fsync=self.fsync)
        return meta

    def discard(self) -> None:
        for f in self.files.values():
            f.discard()

    def _meta(self) -> dict:
        lay = self.layout
        columns, checksums = {}, {}
        for name, f in self.files.items():
            if name == F.EPISODE_INDEX[0]:
                fname, dtype, shape = F.EPISODE_INDEX[1], F.EPISODE_INDEX[2], \
                    [len(self.lengths) + 1]
            elif name == F.FINAL_OBS[0]:
                fname, dtype, shape = F.FINAL_OBS[1], F.FINAL_OBS[2], \
                    [len(self.lengths), lay.obs_dim]
            else:
                fname, dtype, width = F.ALL_COLUMNS[name]
                w = lay.width(width)
                shape = [self.count, w] if w is not None else [self.count]
            columns[name] = {"file": fname, "dtype": dtype.str, "shape": shape}
            if f.crc is not None:
                checksums[fname] = format_crc(f.crc)
        st = self.stats()
        meta = {
            "count": self.count, "obsDim": lay.obs_dim, "maskDim": lay.mask_dim,
            "episodes": len(self.lengths), "steps": self.count, "createdAt": iso_utc_now(),
            "format": F.FORMAT_NAME, "formatVersion": F.FORMAT_VERSION, "byteOrder": "little",
            "numActions": lay.n_actions, "columns": columns,
            "episodeLength": st["episodeLength"], "episodeReturn": st["episodeReturn"],
            "producer": {"fastrl": __version__, "backend": _kernels.BACKEND},
        }
        if checksums:
            meta["checksums"] = checksums
        return meta


def file_name(column: str) -> str:
    """The file of a column: ``obs`` -> ``obs.float32.bin``, ..., ``episode_index``,
    ``final_obs``."""
    for name, fname, _ in (F.EPISODE_INDEX, F.FINAL_OBS):
        if column == name:
            return fname
    return F.ALL_COLUMNS[column][0]


def write_json(path: Path, obj, fsync: bool = True) -> None:
    """Write ``obj`` as strict JSON (no NaN/Infinity) to ``path``, read-only once written; via a
    temporary file renamed over ``path`` (so rewriting a read-only meta.json works)."""
    path = Path(path)
    text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), READ_ONLY)
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
