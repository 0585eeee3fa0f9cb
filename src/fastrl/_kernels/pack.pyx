# cython: language_level=3
"""Compiled packing kernel: copies checked episodes into contiguous little-endian column buffers.

Twin of ``_pack_numpy.py`` (same signature, same bytes, same error report). Called only through
``fastrl._packing.pack``, which validated shapes, dtypes and buffer sizes first; that is why the
loops below may run with bounds checks off. The only data-dependent branch that could move a write
(a legal action id used as a column index) is range-checked before the write.

Two phases: with the GIL, gather each episode's raw pointers and output row into flat tables;
then, without it, fill every episode (in parallel with OpenMP) and record a per-episode status.
"""

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint8_t, intptr_t
from libc.string cimport memcpy, memset

from fastrl._kernels._byteorder cimport (any_nonfinite_f32, store_fence, convert_f64_f32_le,
                                 copy_f32_le, store_f32_le, store_i32_le)

cnp.import_array()

# Error codes: keep in sync with fastrl._format (a test compares ERROR_CODES with it).
cdef enum:
    ERR_OK = 0
    ERR_OBS = 1
    ERR_REWARD = 2
    ERR_VALUE = 3
    ERR_LOGPROB = 4
    ERR_MASK_VALUE = 5
    ERR_LEGAL_ID = 6
    ERR_ACTION_RANGE = 7
    ERR_ILLEGAL = 8

ERROR_CODES = (ERR_OK, ERR_OBS, ERR_REWARD, ERR_VALUE, ERR_LOGPROB, ERR_MASK_VALUE, ERR_LEGAL_ID,
               ERR_ACTION_RANGE, ERR_ILLEGAL)

# Columns of the per-episode pointer table.
cdef enum:
    P_OBS = 0
    P_ACT = 1
    P_REW = 2
    P_MASK = 3
    P_IDS = 4
    P_OFF = 5
    P_VAL = 6
    P_LP = 7
    NPTR = 8


cdef struct Out:
    float *obs
    int32_t *actions
    float *rewards
    uint8_t *masks
    uint8_t *dones
    uint8_t *truncated
    float *values
    float *logprobs
    int64_t obs_dim
    int64_t mask_dim
    int64_t n_actions


cdef inline bint _nonfinite(float v) noexcept nogil:
    # v*0 is 0 for finite v and NaN for NaN/inf; comparisons with NaN are false.
    return not (v * 0.0 == 0.0)


cdef bint _row_bad(const float *obs32, const double *obs64, int obs_f64, int64_t t,
                   int64_t D) noexcept nogil:
    # Checks the input row (in cache after the copy), not the output written with streaming
    # stores. A float64 value is bad when its float32 conversion is not finite.
    cdef int64_t j
    if not obs_f64:
        return any_nonfinite_f32(obs32 + t * D, D)
    for j in range(D):
        if _nonfinite(<float> obs64[t * D + j] if obs_f64 else obs32[t * D + j]):
            return True
    return False


cdef int _pack_one(const intptr_t *p, int64_t T, int64_t row0, int obs_f64, int64_t mask_w,
                   int trunc, const Out *o, int64_t *err_step, int64_t *err_col) noexcept nogil:
    cdef int64_t t, j, r, D = o.obs_dim, M = o.mask_dim, A = o.n_actions, a, k, lo, hi, idv
    cdef float v
    cdef const float *obs32 = <const float *> p[P_OBS]
    cdef const double *obs64 = <const double *> p[P_OBS]
    cdef const int64_t *act = <const int64_t *> p[P_ACT]
    cdef const double *rew = <const double *> p[P_REW]
    cdef const uint8_t *mask = <const uint8_t *> p[P_MASK]
    cdef const int64_t *ids = <const int64_t *> p[P_IDS]
    cdef const int64_t *off = <const int64_t *> p[P_OFF]
    cdef const double *val = <const double *> p[P_VAL]
    cdef const double *lp = <const double *> p[P_LP]
    cdef float *orow
    cdef uint8_t *mrow
    cdef uint8_t acc

    for t in range(T):
        r = row0 + t
        # observations (skipped when the caller already encoded them in place)
        if p[P_OBS] != 0:
            orow = o.obs + r * D
            if obs_f64:
                convert_f64_f32_le(orow, obs64 + t * D, D)
            else:
                copy_f32_le(orow, obs32 + t * D, D)
            if _row_bad(obs32, obs64, obs_f64, t, D):
                for j in range(D):
                    v = <float> obs64[t * D + j] if obs_f64 else obs32[t * D + j]
                    if _nonfinite(v):
                        err_step[0] = t
                        err_col[0] = j
                        return ERR_OBS
        v = <float> rew[t]
        store_f32_le(o.rewards + r, v)
        if _nonfinite(v):
            err_step[0] = t
            return ERR_REWARD
        if val != NULL:
            v = <float> val[t]
            store_f32_le(o.values + r, v)
            if _nonfinite(v):
                err_step[0] = t
                return ERR_VALUE
        if lp != NULL:
            v = <float> lp[t]
            store_f32_le(o.logprobs + r, v)
            if _nonfinite(v):
                err_step[0] = t
                return ERR_LOGPROB
        # legal-action mask, padded with zero columns up to maskDim
        mrow = o.masks + r * M
        if mask != NULL:
            memcpy(mrow, mask + t * mask_w, <size_t> mask_w)
            if M > mask_w:
                memset(mrow + mask_w, 0, <size_t> (M - mask_w))
            acc = 0
            for j in range(mask_w):
                acc |= mrow[j]
            if acc > 1:
                for j in range(mask_w):
                    if mrow[j] > 1:
                        err_step[0] = t
                        err_col[0] = j
                        return ERR_MASK_VALUE
        else:
            memset(mrow, 0, <size_t> M)
            lo = off[t]
            hi = off[t + 1]
            for k in range(lo, hi):
                idv = ids[k]
                if idv < 0 or idv >= A:  # checked before it is used as a column index
                    err_step[0] = t
                    err_col[0] = k - lo
                    return ERR_LEGAL_ID
                mrow[idv] = 1
        a = act[t]
        if a < 0 or a >= A:
            store_i32_le(o.actions + r, 0)
            err_step[0] = t
            return ERR_ACTION_RANGE
        store_i32_le(o.actions + r, <int32_t> a)
        if mrow[a] == 0:
            err_step[0] = t
            return ERR_ILLEGAL
        o.dones[r] = 1 if t == T - 1 else 0
        if o.truncated != NULL:
            o.truncated[r] = 1 if (trunc and t == T - 1) else 0
    return ERR_OK


