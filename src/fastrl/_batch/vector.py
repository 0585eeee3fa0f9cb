"""Episodes of N parallel environments collected one step at a time (``BatchWriter.add_steps``).

Each environment's open episode lives in row ``i`` of 2-D/3-D buffers (env, step, ...), so one
step of all N environments is one vectorized assignment per column, and an ended episode is the
contiguous slice ``buffer[i, :T]``, handed to the writer like any ``add_episode`` call (no copy
until the kernel packs it). The buffers hold ``MAX_PAGE`` steps per environment (allocated
once, touched as steps arrive): a longer episode moves its full page out to a list of its own (a
copy of just its rows), so memory stays N x ``MAX_PAGE`` x the bytes of one step plus the rows of
the long episodes themselves, however long one episode runs.
"""

from __future__ import annotations

import numpy as np

from ..errors import EpisodeError

__all__ = ["VectorEpisodes", "MAX_PAGE"]

MAX_PAGE = 256  # steps per environment kept in the shared buffers (then moved to a page list)


def _column(x, name, n, dtype=None):
    try:
        arr = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"add_steps: {name} cannot be read as an array ({exc})") from None
    if arr.ndim == 0 or arr.shape[0] != n:
        raise ValueError(f"add_steps: {name} must have a leading axis of {n} environments, "
                         f"got shape {arr.shape}")
    return arr


