# cython: language_level=3
"""Compiled observation-encoding kernel: twin of ``encode_numpy.py`` (same functions, same
signatures, same bytes, same status tuple). Called only through :class:`fastrl.spec.ObsSpec`.

``encode_batch`` runs in two phases, like ``pack.pyx``: with the GIL, each field's plan and input
array become one C struct (raw pointers, sizes, dtype code); then, without it, every row is encoded
(rows in parallel with OpenMP for big batches) and each row records the first bad value it met.
ObsSpec validated every array size first, and the kernel checks its own contract again at entry
(``encode_numpy.contract_problem``: O(fields + cells + rows), the same check and message on both
paths), so no Python-reachable call can read or write out of bounds; bounds checks are off, so
the one data-dependent write address, the position of a one-hot 1, is computed only after its id
passed the range check.

``gather_states`` (and ``gather_nested`` / ``gather_ragged`` for list columns) are a fast path for
the one slow part of encoding parsed JSON: turning nested Python lists into typed arrays. They take
only plain lists of exact shape holding Python ints (and floats where allowed) and decline with
``None`` otherwise, leaving every other input and every error message to the general NumPy path in
``spec.py``; the NumPy twin always declines.
"""

import numpy as np
cimport numpy as cnp
from cpython.object cimport PyObject
from cython.parallel cimport prange
from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t, intptr_t)
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memset

cnp.import_array()

cdef extern from *:
    """
    #include <math.h>
    /* NumPy rounds x*s before adding o; a fused multiply-add would round once and could differ
       in the last bit. Storing the product in a volatile stops the compiler from contracting. */
    static inline double fastrl_affine(double x, double s, double o) {
        volatile double p = x * s;
        return p + o;
    }
    static inline int fastrl_finite(double x) { return isfinite(x); }
    """
    double fastrl_affine(double x, double s, double o) noexcept nogil
    int fastrl_finite(double x) noexcept nogil

cdef extern from "Python.h":
    bint PyList_CheckExact(PyObject *o)
    bint PyLong_Check_p "PyLong_Check"(PyObject *o)
    bint PyFloat_Check_p "PyFloat_Check"(PyObject *o)
    double PyFloat_AS_DOUBLE_p "PyFloat_AS_DOUBLE"(PyObject *o)
    long long PyLong_AsLongLongAndOverflow_p "PyLong_AsLongLongAndOverflow"(PyObject *o,
                                                                            int *overflow)
    PyObject *PyList_GET_ITEM_p "PyList_GET_ITEM"(PyObject *o, Py_ssize_t i)
    Py_ssize_t PyList_GET_SIZE_p "PyList_GET_SIZE"(PyObject *o)
    PyObject **PySequence_Fast_ITEMS(PyObject *o)

# Keep in sync with fastrl._kernels.codes (the tests compare the tuples below).
cdef enum:
    KIND_IDS = 1
    KIND_MULTI = 2
    KIND_BOX = 3
    KIND_BINARY = 4
    LAYOUT_CELL = 0
    LAYOUT_PLANE = 1
    ERR_OK = 0
    ERR_RANGE = 1
    ERR_NOT_INT = 2
    ERR_NONFINITE = 3
    ERR_OVERFLOW = 4
    ERR_BINARY = 5

KINDS = (KIND_IDS, KIND_MULTI, KIND_BOX, KIND_BINARY)
LAYOUTS = (LAYOUT_CELL, LAYOUT_PLANE)
ERROR_CODES = (ERR_OK, ERR_RANGE, ERR_NOT_INT, ERR_NONFINITE, ERR_OVERFLOW, ERR_BINARY)

# Input dtype codes (the order of codes.INPUT_DTYPES).
cdef enum:
    T_I8, T_I16, T_I32, T_I64, T_U8, T_U16, T_U32, T_U64, T_F32, T_F64

INPUT_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8,
                                           np.uint16, np.uint32, np.uint64, np.float32,
                                           np.float64))

from fastrl._kernels.encode_numpy import contract_problem as _contract_problem

