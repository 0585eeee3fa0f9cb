"""Validation at the Python boundary: turns user episode data into a normalized, checked
:class:`Episode` that both packing paths (Cython and NumPy) accept, and formats the step-level
errors both paths report, so messages are identical whichever path runs.

Everything a kernel needs to stay in bounds (shapes, dtypes, contiguity, lengths) is checked here;
the kernels only check data values (finiteness, id ranges, legality), which never affects where
they write.
"""

from __future__ import annotations

import itertools

import numpy as np

from .._kernels import codes as C
from ..errors import EpisodeError

_FLOAT_OBS = (np.dtype(np.float32), np.dtype(np.float64))


class Episode:
    """One checked episode, ready for a packing kernel.

    obs: float32 or float64, C-contiguous, shape (T, obsDim), or None when the caller has already
        written the observations into the output buffer (e.g. encoded from raw states);
    actions: int64 (T,); rewards: float64 (T,);
    mask: uint8 (T, numActions) or None; legal_ids: int64 flat, legal_offsets: int64 (T+1,)
        (exactly one of mask / legal is set);
    values, logprobs: float64 (T,) or None; truncated: bool;
    final_obs: float32 (obsDim,), finite, the observation after the last step, or None.
    """

    __slots__ = ("length", "obs", "actions", "rewards", "mask", "legal_ids", "legal_offsets",
                 "values", "logprobs", "truncated", "final_obs")

    def __init__(self, length, obs, actions, rewards, mask, legal_ids, legal_offsets, values,
                 logprobs, truncated, final_obs=None):
        self.length = length
        self.obs = obs
        self.actions = actions
        self.rewards = rewards
        self.mask = mask
        self.legal_ids = legal_ids
        self.legal_offsets = legal_offsets
        self.values = values
        self.logprobs = logprobs
        self.truncated = truncated
        self.final_obs = final_obs


def _err(reason, episode, step=None):
    return EpisodeError(reason, episode=episode, step=step)


_INT64 = np.dtype(np.int64)
_FLOAT64 = np.dtype(np.float64)


def _vector(x, name, length, episode, *, kind):
    """Coerce a per-step column to a contiguous 1-D array of length T (float64 or int64)."""
    if type(x) is np.ndarray and x.ndim == 1 and x.shape[0] == length:
        # the common case, without the generic checks below (same result)
        k = x.dtype.kind
        if kind == "int" and (k == "i" or (k == "u" and x.dtype.itemsize < 8)):
            return x if x.dtype == _INT64 and x.flags.c_contiguous else x.astype(_INT64)
        if kind == "float" and k in "fiu" and x.dtype.itemsize <= 8:
            return x if x.dtype == _FLOAT64 and x.flags.c_contiguous else x.astype(_FLOAT64)
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged nested lists and the like
        raise _err(f"{name} cannot be read as an array ({exc})", episode) from None
    if arr.ndim != 1:
        raise _err(f"{name} must be 1-D with one value per step, got shape {arr.shape}", episode)
    if arr.shape[0] != length:
        raise _err(f"{name} has {arr.shape[0]} values for {length} steps", episode)
    if arr.size == 0 and not (kind == "int" and arr.dtype == np.bool_):
        return np.zeros(0, _INT64 if kind == "int" else _FLOAT64)  # e.g. no legal ids at all
    if kind == "int":
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) \
                    and np.all(arr == np.floor(arr)):
                pass  # integral floats (e.g. 3.0 from JSON) are accepted
            else:
                raise _err(f"{name} must be integers, got dtype {arr.dtype}", episode)
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size \
                and int(arr.max()) > np.iinfo(np.int64).max:
            bad = int(np.argmax(arr > np.iinfo(np.int64).max))
            raise _err(f"{name} value {int(arr[bad])} does not fit int32", episode, bad)
        if arr.dtype.kind == "f":
            big = np.abs(arr.astype(np.float64)) > 2.0 ** 62
            if big.any():
                bad = int(np.argmax(big))
                raise _err(f"{name} value {arr[bad].item()!r} does not fit int32", episode, bad)
        return np.ascontiguousarray(arr, dtype=np.int64)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == np.bool_) and arr.size:
        raise _err(f"{name} must be numbers, got dtype {arr.dtype}", episode)
    return np.ascontiguousarray(arr, dtype=np.float64)


def _obs(obs, length, obs_dim, episode):
    try:
        arr = np.asarray(obs)
    except Exception as exc:
        raise _err(f"obs cannot be read as an array (ragged rows?): {exc}", episode) from None
    if arr.dtype == object:
        raise _err("obs rows have different lengths or non-numeric values", episode)
    if arr.ndim != 2:
        raise _err(f"obs must have shape (steps, obsDim), got shape {arr.shape}", episode)
    if arr.shape[0] != length:
        raise _err(f"obs has {arr.shape[0]} rows for {length} steps", episode)
    if arr.shape[1] != obs_dim:
        raise _err(f"obs rows have {arr.shape[1]} values, expected obsDim={obs_dim}", episode)
    if arr.dtype not in _FLOAT_OBS:
        if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number)
                                        or arr.dtype == np.bool_):
            raise _err(f"obs must be numbers, got dtype {arr.dtype}", episode)
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr)


