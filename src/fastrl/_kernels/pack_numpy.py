"""Pure-NumPy twin of ``pack.pyx``: same signature, same bytes, same error report.

Called through :func:`fastrl._batch.packing.pack`, which has already validated every shape, dtype
and buffer size. Returns ``(episode, code, step, col)`` of the first bad value found (``episode``
is -1 when all episodes were packed); the check order is the one listed in :mod:`.codes`.

Both twins also check their own contract at entry (:func:`contract_problem`: the episodes'
arrays against the output buffers, legal offsets, the row range), cheaply (O(episodes + steps),
never O(values)), and raise ``ValueError`` with the same message, so no Python-reachable call
can write or read out of bounds, whoever calls it.
"""

from __future__ import annotations

import numpy as np

from . import codes as C


def _first(bad: np.ndarray):
    """Index of the first True in a 1-D bool array, or None."""
    if bad.size and bad.any():
        return int(np.argmax(bad))
    return None


def _pack_one(ep, r0, obs, actions, rewards, masks, dones, truncated, values, logprobs,
              n_actions):
    T = ep.length
    r1 = r0 + T
    found = []  # (step, code, col)

    if ep.obs is not None:
        o = obs[r0:r1]
        o[...] = ep.obs  # float64 -> float32 rounds to nearest, like the C cast
        rowbad = ~np.isfinite(o)
        s = _first(rowbad.any(axis=1))
        if s is not None:
            found.append((s, C.PACK_OBS, int(np.argmax(rowbad[s]))))
    for code, src, dst in ((C.PACK_REWARD, ep.rewards, rewards), (C.PACK_VALUE, ep.values, values),
                           (C.PACK_LOGPROB, ep.logprobs, logprobs)):
        if src is None:
            continue
        d = dst[r0:r1]
        d[...] = src
        s = _first(~np.isfinite(d))
        if s is not None:
            found.append((s, code, 0))

    m = masks[r0:r1]
    if ep.mask is not None:
        A = ep.mask.shape[1]
        m[:, :A] = ep.mask
        m[:, A:] = 0
        rowbad = ep.mask > 1
        s = _first(rowbad.any(axis=1))
        if s is not None:
            found.append((s, C.PACK_MASK_VALUE, int(np.argmax(rowbad[s]))))
    else:
        m[...] = 0
        ids, off = ep.legal_ids, ep.legal_offsets
        okid = (ids >= 0) & (ids < n_actions)
        k = _first(~okid)
        if k is not None:
            s = int(np.searchsorted(off, k, side="right")) - 1
            found.append((s, C.PACK_LEGAL_ID, k - int(off[s])))
        rows = np.repeat(np.arange(T, dtype=np.int64), np.diff(off))
        m[rows[okid], ids[okid]] = 1

    a = ep.actions
    in_range = (a >= 0) & (a < n_actions)
    s = _first(~in_range)
    if s is not None:
        found.append((s, C.PACK_ACTION_RANGE, 0))
    actions[r0:r1] = np.where(in_range, a, 0)  # out-of-range rows are reported, never stored
    steps = np.arange(T)
    legal = np.zeros(T, dtype=bool)
    legal[in_range] = m[steps[in_range], a[in_range]] != 0
    s = _first(in_range & ~legal)
    if s is not None:
        found.append((s, C.PACK_ILLEGAL, 0))

    d = dones[r0:r1]
    d[...] = 0
    d[-1] = 1
    if truncated is not None:
        tr = truncated[r0:r1]
        tr[...] = 0
        tr[-1] = 1 if ep.truncated else 0
    if found:
        step, code, col = min(found)
        return code, step, col
    return C.PACK_OK, 0, 0


_F32, _F64, _I32, _I64, _U8 = (np.dtype(t) for t in (np.float32, np.float64, np.int32,
                                                        np.int64, np.uint8))
_MISSING = object()


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _out_problem(name, arr, dtype, ndim, optional=False):
    if arr is None:
        return None if optional else f"output column {name} is missing"
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != ndim \
            or not arr.flags.c_contiguous or not arr.flags.writeable:
        return (f"output column {name} must be a writeable C-contiguous {dtype} array with "
                f"{ndim} dimension(s)")
    return None


def _in_problem(where, name, arr, dtypes, shape):
    """``arr`` must be a C-contiguous array of one of ``dtypes`` with ``shape`` (None: any
    extent on that axis)."""
    if not isinstance(arr, np.ndarray) or arr.dtype not in dtypes or not arr.flags.c_contiguous \
            or arr.ndim != len(shape) \
            or any(w is not None and a != w for a, w in zip(arr.shape, shape)):
        want = " or ".join(str(d) for d in dtypes)
        dims = " x ".join("*" if w is None else str(w) for w in shape)
        got = (f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray)
               else type(arr).__name__)
        return f"{where}: {name} must be a C-contiguous {want} array of shape ({dims}), got {got}"
    return None


