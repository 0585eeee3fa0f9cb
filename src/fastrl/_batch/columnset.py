"""One folder of column files being written: the files of a plain batch, or of one shard.

Appends packed rows (whole episodes), keeps a running CRC32 per file (no second read pass) and
the statistics that go into ``meta.json``, and writes that ``meta.json`` last.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import zlib
from array import array
from pathlib import Path

import numpy as np

from .. import _kernels
from .. import _format as F
from .codecs import compress_column
from .stager import Layout

# Action histograms are kept per shard only up to this many actions (manifest size stays small).
_MAX_HISTOGRAM_ACTIONS = 4096


def iso_utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _version() -> str:
    from .. import __version__
    return __version__


class _ColumnFile:
    """One ``name.dtype.bin`` file being appended to, with a running CRC32."""

    def __init__(self, path: Path, checksum: bool, fsync: bool = True):
        self.path = path
        self.f = open(path, "wb")
        self.crc = 0 if checksum else None
        self.fsync = fsync

    def write(self, arr: np.ndarray) -> None:
        mv = memoryview(np.ascontiguousarray(arr)).cast("B")
        self.f.write(mv)
        if self.crc is not None:
            self.crc = zlib.crc32(mv, self.crc)

    def close(self) -> None:
        if not self.f.closed:
            self.f.flush()
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
        # column -> codec, applied once the folder is complete; columns this folder lacks
        # (e.g. values when the episodes have none) are ignored
        self.codecs = {c: k for c, k in (codecs or {}).items()
                       if c in self.names or c == F.EPISODE_INDEX[0]}
        self.files = {n: _ColumnFile(folder / F.ALL_COLUMNS[n][0], checksum, fsync)
                      for n in self.names}
        self.count = 0
        self.lengths = array("q")
        self.returns = array("d")
        self.truncated_episodes = 0
        self.hist = np.zeros(layout.n_actions, np.int64) \
            if layout.n_actions <= _MAX_HISTOGRAM_ACTIONS else None

    @property
    def nbytes(self) -> int:
        return self.count * self.layout.row_bytes()

    def append(self, cols: dict, lengths) -> None:
        """Write rows of whole episodes (``sum(lengths)`` rows of each column in ``cols``)."""
        rows = int(sum(lengths))
        for name, f in self.files.items():
            f.write(cols[name][:rows])
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
                plain = F.EPISODE_INDEX[1] if col == F.EPISODE_INDEX[0] else F.ALL_COLUMNS[col][0]
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
            else:
                fname, dtype, width = F.ALL_COLUMNS[name]
                w = {"obsDim": lay.obs_dim, "maskDim": lay.mask_dim, None: None}[width]
                shape = [self.count, w] if w is not None else [self.count]
            columns[name] = {"file": fname, "dtype": dtype.str, "shape": shape}
            if f.crc is not None:
                checksums[fname] = f"crc32:{f.crc:08x}"
        st = self.stats()
        meta = {
            "count": self.count, "obsDim": lay.obs_dim, "maskDim": lay.mask_dim,
            "episodes": len(self.lengths), "steps": self.count, "createdAt": iso_utc_now(),
            "format": F.FORMAT_NAME, "formatVersion": F.FORMAT_VERSION, "byteOrder": "little",
            "numActions": lay.n_actions, "columns": columns,
            "episodeLength": st["episodeLength"], "episodeReturn": st["episodeReturn"],
            "producer": {"fastrl": _version(), "backend": _kernels.BACKEND},
        }
        if checksums:
            meta["checksums"] = checksums
        return meta


def write_json(path: Path, obj, fsync: bool = True) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        if fsync:
            os.fsync(f.fileno())
