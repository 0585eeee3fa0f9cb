"""Pure-NumPy twin of ``encode.pyx``: same functions, same signatures, same bytes, same status.

Called only through :class:`fastrl.spec.ObsSpec`, which compiled the spec into *plans* and gathered
and checked every input array first (shapes, dtypes, CSR offsets, the size of ``out``). This module
is also the reference for the constants both paths share, which live in :mod:`.codes` (the compiled module re-declares
them and exports them as tuples that the tests compare).

A plan is one tuple per field, in spec order, with the items named in :data:`PLAN_ITEMS`::

    kind, off, size, cells, n, start, layout, cell_n, cell_start, cell_off, scale, offset, low, high

An input is one ``(data, offsets)`` pair per field: ``data`` a C-contiguous array of one of
:data:`INPUT_DTYPES` (``nrows * cells`` values, row-major; for multihot the flat id list), and
``offsets`` the int64 CSR offsets (``nrows + 1``) of a multihot field, else ``None``.

The value checks, per element, in the order both paths run them (the first bad row wins, then
the first field in spec order, then the first element of that field):

- ids (onehot, onehot_array, multihot): ``ERR_RANGE`` when the value is outside
  ``[start, start + n)`` (NaN included), then ``ERR_NOT_INT`` when a float value has a fraction;
- box: ``ERR_NONFINITE`` when the input is NaN or infinite, ``ERR_OVERFLOW`` when the float32
  result (after scale, offset, clip and rounding to float32) is not finite;
- binary: ``ERR_BINARY`` when the value is neither 0 nor 1.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .codes import (ERR_BINARY, ERR_NONFINITE, ERR_NOT_INT, ERR_OK, ERR_OVERFLOW,  # noqa: F401
                    ERR_RANGE, ERROR_CODES, INPUT_DTYPES, KIND_BINARY, KIND_BOX, KIND_IDS,
                    KIND_MULTI, KINDS, LAYOUT_CELL, LAYOUT_PLANE, LAYOUTS, PLAN_ITEMS)

_INT64_MAX = np.iinfo(np.int64).max


def _ids(x: np.ndarray, lo, n):
    """(index, code) for ids ``x`` checked against ``[lo, lo + n)``: index ``x - lo``, or -1
    where the code is not ERR_OK. ``code`` is None when every id is good."""
    if x.dtype.kind == "f":
        d = x.astype(np.float64)
        ok = (d >= lo) & (d < lo + n)  # int64 bounds < 2**53: exact as float64; NaN fails
        integral = np.trunc(d) == d
        good = ok & integral
        k = np.where(good, d - lo, -1).astype(np.int64)  # whole numbers: exact
        if good.all():
            return k, None
        return k, np.where(ok, np.where(integral, ERR_OK, ERR_NOT_INT), ERR_RANGE)
    if x.dtype == np.uint64:
        big = x > np.uint64(_INT64_MAX)
        k = np.where(big, np.uint64(_INT64_MAX), x).astype(np.int64)
    else:
        k = x.astype(np.int64)
    k -= lo  # wraps only for values far outside any [lo, lo + n): they stay outside
    good = (k >= 0) & (k < n)
    if good.all():
        return k, None
    np.putmask(k, ~good, -1)
    return k, np.where(good, ERR_OK, ERR_RANGE)


def _first_bad(code: np.ndarray):
    """(row, code, elem) of the first non-zero entry of a (rows, cells) code array, or None."""
    bad = code != ERR_OK
    rows = bad.any(axis=1)
    if not rows.any():
        return None
    r = int(np.argmax(rows))
    c = int(np.argmax(bad[r]))
    return r, int(code[r, c]), c


def _encode_ids(region, plan, data, nrows):
    _, _, size, cells, n, start, layout, cell_n, cell_start, cell_off = plan[:10]
    x = data.reshape(nrows, cells)
    lo = start if cell_start is None else cell_start
    k, code = _ids(x, lo, n if cell_n is None else cell_n)
    rs = region.strides[0]
    if cell_n is None and layout == LAYOUT_PLANE:
        view = as_strided(region, (nrows, n, cells), (rs, cells * 4, 4))
        np.equal(k[:, None, :], np.arange(n, dtype=np.int64)[None, :, None], out=view)
    elif cell_n is None and cell_start is None:
        view = as_strided(region, (nrows, cells, n), (rs, n * 4, 4))
        np.equal(k[:, :, None], np.arange(n, dtype=np.int64)[None, None, :], out=view)
    else:  # cell layout with per-cell n/start
        region[...] = 0
        r, c = np.nonzero(k >= 0)
        region[r, cell_off[c] + k[r, c]] = 1
    return None if code is None else _first_bad(code)


def _encode_multi(region, plan, data, offsets, nrows):
    n = plan[4]
    lo, hi = int(offsets[0]), int(offsets[-1])
    rows = np.repeat(np.arange(nrows, dtype=np.int64), np.diff(offsets))
    k, code = _ids(data[lo:hi], 0, n)
    region[...] = 0
    good = k >= 0
    region[rows[good], k[good]] = 1
    if code is None:
        return None
    bad = np.flatnonzero(~good)
    j = int(bad[0])
    r = int(rows[j])
    return r, int(code[j]), j + lo - int(offsets[r])


def _encode_box(region, plan, data, nrows):
    cells = plan[3]
    scale, offset, low, high = plan[10:14]
    x = data.reshape(nrows, cells)
    transform = scale is not None or low is not None or high is not None
    if x.dtype.kind != "f" and not transform:
        region[...] = x  # integer -> float32 in one rounding, as the C cast
        return None
    d = x.astype(np.float64)
    nonfinite = ~np.isfinite(d)
    with np.errstate(over="ignore", invalid="ignore"):
        if scale is not None:
            d *= scale      # the product is rounded first: no fused multiply-add
            d += offset
        if low is not None:
            d = np.where(d < low, low, d)
        if high is not None:
            d = np.where(d > high, high, d)
        f = d.astype(np.float32)
    region[...] = f
    code = np.where(nonfinite, ERR_NONFINITE, np.where(np.isfinite(f), ERR_OK, ERR_OVERFLOW))
    return _first_bad(code)


def _encode_binary(region, plan, data, nrows):
    x = data.reshape(nrows, plan[3])
    one = x == 1
    region[...] = one
    code = np.where(one | (x == 0), ERR_OK, ERR_BINARY)
    return _first_bad(code)


_I64 = np.dtype(np.int64)
_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)
_BIG = 1 << 62  # ids, starts and sizes stay far from int64 overflow in ``lo + n``


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _vec_problem(arr, dtype, length) -> str | None:
    """``arr`` must be None or a C-contiguous 1-D ``dtype`` array of ``length`` (None: any)."""
    if arr is None:
        return None
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1 \
            or not arr.flags.c_contiguous or (length is not None and arr.shape[0] != length):
        want = "" if length is None else f" of length {length}"
        return f"must be None or a C-contiguous 1-D {dtype} array{want}"
    return None


def contract_problem(out, plans, inputs, nrows, nthreads=1) -> str | None:
    """Why these arguments break ``encode_batch``'s contract (None when they keep it): ``out``
    a writeable C-contiguous float32 ``(nrows, dim)`` array; one plan (the 14 items of
    :data:`PLAN_ITEMS`) and one ``(data, offsets)`` input per field; each field inside the
    output row, its sizes consistent with its kind and layout, its per-cell arrays of the right
    dtype and length (per-cell one-hot blocks inside the field), its input of a supported dtype
    and ``nrows * cells`` values, multihot CSR offsets from >= 0 to <= len(data) without
    decreasing. Costs O(fields + cells + rows), never O(values). Both twins raise
    ``ValueError("encode_batch: " + problem)``."""
    if not isinstance(out, np.ndarray) or out.dtype != _F32 or out.ndim != 2 \
            or not out.flags.c_contiguous or not out.flags.writeable:
        return "out must be a writeable C-contiguous 2-D float32 array"
    if not _is_int(nrows) or nrows != out.shape[0]:
        return f"nrows {nrows!r} does not match out ({out.shape[0]} rows)"
    if not _is_int(nthreads) or not -(1 << 31) <= nthreads < (1 << 31):
        return f"nthreads must be an integer, got {nthreads!r}"
    if not isinstance(plans, list) or not isinstance(inputs, list) or len(plans) != len(inputs):
        return "plans and inputs must be lists with one entry per field"
    dim = out.shape[1]
    for i, (plan, inp) in enumerate(zip(plans, inputs)):
        where = f"field {i}"
        if not isinstance(plan, tuple) or len(plan) != len(PLAN_ITEMS):
            return f"{where}: a plan is a tuple of {len(PLAN_ITEMS)} items ({', '.join(PLAN_ITEMS)})"
        if not isinstance(inp, tuple) or len(inp) != 2:
            return f"{where}: an input is a (data, offsets) tuple"
        (kind, off, size, cells, n, start, layout, cell_n, cell_start, cell_off, scale, offset,
         low, high) = plan
        data, offsets = inp
        for name, v in (("kind", kind), ("off", off), ("size", size), ("cells", cells),
                        ("n", n), ("start", start), ("layout", layout)):
            if not _is_int(v) or not -_BIG < v < _BIG:
                return f"{where}: {name} must be an integer of magnitude < 2**62, got {v!r}"
        if kind not in KINDS or layout not in LAYOUTS:
            return f"{where}: unknown kind {kind!r} or layout {layout!r}"
        if off < 0 or size < 0 or cells < 0 or n < 0 or off + size > dim:
            return f"{where}: columns [{off}, {off + size}) do not fit the output width {dim}"
        for name, arr, dtype in (("cell_n", cell_n, _I64), ("cell_start", cell_start, _I64),
                                 ("cell_off", cell_off, _I64), ("scale", scale, _F64),
                                 ("offset", offset, _F64), ("low", low, _F64),
                                 ("high", high, _F64)):
            problem = _vec_problem(arr, dtype, None)
            if problem:
                return f"{where}: {name} {problem}"
        if not isinstance(data, np.ndarray) or not data.flags.c_contiguous \
                or data.dtype not in INPUT_DTYPES:
            return f"{where}: input is not a C-contiguous array of a supported numeric dtype"
        if kind == KIND_MULTI:
            if size != n:
                return f"{where}: a multihot field has size == n ({size} != {n})"
            if _vec_problem(offsets, _I64, nrows + 1) or offsets is None:
                return f"{where}: offsets must be a C-contiguous int64 array of length {nrows + 1}"
            if offsets[0] < 0 or offsets[-1] > data.size or bool((offsets[1:] < offsets[:-1]).any()):
                return (f"{where}: offsets must go from >= 0 to <= {data.size} (the ids) "
                        "without decreasing")
            continue
        if data.size != nrows * cells:
            return f"{where}: input has {data.size} values, expected {nrows * cells}"
        if kind in (KIND_BOX, KIND_BINARY):
            if size != cells:
                return f"{where}: a box/binary field has size == cells ({size} != {cells})"
            if (scale is None) != (offset is None):
                return f"{where}: scale and offset are given together or not at all"
            for name, arr in (("scale", scale), ("offset", offset), ("low", low),
                              ("high", high)):
                if arr is not None and arr.shape[0] not in (1, cells):
                    return f"{where}: {name} has {arr.shape[0]} values, expected 1 or {cells}"
            continue
        # ids (one-hot): plane layout, or cell layout with one n/start or per-cell ones
        if layout == LAYOUT_PLANE:
            if cell_n is not None or cell_off is not None:
                return f"{where}: a plane layout takes no per-cell n or offsets"
            if cell_start is not None and cell_start.shape[0] != cells:
                return f"{where}: cell_start has {cell_start.shape[0]} values, expected {cells}"
            if n < 1 or size != n * cells:
                return f"{where}: size must be n x cells ({n} x {cells}), got {size}"
            if cell_start is not None and cells \
                    and ((cell_start <= -_BIG) | (cell_start >= _BIG)).any():
                return f"{where}: cell_start values must be of magnitude < 2**62"
            continue
        per_cell = [a is not None for a in (cell_n, cell_start, cell_off)]
        if any(per_cell) and not all(per_cell):
            return f"{where}: cell_n, cell_start and cell_off are given together or not at all"
        if not any(per_cell):
            if n < 1 or size != n * cells:
                return f"{where}: size must be n x cells ({n} x {cells}), got {size}"
            continue
        if not cell_n.shape[0] == cell_start.shape[0] == cell_off.shape[0] == cells:
            return f"{where}: cell_n, cell_start and cell_off must have {cells} values each"
        if cells and ((cell_n < 0).any() or (cell_off < 0).any() or (cell_n >= _BIG).any()
                      or (cell_start <= -_BIG).any() or (cell_start >= _BIG).any()
                      or (cell_off > size - cell_n).any()):
            return (f"{where}: per-cell one-hot blocks must lie inside the field's {size} "
                    "columns (0 <= cell_off, cell_off + cell_n <= size)")
    return None


def encode_batch(out: np.ndarray, plans: list, inputs: list, nrows: int, nthreads: int):
    """Encode ``nrows`` rows into ``out`` (float32, C-contiguous, ``(nrows, dim)``).

    Returns ``(row, field, code, elem)`` of the first bad value (first row, then first field in
    spec order, then first element), or ``(-1, -1, ERR_OK, 0)``. ``nthreads`` is ignored here.
    ValueError when the arguments break the contract (:func:`contract_problem`).
    """
    problem = contract_problem(out, plans, inputs, nrows, nthreads)
    if problem:
        raise ValueError(f"encode_batch: {problem}")
    found = []
    for i, (plan, (data, offsets)) in enumerate(zip(plans, inputs)):
        off, size, kind = plan[1], plan[2], plan[0]
        region = out[:, off:off + size]
        if kind == KIND_IDS:
            bad = _encode_ids(region, plan, data, nrows)
        elif kind == KIND_MULTI:
            bad = _encode_multi(region, plan, data, offsets, nrows)
        elif kind == KIND_BOX:
            bad = _encode_box(region, plan, data, nrows)
        else:
            bad = _encode_binary(region, plan, data, nrows)
        if bad is not None:
            found.append((bad[0], i, bad[1], bad[2]))
    if not found:
        return -1, -1, ERR_OK, 0
    return min(found)  # first row, then first field; a field reports its first element


def gather_nested(values: list, shape: tuple, floats: bool):
    """Fast path for plain nested lists of numbers; ``None`` means "use the general path".

    The compiled twin walks lists of exact ``shape`` into an int64 (``floats`` false) or float64
    array. This path has no faster way than the general one, so it always declines.
    """
    return None


def gather_ragged(values: list):
    """Fast path for a list of lists of ints (multihot): ``(ids, offsets)`` or ``None``.

    Always declines here; see :func:`gather_nested`.
    """
    return None


def gather_states(states: list, specs: list):
    """Fast path gathering every field of a list of states in one pass: one item per field,
    ``(data, offsets)`` or ``None`` ("use the general path"). Always declines here."""
    return [None] * len(specs)