class VectorEpisodes:
    """Open episodes of ``n_envs`` environments. ``push`` stores one step of every environment
    and returns the indices of those whose episode ended; ``episode(i, ...)`` gives an ended (or
    open) episode's columns as keyword arguments for ``Stager.prepare``; ``reset(i)`` forgets it.

    Columns are fixed by the first step: obs (float32 or float64, kept as given), actions
    (int64), rewards (float64), masks (uint8, when masks or legal ids are given), values and
    logprobs (float64) when given.
    """

    def __init__(self, n_envs: int, obs_dim: int, n_actions: int):
        self.n = int(n_envs)
        self.obs_dim, self.n_actions = int(obs_dim), int(n_actions)
        self.lengths = np.zeros(self.n, np.int64)
        self.cap = 0
        self.buf = None              # name -> array (n_envs, cap, ...)
        self.flat = None             # the same arrays as (n_envs * cap, ...)
        self.row0 = None             # (n_envs,) int64: env i's first row in self.flat
        self.truncated = np.zeros(self.n, bool)  # the flag of each env's last pushed step
        self.pages = [[] for _ in range(self.n)]  # full pages moved out of long episodes

    @property
    def open_envs(self) -> np.ndarray:
        """Indices of the environments with an episode in progress."""
        return np.flatnonzero(self.lengths + np.array([len(p) for p in self.pages], np.int64))

    def _allocate(self, step: dict) -> None:
        self.cap = MAX_PAGE  # np.empty: pages are touched only as steps arrive
        self.buf = {k: np.empty((self.n, self.cap) + v.shape[1:], v.dtype) for k, v in step.items()}
        # the same buffers with (env, step) flattened: one index array per scatter
        self.flat = {k: v.reshape((self.n * self.cap,) + v.shape[2:]) for k, v in self.buf.items()}
        self.row0 = np.arange(self.n, dtype=np.int64) * self.cap  # env i's first flat row

    def step_columns(self, obs, actions, rewards, mask, legal, values, logprobs) -> dict:
        """One step of every environment as checked arrays with a leading axis of n_envs."""
        n = self.n
        step = {}
        if obs is not None:
            o = _column(obs, "obs", n)
            if o.dtype not in (np.float32, np.float64):
                if np.iscomplexobj(o) or not (np.issubdtype(o.dtype, np.number)
                                              or o.dtype == np.bool_):
                    raise ValueError(f"add_steps: obs must be numbers, got dtype {o.dtype}")
                o = o.astype(np.float64)
            if o.shape != (n, self.obs_dim):
                raise ValueError(f"add_steps: obs must have shape ({n}, {self.obs_dim}), "
                                 f"got {o.shape}")
            step["obs"] = o
        a = _column(actions, "actions", n)
        if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer)
                               or (a.dtype.kind == "f" and np.all(a == np.floor(a)))):
            raise ValueError(f"add_steps: actions must be {n} integers, got shape {a.shape} "
                             f"dtype {a.dtype}")
        step["actions"] = a.astype(np.int64, copy=False)
        r = _column(rewards, "rewards", n)
        if r.ndim != 1 or not (np.issubdtype(r.dtype, np.number) or r.dtype == np.bool_) \
                or np.iscomplexobj(r):
            raise ValueError(f"add_steps: rewards must be {n} numbers, got shape {r.shape}")
        step["rewards"] = r.astype(np.float64, copy=False)
        if mask is not None and legal is not None:
            raise ValueError("add_steps: give mask or legal, not both")
        if mask is not None:
            m = _column(mask, "mask", n)
            if m.shape != (n, self.n_actions):
                raise ValueError(f"add_steps: mask must have shape ({n}, {self.n_actions}), "
                                 f"got {m.shape}")
            step["mask"] = m
        elif legal is not None:
            if len(legal) != n:
                raise ValueError(f"add_steps: legal must hold {n} lists of action ids")
            m = np.zeros((n, self.n_actions), np.uint8)
            for i, ids in enumerate(legal):
                ids = np.asarray(ids)
                if ids.size and (ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)):
                    raise ValueError(f"add_steps: legal[{i}] must be a list of action ids")
                bad = (ids < 0) | (ids >= self.n_actions)
                if bad.any():
                    raise ValueError(f"add_steps: legal[{i}] holds action id "
                                     f"{int(ids[np.argmax(bad)])}, outside [0, {self.n_actions})")
                m[i, ids] = 1
            step["mask"] = m
        for name, col in (("values", values), ("logprobs", logprobs)):
            if col is not None:
                v = _column(col, name, n)
                if v.ndim != 1:
                    raise ValueError(f"add_steps: {name} must be {n} numbers")
                step[name] = v.astype(np.float64, copy=False)
        return step

    def push(self, step: dict, terminated, truncated) -> np.ndarray:
        """Store one step of every environment; return the envs whose episode ends with it."""
        term = _column(terminated, "terminated", self.n).astype(bool).reshape(self.n)
        trunc = _column(truncated, "truncated", self.n).astype(bool).reshape(self.n)
        if self.buf is None:
            self._allocate(step)
        elif set(step) != set(self.buf):
            raise ValueError(f"add_steps: this step gives {sorted(step)}, earlier steps gave "
                             f"{sorted(self.buf)}; every step must give the same columns")
        if int(self.lengths.max()) >= self.cap:
            for i in np.flatnonzero(self.lengths >= self.cap):  # long episodes: page out
                self.pages[i].append({k: v[i].copy() for k, v in self.buf.items()})
                self.lengths[i] = 0
        rows = self.row0 + self.lengths
        for k, v in step.items():
            self.flat[k][rows] = v
        self.lengths += 1
        self.truncated = trunc & ~term
        return np.flatnonzero(term | trunc)

    def episode(self, i: int) -> dict:
        """Keyword arguments of env ``i``'s episode so far, for ``Stager.prepare`` (views)."""
        T = int(self.lengths[i])
        if T == 0 and not self.pages[i]:
            raise EpisodeError(f"environment {i} has no open episode")
        if self.pages[i]:
            kw = {k: np.concatenate([p[k] for p in self.pages[i]] + [v[i, :T]])
                  for k, v in self.buf.items()}
        else:
            kw = {k: v[i, :T] for k, v in self.buf.items()}
        kw["truncated"] = bool(self.truncated[i])
        return kw

    def reset(self, i: int) -> None:
        self.lengths[i] = 0
        self.pages[i] = []
        self.truncated[i] = False
