"""Pure-NumPy twin of ``pack.pyx``: same signature, same bytes, same error report.

Called only through :func:`fastrl._batch.packing.pack`, which has already validated every shape, dtype
and buffer size. Returns ``(episode, code, step, col)`` of the first bad value found (``episode``
is -1 when all episodes were packed); the check order is the one listed in :mod:`.codes`.
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


def pack_episodes(episodes, obs, actions, rewards, masks, dones, truncated, values, logprobs,
                  row0, n_actions, nthreads):
    """Fill rows ``row0 ..`` of the output columns from ``episodes``, in order. ``nthreads`` is
    accepted for signature parity and ignored (NumPy releases the GIL per operation only)."""
    r = row0
    with np.errstate(all="ignore"):
        for e, ep in enumerate(episodes):
            code, step, col = _pack_one(ep, r, obs, actions, rewards, masks, dones, truncated,
                                        values, logprobs, n_actions)
            if code != C.PACK_OK:
                return e, code, step, col
            r += ep.length
    return -1, C.PACK_OK, 0, 0
