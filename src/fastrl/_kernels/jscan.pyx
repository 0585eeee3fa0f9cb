# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Episode JSON -> columns without a Python object per number (``fastrl export``'s fast path).

``scan_episode(data, plan)`` reads one episode (an object with ``steps`` or a bare list of steps,
contract §2) straight into typed buffers and returns the keyword arguments of
``Stager.prepare``: ``actions`` int64, ``rewards`` float64, ``mask`` uint8 (T, W) or ``legal``
(ids int64, offsets int64), ``values`` / ``logprobs`` float64, ``truncated``, and ``obs`` float64
(T, D) or ``states`` (a dict of columns for ``ObsSpec.encode``).

It accepts a strict subset of what the orjson/stdlib path accepts and returns ``None`` for
anything else (escapes in the keys it reads, bytes that are not strict UTF-8, duplicate keys,
integers of more than 18 digits, non-finite numbers, a number where an integer is expected,
shapes that differ from the spec's, keys present on some steps only, done before the last step,
...): the caller then runs the orjson path on that episode, so errors are always that path's. On
what it accepts, the columns equal those the orjson path builds (same values; numbers parsed
exactly as Python parses them).

plan: None (steps' ``obs`` are read) or a :class:`ScanPlan`, the ObsSpec's fields
``(name, kind, shape, path)`` whose values are read from each ``state`` (kind 0: integers, one
per cell; 1: numbers, one per cell; 2: a list of integer ids), found by their paths of object
keys and array indices.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcmp, memcpy, memset
from cpython.ref cimport PyObject
from cpython.exc cimport PyErr_Occurred, PyErr_Clear
from libc.stdint cimport int64_t, uint8_t
from libc.math cimport isfinite

import numpy as np

cdef extern from "Python.h":
    double PyOS_string_to_double(const char *s, char **endptr, PyObject *overflow_exception)


cdef enum:
    MAX_DEPTH = 256
    MAX_FIELDS = 63
    NUM_INT = 1
    NUM_FLOAT = 2
    K_ACTION = 1
    K_REWARD = 2
    K_MASK = 4
    K_LEGAL = 8
    K_VALUE = 16
    K_LOGPROB = 32
    K_DONE = 64
    K_TRUNC = 128
    K_STATE = 256
    K_OBS = 512

# -- growable buffers ------------------------------------------------------------------------

cdef struct Buf:
    char *data
    Py_ssize_t n      # bytes used
    Py_ssize_t cap

cdef int buf_reserve(Buf *b, Py_ssize_t extra) noexcept:
    cdef Py_ssize_t need = b.n + extra, cap
    cdef char *p
    if need <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 256
    while cap < need:
        cap *= 2
    p = <char *>realloc(b.data, cap)
    if p == NULL:
        return -1
    b.data = p
    b.cap = cap
    return 0

cdef inline int push_i64(Buf *b, int64_t v) noexcept:
    if b.n + 8 > b.cap and buf_reserve(b, 8) < 0:
        return -1
    (<int64_t *>(b.data + b.n))[0] = v
    b.n += 8
    return 0

cdef inline int push_f64(Buf *b, double v) noexcept:
    if b.n + 8 > b.cap and buf_reserve(b, 8) < 0:
        return -1
    (<double *>(b.data + b.n))[0] = v
    b.n += 8
    return 0

cdef inline int push_u8(Buf *b, uint8_t v) noexcept:
    if b.n + 1 > b.cap and buf_reserve(b, 1) < 0:
        return -1
    (<uint8_t *>(b.data + b.n))[0] = v
    b.n += 1
    return 0

cdef object buf_array(Buf *b, object dtype, tuple shape):
    arr = np.empty(shape, dtype=dtype)
    cdef Py_ssize_t nbytes = arr.nbytes
    cdef unsigned char[::1] view
    if nbytes != b.n:
        return None
    if nbytes:
        view = arr.reshape(-1).view(np.uint8)
        memcpy(&view[0], b.data, nbytes)
    return arr

# -- the tokenizer -----------------------------------------------------------------------------

cdef struct Cur:
    const unsigned char *p
    const unsigned char *end

cdef inline void ws(Cur *c) noexcept:
    cdef unsigned char ch
    while c.p < c.end:
        ch = c.p[0]
        if ch == 32 or ch == 10 or ch == 13 or ch == 9:
            c.p += 1
        else:
            return

cdef inline int expect(Cur *c, unsigned char ch) noexcept:
    ws(c)
    if c.p < c.end and c.p[0] == ch:
        c.p += 1
        return 0
    return -1

cdef inline int is_hex(unsigned char ch) noexcept:
    return (48 <= ch <= 57) or (65 <= ch <= 70) or (97 <= ch <= 102)


cdef inline int is_cont(unsigned char ch) noexcept:
    return 0x80 <= ch <= 0xBF


cdef int read_string(Cur *c, const unsigned char **s, Py_ssize_t *n, int escapes) noexcept:
    """A JSON string: its raw bytes between the quotes in ``s``/``n``. Non-ASCII bytes must be
    strict UTF-8 (what Python's decoder accepts); backslash escapes only when ``escapes`` (keys
    the scanner compares are taken only as written, never spelled with escapes)."""
    ws(c)
    if c.p >= c.end or c.p[0] != 34:
        return -1
    c.p += 1
    s[0] = c.p
    cdef const unsigned char *p = c.p
    cdef const unsigned char *end = c.end
    cdef unsigned char ch, b1
    cdef int k
    while p < end:
        ch = p[0]
        if ch == 34:
            n[0] = p - s[0]
            c.p = p + 1
            return 0
        if ch < 32:
            return -1
        if ch < 128:
            if ch == 92:
                if not escapes or end - p < 2:
                    return -1
                ch = p[1]
                if ch == 117:  # \uXXXX
                    if end - p < 6:
                        return -1
                    for k in range(2, 6):
                        if not is_hex(p[k]):
                            return -1
                    p += 6
                    continue
                if ch == 34 or ch == 92 or ch == 47 or ch == 98 or ch == 102 or ch == 110 \
                        or ch == 114 or ch == 116:
                    p += 2
                    continue
                return -1
            p += 1
            continue
        # strict UTF-8 (Unicode table 3-7): no overlongs, surrogates or code points > U+10FFFF
        if 0xC2 <= ch <= 0xDF:
            if end - p < 2 or not is_cont(p[1]):
                return -1
            p += 2
        elif 0xE0 <= ch <= 0xEF:
            if end - p < 3 or not is_cont(p[2]):
                return -1
            b1 = p[1]
            if ch == 0xE0:
                if not (0xA0 <= b1 <= 0xBF):
                    return -1
            elif ch == 0xED:
                if not (0x80 <= b1 <= 0x9F):
                    return -1
            elif not is_cont(b1):
                return -1
            p += 3
        elif 0xF0 <= ch <= 0xF4:
            if end - p < 4 or not is_cont(p[2]) or not is_cont(p[3]):
                return -1
            b1 = p[1]
            if ch == 0xF0:
                if not (0x90 <= b1 <= 0xBF):
                    return -1
            elif ch == 0xF4:
                if not (0x80 <= b1 <= 0x8F):
                    return -1
            elif not is_cont(b1):
                return -1
            p += 4
        else:
            return -1
    return -1

# kinds of number token

cdef double POW10[23]
cdef int _i
for _i in range(23):
    POW10[_i] = 10.0 ** _i

cdef inline int read_number(Cur *c, int64_t *ival, double *dval) noexcept:
    """A JSON number: NUM_INT (ival, at most 18 digits) or NUM_FLOAT (dval, finite); -1 else.
    Floats: exact (Clinger's fast path: significand at most 2**53, |10-exponent| <= 22, one
    correctly rounded IEEE operation), else Python's own correctly rounded conversion."""
    ws(c)
    cdef const unsigned char *start = c.p
    cdef const unsigned char *p = c.p
    cdef const unsigned char *end = c.end
    cdef int neg = 0, digits = 0, is_float = 0, sig = 0, frac = 0, eneg = 0, ex = 0, edig = 0
    cdef int64_t v = 0
    cdef unsigned long long m = 0
    # the common case first: one digit followed by ',' ']' or '}' (board cells, flags, ids)
    if end - p >= 2 and 48 <= p[0] <= 57 and (p[1] == 44 or p[1] == 93 or p[1] == 125):
        ival[0] = p[0] - 48
        c.p = p + 1
        return NUM_INT
    if p < end and p[0] == 45:  # '-'
        neg = 1
        p += 1
    if p >= end:
        return -1
    if p[0] == 48:  # '0'
        p += 1
        digits = 1
    elif 49 <= p[0] <= 57:
        while p < end and 48 <= p[0] <= 57:
            if digits < 19:
                v = v * 10 + (p[0] - 48)
            digits += 1
            p += 1
    else:
        return -1
    if p < end and p[0] == 46:  # '.'
        is_float = 1
        p += 1
        if p >= end or not (48 <= p[0] <= 57):
            return -1
        m = <unsigned long long>v
        sig = digits if v else 0
        while p < end and 48 <= p[0] <= 57:
            if sig < 19:
                m = m * 10 + (p[0] - 48)
                if m:
                    sig += 1
                frac += 1
            else:
                sig = 99  # too many digits for the fast path
            p += 1
    if p < end and (p[0] == 101 or p[0] == 69):  # e E
        if not is_float:
            m = <unsigned long long>v
            sig = digits if v else 0
        is_float = 1
        p += 1
        if p < end and (p[0] == 43 or p[0] == 45):
            eneg = p[0] == 45
            p += 1
        if p >= end or not (48 <= p[0] <= 57):
            return -1
        while p < end and 48 <= p[0] <= 57:
            if edig < 6:
                ex = ex * 10 + (p[0] - 48)
            edig += 1
            p += 1
    c.p = p
    if not is_float:
        if digits > 18:
            return -1
        ival[0] = -v if neg else v
        return NUM_INT
    if digits <= 18 and sig <= 19 and m <= 9007199254740992ULL and edig <= 6:
        ex = (-ex if eneg else ex) - frac
        if -22 <= ex <= 22:
            dval[0] = (<double>m / POW10[-ex]) if ex < 0 else (<double>m * POW10[ex])
            if neg:
                dval[0] = -dval[0]
            return NUM_FLOAT
    return slow_float(start, p, dval)


cdef int slow_float(const unsigned char *start, const unsigned char *p, double *dval) noexcept:
    cdef char tmp[80]
    cdef Py_ssize_t k
    cdef char *stop
    cdef double d
    k = p - start
    if k >= 79:
        return -1
    memcpy(tmp, start, k)
    tmp[k] = 0
    d = PyOS_string_to_double(tmp, &stop, NULL)
    if d == -1.0 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        return -1
    if stop != tmp + k or not isfinite(d):
        return -1
    dval[0] = d
    return NUM_FLOAT

cdef int read_literal(Cur *c) noexcept:
    """true -> 1, false -> 0, anything else -> -1."""
    ws(c)
    if c.end - c.p >= 4 and memcmp(c.p, b"true", 4) == 0:
        c.p += 4
        return 1
    if c.end - c.p >= 5 and memcmp(c.p, b"false", 5) == 0:
        c.p += 5
        return 0
    return -1

cdef int skip_value(Cur *c, int depth) noexcept:
    """Check and skip any JSON value this scanner accepts; -1 when it does not."""
    cdef const unsigned char *s
    cdef Py_ssize_t n
    cdef int64_t iv
    cdef double dv
    if depth > MAX_DEPTH:
        return -1
    ws(c)
    if c.p >= c.end:
        return -1
    cdef unsigned char ch = c.p[0]
    if ch == 34:
        return read_string(c, &s, &n, 1)
    if ch == 123:  # {
        c.p += 1
        ws(c)
        if c.p < c.end and c.p[0] == 125:
            c.p += 1
            return 0
        while True:
            if read_string(c, &s, &n, 1) < 0 or expect(c, 58) < 0 \
                    or skip_value(c, depth + 1) < 0:
                return -1
            ws(c)
            if c.p >= c.end:
                return -1
            if c.p[0] == 44:
                c.p += 1
                continue
            if c.p[0] == 125:
                c.p += 1
                return 0
            return -1
    if ch == 91:  # [
        c.p += 1
        ws(c)
        if c.p < c.end and c.p[0] == 93:
            c.p += 1
            return 0
        while True:
            if skip_value(c, depth + 1) < 0:
                return -1
            ws(c)
            if c.p >= c.end:
                return -1
            if c.p[0] == 44:
                c.p += 1
                continue
            if c.p[0] == 93:
                c.p += 1
                return 0
            return -1
    if ch == 116 or ch == 102:
        return 0 if read_literal(c) >= 0 else -1
    if ch == 110:
        if c.end - c.p >= 4 and memcmp(c.p, b"null", 4) == 0:
            c.p += 4
            return 0
        return -1
    if ch == 45 or 48 <= ch <= 57:
        return 0 if read_number(c, &iv, &dv) > 0 else -1
    return -1

cdef inline int next_item(Cur *c, int *first, unsigned char close) noexcept:
    """Inside a list (close ']') or object (close '}') just opened: 1 when an item follows, 0 at
    the closing bracket, -1 on error."""
    ws(c)
    if c.p >= c.end:
        return -1
    if first[0]:
        first[0] = 0
        if c.p[0] == close:
            c.p += 1
            return 0
        return 1
    if c.p[0] == 44:
        c.p += 1
        return 1
    if c.p[0] == close:
        c.p += 1
        return 0
    return -1

cdef int read_cells(Cur *c, char *dst, Py_ssize_t *k, const Py_ssize_t *shape, int ndim,
                    int integers) noexcept:
    """A value of exactly ``shape`` (nested lists; ndim 0: one number) written at ``dst`` from
    cell ``k[0]`` on (int64 cells when ``integers``, else float64); ``k`` advanced."""
    cdef int64_t iv
    cdef double dv
    cdef int kind, first = 1, more
    cdef Py_ssize_t count = 0, n = shape[0] if ndim else 0
    cdef const unsigned char *p
    if ndim == 0:
        kind = read_number(c, &iv, &dv)
        if kind < 0 or (integers and kind != NUM_INT):
            return -1
        if integers:
            (<int64_t *>dst)[k[0]] = iv
        else:
            (<double *>dst)[k[0]] = <double>iv if kind == NUM_INT else dv
        k[0] += 1
        return 0
    if expect(c, 91) < 0:
        return -1
    if ndim == 1 and integers:  # the innermost list of integers: single digits inline
        while True:
            more = next_item(c, &first, 93)
            if more < 0:
                return -1
            if more == 0:
                break
            if count == n:
                return -1
            ws(c)
            p = c.p
            if c.end - p >= 2 and 48 <= p[0] <= 57 and (p[1] == 44 or p[1] == 93):
                (<int64_t *>dst)[k[0]] = p[0] - 48
                c.p = p + 1
            else:
                if read_number(c, &iv, &dv) != NUM_INT:
                    return -1
                (<int64_t *>dst)[k[0]] = iv
            k[0] += 1
            count += 1
        return 0 if count == n else -1
    while True:
        more = next_item(c, &first, 93)
        if more < 0:
            return -1
        if more == 0:
            break
        if count == n:
            return -1
        if read_cells(c, dst, k, shape + 1, ndim - 1, integers) < 0:
            return -1
        count += 1
    return 0 if count == n else -1


cdef int read_numbers(Cur *c, Buf *b, const Py_ssize_t *shape, int ndim, Py_ssize_t cells,
                      int integers) noexcept:
    """A value of exactly ``shape`` (``cells`` numbers) appended to ``b`` (int64 when
    ``integers``, else float64)."""
    cdef Py_ssize_t k = 0
    if buf_reserve(b, cells * 8) < 0:
        return -1
    if read_cells(c, b.data + b.n, &k, shape, ndim, integers) < 0 or k != cells:
        return -1
    b.n += cells * 8
    return 0

# -- one episode ---------------------------------------------------------------------------


cdef struct Field:
    int kind            # 0 integers per cell, 1 numbers per cell, 2 id list
    int ndim
    Py_ssize_t shape[8]
    Py_ssize_t cells

cdef struct Child:
    const char *key     # object member (NULL for array elements)
    Py_ssize_t key_len
    Py_ssize_t index    # array element
    int field           # >= 0: the value is this field's
    int node            # >= 0: the value is this nested node

cdef struct Node:
    int is_array
    int first           # its children: children[first:first + count]
    int count


cdef class ScanPlan:
    """The spec fields the scanner reads from each step's ``state``, compiled once: fields
    (name, kind, shape, path) with kind 0 (integers per cell), 1 (numbers per cell) or 2 (a
    list of integer ids); paths of object keys (ASCII, no quote or backslash) and array
    indices. ValueError when the fields cannot be read this way."""
    cdef Field fields[MAX_FIELDS]
    cdef int nfields
    cdef Node *nodes
    cdef Child *children
    cdef int root_leaf
    cdef list keep
    cdef readonly tuple names, kinds, shapes

    def __cinit__(self):
        self.nodes = NULL
        self.children = NULL

    def __init__(self, entries):
        entries = list(entries)
        if not 1 <= len(entries) <= MAX_FIELDS:
            raise ValueError("1 to 63 fields")
        self.keep = []
        self.nfields = len(entries)
        self.root_leaf = -1
        self.names = tuple(e[0] for e in entries)
        self.kinds = tuple(int(e[1]) for e in entries)
        self.shapes = tuple(tuple(int(d) for d in e[2]) for e in entries)
        root = {"type": None, "kids": {}}
        cdef int i, d
        for i, (name, kind, shape, path) in enumerate(entries):
            if kind not in (0, 1, 2) or len(shape) > 8 or (kind == 2 and shape):
                raise ValueError("field kind or shape")
            self.fields[i].kind = kind
            self.fields[i].ndim = len(shape)
            self.fields[i].cells = 1
            for d in range(len(shape)):
                if shape[d] < 0:
                    raise ValueError("shape")
                self.fields[i].shape[d] = shape[d]
                self.fields[i].cells *= shape[d]
            if self.fields[i].cells > (1 << 24):
                raise ValueError("too many cells")
            path = tuple(path)
            if not path:
                if len(entries) != 1:
                    raise ValueError("a field at the state's root must be the only one")
                self.root_leaf = i
                continue
            if len(path) > 16:
                raise ValueError("path too deep")
            node = root
            for d, comp in enumerate(path):
                if isinstance(comp, bool) or not isinstance(comp, (int, str)):
                    raise ValueError("path component")
                if isinstance(comp, int):
                    if comp < 0:
                        raise ValueError("negative index")
                    t = "arr"
                else:
                    if not comp.isascii() or '"' in comp or "\\" in comp or any(
                            ord(ch) < 32 for ch in comp):
                        raise ValueError("key")
                    t = "obj"
                if node["type"] is None:
                    node["type"] = t
                elif node["type"] != t:
                    raise ValueError("a value cannot be both an object and an array")
                kid = node["kids"].get(comp)
                if d == len(path) - 1:
                    if kid is not None:
                        raise ValueError("two fields at one path, or one inside another")
                    node["kids"][comp] = i
                else:
                    if kid is None:
                        kid = node["kids"][comp] = {"type": None, "kids": {}}
                    elif not isinstance(kid, dict):
                        raise ValueError("one field inside another")
                    node = kid
        if self.root_leaf >= 0:
            return
        order = [root]  # breadth first: node index = position
        k = 0
        while k < len(order):
            for kid in order[k]["kids"].values():
                if isinstance(kid, dict):
                    order.append(kid)
            k += 1
        index_of = {id(nd): j for j, nd in enumerate(order)}
        nchildren = sum(len(nd["kids"]) for nd in order)
        self.nodes = <Node *>malloc(len(order) * sizeof(Node))
        self.children = <Child *>malloc(max(1, nchildren) * sizeof(Child))
        if self.nodes == NULL or self.children == NULL:
            raise MemoryError()
        cdef int ci = 0, ni
        for ni, nd in enumerate(order):
            self.nodes[ni].is_array = nd["type"] == "arr"
            self.nodes[ni].first = ci
            self.nodes[ni].count = len(nd["kids"])
            for comp, kid in nd["kids"].items():
                if isinstance(comp, str):
                    b = comp.encode("ascii")
                    self.keep.append(b)
                    self.children[ci].key = PyBytes_AS_STRING(b)
                    self.children[ci].key_len = PyBytes_GET_SIZE(b)
                    self.children[ci].index = -1
                else:
                    self.children[ci].key = NULL
                    self.children[ci].key_len = -1
                    self.children[ci].index = comp
                if isinstance(kid, dict):
                    self.children[ci].field = -1
                    self.children[ci].node = index_of[id(kid)]
                else:
                    self.children[ci].field = kid
                    self.children[ci].node = -1
                ci += 1

    def __dealloc__(self):
        free(self.nodes)
        free(self.children)


cdef struct Scan:
    Buf actions, rewards, values, logprobs, mask, ids, offsets, obs
    Buf fields[MAX_FIELDS]
    Buf field_offsets[MAX_FIELDS]
    Py_ssize_t steps
    Py_ssize_t mask_width, obs_width
    int keys_first
    int done_early
    int last_done
    int last_trunc

cdef inline int key_is(const unsigned char *s, Py_ssize_t n, const char *lit, Py_ssize_t k) noexcept:
    return n == k and memcmp(s, lit, k) == 0

cdef int read_leaf(Cur *c, Scan *sc, ScanPlan plan, int i,
                   unsigned long long *seen) noexcept:
    """The value of field ``i`` (its spec shape) into its buffers."""
    cdef int more, first_id = 1
    cdef int64_t iv
    cdef double dv
    if seen[0] & (1ULL << i):
        return -1  # a duplicate key
    seen[0] |= 1ULL << i
    if plan.fields[i].kind == 2:
        if expect(c, 91) < 0:
            return -1
        while True:
            more = next_item(c, &first_id, 93)
            if more < 0:
                return -1
            if more == 0:
                break
            if read_number(c, &iv, &dv) != NUM_INT or push_i64(&sc.fields[i], iv) < 0:
                return -1
        return push_i64(&sc.field_offsets[i], sc.fields[i].n // 8)
    return read_numbers(c, &sc.fields[i], plan.fields[i].shape, plan.fields[i].ndim,
                        plan.fields[i].cells, plan.fields[i].kind == 0)


cdef int read_node(Cur *c, Scan *sc, ScanPlan plan, int ni, int depth,
                   unsigned long long *seen) noexcept:
    """A ``state`` value (ni 0) or one of its nested values on the way to the spec's fields:
    an object whose keys, or an array whose indices, lead to fields; the rest is skipped."""
    cdef Node *node = &plan.nodes[ni]
    cdef Child *ch
    cdef const unsigned char *s
    cdef Py_ssize_t n, index = 0
    cdef int more, first = 1, j, r
    if depth > 32:
        return -1
    if expect(c, 91 if node.is_array else 123) < 0:
        return -1
    while True:
        if node.is_array:
            more = next_item(c, &first, 93)
        else:
            more = next_item(c, &first, 125)
        if more < 0:
            return -1
        if more == 0:
            return 0
        ch = NULL
        if node.is_array:
            for j in range(node.first, node.first + node.count):
                if plan.children[j].index == index:
                    ch = &plan.children[j]
                    break
            index += 1
        else:
            if read_string(c, &s, &n, 0) < 0 or expect(c, 58) < 0:
                return -1
            for j in range(node.first, node.first + node.count):
                if key_is(s, n, plan.children[j].key, plan.children[j].key_len):
                    ch = &plan.children[j]
                    break
        if ch == NULL:
            r = skip_value(c, depth + 3)
        elif ch.field >= 0:
            r = read_leaf(c, sc, plan, ch.field, seen)
        else:
            r = read_node(c, sc, plan, ch.node, depth + 1, seen)
        if r < 0:
            return -1


cdef int read_state(Cur *c, Scan *sc, ScanPlan plan) noexcept:
    cdef unsigned long long seen = 0
    if plan.root_leaf >= 0:
        if read_leaf(c, sc, plan, plan.root_leaf, &seen) < 0:
            return -1
    elif read_node(c, sc, plan, 0, 0, &seen) < 0:
        return -1
    if seen != (1ULL << plan.nfields) - 1:
        return -1  # a field missing: the orjson path names it
    return 0

cdef int read_step(Cur *c, Scan *sc, ScanPlan plan, int use_states) noexcept:
    cdef const unsigned char *s
    cdef Py_ssize_t n, w
    cdef int more, first = 1, first_v, kind, lit
    cdef int keys = 0, bit
    cdef int64_t iv
    cdef double dv
    if expect(c, 123) < 0:
        return -1
    while True:
        more = next_item(c, &first, 125)
        if more < 0:
            return -1
        if more == 0:
            break
        if read_string(c, &s, &n, 0) < 0 or expect(c, 58) < 0:
            return -1
        bit = 0
        if key_is(s, n, "action", 6):
            bit = K_ACTION
            if read_number(c, &iv, &dv) != NUM_INT or push_i64(&sc.actions, iv) < 0:
                return -1
        elif key_is(s, n, "reward", 6):
            bit = K_REWARD
            kind = read_number(c, &iv, &dv)
            if kind < 0 or push_f64(&sc.rewards, <double>iv if kind == NUM_INT else dv) < 0:
                return -1
        elif key_is(s, n, "value", 5):
            bit = K_VALUE
            kind = read_number(c, &iv, &dv)
            if kind < 0 or push_f64(&sc.values, <double>iv if kind == NUM_INT else dv) < 0:
                return -1
        elif key_is(s, n, "logprob", 7):
            bit = K_LOGPROB
            kind = read_number(c, &iv, &dv)
            if kind < 0 or push_f64(&sc.logprobs, <double>iv if kind == NUM_INT else dv) < 0:
                return -1
        elif key_is(s, n, "legal", 5):
            bit = K_LEGAL
            if expect(c, 91) < 0:
                return -1
            first_v = 1
            while True:
                more = next_item(c, &first_v, 93)
                if more < 0:
                    return -1
                if more == 0:
                    break
                if read_number(c, &iv, &dv) != NUM_INT or push_i64(&sc.ids, iv) < 0:
                    return -1
            if push_i64(&sc.offsets, sc.ids.n // 8) < 0:
                return -1
        elif key_is(s, n, "mask", 4):
            bit = K_MASK
            if expect(c, 91) < 0:
                return -1
            first_v = 1
            w = 0
            while True:
                more = next_item(c, &first_v, 93)
                if more < 0:
                    return -1
                if more == 0:
                    break
                ws(c)
                if c.p < c.end and (c.p[0] == 116 or c.p[0] == 102):
                    lit = read_literal(c)
                    if lit < 0:
                        return -1
                    iv = lit
                elif read_number(c, &iv, &dv) != NUM_INT or (iv != 0 and iv != 1):
                    return -1
                if push_u8(&sc.mask, <uint8_t>iv) < 0:
                    return -1
                w += 1
            if sc.steps == 0:
                sc.mask_width = w
            elif w != sc.mask_width:
                return -1
            if w == 0:
                return -1
        elif key_is(s, n, "done", 4):
            bit = K_DONE
            lit = read_literal(c)
            if lit < 0:
                return -1
            sc.last_done = lit
        elif key_is(s, n, "truncated", 9):
            bit = K_TRUNC
            lit = read_literal(c)
            if lit < 0:
                return -1
            sc.last_trunc = lit
        elif use_states and key_is(s, n, "state", 5):
            bit = K_STATE
            if read_state(c, sc, plan) < 0:
                return -1
        elif not use_states and key_is(s, n, "obs", 3):
            bit = K_OBS
            if expect(c, 91) < 0:
                return -1
            first_v = 1
            w = 0
            while True:
                more = next_item(c, &first_v, 93)
                if more < 0:
                    return -1
                if more == 0:
                    break
                ws(c)
                if c.p < c.end and (c.p[0] == 116 or c.p[0] == 102):
                    lit = read_literal(c)  # true/false: 1.0/0.0, as NumPy reads them
                    if lit < 0 or push_f64(&sc.obs, <double>lit) < 0:
                        return -1
                else:
                    kind = read_number(c, &iv, &dv)
                    if kind < 0 or push_f64(&sc.obs, <double>iv if kind == NUM_INT else dv) < 0:
                        return -1
                w += 1
            if sc.steps == 0:
                sc.obs_width = w
            elif w != sc.obs_width:
                return -1
            if w == 0:
                return -1
        else:
            if skip_value(c, 2) < 0:
                return -1
        if bit:
            if keys & bit:
                return -1  # duplicate key
            keys |= bit
    if not (keys & K_DONE):
        sc.last_done = 0
    if not (keys & K_TRUNC):
        sc.last_trunc = 0
    # the same optional keys on every step (else the orjson path reports the step)
    bit = keys & ~(K_DONE | K_TRUNC)
    if sc.steps == 0:
        sc.keys_first = bit
    elif bit != sc.keys_first:
        return -1
    return 0

cdef void scan_free(Scan *sc, int nfields) noexcept:
    cdef Buf *bufs[8]
    cdef int i
    free(sc.actions.data); free(sc.rewards.data); free(sc.values.data); free(sc.logprobs.data)
    free(sc.mask.data); free(sc.ids.data); free(sc.offsets.data); free(sc.obs.data)
    for i in range(nfields):
        free(sc.fields[i].data)
        free(sc.field_offsets[i].data)


def scan_episode(bytes data, ScanPlan plan, Py_ssize_t start=0, Py_ssize_t stop=-1):
    """Keyword arguments of ``Stager.prepare`` for the episode in ``data[start:stop]`` (stop
    -1: to the end), or None (see the module). plan: None (read ``obs``) or a ScanPlan."""
    cdef Scan sc
    cdef int nfields = 0, use_states = plan is not None, i, more, first = 1
    cdef int truncated = 0, top_obj = 0, have_steps = 0, lit, need
    cdef Cur c
    cdef const unsigned char *s
    cdef Py_ssize_t n, T
    memset_scan(&sc)
    if use_states:
        nfields = plan.nfields
    if stop < 0 or stop > PyBytes_GET_SIZE(data):
        stop = PyBytes_GET_SIZE(data)
    if start < 0 or start > stop:
        return None
    c.p = <const unsigned char *>PyBytes_AS_STRING(data) + start
    c.end = <const unsigned char *>PyBytes_AS_STRING(data) + stop
    try:
        for i in range(nfields):
            if plan.fields[i].kind == 2 and push_i64(&sc.field_offsets[i], 0) < 0:
                return None
        if push_i64(&sc.offsets, 0) < 0:
            return None
        ws(&c)
        if c.p < c.end and c.p[0] == 123:  # {"steps": [...], ...}
            top_obj = 1
            c.p += 1
            while True:
                more = next_item(&c, &first, 125)
                if more < 0:
                    return None
                if more == 0:
                    break
                if read_string(&c, &s, &n, 0) < 0 or expect(&c, 58) < 0:
                    return None
                if key_is(s, n, "steps", 5):
                    if have_steps or read_steps(&c, &sc, plan, use_states) < 0:
                        return None
                    have_steps = 1
                elif key_is(s, n, "truncated", 9):
                    if truncated & 2:
                        return None
                    lit = read_literal(&c)
                    if lit < 0:
                        return None
                    truncated = 2 | lit
                elif skip_value(&c, 1) < 0:
                    return None
            if not have_steps:
                return None
        elif read_steps(&c, &sc, plan, use_states) < 0:
            return None
        ws(&c)
        if c.p != c.end:
            return None
        T = sc.steps
        if T == 0 or sc.done_early:
            return None
        need = K_ACTION | K_REWARD | (K_STATE if use_states else K_OBS)
        if (sc.keys_first & need) != need:
            return None
        if (sc.keys_first & K_MASK) and (sc.keys_first & K_LEGAL):
            return None
        out = {"actions": buf_array(&sc.actions, np.int64, (T,)),
               "rewards": buf_array(&sc.rewards, np.float64, (T,)),
               "truncated": bool(truncated & 1) or bool(sc.last_trunc)}
        if sc.keys_first & K_MASK:
            out["mask"] = buf_array(&sc.mask, np.uint8, (T, sc.mask_width))
        elif sc.keys_first & K_LEGAL:
            out["legal"] = (buf_array(&sc.ids, np.int64, (sc.ids.n // 8,)),
                            buf_array(&sc.offsets, np.int64, (T + 1,)))
        if sc.keys_first & K_VALUE:
            out["values"] = buf_array(&sc.values, np.float64, (T,))
        if sc.keys_first & K_LOGPROB:
            out["logprobs"] = buf_array(&sc.logprobs, np.float64, (T,))
        if use_states:
            states = {}
            for multihot in (False, True):  # a field with a row count first (Stager counts)
                for i in range(nfields):
                    name, kind, shape = plan.names[i], plan.kinds[i], plan.shapes[i]
                    if (kind == 2) != multihot:
                        continue
                    if kind == 2:
                        states[name] = (buf_array(&sc.fields[i], np.int64,
                                                  (sc.fields[i].n // 8,)),
                                        buf_array(&sc.field_offsets[i], np.int64, (T + 1,)))
                    else:
                        states[name] = buf_array(&sc.fields[i],
                                                 np.int64 if kind == 0 else np.float64,
                                                 (T,) + shape)
            out["states"] = states
        else:
            out["obs"] = buf_array(&sc.obs, np.float64, (T, sc.obs_width))
        return out
    finally:
        scan_free(&sc, nfields)


cdef void memset_scan(Scan *sc) noexcept:
    memset(sc, 0, sizeof(Scan))


cdef int read_steps(Cur *c, Scan *sc, ScanPlan plan, int use_states) noexcept:
    cdef int more, first = 1
    if expect(c, 91) < 0:
        return -1
    while True:
        more = next_item(c, &first, 93)
        if more < 0:
            return -1
        if more == 0:
            return 0
        if sc.steps and sc.last_done:
            sc.done_early = 1  # done before the last step: the orjson path reports it
        if read_step(c, sc, plan, use_states) < 0:
            return -1
        sc.steps += 1
