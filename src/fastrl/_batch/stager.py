"""In-memory column buffers that episodes are checked, encoded and packed into; shared by
``BatchWriter`` (flushes them to files) and ``export`` workers (ship them to the writer)."""

from __future__ import annotations

from array import array

import numpy as np

from .. import _format as F
from .episode import Episode, normalize_episode
from .packing import allocate_columns, pack
from ..errors import EncodeError, EpisodeError


class Layout:
    """What every transition of a batch holds: widths and optional columns."""

    __slots__ = ("obs_dim", "n_actions", "mask_dim", "has_values", "has_logprobs",
                 "has_final_obs")

    def __init__(self, obs_dim: int, n_actions: int, mask_dim: int, has_values: bool,
                 has_logprobs: bool, has_final_obs: bool = False):
        self.obs_dim, self.n_actions, self.mask_dim = int(obs_dim), int(n_actions), int(mask_dim)
        self.has_values, self.has_logprobs = bool(has_values), bool(has_logprobs)
        self.has_final_obs = bool(has_final_obs)

    def width(self, key) -> int | None:
        """The extent a column's format width key names (``"obsDim"``, ``"maskDim"``; None
        for one value per row), as ``_format.ALL_COLUMNS`` gives it."""
        return {"obsDim": self.obs_dim, "maskDim": self.mask_dim, None: None}[key]

    def row_bytes(self) -> int:
        """Bytes per transition across all per-transition columns (truncated included)."""
        return F.row_bytes(self.obs_dim, self.mask_dim) + 1 + 4 * (self.has_values
                                                                    + self.has_logprobs)

    def __repr__(self):
        return "Layout(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state):
        for k, v in zip(self.__slots__, state):
            setattr(self, k, v)


class Stager:
    """Column buffers of ``capacity`` rows (grown for a single longer episode)."""

    def __init__(self, layout: Layout, capacity: int, spec=None, threads: int | None = None):
        self.layout = layout
        self.capacity = max(1, int(capacity))
        self.spec = spec
        self.threads = threads
        self.cols = None
        self.used = 0
        self.lengths = array("q")
        self.final_obs = None  # (episodes, obsDim) float32 rows when the layout has final obs

    def prepare(self, episode_index: int, *, obs=None, actions=None, rewards=None, mask=None,
                legal=None, values=None, logprobs=None, truncated=False,
                states=None, final_obs=None) -> tuple[Episode, object]:
        """Check one episode's shapes (EpisodeError otherwise); return it with its states."""
        lay = self.layout
        use_states = states is not None and self.spec is not None
        if states is not None and self.spec is None:
            raise EpisodeError("raw states given but no ObsSpec to encode them",
                               episode=episode_index)
        ep = normalize_episode(episode_index, obs=None if use_states else obs, actions=actions,
                               rewards=rewards, mask=mask, legal=legal, values=values,
                               logprobs=logprobs, truncated=truncated, obs_dim=lay.obs_dim,
                               n_actions=lay.n_actions, obs_preencoded=use_states,
                               expect_values=lay.has_values, expect_logprobs=lay.has_logprobs,
                               final_obs=final_obs, expect_final_obs=lay.has_final_obs)
        if use_states:
            n = _batch_len(states)
            if n != ep.length:
                raise EpisodeError(f"states has {n} entries for {ep.length} steps",
                                   episode=episode_index)
        return ep, (states if use_states else None)

    def fits(self, length: int) -> bool:
        return self.used == 0 or self.used + length <= self.capacity

    def put(self, ep: Episode, states, episode_index: int) -> None:
        """Encode (if states) and pack one prepared episode; on EpisodeError nothing changes."""
        need = self.used + ep.length
        if self.cols is None or need > len(self.cols["dones"]):
            have = 0 if self.cols is None else len(self.cols["dones"])
            self._grow(max(need, self.capacity if have == 0 else 2 * have))
        r0 = self.used
        if states is not None:
            try:
                self.spec.encode(states, out=self.cols["obs"][r0:r0 + ep.length])
            except EncodeError as exc:
                raise EpisodeError(f"state field {exc.field!r}: {exc.reason}",
                                   episode=episode_index, step=exc.row) from None
        pack([ep], self.cols, r0, self.layout.n_actions, episode_base=episode_index,
             threads=self.threads, trusted=True)
        if ep.final_obs is not None:
            k = len(self.lengths)
            if self.final_obs is None or k == len(self.final_obs):
                grown = np.empty((max(64, 2 * k), self.layout.obs_dim), dtype="<f4")
                if k:
                    grown[:k] = self.final_obs[:k]
                self.final_obs = grown
            self.final_obs[k] = ep.final_obs
        self.used = need
        self.lengths.append(ep.length)

    def _grow(self, rows: int) -> None:
        lay = self.layout
        new = allocate_columns(rows, lay.obs_dim, lay.mask_dim, values=lay.has_values,
                               logprobs=lay.has_logprobs)
        if self.cols is not None and self.used:
            for k, v in self.cols.items():
                new[k][:self.used] = v[:self.used]
        self.cols = new

    def view(self) -> dict:
        """The filled rows: name -> array view (``final_obs``: one row per episode)."""
        if self.cols is None:
            return {}
        out = {k: v[:self.used] for k, v in self.cols.items()}
        if self.layout.has_final_obs:
            out[F.FINAL_OBS[0]] = self.final_obs[:len(self.lengths)]
        return out

    def take(self) -> tuple[dict, list]:
        """(filled rows as a dict of arrays, episode lengths), and empty the stager. The arrays
        are views of the stager's buffer: use them before the next ``put``."""
        out = self.view(), list(self.lengths)
        self.used = 0
        self.lengths = array("q")
        if self.cols is not None and len(self.cols["dones"]) > self.capacity:
            self.cols = None  # a grown buffer for one long episode is not kept
        return out


def _batch_len(states) -> int:
    if isinstance(states, dict):
        if not states:
            return 0
        first = next(iter(states.values()))
        return len(first) if hasattr(first, "__len__") else -1
    return len(states) if hasattr(states, "__len__") else -1