# type numbers of INPUT_DTYPES, in order (T_I8 ... T_F64)
cdef int[10] _TYPENUMS = [cnp.NPY_INT8, cnp.NPY_INT16, cnp.NPY_INT32, cnp.NPY_INT64,
                          cnp.NPY_UINT8, cnp.NPY_UINT16, cnp.NPY_UINT32, cnp.NPY_UINT64,
                          cnp.NPY_FLOAT32, cnp.NPY_FLOAT64]
cdef int64_t _BIG = (<int64_t> 1) << 62
cdef int64_t _I64_MAX = 0x7FFFFFFFFFFFFFFF


cdef int _dtype_code(cnp.ndarray a) noexcept:
    """Index of the array's dtype in INPUT_DTYPES (an equivalent type number in native byte
    order, what ``==`` says), or -1."""
    cdef int i, t = cnp.PyArray_TYPE(a)
    if not cnp.PyArray_ISNOTSWAPPED(a):
        return -1
    for i in range(10):
        if cnp.PyArray_EquivTypenums(t, _TYPENUMS[i]):
            return i
    return -1


cdef inline bint _is_int(object v):
    if type(v) is int:
        return True
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


cdef bint _vec_ok(object x, int typenum, int64_t length):
    """None, or a C-contiguous 1-D array of ``typenum`` (native order) of ``length`` (< 0:
    any)."""
    cdef cnp.ndarray a
    if x is None:
        return True
    if not isinstance(x, cnp.ndarray):
        return False
    a = <cnp.ndarray> x
    return (cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(a), typenum)
            and cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_NDIM(a) == 1
            and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and (length < 0 or cnp.PyArray_DIM(a, 0) == length))


cdef inline int64_t _len(object x) noexcept:
    return cnp.PyArray_DIM(<cnp.ndarray> x, 0)


cdef inline const int64_t *_i64p(object x) noexcept:
    return <const int64_t *> cnp.PyArray_DATA(<cnp.ndarray> x)


