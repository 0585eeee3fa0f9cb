"""The write engine: one batch being written, for ``BatchWriter``, ``fastrl export`` and the Ray
export alike.

An engine owns a hidden temporary folder in the output root (see :mod:`.commit`), a
:class:`~.stager.Stager` of in-memory column buffers that episodes are packed into, and one
background thread that appends full buffers to the column files (computing CRCs on the way) while
the caller packs into the other buffer (double buffering). ``close()`` writes the episode index and
meta.json last and renames the folder to ``batch_<ms>``; ``abort()`` deletes it.

Ownership: only the process that created an engine writes, commits or deletes its batch. In a
process forked from it (multiprocessing's default on Linux) every method that would touch the
batch does nothing (``close`` warns and returns None; adding rows raises), so a child leaving a
``with`` block, exiting or being garbage-collected leaves the parent's batch as it was.

Threads: the engine itself is not locked; ``BatchWriter`` serializes calls with one lock.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import _format as F
from .checksum import crc32, crc32_combine
from .chunkfile import SpilledChunk, unspill
from .codecs import resolve
from .columnset import ColumnSet, iso_utc_now, write_json
from .commit import TempFolder
from .meta import SHARD_PREFIX, build_manifest
from .stager import Layout, Stager

__all__ = ["WriteEngine", "NotOwnerError", "check_owner", "codec_map", "base_meta"]

SCRATCH_DIR = ".scratch"  # inside the temporary folder; removed before the commit


def codec_map(compression) -> dict:
    """``compression`` argument -> {column: codec} (checked; zstd must be installed)."""
    if compression is None:
        return {}
    columns = list(F.ALL_COLUMNS) + [F.FINAL_OBS[0], F.EPISODE_INDEX[0]]
    if isinstance(compression, str):
        if compression == "packbits":
            raise ValueError("'packbits' applies to masks only: compression={'masks': 'packbits'}")
        return {c: resolve(compression) for c in columns}
    if not isinstance(compression, dict):
        raise ValueError(f"compression must be None, a codec name or a dict, not {compression!r}")
    out = {}
    for col, codec in compression.items():
        if col not in columns:
            raise ValueError(f"compression: unknown column {col!r} (columns: {', '.join(columns)})")
        if codec is None:
            continue
        if codec == "packbits" and col != "masks":
            raise ValueError(f"compression: 'packbits' applies to masks only, not {col!r}")
        out[col] = resolve(codec)
    return out


def base_meta(spec=None, user=None) -> dict:
    """The meta.json keys a batch gets from its observation spec (``obsSpec``, ``obsSlices``)
    and the user's metadata (``user``)."""
    meta = {}
    if spec is not None:
        meta["obsSpec"] = json.loads(spec.to_json())
        meta["obsSlices"] = {k: [s.start, s.stop] for k, s in spec.slices.items()}
    if user is not None:
        meta["user"] = user
    return meta


class NotOwnerError(RuntimeError):
    """A writer used from a process other than the one that created it (a forked child)."""


def check_owner(owner_pid: int) -> None:
    """NotOwnerError unless this process is ``owner_pid`` (the one that created the writer)."""
    if os.getpid() != owner_pid:
        raise NotOwnerError(
            f"this BatchWriter belongs to process {owner_pid}; a forked child (process "
            f"{os.getpid()}) cannot add to, commit or discard its batch. Create a new "
            "BatchWriter in the child.")