def contract_problem(episodes, obs, actions, rewards, masks, dones, truncated, values, logprobs,
                     row0, n_actions, nthreads=1) -> str | None:
    """Why these arguments break ``pack_episodes``' contract (None when they keep it): the
    output columns' dtypes and shapes; ``0 <= row0``, ``1 <= n_actions <= maskDim``; each
    episode's length (>= 1) and arrays (dtype, C order, shape against the length, obsDim and
    maskDim; legal offsets from 0 to ``len(legal_ids)``, non-decreasing; values/logprobs only
    when the output has those columns); all rows within the output. Costs O(episodes + steps).
    Both twins raise ``ValueError("pack_episodes: " + problem)``."""
    for name, arr, dtype, ndim, opt in (
            ("obs", obs, _F32, 2, False), ("actions", actions, _I32, 1, False),
            ("rewards", rewards, _F32, 1, False), ("masks", masks, _U8, 2, False),
            ("dones", dones, _U8, 1, False), ("truncated", truncated, _U8, 1, True),
            ("values", values, _F32, 1, True), ("logprobs", logprobs, _F32, 1, True)):
        problem = _out_problem(name, arr, dtype, ndim, opt)
        if problem:
            return problem
    if not isinstance(episodes, list):
        return "episodes must be a list"
    if not _is_int(row0) or not 0 <= row0 < (1 << 62):
        return f"row0 must be an integer in [0, 2**62), got {row0!r}"
    if not _is_int(nthreads) or not -(1 << 31) <= nthreads < (1 << 31):
        return f"nthreads must be an integer, got {nthreads!r}"
    M, D = masks.shape[1], obs.shape[1]
    if not _is_int(n_actions) or not 1 <= n_actions <= M:
        return f"n_actions must be an integer in [1, {M}] (the masks' width), got {n_actions!r}"
    rows = min(a.shape[0] for a in (obs, actions, rewards, masks, dones, truncated, values,
                                    logprobs) if a is not None)
    total = 0
    for e, ep in enumerate(episodes):
        where = f"episode {e}"
        got = [getattr(ep, k, _MISSING) for k in ("length", "obs", "actions", "rewards", "mask",
                                                  "legal_ids", "legal_offsets", "values",
                                                  "logprobs", "truncated")]
        if any(v is _MISSING for v in got):
            return f"{where}: not an Episode (attributes missing)"
        T, ob, act, rew, mask, ids, off, val, lp, trunc = got
        if not _is_int(T) or not 1 <= T <= rows:
            return f"{where}: length must be an integer in [1, {rows}], got {T!r}"
        T = int(T)
        problem = (None if ob is None else _in_problem(where, "obs", ob, (_F32, _F64), (T, D))) \
            or _in_problem(where, "actions", act, (_I64,), (T,)) \
            or _in_problem(where, "rewards", rew, (_F64,), (T,))
        if problem:
            return problem
        if mask is not None:
            problem = _in_problem(where, "mask", mask, (_U8,), (T, None))
            if problem:
                return problem
            if mask.shape[1] > M:
                return f"{where}: mask has {mask.shape[1]} columns, the output masks {M}"
        else:
            problem = _in_problem(where, "legal_ids", ids, (_I64,), (None,)) \
                or _in_problem(where, "legal_offsets", off, (_I64,), (T + 1,))
            if problem:
                return problem
            if off[0] != 0 or off[T] != ids.shape[0] or (T and bool((off[1:] < off[:-1]).any())):
                return (f"{where}: legal_offsets must go from 0 to len(legal_ids) = "
                        f"{ids.shape[0]} without decreasing")
        for name, arr, out in (("values", val, values), ("logprobs", lp, logprobs)):
            if arr is None:
                continue
            if out is None:
                return f"{where}: has {name} but the output has no {name} column"
            problem = _in_problem(where, name, arr, (_F64,), (T,))
            if problem:
                return problem
        if not isinstance(trunc, (bool, int, np.bool_, np.integer)):
            return f"{where}: truncated must be a boolean, got {type(trunc).__name__}"
        total += T
    if row0 + total > rows:
        return (f"rows {row0} .. {row0 + total} do not fit the output columns ({rows} rows)")
    return None


def pack_episodes(episodes, obs, actions, rewards, masks, dones, truncated, values, logprobs,
                  row0, n_actions, nthreads):
    """Fill rows ``row0 ..`` of the output columns from ``episodes``, in order. ``nthreads`` is
    accepted for signature parity and ignored (NumPy releases the GIL per operation only).
    ValueError when the arguments break the contract (:func:`contract_problem`)."""
    problem = contract_problem(episodes, obs, actions, rewards, masks, dones, truncated, values,
                               logprobs, row0, n_actions, nthreads)
    if problem:
        raise ValueError(f"pack_episodes: {problem}")
    r = row0
    with np.errstate(all="ignore"):
        for e, ep in enumerate(episodes):
            code, step, col = _pack_one(ep, r, obs, actions, rewards, masks, dones, truncated,
                                        values, logprobs, n_actions)
            if code != C.PACK_OK:
                return e, code, step, col
            r += ep.length
    return -1, C.PACK_OK, 0, 0