cdef bint _contract_ok(object out, object plans, object inputs, object nrows_o,
                       object nthreads) except -1:
    """The checks of ``encode_numpy.contract_problem``, at C speed: True when they all pass
    (the message of a failure comes from that function)."""
    cdef cnp.ndarray o, data
    cdef Py_ssize_t i, nf
    cdef int64_t nrows, dim, kind, off, size, cells, n, start, layout, c, rows_max, j
    cdef const int64_t *p
    cdef const int64_t *q
    cdef const int64_t *w
    if not isinstance(out, cnp.ndarray):
        return False
    o = <cnp.ndarray> out
    if not (cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(o), cnp.NPY_FLOAT32)
            and cnp.PyArray_ISNOTSWAPPED(o) and cnp.PyArray_NDIM(o) == 2
            and cnp.PyArray_IS_C_CONTIGUOUS(o) and cnp.PyArray_ISWRITEABLE(o)):
        return False
    if not _is_int(nrows_o) or nrows_o != cnp.PyArray_DIM(o, 0):
        return False
    if not _is_int(nthreads) or not -(1 << 31) <= nthreads < (1 << 31):
        return False
    if type(plans) is not list and not isinstance(plans, list):
        return False
    if type(inputs) is not list and not isinstance(inputs, list):
        return False
    nf = len(plans)
    if len(inputs) != nf:
        return False
    nrows = nrows_o
    dim = cnp.PyArray_DIM(o, 1)
    for i in range(nf):
        plan = plans[i]
        inp = inputs[i]
        if not isinstance(plan, tuple) or len(plan) != 14:
            return False
        if not isinstance(inp, tuple) or len(inp) != 2:
            return False
        for j in range(7):
            v = plan[j]
            if not _is_int(v) or not -_BIG < v < _BIG:
                return False
        kind, off, size, cells, n, start, layout = plan[0], plan[1], plan[2], plan[3], \
            plan[4], plan[5], plan[6]
        cell_n, cell_start, cell_off, scale, shift, low, high = plan[7], plan[8], plan[9], \
            plan[10], plan[11], plan[12], plan[13]
        data_o, offsets = inp
        if kind not in (KIND_IDS, KIND_MULTI, KIND_BOX, KIND_BINARY) \
                or layout not in (LAYOUT_CELL, LAYOUT_PLANE):
            return False
        if off < 0 or size < 0 or cells < 0 or n < 0 or off + size > dim:
            return False
        if not (_vec_ok(cell_n, cnp.NPY_INT64, -1) and _vec_ok(cell_start, cnp.NPY_INT64, -1)
                and _vec_ok(cell_off, cnp.NPY_INT64, -1) and _vec_ok(scale, cnp.NPY_FLOAT64, -1)
                and _vec_ok(shift, cnp.NPY_FLOAT64, -1) and _vec_ok(low, cnp.NPY_FLOAT64, -1)
                and _vec_ok(high, cnp.NPY_FLOAT64, -1)):
            return False
        if not isinstance(data_o, cnp.ndarray):
            return False
        data = <cnp.ndarray> data_o
        if not cnp.PyArray_IS_C_CONTIGUOUS(data) or _dtype_code(data) < 0:
            return False
        if kind == KIND_MULTI:
            if size != n or offsets is None or not _vec_ok(offsets, cnp.NPY_INT64, nrows + 1):
                return False
            p = _i64p(offsets)
            if p[0] < 0 or p[nrows] > cnp.PyArray_SIZE(data):
                return False
            for j in range(nrows):
                if p[j + 1] < p[j]:
                    return False
            continue
        if cells != 0 and nrows > _I64_MAX // cells:
            return False
        if cnp.PyArray_SIZE(data) != nrows * cells:
            return False
        if kind == KIND_BOX or kind == KIND_BINARY:
            if size != cells or (scale is None) != (shift is None):
                return False
            for arr in (scale, shift, low, high):
                if arr is not None and _len(arr) != 1 and _len(arr) != cells:
                    return False
            continue
        if layout == LAYOUT_PLANE:
            if cell_n is not None or cell_off is not None:
                return False
            if cell_start is not None and _len(cell_start) != cells:
                return False
            if n < 1 or (cells != 0 and n > _I64_MAX // cells) or size != n * cells:
                return False
            if cell_start is not None:
                p = _i64p(cell_start)
                for c in range(cells):
                    if p[c] <= -_BIG or p[c] >= _BIG:
                        return False
            continue
        if cell_n is None and cell_start is None and cell_off is None:
            if n < 1 or (cells != 0 and n > _I64_MAX // cells) or size != n * cells:
                return False
            continue
        if cell_n is None or cell_start is None or cell_off is None:
            return False
        if _len(cell_n) != cells or _len(cell_start) != cells or _len(cell_off) != cells:
            return False
        p, q, w = _i64p(cell_n), _i64p(cell_start), _i64p(cell_off)
        for c in range(cells):
            if p[c] < 0 or w[c] < 0 or p[c] >= _BIG or q[c] <= -_BIG or q[c] >= _BIG \
                    or w[c] > size - p[c]:
                return False
    return True

ctypedef fused num_t:
    int8_t
    int16_t
    int32_t
    int64_t
    uint8_t
    uint16_t
    uint32_t
    uint64_t
    float
    double


cdef struct Field:
    int kind
    int layout
    int dtype
    int affine
    int has_low
    int has_high
    int64_t off
    int64_t size
    int64_t cells
    int64_t n
    int64_t start
    const int64_t *cell_n      # per-cell n and output offset (cell layout), or NULL
    const int64_t *cell_start  # per-cell start, or NULL
    const int64_t *cell_off
    const double *scale        # box parameters: 1 value (stride 0) or one per cell (stride 1)
    const double *shift
    const double *low
    const double *high
    int64_t scale_s, shift_s, low_s, high_s
    const char *data
    const int64_t *offsets     # multihot CSR offsets (nrows + 1)


cdef inline int _index(num_t v, int64_t lo, int64_t n, int64_t *k) noexcept nogil:
    """``k = v - lo`` when ``v`` is an integer in ``[lo, lo + n)``; else an error code."""
    cdef double d
    cdef int64_t i
    if num_t is float or num_t is double:
        d = v
        if not (d >= lo and d < lo + n):  # bounds < 2**53 are exact doubles; NaN fails here
            return ERR_RANGE
        i = <int64_t> d
        if <double> i != d:
            return ERR_NOT_INT
    elif num_t is uint64_t:
        if v > <uint64_t> 0x7FFFFFFFFFFFFFFF:
            return ERR_RANGE
        i = <int64_t> v
        if i < lo or i >= lo + n:
            return ERR_RANGE
    else:
        i = <int64_t> v
        if i < lo or i >= lo + n:
            return ERR_RANGE
    k[0] = i - lo
    return ERR_OK


cdef int _ids(const num_t *x, const Field *f, float *o, int64_t *elem) noexcept nogil:
    cdef int64_t c, k, C = f.cells, n = f.n, lo = f.start
    cdef int e
    memset(o, 0, <size_t> f.size * sizeof(float))
    if f.layout == LAYOUT_PLANE:
        for c in range(C):
            if f.cell_start != NULL:
                lo = f.cell_start[c]
            e = _index(x[c], lo, n, &k)
            if e:
                elem[0] = c
                return e
            o[k * C + c] = 1.0
    elif f.cell_n == NULL:
        for c in range(C):
            e = _index(x[c], lo, n, &k)
            if e:
                elem[0] = c
                return e
            o[c * n + k] = 1.0
    else:
        for c in range(C):
            e = _index(x[c], f.cell_start[c], f.cell_n[c], &k)
            if e:
                elem[0] = c
                return e
            o[f.cell_off[c] + k] = 1.0
    return ERR_OK


cdef int _multi(const num_t *x, int64_t lo, int64_t hi, const Field *f, float *o,
                int64_t *elem) noexcept nogil:
    cdef int64_t j, k
    cdef int e
    memset(o, 0, <size_t> f.size * sizeof(float))
    for j in range(lo, hi):
        e = _index(x[j], 0, f.n, &k)
        if e:
            elem[0] = j - lo
            return e
        o[k] = 1.0
    return ERR_OK


cdef int _box(const num_t *x, const Field *f, float *o, int64_t *elem) noexcept nogil:
    cdef int64_t c
    cdef double d
    cdef float v
    cdef bint transform = f.affine or f.has_low or f.has_high
    for c in range(f.cells):
        if num_t is float or num_t is double:
            d = x[c]
            if not fastrl_finite(d):
                elem[0] = c
                return ERR_NONFINITE
        else:
            if not transform:
                o[c] = <float> x[c]  # one rounding, like NumPy's integer -> float32 cast
                continue
            d = <double> x[c]
        if f.affine:
            d = fastrl_affine(d, f.scale[c * f.scale_s], f.shift[c * f.shift_s])
        if f.has_low and d < f.low[c * f.low_s]:
            d = f.low[c * f.low_s]
        if f.has_high and d > f.high[c * f.high_s]:
            d = f.high[c * f.high_s]
        v = <float> d
        if not fastrl_finite(v):
            elem[0] = c
            return ERR_OVERFLOW
        o[c] = v
    return ERR_OK


cdef int _binary(const num_t *x, const Field *f, float *o, int64_t *elem) noexcept nogil:
    cdef int64_t c
    for c in range(f.cells):
        if x[c] == 1:
            o[c] = 1.0
        elif x[c] == 0:
            o[c] = 0.0
        else:
            elem[0] = c
            return ERR_BINARY
    return ERR_OK


cdef int _field_t(const num_t *x, const Field *f, int64_t r, float *o,
                  int64_t *elem) noexcept nogil:
    """One row of one field, for one input dtype."""
    if f.kind == KIND_MULTI:
        return _multi(x, f.offsets[r], f.offsets[r + 1], f, o, elem)
    x += r * f.cells
    if f.kind == KIND_IDS:
        return _ids(x, f, o, elem)
    if f.kind == KIND_BOX:
        return _box(x, f, o, elem)
    return _binary(x, f, o, elem)


cdef int _field(const Field *f, int64_t r, float *o, int64_t *elem) noexcept nogil:
    """Dispatch on the input dtype."""
    cdef int t = f.dtype
    if t == T_I8: return _field_t(<const int8_t *> f.data, f, r, o, elem)
    if t == T_I16: return _field_t(<const int16_t *> f.data, f, r, o, elem)
    if t == T_I32: return _field_t(<const int32_t *> f.data, f, r, o, elem)
    if t == T_I64: return _field_t(<const int64_t *> f.data, f, r, o, elem)
    if t == T_U8: return _field_t(<const uint8_t *> f.data, f, r, o, elem)
    if t == T_U16: return _field_t(<const uint16_t *> f.data, f, r, o, elem)
    if t == T_U32: return _field_t(<const uint32_t *> f.data, f, r, o, elem)
    if t == T_U64: return _field_t(<const uint64_t *> f.data, f, r, o, elem)
    if t == T_F32: return _field_t(<const float *> f.data, f, r, o, elem)
    return _field_t(<const double *> f.data, f, r, o, elem)


cdef int _row(const Field *tab, Py_ssize_t nf, int64_t r, float *orow, int64_t *st) noexcept nogil:
    """Encode row ``r``; on the first bad value store (field, elem) in ``st[1:3]``."""
    cdef Py_ssize_t i
    cdef int e
    for i in range(nf):
        e = _field(&tab[i], r, orow + tab[i].off, &st[2])
        if e:
            st[1] = i
            return e
    return ERR_OK


cdef const void *_ptr(object arr):
    if arr is None:
        return NULL
    return <const void *> cnp.PyArray_DATA(<cnp.ndarray> arr)


def encode_batch(object out, object plans, object inputs, object nrows, object nthreads):
    """Encode ``nrows`` rows into ``out`` (see ``encode_numpy.encode_batch``).

    Returns ``(row, field, code, elem)`` of the first bad value, ``row == -1`` when none.
    ValueError when the arguments break the contract (``encode_numpy.contract_problem``, the
    same check and message on both paths).
    """
    if not _contract_ok(out, plans, inputs, nrows, nthreads):
        problem = _contract_problem(out, plans, inputs, nrows, nthreads)
        raise ValueError(f"encode_batch: {problem or 'arguments inconsistent with the output'}")
    cdef Py_ssize_t nf = len(plans), i
    cdef int64_t r, n_rows = nrows, dim = out.shape[1]
    cdef int nth = nthreads
    cdef Field *tab
    cdef Field *f
    cdef float *obase = <float *> cnp.PyArray_DATA(<cnp.ndarray> out)
    cdef cnp.ndarray status_arr
    cdef int64_t[:, ::1] status
    if n_rows == 0 or nf == 0:
        return -1, -1, ERR_OK, 0
    tab = <Field *> malloc(nf * sizeof(Field))
    if tab == NULL:
        raise MemoryError()
    try:
        for i in range(nf):
            (kind, off, size, cells, n, start, layout, cell_n, cell_start, cell_off, scale,
             shift, low, high) = plans[i]
            data, offsets = inputs[i]
            f = &tab[i]
            f.kind, f.layout, f.off, f.size, f.cells = kind, layout, off, size, cells
            f.n, f.start = n, start
            f.dtype = _dtype_code(<cnp.ndarray> data)
            f.data = <const char *> _ptr(data)
            f.offsets = <const int64_t *> _ptr(offsets) if kind == KIND_MULTI else NULL
            f.cell_n = <const int64_t *> _ptr(cell_n)
            f.cell_start = <const int64_t *> _ptr(cell_start)
            f.cell_off = <const int64_t *> _ptr(cell_off)
            f.affine = scale is not None
            f.has_low = low is not None
            f.has_high = high is not None
            f.scale = <const double *> _ptr(scale)
            f.shift = <const double *> _ptr(shift)
            f.low = <const double *> _ptr(low)
            f.high = <const double *> _ptr(high)
            f.scale_s = 1 if scale is not None and scale.shape[0] > 1 else 0
            f.shift_s = 1 if shift is not None and shift.shape[0] > 1 else 0
            f.low_s = 1 if low is not None and low.shape[0] > 1 else 0
            f.high_s = 1 if high is not None and high.shape[0] > 1 else 0
        # per row: code, field, elem
        status_arr = np.zeros((n_rows, 3), dtype=np.int64)
        status = status_arr
        if nth <= 1:
            with nogil:
                for r in range(n_rows):
                    status[r, 0] = _row(tab, nf, r, obase + r * dim, &status[r, 0])
                    if status[r, 0] != ERR_OK:
                        break
        else:
            for r in prange(n_rows, nogil=True, schedule="static", num_threads=nth):
                status[r, 0] = _row(tab, nf, r, obase + r * dim, &status[r, 0])
    finally:
        free(tab)
    for r in range(n_rows):
        if status[r, 0] != ERR_OK:
            return int(r), int(status[r, 1]), int(status[r, 0]), int(status[r, 2])
    return -1, -1, ERR_OK, 0


# --------------------------------------------------------------------------------------------
# Gathering fast path
#
# Parsed JSON holds each id as a Python int inside nested lists; turning them into typed arrays
# is the slow part of encoding from dicts. These walkers read plain lists (exact list type, exact
# shape) of Python ints, and floats where a field takes numbers, without building intermediate
# objects, and decline (return None) on anything else: the general NumPy path in spec.py then
# handles that field, and is the one that reports every structural error. Nothing here runs
# Python code while it holds a borrowed item pointer.
#
# Integer fields are gathered as int8 while every value fits (boards, ids), widened to int64 the
# first time one does not: the kernels read either, and the values are what np.array would give.

cdef enum:
    G_INTS = 0     # nested lists of ints -> int8 / int64
    G_FLOATS = 1   # nested lists of ints and floats -> float64 (int64 when all are ints)
    G_RAGGED = 2   # a list of ints per row -> CSR ids (int64) + offsets

cdef enum:
    MAX_GATHER_NDIM = 32


cdef struct Gather:
    int mode
    bint active
    bint all_int
    bint narrow       # G_INTS: values still in i8
    int ndim
    int64_t shape[MAX_GATHER_NDIM]
    int64_t cells
    int64_t pos       # next value to write
    double *f64       # G_FLOATS output (NumPy-owned)
    int8_t *i8        # G_INTS narrow output (NumPy-owned)
    int64_t *i64      # G_INTS wide output, G_RAGGED ids (malloc'd)
    int64_t cap       # capacity of i64, in values
    int64_t *offs     # G_RAGGED offsets (NumPy-owned)
    # Ints already read, by object address: the same few int objects (small ints are shared)
    # fill a board, and a pointer compare is cheaper than PyLong_AsLongLongAndOverflow. Valid
    # while no Python code runs, so it is cleared before each value (see _take).
    PyObject *seen[16]
    long long seen_v[16]


cdef bint _grow(Gather *g, int64_t need) noexcept:
    cdef int64_t cap = max(2 * g.cap, need, 16)
    cdef int64_t *grown = <int64_t *> realloc(g.i64, <size_t> cap * sizeof(int64_t))
    if grown == NULL:
        return False
    g.i64, g.cap = grown, cap
    return True


cdef bint _put_int(Gather *g, long long v) noexcept:
    cdef int64_t j
    if g.narrow:
        if -128 <= v <= 127:
            g.i8[g.pos] = <int8_t> v
            g.pos += 1
            return True
        # widen: everything so far moves to an int64 buffer sized for the whole field
        g.i64 = <int64_t *> malloc(<size_t> max(g.cap, 1) * sizeof(int64_t))
        if g.i64 == NULL:
            return False
        for j in range(g.pos):
            g.i64[j] = g.i8[j]
        g.narrow = False
    g.i64[g.pos] = v
    g.pos += 1
    return True


cdef inline bint _int_of(PyObject *leaf, Gather *g, long long *v) noexcept:
    """The value of a Python int leaf; False when it is not one that the fast path takes."""
    cdef size_t h = (<size_t> leaf >> 5) & 15
    cdef int overflow = 0
    if g.seen[h] == leaf:
        v[0] = g.seen_v[h]
        return True
    if not PyLong_Check_p(leaf):
        return False
    v[0] = PyLong_AsLongLongAndOverflow_p(leaf, &overflow)
    if overflow:
        return False
    if g.mode == G_FLOATS and (v[0] > 9007199254740992 or v[0] < -9007199254740992):
        return False  # beyond 2**53 NumPy keeps int64 and rounds once: let the general path
    g.seen[h] = leaf
    g.seen_v[h] = v[0]
    return True


cdef bint _walk(PyObject *node, Gather *g, int depth) noexcept:
    """Copy one nested list of exact shape into ``g``; False = declined."""
    cdef Py_ssize_t i, m
    cdef PyObject **items
    cdef PyObject *leaf
    cdef long long v
    if depth == g.ndim:  # a scalar field: the node is the leaf
        m = 1
        items = &node
    else:
        if not PyList_CheckExact(node):
            return False
        m = PyList_GET_SIZE_p(node)
        if m != g.shape[depth]:
            return False
        items = PySequence_Fast_ITEMS(node)
        if depth + 1 < g.ndim:
            for i in range(m):
                if not _walk(items[i], g, depth + 1):
                    return False
            return True
    for i in range(m):  # the innermost list: its items are leaves
        leaf = items[i]
        if not _int_of(leaf, g, &v):
            if g.mode == G_FLOATS and PyFloat_Check_p(leaf):
                g.f64[g.pos] = PyFloat_AS_DOUBLE_p(leaf)
                g.all_int = False
                g.pos += 1
                continue
            return False
        if g.mode == G_INTS:
            if not _put_int(g, v):
                return False
            continue
        g.f64[g.pos] = <double> v
        g.pos += 1
    return True


cdef bint _append_ids(PyObject *row, Gather *g, Py_ssize_t r) noexcept:
    """Append one plain list of ints to a ragged field; False = declined (or out of memory)."""
    cdef Py_ssize_t j, m
    cdef PyObject **items
    cdef long long v
    if not PyList_CheckExact(row):
        return False
    m = PyList_GET_SIZE_p(row)
    if g.pos + m > g.cap and not _grow(g, g.pos + m):
        return False
    items = PySequence_Fast_ITEMS(row)
    for j in range(m):
        if not _int_of(items[j], g, &v):
            return False
        g.i64[g.pos + j] = v
    g.pos += m
    g.offs[r + 1] = g.pos
    return True


cdef object _start(Gather *g, int mode, tuple shape, Py_ssize_t nrows):
    """Set up ``g``; returns the NumPy array it writes into (None when it cannot start)."""
    cdef int k
    g.mode, g.active, g.all_int, g.narrow = mode, True, True, mode == G_INTS
    g.pos, g.i64, g.cap, g.f64, g.i8, g.offs = 0, NULL, 0, NULL, NULL, NULL
    if mode == G_RAGGED:
        arr = np.empty(nrows + 1, dtype=np.int64)
        g.offs = <int64_t *> cnp.PyArray_DATA(arr)
        g.offs[0] = 0
        g.active = _grow(g, 8 * nrows)
        return arr
    g.ndim = len(shape)
    if g.ndim > MAX_GATHER_NDIM:
        g.active = False
        return None
    g.cells = 1
    for k in range(g.ndim):
        g.shape[k] = shape[k]
        g.cells *= g.shape[k]
    g.cap = nrows * g.cells  # G_INTS: the size of the int64 buffer if the field widens
    arr = np.empty((nrows, g.cells), dtype=np.float64 if mode == G_FLOATS else np.int8)
    if mode == G_FLOATS:
        g.f64 = <double *> cnp.PyArray_DATA(arr)
    else:
        g.i8 = <int8_t *> cnp.PyArray_DATA(arr)
    return arr


cdef bint _take(Gather *g, object value, Py_ssize_t r):
    # ``value`` is held by the caller: no Python code runs while its items are read. Python
    # code may have run since the last value (a path lookup), so forget the addresses seen.
    memset(g.seen, 0, sizeof(g.seen))
    if g.mode == G_RAGGED:
        return _append_ids(<PyObject *> value, g, r)
    return _walk(<PyObject *> value, g, 0)


cdef object _finish(Gather *g, object arr, Py_ssize_t nrows):
    """The field's ``(data, offsets)``, or None when declined."""
    cdef cnp.ndarray out
    if not g.active:
        return None
    if g.mode == G_RAGGED:
        out = np.empty(g.pos, dtype=np.int64)
        if g.pos:
            memcpy(cnp.PyArray_DATA(out), g.i64, <size_t> g.pos * sizeof(int64_t))
        return out, arr
    if g.mode == G_FLOATS:
        return (arr.astype(np.int64) if g.all_int else arr), None  # exact: ints below 2**53
    if g.narrow:
        return arr, None
    out = np.empty((nrows, g.cells), dtype=np.int64)
    if g.pos:
        memcpy(cnp.PyArray_DATA(out), g.i64, <size_t> g.pos * sizeof(int64_t))
    return out, None


cdef object _gather_list(int mode, tuple shape, list values):
    """Every value of ``values`` through one Gather: ``_finish``'s result (None: declined)."""
    cdef Py_ssize_t nrows = len(values), i
    cdef Gather g
    arr = _start(&g, mode, shape, nrows)
    try:
        for i in range(nrows):
            if not g.active or i >= len(values):
                g.active = False
                break
            g.active = _take(&g, values[i], i)
        return _finish(&g, arr, nrows)
    finally:
        free(g.i64)


def gather_nested(list values, tuple shape, bint floats):
    """Plain nested lists of exact ``shape`` -> ``(len(values), cells)`` array, or ``None``.

    Leaves must be Python ints (and, with ``floats``, floats); the values are those ``np.array``
    would give (float64 only when some leaf is a float).
    """
    got = _gather_list(G_FLOATS if floats else G_INTS, shape, values)
    return None if got is None else got[0]


def gather_ragged(list values):
    """A list of plain lists of Python ints -> ``(ids int64, offsets int64)``, or ``None``."""
    return _gather_list(G_RAGGED, (), values)


def gather_states(list states, list specs):
    """One pass over a list of states, gathering every field the fast path can take.

    ``specs`` holds one ``(path, mode, shape)`` per field (mode 0: nested ints, 1: nested
    numbers, 2: a list of ids per row). Returns one item per field: ``(data, offsets)`` as
    :func:`gather_nested` / :func:`gather_ragged` make them, or ``None`` where that field is
    left to the general path. One pass, not one per field, so each state is read while in cache.
    """
    cdef Py_ssize_t nrows = len(states), nf = len(specs), i, fi
    cdef Gather *g = <Gather *> malloc(max(nf, 1) * sizeof(Gather))
    cdef object state, val
    if g == NULL:
        raise MemoryError()
    for fi in range(nf):
        g[fi].i64 = NULL
    arrays = [None] * nf
    paths = [None] * nf
    try:
        for fi in range(nf):
            path, mode, shape = specs[fi]
            paths[fi] = tuple(path)
            arrays[fi] = _start(&g[fi], mode, tuple(shape), nrows)
        for i in range(nrows):
            if i >= len(states):  # the list shrank under us: let the general path decide
                for fi in range(nf):
                    g[fi].active = False
                break
            state = states[i]
            for fi in range(nf):
                if not g[fi].active:
                    continue
                try:
                    val = state
                    for key in <tuple> paths[fi]:
                        val = val[key]
                except Exception:
                    g[fi].active = False
                    continue
                g[fi].active = _take(&g[fi], val, i)
        return [_finish(&g[fi], arrays[fi], nrows) for fi in range(nf)]
    finally:
        for fi in range(nf):
            free(g[fi].i64)
        free(g)