def _dense_mask(mask, length, n_actions, episode):
    try:
        arr = np.asarray(mask)
    except Exception as exc:
        raise _err(f"mask cannot be read as an array: {exc}", episode) from None
    if arr.dtype == object or arr.ndim != 2:
        raise _err(f"mask must have shape (steps, numActions), got shape {arr.shape}", episode)
    if arr.shape[0] != length:
        raise _err(f"mask has {arr.shape[0]} rows for {length} steps", episode)
    if arr.shape[1] != n_actions:
        raise _err(f"mask rows have {arr.shape[1]} entries, expected numActions={n_actions}",
                   episode)
    if arr.dtype == np.bool_ or arr.dtype == np.uint8:
        return np.ascontiguousarray(arr).view(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise _err(f"mask must be 0/1 or booleans, got dtype {arr.dtype}", episode)
    ok = (arr == 0) | (arr == 1)
    if not ok.all():
        step, col = np.unravel_index(int(np.argmin(ok)), ok.shape)
        raise _err(f"mask[{int(col)}] is {arr[step, col].item()!r}, not 0 or 1", episode,
                   int(step))
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _legal(legal, length, episode):
    """Ragged legal-id lists -> (flat int64 ids, int64 offsets of length T+1)."""
    if isinstance(legal, tuple) and len(legal) == 2 and isinstance(legal[1], np.ndarray):
        ids, offsets = legal  # already flat: (ids, offsets)
        ids = _vector(ids, "legal ids", len(ids), episode, kind="int")
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if offsets.shape != (length + 1,) or offsets[0] != 0 or offsets[-1] != ids.shape[0] \
                or (offsets[1:] < offsets[:-1]).any():
            raise _err("legal offsets must be non-decreasing, start at 0 and end at len(ids)",
                       episode)
        return ids, offsets
    try:
        n = len(legal)
    except TypeError:
        raise _err("legal must be a list with one list of legal action ids per step", episode) \
            from None
    if n != length:
        raise _err(f"legal has {n} entries for {length} steps", episode)
    fast = _legal_fast(legal, length)
    if fast is not None:
        return fast
    return _legal_slow(legal, length, episode)


def _legal_fast(legal, length):
    """Flatten well-formed legal lists in a few bulk calls; None when anything looks off (the
    slow path then finds and names the bad step)."""
    try:
        sizes = np.fromiter(map(len, legal), dtype=np.int64, count=length)
        if length and isinstance(legal[0], np.ndarray):
            ids = np.concatenate(legal) if length else np.zeros(0, np.int64)
        else:
            ids = np.array(list(itertools.chain.from_iterable(legal)))
    except (TypeError, ValueError):
        return None
    if ids.ndim != 1 or ids.shape[0] != int(sizes.sum()):
        return None
    if ids.size and (ids.dtype.kind not in "iu" or (ids.dtype.kind == "u" and ids.dtype.itemsize == 8)):
        return None
    offsets = np.zeros(length + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return np.ascontiguousarray(ids, dtype=np.int64), offsets


def _legal_slow(legal, length, episode):
    lengths = np.empty(length + 1, dtype=np.int64)
    lengths[0] = 0
    parts = []
    for t, ids in enumerate(legal):
        try:
            a = np.asarray(ids)
        except Exception:
            raise _err("legal must be a list of action ids", episode, t) from None
        if a.ndim != 1:
            raise _err(f"legal must be a flat list of action ids, got shape {a.shape}", episode, t)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            a64 = a.astype(np.float64) if a.dtype.kind == "f" else a
            if a.dtype.kind == "f" and np.all(np.isfinite(a64)) and np.all(a64 == np.floor(a64)) \
                    and np.all(np.abs(a64) < 2.0 ** 62):
                pass
            else:
                raise _err(f"legal action ids must be integers, got {a.dtype}", episode, t)
        if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
            raise _err(f"legal action id {int(a.max())} is out of range", episode, t)
        lengths[t + 1] = a.shape[0]
        parts.append(a)
    offsets = np.cumsum(lengths)
    ids = np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, np.int64)
    return np.ascontiguousarray(ids), offsets


def normalize_episode(episode_index, *, obs, actions, rewards, mask=None, legal=None, values=None,
                      logprobs=None, truncated=False, obs_dim, n_actions, obs_preencoded=False,
                      expect_values=None, expect_logprobs=None, final_obs=None,
                      expect_final_obs=None) -> Episode:
    """Check one episode's shapes and dtypes and return a normalized :class:`Episode`.

    Neither ``mask`` nor ``legal``: every action is legal (an all-ones mask of ``n_actions``).
    ``expect_values`` / ``expect_logprobs`` / ``expect_final_obs``: True/False when the batch
    already has (or lacks) that column, so every episode must agree; None to accept either.
    Raises :class:`EpisodeError` naming ``episode_index`` (and the step where one is at fault).
    """
    try:
        length = len(actions)
    except TypeError:
        raise _err("actions must be a sequence with one action per step", episode_index) from None
    if length == 0:
        raise _err("episode has no steps", episode_index)
    act = _vector(actions, "actions", length, episode_index, kind="int")
    rew = _vector(rewards, "rewards", length, episode_index, kind="float")
    if obs_preencoded:
        ob = None
    else:
        if obs is None:
            raise _err("obs is missing (give obs, or raw states with an ObsSpec)", episode_index)
        ob = _obs(obs, length, obs_dim, episode_index)
    if mask is not None and legal is not None:
        raise _err("give one of mask (dense 0/1 per action) or legal (ids per step), not both",
                   episode_index)
    m = ids = offsets = None
    if mask is not None:
        m = _dense_mask(mask, length, n_actions, episode_index)
    elif legal is not None:
        ids, offsets = _legal(legal, length, episode_index)
    else:  # no action masks: every action is legal
        m = np.ones((length, n_actions), dtype=np.uint8)
    for name, col, expect in (("values", values, expect_values),
                              ("logprobs", logprobs, expect_logprobs),
                              ("final_obs", final_obs, expect_final_obs)):
        if expect is True and col is None:
            raise _err(f"{name} missing, but earlier episodes of this batch have {name}",
                       episode_index)
        if expect is False and col is not None:
            raise _err(f"{name} given, but earlier episodes of this batch have none",
                       episode_index)
    val = None if values is None else _vector(values, "values", length, episode_index,
                                              kind="float")
    lp = None if logprobs is None else _vector(logprobs, "logprobs", length, episode_index,
                                               kind="float")
    fin = None if final_obs is None else _final_obs(final_obs, obs_dim, length, episode_index)
    return Episode(length, ob, act, rew, m, ids, offsets, val, lp, bool(truncated), fin)


def _final_obs(final_obs, obs_dim, length, episode):
    """The observation after the last step: (obsDim,) numbers, finite as float32."""
    try:
        arr = np.asarray(final_obs)
    except Exception as exc:
        raise _err(f"final_obs cannot be read as an array ({exc})", episode) from None
    if arr.dtype == object or np.iscomplexobj(arr) or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise _err(f"final_obs must be numbers, got dtype {arr.dtype}", episode)
    if arr.shape != (obs_dim,):
        raise _err(f"final_obs must have shape ({obs_dim},), got {arr.shape}", episode)
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype("<f4")
    bad = ~np.isfinite(out)
    if bad.any():
        col = int(np.argmax(bad))
        raise _err(f"final_obs[{col}] is {_fmt_float(out[col])} (after conversion to float32)",
                   episode, length - 1)
    return out


def step_error(ep: Episode, episode_index: int, code: int, step: int, col: int,
               n_actions: int) -> EpisodeError:
    """Build the error a packing kernel reported as (code, step, col), reading the offending value
    from the episode so both paths produce the same message."""
    with np.errstate(all="ignore"):
        reason = _reason(ep, code, step, col, n_actions)
    return EpisodeError(reason, episode=episode_index, step=step)


def _reason(ep: Episode, code: int, step: int, col: int, n_actions: int) -> str:
    if code == C.PACK_OBS:
        v = np.float32(ep.obs[step, col]) if ep.obs.dtype == np.float64 else ep.obs[step, col]
        reason = f"obs[{col}] is {_fmt_float(v)} (after conversion to float32)"
    elif code == C.PACK_REWARD:
        reason = f"reward is {_fmt_float(np.float32(ep.rewards[step]))}"
    elif code == C.PACK_VALUE:
        reason = f"value is {_fmt_float(np.float32(ep.values[step]))}"
    elif code == C.PACK_LOGPROB:
        reason = f"logprob is {_fmt_float(np.float32(ep.logprobs[step]))}"
    elif code == C.PACK_MASK_VALUE:
        reason = f"mask[{col}] is {int(ep.mask[step, col])}, not 0 or 1"
    elif code == C.PACK_LEGAL_ID:
        v = int(ep.legal_ids[ep.legal_offsets[step] + col])
        reason = f"legal action id {v} is outside [0, {n_actions})"
    elif code == C.PACK_ACTION_RANGE:
        reason = f"action {int(ep.actions[step])} is outside [0, {n_actions})"
    elif code == C.PACK_ILLEGAL:
        reason = f"action {int(ep.actions[step])} is not legal under the step's mask"
    else:  # pragma: no cover - a kernel returned a code this module does not know
        reason = f"unknown kernel error code {code}"
    return reason


def _fmt_float(v) -> str:
    v = float(v)
    if v != v:
        return "NaN"
    return "+inf" if v > 0 else "-inf"
