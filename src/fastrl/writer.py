"""``BatchWriter``: the streaming writer bot harnesses use to produce a batch folder.

Episodes are checked, packed by the active kernel into in-memory column buffers of bounded size
(``flush_bytes``), and appended to the column files of a hidden temporary folder whenever the
buffers fill. ``close()`` writes the episode index and ``meta.json`` last, fsyncs, and renames the
folder to ``batch_<ms>`` atomically: a crash or an exception never leaves a complete-looking batch.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import _format as F
from ._batch.columnset import ColumnSet, iso_utc_now, write_json
from ._batch.commit import TempFolder, clean_stale
from ._batch.stager import Layout, Stager
from .errors import EpisodeError

__all__ = ["BatchWriter", "iso_utc_now"]

SHARD_PREFIX = "shard_"


def _codec_map(compression) -> dict:
    """``compression`` argument -> {column: codec} (checked; zstd must be installed)."""
    from ._batch.codecs import resolve
    if compression is None:
        return {}
    columns = list(F.ALL_COLUMNS) + [F.EPISODE_INDEX[0]]
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


class BatchWriter:
    """Write episodes into one batch folder ``<root>/batch_<ms>/`` (format v1, docs/FORMAT.md).

    Parameters
    ----------
    root : output root folder (created if missing); default ``data/binary``.
    n_actions : the game's action count. Inferred from the first dense mask when omitted; required
        when masks come as legal-id lists.
    obs_dim : observation width (float32 values per transition). Inferred from the first episode's
        obs, or from ``spec.dim``.
    spec : an :class:`fastrl.ObsSpec`; episodes may then give raw ``states`` instead of ``obs``,
        encoded straight into the writer's buffers. Its JSON and field slices go into meta.json.
    mask_pad : store masks ``mask_pad`` columns wide (>= n_actions; extra columns are 0), e.g. 256
        for a 208-action game. Default: no padding (maskDim == n_actions).
    flush_bytes : size of the in-memory column buffers (bytes, default 64 MiB); memory stays bounded
        by about this much whatever the batch size.
    shard_bytes : when set, the batch is a folder of shards ``shard_00000/`` ..., each a complete
        batch folder of at most about this many bytes (an episode is never split; one longer
        episode gets a shard of its own), and the batch's ``meta.json`` is a manifest listing them.
        Read a sharded batch with :func:`fastrl.open_dataset`.
    compression : None (plain files, memory-mappable: the default), a codec for every column
        (``"zstd"``, needs zstandard; ``"gzip"``), or a dict column -> codec (masks may use
        ``"packbits"``: 8 columns per byte). Compressed batches are read into memory, not mapped,
        and the origin document's raw loader cannot read them (``fastrl decompress`` restores
        the plain format). See docs/FORMAT.md.
    compression_level : codec level (zstd default 3, gzip default 6).
    checksum : compute a CRC32 per column file while writing and store it in meta.json.
    fsync : flush every file and folder to disk before the commit (default). A killed process
        never leaves a complete-looking batch either way; ``fsync=False`` gives up only the
        guarantee across a power loss or OS crash, for speed (writes then stay in the page cache).
    meta : extra JSON-serializable user metadata, stored under ``"user"`` in meta.json.
    threads : kernel threads (default: ``FASTRL_NUM_THREADS``/``OMP_NUM_THREADS``/available CPUs).

    Whether the batch has ``values``/``logprobs`` columns follows the first episode; later
    episodes must agree. A rejected episode (``EpisodeError``) leaves the writer as it was.
    Used as a context manager, the batch is committed on normal exit and discarded on an exception.
    """

    def __init__(self, root: str | os.PathLike = "data/binary", *, n_actions: int | None = None,
                 obs_dim: int | None = None, spec=None, mask_pad: int | None = None,
                 flush_bytes: int = F.DEFAULT_FLUSH_BYTES, shard_bytes: int | None = None,
                 compression=None, compression_level: int | None = None,
                 checksum: bool = True, fsync: bool = True, meta: dict | None = None,
                 threads: int | None = None):
        self.root = Path(root)
        self._spec = spec
        if spec is not None:
            if obs_dim is not None and obs_dim != spec.dim:
                raise ValueError(f"obs_dim={obs_dim} disagrees with spec.dim={spec.dim}")
            obs_dim = spec.dim
        for name, v in (("n_actions", n_actions), ("obs_dim", obs_dim), ("mask_pad", mask_pad)):
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)
                                  or not 1 <= v <= F.MAX_DIM):
                raise ValueError(f"{name} must be an integer in [1, {F.MAX_DIM}], got {v!r}")
        if mask_pad is not None and n_actions is not None and mask_pad < n_actions:
            raise ValueError(f"mask_pad={mask_pad} is smaller than n_actions={n_actions}")
        for name, v in (("flush_bytes", flush_bytes), ("shard_bytes", shard_bytes)):
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)
                                  or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if meta is not None:
            try:
                json.dumps(meta)  # fail now, not at close
            except (TypeError, ValueError) as exc:
                raise ValueError(f"meta must be JSON-serializable: {exc}") from None
        self._codecs = _codec_map(compression)
        self._level = compression_level
        self.n_actions = None if n_actions is None else int(n_actions)
        self.obs_dim = None if obs_dim is None else int(obs_dim)
        self.mask_pad = None if mask_pad is None else int(mask_pad)
        self.mask_dim = None
        self.flush_bytes = int(flush_bytes)
        self.shard_bytes = None if shard_bytes is None else int(shard_bytes)
        self._checksum = bool(checksum)
        self._fsync = bool(fsync)
        self._user_meta = meta
        self._extra_meta = {}      # producer-specific keys (export: source, skipped)
        self._threads = threads
        self.layout = None         # fixed by the first episode
        self._stager = None        # in-memory buffers, flushed to the files when full
        self._current = None       # ColumnSet being written (the batch, or the open shard)
        self._shards = []          # manifest entries of finished shards
        self._done_rows = 0        # rows in finished shards
        self._done_episodes = 0
        self._pending_steps = []
        self._accepted = (0, 0)    # (episodes, transitions), counted by the caller's thread
        self._executor = None      # one background thread: file writes, CRCs, shard cuts
        self._pending = None       # (future, buffer) of the write in flight
        self._spare = None         # a staging buffer whose write has finished, for reuse
        self.path = None
        self._closed = False
        self.root.mkdir(parents=True, exist_ok=True)
        clean_stale(self.root)
        self._tmp = TempFolder(self.root)

    # -- public API -------------------------------------------------------------------------

    @property
    def episodes(self) -> int:
        """Episodes accepted so far (after close: in the committed batch)."""
        return self._accepted[0]

    @property
    def transitions(self) -> int:
        """Transitions accepted so far (after close: in the committed batch)."""
        return self._accepted[1]

    def add_episode(self, obs=None, actions=None, rewards=None, mask=None, legal=None, values=None,
                    logprobs=None, truncated: bool = False, states=None) -> None:
        """Add one whole episode of T steps.

        obs: (T, obsDim) numbers (float32/float64 copied as is, others converted), or ``states``
        (a list of T raw states or a dict of columns) with the writer's ``spec``; actions: (T,)
        integers; rewards: (T,) numbers; exactly one of mask: (T, n_actions) 0/1 or bool, or
        legal: T lists of legal action ids; values, logprobs: optional (T,) numbers; truncated:
        True when a time limit, not the game, ended the episode.
        """
        self._check_open()
        if self._pending_steps:
            raise RuntimeError("add_episode() called while an add_step() episode is open; "
                               "call end_episode() first")
        self._add(obs, actions, rewards, mask, legal, values, logprobs, truncated, states)

    def add_step(self, obs=None, action=None, reward=None, mask=None, legal=None, value=None,
                 logprob=None, state=None) -> None:
        """Add one step of the current episode (for harnesses that play live). Kept in memory
        until :meth:`end_episode`, which checks and packs the whole episode."""
        self._check_open()
        if action is None or reward is None:
            raise TypeError("add_step() needs action and reward")
        self._pending_steps.append((obs, action, reward, mask, legal, value, logprob, state))

    def end_episode(self, truncated: bool = False) -> None:
        """Close the episode built by :meth:`add_step`; ``truncated`` as in :meth:`add_episode`.
        The steps are dropped whether or not the episode is accepted."""
        self._check_open()
        steps, self._pending_steps = self._pending_steps, []
        if not steps:
            raise EpisodeError("end_episode() with no add_step() since the last episode",
                               episode=self.episodes)
        col = list(zip(*steps))

        def opt(i, name):
            present = [x is not None for x in col[i]]
            if all(present):
                return list(col[i])
            if any(present):
                raise EpisodeError(f"{name} given on some steps but not all",
                                   episode=self.episodes, step=present.index(not present[0]))
            return None

        obs, states = opt(0, "obs"), opt(7, "state")
        mask, legal = opt(3, "mask"), opt(4, "legal")
        self._add(obs, list(col[1]), list(col[2]), mask, legal, opt(5, "value"),
                  opt(6, "logprob"), truncated, states)

    def close(self) -> Path | None:
        """Flush, write meta.json, commit atomically; return the batch path (None if no episode
        was added: nothing is written then). Idempotent."""
        if self._closed:
            return self.path
        if self._pending_steps:
            self.abort()
            raise RuntimeError("close() with an episode still open (add_step without "
                               "end_episode): the batch was discarded")
        try:
            if not self.episodes:
                self._tmp.discard()
                self._closed = True
                return None
            self._flush()
            self._join()
            shutil.rmtree(self._tmp.path / ".scratch", ignore_errors=True)
            if self.shard_bytes is None:
                self._current.finish(self._batch_meta())
            else:
                self._finish_shard()
                write_json(self._tmp.path / F.META_FILE, self._manifest(), fsync=self._fsync)
            self.path = self._tmp.commit(fsync=self._fsync)
            self._closed = True
            self._stager = self._current = self._spare = None
            self._stop_thread()
            return self.path
        except BaseException as exc:
            if self._closed:  # already discarded (and explained) by a failed background write
                raise
            self._discard_and_raise(exc, "committing")

    def abort(self) -> None:
        """Discard everything written; no batch folder is created."""
        if self._closed:
            return
        self._closed = True
        if self._pending is not None:  # let the write in flight end before deleting its files
            try:
                self._pending[0].result()
                if self._pending[2] is not None:
                    self._pending[2]()
            except BaseException:
                pass
            self._pending = None
        self._stop_thread()
        if self._current is not None:
            self._current.discard()
        self._tmp.discard()
        self._stager = self._current = self._spare = None

    def _discard_and_raise(self, exc: BaseException, doing: str):
        """Abort the batch, then re-raise ``exc`` (an OSError names the folder and says so)."""
        where = self._tmp.path
        self.abort()
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"fastrl: {doing} the batch in {where} failed "
                          f"({exc.strerror or exc}); the batch was discarded") from exc
        raise exc

    def _stop_thread(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def __del__(self):
        # An unclosed writer that is garbage-collected leaves no temporary folder behind.
        try:
            if not self._closed:
                self.abort()
        except Exception:
            pass

    # -- internals ----------------------------------------------------------------------------

    def _check_open(self):
        if self._closed:
            raise RuntimeError("BatchWriter is closed")

    def _init_layout(self, obs, mask, values, logprobs):
        n_actions, obs_dim = self.n_actions, self.obs_dim
        if n_actions is None:
            if mask is None:
                raise EpisodeError("n_actions is required when masks are given as legal ids",
                                   episode=0)
            shape = np.shape(mask)
            if len(shape) != 2 or not 1 <= shape[1] <= F.MAX_DIM:
                raise EpisodeError(f"mask must have shape (steps, n_actions), got {shape}",
                                   episode=0)
            n_actions = int(shape[1])
        if self.mask_pad is not None and self.mask_pad < n_actions:
            raise ValueError(f"mask_pad={self.mask_pad} is smaller than n_actions={n_actions}")
        if obs_dim is None:
            try:
                shape = np.shape(obs) if obs is not None else ()
            except ValueError:  # ragged rows
                shape = ()
            if len(shape) != 2 or not 1 <= shape[1] <= F.MAX_DIM:
                raise EpisodeError(f"obs must have shape (steps, obsDim), got {shape}", episode=0)
            obs_dim = int(shape[1])
        self._set_layout(Layout(obs_dim, n_actions, self.mask_pad or n_actions,
                                values is not None, logprobs is not None))

    def _set_layout(self, layout: Layout):
        self.layout = layout
        self.obs_dim, self.n_actions, self.mask_dim = layout.obs_dim, layout.n_actions, \
            layout.mask_dim
        capacity = max(1, self.flush_bytes // layout.row_bytes())
        self._stager = Stager(layout, capacity, spec=self._spec, threads=self._threads)

    def _add(self, obs, actions, rewards, mask, legal, values, logprobs, truncated, states):
        episode = self.episodes
        if self.layout is None:
            use_states = states is not None and self._spec is not None
            self._init_layout(None if use_states else obs, mask, values, logprobs)
        ep, st = self._stager.prepare(episode, obs=obs, actions=actions, rewards=rewards,
                                      mask=mask, legal=legal, values=values, logprobs=logprobs,
                                      truncated=truncated, states=states)
        self._put_prepared(ep, st, episode)

    def _put_prepared(self, ep, states, episode: int) -> None:
        """Pack one episode checked by ``self._stager.prepare`` (flushing first if it is full)."""
        if not self._stager.fits(ep.length):
            self._flush()
        self._stager.put(ep, states, episode)
        self._accepted = (self._accepted[0] + 1, self._accepted[1] + ep.length)

    def _append_packed(self, cols: dict, lengths, release=None) -> None:
        """Append rows packed elsewhere (export workers) after everything added so far. The
        arrays must not change until ``release()`` is called (once they are written)."""
        self._check_open()
        self._flush()
        lengths = list(lengths)
        self._submit(cols, lengths, None, release)
        self._accepted = (self._accepted[0] + len(lengths), self._accepted[1] + sum(lengths))

    def _flush(self):
        """Hand the filled staging buffer to the background thread and continue packing into
        the other one (double buffering: packing overlaps file writes and CRCs)."""
        if self._stager is not None and self._stager.used:
            buffer = self._stager.cols
            cols, lengths = self._stager.take()
            self._stager.cols = None
            self._submit(cols, list(lengths), buffer)
            if self._spare is not None and self._stager is not None:
                self._stager.cols, self._spare = self._spare, None

    def _scratch_dir(self) -> str:
        """A folder inside the temporary batch folder for export workers' chunk files; it goes
        with the batch on abort and is removed before the commit."""
        d = self._tmp.path / ".scratch"
        d.mkdir(exist_ok=True)
        return str(d)

    def _submit(self, cols, lengths, buffer, release=None):
        self._join()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastrl-write")
        self._pending = (self._executor.submit(self._write, cols, lengths), buffer, release)

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
            self._discard_and_raise(exc, "writing")
        if buffer is not None and self._stager is not None \
                and len(buffer["dones"]) == self._stager.capacity:
            self._spare = buffer

    def _write(self, cols, lengths):
        """Append whole episodes to the open folder, starting new shards at episode ends.
        Runs on the background thread; errors surface through :meth:`_join`."""
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
            self._current.append({k: v[row:row + rows] for k, v in cols.items()},
                                 lengths[i:j])
            row += rows
            i = j

    def _open_folder(self):
        if self.shard_bytes is None:
            folder = self._tmp.path
        else:
            folder = self._tmp.path / f"{SHARD_PREFIX}{len(self._shards):05d}"
        self._current = ColumnSet(folder, self.layout, self._checksum, self._codecs,
                                  self._level, fsync=self._fsync)

    def _finish_shard(self):
        cur = self._current
        if cur is None or not cur.count:
            return
        cur.finish(self._batch_meta(shard=len(self._shards)))
        entry = {"path": cur.folder.name, "firstRow": self._done_rows,
                 "firstEpisode": self._done_episodes, "count": cur.count,
                 "episodes": len(cur.lengths), "stats": cur.stats()}
        self._shards.append(entry)
        self._done_rows += cur.count
        self._done_episodes += len(cur.lengths)
        self._current = None

    def _batch_meta(self, shard: int | None = None) -> dict:
        """Keys every folder's meta.json gets besides its own counts and columns."""
        meta = {}
        if self._spec is not None:
            meta["obsSpec"] = json.loads(self._spec.to_json())
            meta["obsSlices"] = {k: [s.start, s.stop] for k, s in self._spec.slices.items()}
        if shard is not None:
            meta["shard"] = {"index": shard, "firstRow": self._done_rows,
                             "firstEpisode": self._done_episodes}
        meta.update(self._extra_meta)
        if self._user_meta is not None:
            meta["user"] = self._user_meta
        return meta

    def _manifest(self) -> dict:
        lay = self.layout
        lengths = [s["stats"]["episodeLength"] for s in self._shards]
        manifest = {
            "count": self._done_rows, "obsDim": lay.obs_dim, "maskDim": lay.mask_dim,
            "episodes": self._done_episodes, "steps": self._done_rows,
            "createdAt": iso_utc_now(), "format": F.FORMAT_NAME,
            "formatVersion": F.FORMAT_VERSION, "byteOrder": "little",
            "numActions": lay.n_actions, "sharded": True, "shardBytes": self.shard_bytes,
            "shards": self._shards,
            "episodeLength": {"min": min(x["min"] for x in lengths),
                              "max": max(x["max"] for x in lengths),
                              "mean": self._done_rows / self._done_episodes},
        }
        manifest.update(self._batch_meta())
        return manifest
