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


def encode_batch(out: np.ndarray, plans: list, inputs: list, nrows: int, nthreads: int):
    """Encode ``nrows`` rows into ``out`` (float32, C-contiguous, ``(nrows, dim)``).

    Returns ``(row, field, code, elem)`` of the first bad value (first row, then first field in
    spec order, then first element), or ``(-1, -1, ERR_OK, 0)``. ``nthreads`` is ignored here.
    """
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