cdef intptr_t _addr(object arr):
    if arr is None:
        return 0
    return <intptr_t> cnp.PyArray_DATA(<cnp.ndarray> arr)


def pack_episodes(list episodes, cnp.ndarray obs, cnp.ndarray actions, cnp.ndarray rewards,
                  cnp.ndarray masks, cnp.ndarray dones, object truncated, object values,
                  object logprobs, int64_t row0, int64_t n_actions, int nthreads):
    """Fill rows ``row0 ..`` of the output columns from ``episodes`` (see ``_pack_numpy``).

    Returns ``(episode, code, step, col)`` of the first bad value, ``episode == -1`` when none.
    """
    cdef Py_ssize_t n = len(episodes), e
    cdef cnp.ndarray ptrs_arr = np.zeros((max(n, 1), NPTR), dtype=np.intp)
    cdef cnp.ndarray info_arr = np.zeros((max(n, 1), 4), dtype=np.int64)  # T, row0, f64, mask_w
    cdef cnp.ndarray trunc_arr = np.zeros(max(n, 1), dtype=np.int32)
    cdef cnp.ndarray status_arr = np.zeros((max(n, 1), 3), dtype=np.int64)  # code, step, col
    cdef intptr_t[:, ::1] ptrs = ptrs_arr
    cdef int64_t[:, ::1] info = info_arr
    cdef int32_t[::1] trunc = trunc_arr
    cdef int64_t[:, ::1] status = status_arr
    cdef int64_t r = row0
    cdef Out o
    for e in range(n):
        ep = episodes[e]
        ptrs[e, P_OBS] = _addr(ep.obs)
        ptrs[e, P_ACT] = _addr(ep.actions)
        ptrs[e, P_REW] = _addr(ep.rewards)
        ptrs[e, P_MASK] = _addr(ep.mask)
        ptrs[e, P_IDS] = _addr(ep.legal_ids)
        ptrs[e, P_OFF] = _addr(ep.legal_offsets)
        ptrs[e, P_VAL] = _addr(ep.values)
        ptrs[e, P_LP] = _addr(ep.logprobs)
        info[e, 0] = ep.length
        info[e, 1] = r
        info[e, 2] = 1 if (ep.obs is not None and ep.obs.dtype == np.float64) else 0
        info[e, 3] = ep.mask.shape[1] if ep.mask is not None else 0
        trunc[e] = 1 if ep.truncated else 0
        r += ep.length
    o.obs = <float *> _addr(obs)
    o.actions = <int32_t *> _addr(actions)
    o.rewards = <float *> _addr(rewards)
    o.masks = <uint8_t *> _addr(masks)
    o.dones = <uint8_t *> _addr(dones)
    o.truncated = <uint8_t *> _addr(truncated)
    o.values = <float *> _addr(values)
    o.logprobs = <float *> _addr(logprobs)
    o.obs_dim = obs.shape[1]
    o.mask_dim = masks.shape[1]
    o.n_actions = n_actions
    if nthreads <= 1 or n <= 1:
        with nogil:
            for e in range(n):
                status[e, 0] = _pack_one(&ptrs[e, 0], info[e, 0], info[e, 1], <int> info[e, 2],
                                         info[e, 3], trunc[e], &o, &status[e, 1], &status[e, 2])
                if status[e, 0] != ERR_OK:
                    break
            store_fence()
    else:
        for e in prange(n, nogil=True, schedule="dynamic", num_threads=nthreads):
            status[e, 0] = _pack_one(&ptrs[e, 0], info[e, 0], info[e, 1], <int> info[e, 2],
                                     info[e, 3], trunc[e], &o, &status[e, 1], &status[e, 2])
            store_fence()
    for e in range(n):
        if status[e, 0] != ERR_OK:
            return e, int(status[e, 0]), int(status[e, 1]), int(status[e, 2])
    return -1, ERR_OK, 0, 0