class WriteEngine:
    """One batch being written into ``root`` with a fixed :class:`~.stager.Layout`.

    spec: ObsSpec for episodes given as raw states; flush_bytes: staging buffer size (bytes);
    shard_bytes: write shards of about this many bytes (None: one plain folder); codecs:
    column -> codec name (resolved); level: codec level; checksum: CRC-32 per file; fsync: flush
    files and folders to disk before the commit; threads: kernel threads; meta: keys added to
    every folder's meta.json (spec, user meta, producer keys); caller_crc: compute the CRC-32s
    on the calling thread as buffers are handed over (it overlaps the background thread's file
    writes: ``BatchWriter``, whose caller only packs at memory speed) instead of on the
    background thread (the export, whose caller is busy parsing). Sharded batches always take
    their CRCs on the background thread, which cuts the shards.
    """

    def __init__(self, root: Path, layout: Layout, *, spec=None,
                 flush_bytes: int = F.DEFAULT_FLUSH_BYTES, shard_bytes: int | None = None,
                 codecs: dict | None = None, level: int | None = None, checksum: bool = True,
                 fsync: bool = True, threads: int | None = None, meta: dict | None = None,
                 caller_crc: bool = False):
        self.layout = layout
        self.spec = spec
        self.shard_bytes = shard_bytes
        self.codecs = codecs or {}
        self.level = level
        self.checksum = checksum
        self.fsync = fsync
        self.meta = dict(meta or {})   # keys every folder's meta.json gets (producers add some)
        # column -> running CRC-32 of its file, when the caller computes them
        self._crcs = {} if caller_crc and checksum and shard_bytes is None else None
        self.owner_pid = os.getpid()
        capacity = max(1, int(flush_bytes) // layout.row_bytes())
        self.stager = Stager(layout, capacity, spec=spec, threads=threads)
        self.episodes = 0           # accepted so far
        self.transitions = 0
        self.path = None            # the committed batch
        self.closed = False
        self._current = None        # ColumnSet being written (the batch, or the open shard)
        self._shards = []           # manifest entries of finished shards
        self._done_rows = 0         # rows / episodes in finished shards
        self._done_episodes = 0
        self._executor = None       # one background thread: file writes, CRCs, shard cuts
        self._pending = None        # (future, buffer, release) of the write in flight
        self._spare = None          # a staging buffer whose write has finished, for reuse
        self._tmp = TempFolder(Path(root))

    # -- ownership ---------------------------------------------------------------------------

    @property
    def owned(self) -> bool:
        """True in the process that created the engine (False in a forked child)."""
        return os.getpid() == self.owner_pid

    def check_owner(self) -> None:
        check_owner(self.owner_pid)

    # -- adding rows ---------------------------------------------------------------------------

    def put(self, ep, states, episode: int) -> None:
        """Pack one episode checked by ``self.stager.prepare`` (flushing first if it is full)."""
        self.check_owner()
        if not self.stager.fits(ep.length):
            self.flush()
        self.stager.put(ep, states, episode)
        self.episodes += 1
        self.transitions += ep.length

    def append_packed(self, cols: dict, lengths, release=None) -> None:
        """Append rows packed elsewhere (export workers) after everything added so far. The
        arrays must not change until ``release()`` is called (once they are written)."""
        self.check_owner()
        self.flush()
        lengths = list(lengths)
        self._submit(cols, lengths, None, release, self._running_crcs(cols))
        self.episodes += len(lengths)
        self.transitions += sum(lengths)

    def append_spilled(self, chunk: SpilledChunk, lengths, release=None) -> None:
        """Append rows an export worker packed into a chunk file (see :mod:`.chunkfile`) after
        everything added so far: into a plain batch, copied file to file by the kernel on the
        background thread with the worker's CRC-32s (this process never reads the bytes); into
        a sharded one, mapped and cut at shard ends like :meth:`append_packed`.
        ``release()`` is called once the chunk was copied (e.g. to delete its file)."""
        self.check_owner()
        if self.shard_bytes is not None:
            self.append_packed(unspill(chunk), lengths, release)
            return
        self.flush()
        lengths = list(lengths)
        if self._crcs is not None:
            for name, _, _, _, nbytes, crc in chunk.columns:
                self._crcs[name] = crc32_combine(self._crcs.get(name, 0), crc, nbytes)
        self._submit(chunk, lengths, None, release, None)
        self.episodes += len(lengths)
        self.transitions += sum(lengths)

    def scratch_dir(self) -> str:
        """A folder inside the temporary batch folder for export workers' chunk files; it goes
        with the batch on abort and is removed before the commit."""
        d = self._tmp.path / SCRATCH_DIR
        d.mkdir(exist_ok=True)
        return str(d)

    def flush(self) -> None:
        """Hand the filled staging buffer to the background thread and continue packing into
        the other one (double buffering: packing overlaps file writes and CRCs)."""
        if self.stager.used:
            buffer = self.stager.cols
            final = self.stager.final_obs
            cols, lengths = self.stager.take()
            self.stager.cols = None
            self.stager.final_obs = None
            self._submit(cols, list(lengths), (buffer, final), None, self._running_crcs(cols))
            if self._spare is not None:
                self.stager.cols, self.stager.final_obs = self._spare
                self._spare = None

    # -- commit / abort ------------------------------------------------------------------------

    def close(self) -> Path | None:
        """Flush, write meta.json, commit atomically; return the batch path (None when no
        episode was added: nothing is written then). Idempotent. In a forked child: warns and
        returns None, leaving the parent's batch alone."""
        if not self.owned:
            warnings.warn(f"BatchWriter.close() in a forked child (process {os.getpid()}) does "
                          f"nothing: the batch belongs to process {self.owner_pid}",
                          RuntimeWarning, stacklevel=3)
            return None
        if self.closed:
            return self.path
        try:
            if not self.episodes:
                self.abort()
                return None
            self.flush()
            self._join()
            shutil.rmtree(self._tmp.path / SCRATCH_DIR, ignore_errors=True)
            if self.shard_bytes is None:
                self._current.finish(self._folder_meta())
            else:
                self._finish_shard()
                manifest = build_manifest(self._first_shard_meta, self._shards,
                                          self.shard_bytes, iso_utc_now(), self.meta)
                write_json(self._tmp.path / F.META_FILE, manifest, fsync=self.fsync)
            self.path = self._tmp.commit(fsync=self.fsync)
            self.closed = True
            self._release()
            return self.path
        except BaseException as exc:
            if self.closed:  # already discarded (and explained) by a failed background write
                raise
            self.discard_and_raise(exc, "committing")

    def abort(self) -> None:
        """Discard everything written; no batch folder is created. Does nothing in a forked
        child or when already closed."""
        if self.closed or not self.owned:
            return
        self.closed = True
        if self._pending is not None:  # let the write in flight end before deleting its files
            future, _, release = self._pending
            self._pending = None
            try:
                future.result()
            except BaseException:
                pass
            if release is not None:
                try:
                    release()
                except BaseException:
                    pass
        if self._current is not None:
            self._current.discard()
        self._tmp.discard()
        self._release()

    def discard_and_raise(self, exc: BaseException, doing: str):
        """Abort the batch, then re-raise ``exc`` (an OSError names the folder and says so)."""
        where = self._tmp.path
        self.abort()
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"fastrl: {doing} the batch in {where} failed "
                          f"({exc.strerror or exc}); the batch was discarded") from exc
        raise exc

    def _release(self):
        self.stager = None
        self._current = self._spare = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- the background writes -----------------------------------------------------------------

    def _running_crcs(self, cols) -> dict | None:
        """The files' running CRC-32s once ``cols`` are appended (caller_crc), else None."""
        if self._crcs is None:
            return None
        for name, arr in cols.items():
            mv = memoryview(np.ascontiguousarray(arr)).cast("B")
            self._crcs[name] = crc32(mv, self._crcs.get(name, 0))
        return dict(self._crcs)

    def _submit(self, cols, lengths, buffer, release=None, crcs=None):
        self._join()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastrl-write")
        self._pending = (self._executor.submit(self._write, cols, lengths, crcs), buffer, release)

    def _join(self):
        """Wait for the write in flight; a failure discards the batch and is raised here."""
        if self._pending is None:
            return
        future, buffer, release = self._pending
        self._pending = None
        try:
            try:
                future.result()
            finally:
                if release is not None:
                    release()
        except BaseException as exc:
            # A partial write (disk full, IO error) cannot be undone: drop the whole batch.
            self.discard_and_raise(exc, "writing")
        if buffer is not None and self.stager is not None \
                and len(buffer[0]["dones"]) == self.stager.capacity:
            self._spare = buffer

    def _write(self, cols, lengths, crcs=None):
        """Append whole episodes to the open folder, starting new shards at episode ends.
        Runs on the background thread; errors surface through :meth:`_join`. ``crcs``: the
        files' running CRCs after ``cols`` (one folder only: never with shards)."""
        if isinstance(cols, SpilledChunk):  # a plain batch only (see append_spilled)
            if self._current is None:
                self._open_folder()
            self._current.append_file(cols, lengths)
            return
        final_name = F.FINAL_OBS[0]
        row, i = 0, 0
        while i < len(lengths):
            if self._current is None:
                self._open_folder()
            j = i
            if self.shard_bytes is None:
                j = len(lengths)
            else:
                room = self.shard_bytes - self._current.nbytes
                per = self.layout.row_bytes()
                used = 0
                while j < len(lengths) and (used + lengths[j]) * per <= room:
                    used += lengths[j]
                    j += 1
                if j == i:
                    if self._current.count:  # shard full: close it, retry in a new one
                        self._finish_shard()
                        continue
                    j = i + 1  # one episode larger than a shard gets a shard of its own
            rows = int(sum(lengths[i:j]))
            part = {k: (v[i:j] if k == final_name else v[row:row + rows]) for k, v in cols.items()}
            self._current.append(part, lengths[i:j], crcs)
            row += rows
            i = j

    def _open_folder(self):
        if self.shard_bytes is None:
            folder = self._tmp.path
        else:
            folder = self._tmp.path / f"{SHARD_PREFIX}{len(self._shards):05d}"
        self._current = ColumnSet(folder, self.layout, self.checksum, self.codecs, self.level,
                                  fsync=self.fsync)

    def _finish_shard(self):
        cur = self._current
        if cur is None or not cur.count:
            return
        meta = cur.finish(self._folder_meta(shard=len(self._shards)))
        if not self._shards:
            self._first_shard_meta = meta
        self._shards.append({"path": cur.folder.name, "firstRow": self._done_rows,
                             "firstEpisode": self._done_episodes, "count": cur.count,
                             "episodes": len(cur.lengths), "stats": cur.stats()})
        self._done_rows += cur.count
        self._done_episodes += len(cur.lengths)
        self._current = None

    def _folder_meta(self, shard: int | None = None) -> dict:
        """Keys every folder's meta.json gets besides its own counts and columns."""
        meta = {}
        if shard is not None:
            meta["shard"] = {"index": shard, "firstRow": self._done_rows,
                             "firstEpisode": self._done_episodes}
        meta.update(self.meta)
        return meta
