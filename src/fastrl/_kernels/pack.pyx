# cython: language_level=3
"""Compiled packing kernel: copies checked episodes into contiguous little-endian column buffers.

Twin of ``pack_numpy.py`` (same signature, same bytes, same error report). Called through
``fastrl._batch.packing.pack``, which validated shapes, dtypes and buffer sizes first; the kernel
checks its own contract again at entry anyway (every array's dtype, C order and shape against the
output columns, legal offsets, the row range: O(episodes + steps), never O(values)), so that no
Python-reachable call can read or write out of bounds; a broken contract is the ValueError whose
message ``pack_numpy.contract_problem`` gives, the same on both paths. That is why the loops below
may run with bounds checks off. The only data-dependent branch that could move a write (a legal
action id used as a column index) is range-checked before the write.

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
    int stream  # streaming stores for obs rows (see _STREAM_MIN_BYTES)


cdef inline bint _nonfinite(float v) noexcept nogil:
    # v*0 is 0 for finite v and NaN for NaN/inf; comparisons with NaN are false.
    return not (v * 0.0 == 0.0)


cdef inline bint _store_nonfinite(float *dst, double x) noexcept nogil:
    # Store x as a little-endian float32; true when that float32 is NaN or infinite.
    cdef float v = <float> x
    store_f32_le(dst, v)
    return _nonfinite(v)


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
                convert_f64_f32_le(orow, obs64 + t * D, D, o.stream)
            else:
                copy_f32_le(orow, obs32 + t * D, D, o.stream)
            if _row_bad(obs32, obs64, obs_f64, t, D):
                for j in range(D):
                    v = <float> obs64[t * D + j] if obs_f64 else obs32[t * D + j]
                    if _nonfinite(v):
                        err_step[0] = t
                        err_col[0] = j
                        return ERR_OBS
        if _store_nonfinite(o.rewards + r, rew[t]):
            err_step[0] = t
            return ERR_REWARD
        if val != NULL and _store_nonfinite(o.values + r, val[t]):
            err_step[0] = t
            return ERR_VALUE
        if lp != NULL and _store_nonfinite(o.logprobs + r, lp[t]):
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


# Obs outputs from this size up get streaming stores: far larger than the caches, they would only
# evict what is in them. Smaller ones (the writer's 8 MiB staging buffers, which its CRC and file
# write read back at once) get plain stores and stay in cache for those readers.
cdef Py_ssize_t _STREAM_MIN_BYTES = 32 << 20

cdef int _DT_F32 = cnp.NPY_FLOAT32
cdef int _DT_F64 = cnp.NPY_FLOAT64
cdef int _DT_I32 = cnp.NPY_INT32
cdef int _DT_I64 = cnp.NPY_INT64
cdef int _DT_U8 = cnp.NPY_UINT8


cdef bint _arr_ok(object x, int dt, int ndim, int64_t d0, int64_t d1, bint writeable):
    """``x`` is a C-contiguous ndarray of type ``dt`` (an equivalent type number in native byte
    order: what ``arr.dtype == np.dtype(...)`` says) with ``ndim`` dimensions, extents ``d0`` /
    ``d1`` where those are >= 0 (writeable when asked)."""
    cdef cnp.ndarray a
    if not isinstance(x, cnp.ndarray):
        return False
    a = <cnp.ndarray> x
    if not cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(a), dt) or not cnp.PyArray_ISNOTSWAPPED(a) \
            or cnp.PyArray_NDIM(a) != ndim or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        return False
    if writeable and not cnp.PyArray_ISWRITEABLE(a):
        return False
    if d0 >= 0 and cnp.PyArray_DIM(a, 0) != d0:
        return False
    if ndim == 2 and d1 >= 0 and cnp.PyArray_DIM(a, 1) != d1:
        return False
    return True


cdef inline bint _is_int(object v):
    if type(v) is int:
        return True
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


cdef object _contract_error(tuple args):
    from fastrl._kernels.pack_numpy import contract_problem
    problem = contract_problem(*args)
    return ValueError("pack_episodes: " + (problem or "arguments inconsistent with the output "
                                                      "columns"))


def pack_episodes(object episodes, object obs, object actions, object rewards, object masks,
                  object dones, object truncated, object values, object logprobs, object row0,
                  object n_actions, object nthreads):
    """Fill rows ``row0 ..`` of the output columns from ``episodes`` (see ``pack_numpy``).

    Returns ``(episode, code, step, col)`` of the first bad value, ``episode == -1`` when none.
    ValueError when the arguments break the contract (``pack_numpy.contract_problem``).
    """
    cdef tuple args = (episodes, obs, actions, rewards, masks, dones, truncated, values,
                       logprobs, row0, n_actions, nthreads)
    # -- the contract, checked at C speed; the message comes from the NumPy twin's checker
    if not (_arr_ok(obs, _DT_F32, 2, -1, -1, True) and _arr_ok(actions, _DT_I32, 1, -1, -1, True)
            and _arr_ok(rewards, _DT_F32, 1, -1, -1, True)
            and _arr_ok(masks, _DT_U8, 2, -1, -1, True) and _arr_ok(dones, _DT_U8, 1, -1, -1, True)
            and (truncated is None or _arr_ok(truncated, _DT_U8, 1, -1, -1, True))
            and (values is None or _arr_ok(values, _DT_F32, 1, -1, -1, True))
            and (logprobs is None or _arr_ok(logprobs, _DT_F32, 1, -1, -1, True))
            and isinstance(episodes, list) and _is_int(row0) and 0 <= row0 < (1 << 62)
            and _is_int(nthreads) and -(1 << 31) <= nthreads < (1 << 31) and _is_int(n_actions)
            and 1 <= n_actions <= masks.shape[1]):
        raise _contract_error(args)
    cdef int64_t rows = min(a.shape[0] for a in (obs, actions, rewards, masks, dones, truncated,
                                                 values, logprobs) if a is not None)
    cdef int64_t D = obs.shape[1], M = masks.shape[1], T, t, n_ids
    cdef const int64_t *offp
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
    cdef int nth = nthreads
    cdef Out o
    for e in range(n):
        ep = episodes[e]
        try:
            length, ob, act, rew, mask = ep.length, ep.obs, ep.actions, ep.rewards, ep.mask
            ids, off, val, lp, tr = (ep.legal_ids, ep.legal_offsets, ep.values, ep.logprobs,
                                     ep.truncated)
        except AttributeError:
            raise _contract_error(args) from None
        if not (_is_int(length) and 1 <= length <= rows - r):
            raise _contract_error(args)
        T = length
        if not ((ob is None or _arr_ok(ob, _DT_F32, 2, T, D, False)
                 or _arr_ok(ob, _DT_F64, 2, T, D, False))
                and _arr_ok(act, _DT_I64, 1, T, -1, False)
                and _arr_ok(rew, _DT_F64, 1, T, -1, False)
                and (val is None or (values is not None and _arr_ok(val, _DT_F64, 1, T, -1, False)))
                and (lp is None or (logprobs is not None
                                    and _arr_ok(lp, _DT_F64, 1, T, -1, False)))
                and isinstance(tr, (bool, int, np.bool_, np.integer))):
            raise _contract_error(args)
        if mask is not None:
            if not (_arr_ok(mask, _DT_U8, 2, T, -1, False)
                    and cnp.PyArray_DIM(<cnp.ndarray> mask, 1) <= M):
                raise _contract_error(args)
        else:
            if not (_arr_ok(ids, _DT_I64, 1, -1, -1, False)
                    and _arr_ok(off, _DT_I64, 1, T + 1, -1, False)):
                raise _contract_error(args)
            offp = <const int64_t *> cnp.PyArray_DATA(<cnp.ndarray> off)
            n_ids = cnp.PyArray_DIM(<cnp.ndarray> ids, 0)
            if offp[0] != 0 or offp[T] != n_ids:
                raise _contract_error(args)
            for t in range(T):
                if offp[t + 1] < offp[t]:
                    raise _contract_error(args)
        ptrs[e, P_OBS] = _addr(ob)
        ptrs[e, P_ACT] = _addr(act)
        ptrs[e, P_REW] = _addr(rew)
        ptrs[e, P_MASK] = _addr(mask)
        ptrs[e, P_IDS] = _addr(ids) if mask is None else 0
        ptrs[e, P_OFF] = _addr(off) if mask is None else 0
        ptrs[e, P_VAL] = _addr(val)
        ptrs[e, P_LP] = _addr(lp)
        info[e, 0] = T
        info[e, 1] = r
        info[e, 2] = 1 if (ob is not None and ob.dtype == np.float64) else 0
        info[e, 3] = cnp.PyArray_DIM(<cnp.ndarray> mask, 1) if mask is not None else 0
        trunc[e] = 1 if tr else 0
        r += T
    if r > rows:  # row0 past the end, with no episode to check it against
        raise _contract_error(args)
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
    o.stream = 1 if obs.nbytes >= _STREAM_MIN_BYTES else 0
    if nth <= 1 or n <= 1:
        with nogil:
            for e in range(n):
                status[e, 0] = _pack_one(&ptrs[e, 0], info[e, 0], info[e, 1], <int> info[e, 2],
                                         info[e, 3], trunc[e], &o, &status[e, 1], &status[e, 2])
                if status[e, 0] != ERR_OK:
                    break
            store_fence()
    else:
        for e in prange(n, nogil=True, schedule="dynamic", num_threads=nth):
            status[e, 0] = _pack_one(&ptrs[e, 0], info[e, 0], info[e, 1], <int> info[e, 2],
                                     info[e, 3], trunc[e], &o, &status[e, 1], &status[e, 2])
            store_fence()
    for e in range(n):
        if status[e, 0] != ERR_OK:
            return e, int(status[e, 0]), int(status[e, 1]), int(status[e, 2])
    return -1, ERR_OK, 0, 0
