"""``BatchWriter``: the streaming writer bot harnesses use to produce a batch folder.

A thin face over the write engine (:mod:`fastrl._batch.engine`): it checks arguments, fixes the
batch layout from the first episode, turns single steps (``add_step``) and steps of vector
environments (``add_steps``) into whole episodes, and serializes calls from several threads. The
engine packs episodes into bounded in-memory buffers, appends them to the column files of a hidden
temporary folder on a background thread, and commits the folder as ``batch_<ms>`` atomically:
a crash or an exception never leaves a complete-looking batch.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np

from . import _format as F
from ._batch.columnset import iso_utc_now
from ._batch.commit import clean_stale
from ._batch.engine import NotOwnerError, WriteEngine, base_meta, check_owner, codec_map
from ._batch.meta import user_meta_problem
from ._batch.stager import Layout
from ._batch.vector import VectorEpisodes
from .errors import EpisodeError

__all__ = ["BatchWriter", "NotOwnerError", "iso_utc_now"]

PARTIAL_MODES = ("truncate", "drop")


class BatchWriter:
    """Write episodes into one batch folder ``<root>/batch_<ms>/`` (format v1, docs/FORMAT.md).

    Parameters
    ----------
    root : output root folder (created if missing); default ``data/binary``.
    n_actions : the game's action count. Inferred from the first dense mask when omitted; required
        when masks come as legal-id lists, and for episodes without masks (every action legal:
        all-ones masks of ``n_actions`` columns are stored).
    obs_dim : observation width (float32 values per transition). Inferred from the first episode's
        obs, or from ``spec.dim``.
    spec : an :class:`fastrl.ObsSpec`; episodes may then give raw ``states`` instead of ``obs``,
        encoded straight into the writer's buffers. Its JSON and field slices go into meta.json.
    mask_pad : store masks ``mask_pad`` columns wide (>= n_actions; extra columns are 0), e.g. 256
        for a 208-action game. Default: no padding (maskDim == n_actions).
    flush_bytes : size of the in-memory column buffers (bytes, default 8 MiB); memory stays bounded
        by about this much whatever the batch size.
    shard_bytes : when set, the batch is a folder of shards ``shard_00000/`` ..., each a complete
        batch folder of at most about this many bytes (an episode is never split; one longer
        episode gets a shard of its own), and the batch's ``meta.json`` is a manifest listing them.
        Read a sharded batch with :func:`fastrl.open_dataset`.
    compression : None (plain files, memory-mappable: the default), a codec for every column
        (``"zstd"``, needs zstandard; ``"brotli"``, needs brotli; ``"gzip"``), or a dict
        column -> codec (masks may use
        ``"packbits"``: 8 columns per byte). Compressed batches are read into memory, not mapped,
        and the origin document's raw loader cannot read them (``fastrl decompress`` restores
        the plain format). See docs/FORMAT.md.
    compression_level : codec level (zstd 1-22, default 3; brotli 0-11, default 5; gzip 0-9,
        default 6).
    checksum : compute a CRC32 per column file while writing and store it in meta.json.
    fsync : flush every file and folder to disk before the commit (default). A killed process
        never leaves a complete-looking batch either way; ``fsync=False`` gives up only the
        guarantee across a power loss or OS crash, for speed (writes then stay in the page cache).
    meta : extra JSON-serializable user metadata, stored under ``"user"`` in meta.json.
    threads : kernel threads (default: ``FASTRL_NUM_THREADS``/``OMP_NUM_THREADS``/available CPUs).

    partial : what :meth:`close` does with vector-environment episodes still open
        (:meth:`add_steps`): ``"truncate"`` (default) stores them, flagged truncated; ``"drop"``
        discards them.

    Whether the batch has ``values``/``logprobs``/``final_obs`` columns follows the first episode;
    later episodes must agree. A rejected episode (``EpisodeError``) leaves the writer as it was.
    Used as a context manager, the batch is committed on normal exit and discarded on an exception.

    Threads: every method takes one lock, so calls from several threads serialize and each
    episode stays contiguous; :meth:`add_step`/:meth:`end_episode` keep one open episode per
    thread. Processes: only the process that created the writer can add to, commit or discard
    its batch; in a forked child (multiprocessing on Linux) adding raises ``NotOwnerError`` and
    leaving a ``with`` block, ``close``, ``abort``, garbage collection and exiting leave the
    parent's batch untouched.
    """


    def __init__(self, root: str | os.PathLike = "data/binary", *, n_actions: int | None = None,
                 obs_dim: int | None = None, spec=None, mask_pad: int | None = None,
                 flush_bytes: int = F.DEFAULT_FLUSH_BYTES, shard_bytes: int | None = None,
                 compression=None, compression_level: int | None = None,
                 checksum: bool = True, fsync: bool = True, meta: dict | None = None,
                 threads: int | None = None, partial: str = "truncate"):
        self.root = Path(root)
        self.spec = spec
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
        if partial not in PARTIAL_MODES:
            raise ValueError(f"partial must be one of {PARTIAL_MODES}, got {partial!r}")
        if meta is not None:
            problem = user_meta_problem(meta)
            if problem:  # fail now, not at close
                raise ValueError(f"meta: {problem}")
        self._codecs = codec_map(compression)
        self._level = compression_level
        self.n_actions = None if n_actions is None else int(n_actions)
        self.obs_dim = None if obs_dim is None else int(obs_dim)
        self._given_dims = (self.n_actions, self.obs_dim)
        self.mask_pad = None if mask_pad is None else int(mask_pad)
        self.mask_dim = None
        self.flush_bytes = int(flush_bytes)
        self.shard_bytes = None if shard_bytes is None else int(shard_bytes)
        self.partial = partial
        self._checksum = bool(checksum)
        self._fsync = bool(fsync)
        self._user_meta = meta
        self._threads = threads
        self.layout = None         # fixed by the first episode
        self.engine = None         # the write engine, made with the layout
        self._open_steps = {}      # thread id -> steps of that thread's add_step episode
        self._vector = None        # VectorEpisodes of add_steps
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        self._closed = False
        self._path = None
        self.root.mkdir(parents=True, exist_ok=True)
        clean_stale(self.root)

    # -- public API -------------------------------------------------------------------------

    @property
    def episodes(self) -> int:
        """Episodes accepted so far (after close: in the committed batch)."""
        return self.engine.episodes if self.engine is not None else 0

    @property
    def transitions(self) -> int:
        """Transitions accepted so far (after close: in the committed batch)."""
        return self.engine.transitions if self.engine is not None else 0

    @property
    def path(self) -> Path | None:
        """The committed batch folder (None before :meth:`close`, or when nothing was added)."""
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    def add_episode(self, obs=None, actions=None, rewards=None, mask=None, legal=None, values=None,
                    logprobs=None, truncated: bool = False, states=None, final_obs=None) -> None:
        """Add one whole episode of T steps.

        obs: (T, obsDim) numbers (float32/float64 copied as is, others converted), or ``states``
        (a list of T raw states or a dict of columns) with the writer's ``spec``; actions: (T,)
        integers; rewards: (T,) numbers; at most one of mask: (T, n_actions) 0/1 or bool, or
        legal: T lists of legal action ids (neither: every action legal); values, logprobs:
        optional (T,) numbers; truncated: True when a time limit, not the game, ended the
        episode; final_obs: optional (obsDim,) numbers, the observation after the last step.
        """
        self._check_owner()
        with self._lock:
            self._check_open()
            if self._open_steps.get(threading.get_ident()):
                raise RuntimeError("add_episode() called while an add_step() episode is open in "
                                   "this thread; call end_episode() first")
            self._add(obs=obs, actions=actions, rewards=rewards, mask=mask, legal=legal,
                      values=values, logprobs=logprobs, truncated=truncated, states=states,
                      final_obs=final_obs)

    def add_step(self, obs=None, action=None, reward=None, mask=None, legal=None, value=None,
                 logprob=None, state=None) -> None:
        """Add one step of the current episode of the calling thread (for harnesses that play
        live). Kept in memory until :meth:`end_episode`, which checks and packs the episode."""
        self._check_owner()
        with self._lock:
            self._check_open()
            if action is None or reward is None:
                raise TypeError("add_step() needs action and reward")
            self._open_steps.setdefault(threading.get_ident(), []).append(
                (obs, action, reward, mask, legal, value, logprob, state))

    def end_episode(self, truncated: bool = False, final_obs=None) -> None:
        """Close the calling thread's episode built by :meth:`add_step`; ``truncated`` and
        ``final_obs`` as in :meth:`add_episode`. The steps are dropped whether or not the
        episode is accepted."""
        self._check_owner()
        with self._lock:
            self._check_open()
            steps = self._open_steps.pop(threading.get_ident(), [])
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

            self._add(obs=opt(0, "obs"), actions=list(col[1]), rewards=list(col[2]),
                      mask=opt(3, "mask"), legal=opt(4, "legal"), values=opt(5, "value"),
                      logprobs=opt(6, "logprob"), truncated=truncated, states=opt(7, "state"),
                      final_obs=final_obs)

    def add_steps(self, obs, actions, rewards, terminated, truncated, *, mask=None, legal=None,
                  values=None, logprobs=None, states=None, final_obs=None) -> None:
        """Add one step of N parallel environments (gymnasium's vector-env convention: a leading
        axis of N on every argument).

        obs: (N, obsDim) observations the actions were taken in (or ``states``, N raw states, with
        the writer's ``spec``); actions: (N,) integers; rewards: (N,); terminated, truncated: (N,)
        booleans as ``VectorEnv.step`` returns them; mask: (N, n_actions) 0/1 or legal: N lists of
        ids (neither: every action legal); values, logprobs: (N,); final_obs: the observation
        after the last step of the environments whose episode ends now (an (N, obsDim) array
        whose other rows are ignored, or a sequence holding None for the others, e.g. gymnasium's
        ``info["final_obs"]`` with ``autoreset_mode=SAME_STEP``).

        Each environment's episode is stored whole and contiguous when it ends (terminated or
        truncated). Episodes still open at :meth:`close` are stored flagged truncated, or
        dropped with ``partial="drop"``. An environment's bad episode (NaN, illegal action, ...)
        raises EpisodeError naming it once the other ended episodes are stored; it is dropped.
        """
        self._check_owner()
        with self._lock:
            self._check_open()
            n = len(actions) if hasattr(actions, "__len__") else -1
            if n < 1:
                raise ValueError("add_steps: actions must hold one action per environment")
            if states is not None:
                if self.spec is None:
                    raise ValueError("add_steps: raw states given but the writer has no spec")
                if obs is not None:
                    raise ValueError("add_steps: give obs or states, not both")
                obs = self.spec.encode(states)
            vec = self._vector_for(n, obs, mask)
            step = vec.step_columns(obs, actions, rewards, mask, legal, values, logprobs)
            ended = vec.push(step, terminated, truncated)
            errors = []
            for i in ended:
                fin = _final_row(final_obs, i)
                try:
                    self._add(**vec.episode(i), final_obs=fin)
                except EpisodeError as exc:
                    errors.append(EpisodeError(f"environment {i}: {exc.reason}", step=exc.step,
                                               episode=exc.episode))
                finally:
                    vec.reset(i)
            if errors:
                raise errors[0]

    def close(self) -> Path | None:
        """Flush, write meta.json, commit atomically; return the batch path (None if no episode
        was added: nothing is written then). Idempotent. In a forked child: warns, returns None
        and leaves the parent's batch alone."""
        if not self._owned():  # before the lock: another thread may have held it at fork time
            if self.engine is not None:
                return self.engine.close()  # warns, does nothing
            return None
        with self._lock:
            if self._closed:
                return self._path
            if any(self._open_steps.values()):
                self.abort()
                raise RuntimeError("close() with an episode still open (add_step without "
                                   "end_episode): the batch was discarded")
            try:
                self._store_open_vector_episodes()
            except BaseException:  # an IO error while storing them: nothing is committed
                self.abort()
                raise
            self._closed = True
            if self.engine is None:
                return None
            self._path = self.engine.close()
            return self._path

    def abort(self) -> None:
        """Discard everything written; no batch folder is created. Does nothing in a forked
        child."""
        if not self._owned():  # before the lock: another thread may have held it at fork time
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._open_steps.clear()
            self._vector = None
            if self.engine is not None:
                self.engine.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self._owned():
            return False  # a forked child leaving the block: the parent's batch is untouched
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def __del__(self):
        # An unclosed writer that is garbage-collected leaves no temporary folder behind (in the
        # process that owns it; a forked child's copy does nothing).
        try:
            if not self._closed and self._owned():
                self.abort()
        except Exception:
            pass

    # -- internals ----------------------------------------------------------------------------

    def _owned(self) -> bool:
        return os.getpid() == self._owner_pid

    def _check_owner(self):
        check_owner(self._owner_pid)

    def _check_open(self):
        if self._closed:
            raise RuntimeError("BatchWriter is closed")

    def _vector_for(self, n, obs, mask) -> VectorEpisodes:
        if self._vector is None:
            if self.obs_dim is None:
                shape = np.shape(obs)
                if len(shape) != 2 or not 1 <= shape[1] <= F.MAX_DIM:
                    raise ValueError(f"add_steps: obs must have shape (N, obsDim), got {shape}")
                self.obs_dim = int(shape[1])
            if self.n_actions is None:
                shape = np.shape(mask) if mask is not None else ()
                if len(shape) != 2:
                    raise ValueError("add_steps: n_actions is unknown: give BatchWriter("
                                     "n_actions=...) or dense masks of shape (N, n_actions)")
                self.n_actions = int(shape[1])
            self._vector = VectorEpisodes(n, self.obs_dim, self.n_actions)
        elif n != self._vector.n:
            raise ValueError(f"add_steps: {n} environments, earlier steps had {self._vector.n}")
        return self._vector

    def _store_open_vector_episodes(self):
        vec, self._vector = self._vector, None
        if vec is None or self.partial == "drop":
            return
        for i in vec.open_envs:
            kw = vec.episode(i)
            kw["truncated"] = True
            fin = None
            if self.layout is not None and self.layout.has_final_obs:
                fin = kw["obs"][-1]  # the best available: the last observation seen
            try:
                self._add(**kw, final_obs=fin)
            except EpisodeError as exc:  # one bad partial episode must not cost the batch
                warnings.warn(f"BatchWriter.close(): the open episode of environment {i} was "
                              f"not stored: {exc}", RuntimeWarning, stacklevel=3)

    def _init_layout(self, obs, mask, legal, values, logprobs, final_obs):
        n_actions, obs_dim = self.n_actions, self.obs_dim
        if n_actions is None:
            if mask is None:
                what = "masks are given as legal ids" if legal is not None else \
                    "episodes have no action mask (every action legal)"
                raise EpisodeError(f"n_actions is required when {what}: "
                                   "BatchWriter(n_actions=...)", episode=0)
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
                                values is not None, logprobs is not None, final_obs is not None))

    def _set_layout(self, layout: Layout):
        self.layout = layout
        self.obs_dim, self.n_actions, self.mask_dim = layout.obs_dim, layout.n_actions, \
            layout.mask_dim
        self.engine = WriteEngine(self.root, layout, spec=self.spec, flush_bytes=self.flush_bytes,
                                  shard_bytes=self.shard_bytes, codecs=self._codecs,
                                  level=self._level, checksum=self._checksum, fsync=self._fsync,
                                  threads=self._threads, caller_crc=True,
                                  meta=base_meta(self.spec, self._user_meta))

    def _add(self, *, obs=None, actions=None, rewards=None, mask=None, legal=None, values=None,
             logprobs=None, truncated=False, states=None, final_obs=None):
        episode = self.episodes
        first = self.layout is None
        if first:
            use_states = states is not None and self.spec is not None
            self._init_layout(None if use_states else obs, mask, legal, values, logprobs,
                              final_obs)
        try:
            ep, st = self.engine.stager.prepare(episode, obs=obs, actions=actions,
                                                rewards=rewards, mask=mask, legal=legal,
                                                values=values, logprobs=logprobs,
                                                truncated=truncated, states=states,
                                                final_obs=final_obs)
            self.engine.put(ep, st, episode)
        except EpisodeError:
            if first:  # a rejected first episode decides nothing about the batch
                self._forget_layout()
            raise

    def _forget_layout(self):
        self.engine.abort()
        self.engine = self.layout = self.mask_dim = None
        self.n_actions, self.obs_dim = self._given_dims


def _final_row(final_obs, i):
    """Row ``i`` of add_steps' ``final_obs`` (None when not given for that environment)."""
    return None if final_obs is None else final_obs[i]
