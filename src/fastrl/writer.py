"""``BatchWriter``: the streaming writer bot harnesses use to produce a batch folder.

Episodes are checked, packed by the active kernel into in-memory column buffers of bounded size
(``flush_bytes``), and appended to the column files of a hidden temporary folder whenever the
buffers fill. ``close()`` writes the episode index and ``meta.json`` last, fsyncs, and renames the
folder to ``batch_<ms>`` atomically: a crash or an exception never leaves a complete-looking batch.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import zlib
from array import array
from pathlib import Path

import numpy as np

from . import _backend
from . import _format as F
from ._commit import TempFolder, clean_stale
from ._stager import Layout, Stager
from .errors import EpisodeError

__all__ = ["BatchWriter"]


def _version() -> str:
    from . import __version__
    return __version__


def iso_utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class _ColumnFile:
    """One ``name.dtype.bin`` file being appended to, with a running CRC32."""

    def __init__(self, path: Path, checksum: bool):
        self.path = path
        self.f = open(path, "wb")
        self.crc = 0 if checksum else None
        self.nbytes = 0

    def write(self, arr: np.ndarray) -> None:
        mv = memoryview(np.ascontiguousarray(arr)).cast("B")
        self.f.write(mv)
        if self.crc is not None:
            self.crc = zlib.crc32(mv, self.crc)
        self.nbytes += mv.nbytes

    def close(self) -> None:
        if not self.f.closed:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()


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
    checksum : compute a CRC32 per column file while writing and store it in meta.json.
    meta : extra JSON-serializable user metadata, stored under ``"user"`` in meta.json.
    threads : kernel threads (default: ``FASTRL_NUM_THREADS``/``OMP_NUM_THREADS``/available CPUs).

    Whether the batch has ``values``/``logprobs`` columns follows the first episode; later
    episodes must agree. A rejected episode (``EpisodeError``) leaves the writer as it was.
    Used as a context manager, the batch is committed on normal exit and discarded on an exception.
    """

    def __init__(self, root: str | os.PathLike = "data/binary", *, n_actions: int | None = None,
                 obs_dim: int | None = None, spec=None, mask_pad: int | None = None,
                 flush_bytes: int = F.DEFAULT_FLUSH_BYTES, checksum: bool = True,
                 meta: dict | None = None, threads: int | None = None):
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
        if n_actions is not None and n_actions > F.INT32_MAX:
            raise ValueError("n_actions must fit int32")
        if mask_pad is not None and n_actions is not None and mask_pad < n_actions:
            raise ValueError(f"mask_pad={mask_pad} is smaller than n_actions={n_actions}")
        if not isinstance(flush_bytes, (int, np.integer)) or flush_bytes < 1:
            raise ValueError("flush_bytes must be a positive integer")
        if meta is not None:
            json.dumps(meta)  # fail now, not at close, if not JSON-serializable
        self.n_actions = None if n_actions is None else int(n_actions)
        self.obs_dim = None if obs_dim is None else int(obs_dim)
        self.mask_pad = None if mask_pad is None else int(mask_pad)
        self.flush_bytes = int(flush_bytes)
        self._checksum = bool(checksum)
        self._user_meta = meta
        self._extra_meta = {}  # producer-specific keys (export: source, skipped)
        self._threads = threads
        self.layout = None         # fixed by the first episode
        self._stager = None        # in-memory buffers, flushed to the files when full
        self._files = None         # name -> _ColumnFile
        self._lengths = array("q")  # episode lengths, for the offset index
        self._count = 0            # rows written to the files
        self._pending_steps = []
        self.path = None
        self._closed = False
        self.root.mkdir(parents=True, exist_ok=True)
        clean_stale(self.root)
        self._tmp = TempFolder(self.root)

    # -- public API -------------------------------------------------------------------------

    @property
    def episodes(self) -> int:
        """Episodes accepted so far."""
        return len(self._lengths) + (len(self._stager.lengths) if self._stager else 0)

    @property
    def transitions(self) -> int:
        """Transitions accepted so far."""
        return self._count + (self._stager.used if self._stager else 0)

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
        """Close the episode built by :meth:`add_step`; ``truncated`` as in :meth:`add_episode`."""
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
            index = np.zeros(len(self._lengths) + 1, dtype="<i8")
            np.cumsum(np.frombuffer(self._lengths, dtype=np.int64), out=index[1:])
            name, fname, _ = F.EPISODE_INDEX
            f = _ColumnFile(self._tmp.path / fname, self._checksum)
            self._files[name] = f
            f.write(index)
            for f in self._files.values():
                f.close()
            meta = self._meta()
            with open(self._tmp.path / F.META_FILE, "w") as mf:
                json.dump(meta, mf, indent=1)
                mf.write("\n")
                mf.flush()
                os.fsync(mf.fileno())
            self.path = self._tmp.commit()
            self._closed = True
            self._stager = None
            return self.path
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard everything written; no batch folder is created."""
        if self._closed:
            return
        self._closed = True
        for f in (self._files or {}).values():
            try:
                f.f.close()
            except OSError:
                pass
        self._tmp.discard()
        self._stager = None

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
        if self.n_actions is None:
            if mask is None:
                raise EpisodeError("n_actions is required when masks are given as legal ids",
                                   episode=0)
            shape = np.shape(mask)
            if len(shape) != 2 or not 1 <= shape[1] <= F.MAX_DIM:
                raise EpisodeError(f"mask must have shape (steps, n_actions), got {shape}",
                                   episode=0)
            self.n_actions = int(shape[1])
        if self.mask_pad is not None and self.mask_pad < self.n_actions:
            raise ValueError(f"mask_pad={self.mask_pad} is smaller than n_actions={self.n_actions}")
        if self.obs_dim is None:
            shape = np.shape(obs) if obs is not None else ()
            if len(shape) != 2 or not 1 <= shape[1] <= F.MAX_DIM:
                raise EpisodeError(f"obs must have shape (steps, obsDim), got {shape}", episode=0)
            self.obs_dim = int(shape[1])
        self._set_layout(Layout(self.obs_dim, self.n_actions, self.mask_pad or self.n_actions,
                                values is not None, logprobs is not None))

    def _set_layout(self, layout: Layout):
        self.layout = layout
        self.obs_dim, self.n_actions, self.mask_dim = layout.obs_dim, layout.n_actions, \
            layout.mask_dim
        capacity = max(1, self.flush_bytes // layout.row_bytes())
        self._stager = Stager(layout, capacity, spec=self._spec, threads=self._threads)
        self._files = {}
        for name in self._column_names():
            fname = F.ALL_COLUMNS[name][0]
            self._files[name] = _ColumnFile(self._tmp.path / fname, self._checksum)

    def _column_names(self):
        names = ["obs", "actions", "rewards", "masks", "dones"]
        if self.layout.has_values:
            names.append("values")
        if self.layout.has_logprobs:
            names.append("logprobs")
        names.append("truncated")
        return names

    def _add(self, obs, actions, rewards, mask, legal, values, logprobs, truncated, states):
        episode = self.episodes
        if self._files is None:
            use_states = states is not None and self._spec is not None
            self._init_layout(None if use_states else obs, mask, values, logprobs)
        ep, st = self._stager.prepare(episode, obs=obs, actions=actions, rewards=rewards,
                                      mask=mask, legal=legal, values=values, logprobs=logprobs,
                                      truncated=truncated, states=states)
        if not self._stager.fits(ep.length):
            self._flush()
        self._stager.put(ep, st, episode)

    def _append_packed(self, cols: dict, lengths) -> None:
        """Append rows packed elsewhere (export workers) after everything added so far."""
        self._check_open()
        self._flush()
        self._write(cols, int(sum(lengths)))
        self._lengths.extend(lengths)

    def _flush(self):
        if self._stager is not None and self._stager.used:
            cols, lengths = self._stager.take()
            self._write(cols, len(cols["dones"]))
            self._lengths.extend(lengths)

    def _write(self, cols, rows):
        try:
            for name, f in self._files.items():
                if name in cols:
                    f.write(cols[name][:rows])
        except OSError as exc:
            # A partial write (disk full, IO error) cannot be undone: drop the whole batch.
            where = self._tmp.path
            self.abort()
            raise OSError(exc.errno, f"fastrl: writing the batch in {where} failed "
                          f"({exc.strerror or exc}); the batch was discarded") from exc
        self._count += rows

    def _meta(self) -> dict:
        count = self._count
        columns = {}
        checksums = {}
        for name, f in self._files.items():
            if name == F.EPISODE_INDEX[0]:
                fname, dtype, shape = F.EPISODE_INDEX[1], F.EPISODE_INDEX[2], [self.episodes + 1]
            else:
                fname, dtype, width = F.ALL_COLUMNS[name]
                w = {"obsDim": self.obs_dim, "maskDim": self.mask_dim, None: None}[width]
                shape = [count, w] if w is not None else [count]
            columns[name] = {"file": fname, "dtype": dtype.str, "shape": shape}
            if f.crc is not None:
                checksums[fname] = f"crc32:{f.crc:08x}"
        lengths = np.frombuffer(self._lengths, dtype=np.int64)
        meta = {
            "count": count,
            "obsDim": self.obs_dim,
            "maskDim": self.mask_dim,
            "episodes": self.episodes,
            "steps": count,
            "createdAt": iso_utc_now(),
            "format": F.FORMAT_NAME,
            "formatVersion": F.FORMAT_VERSION,
            "byteOrder": "little",
            "numActions": self.n_actions,
            "columns": columns,
            "episodeLength": {"min": int(lengths.min()), "max": int(lengths.max()),
                              "mean": float(lengths.mean())},
            "producer": {"fastrl": _version(), "backend": _backend.BACKEND},
        }
        if checksums:
            meta["checksums"] = checksums
        if self._spec is not None:
            meta["obsSpec"] = json.loads(self._spec.to_json())
            meta["obsSlices"] = {k: [s.start, s.stop] for k, s in self._spec.slices.items()}
        meta.update(self._extra_meta)
        if self._user_meta is not None:
            meta["user"] = self._user_meta
        return meta
