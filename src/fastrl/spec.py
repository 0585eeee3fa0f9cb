"""Declarative observation encoder: :class:`ObsSpec`.

A spec is an ordered list of named fields; each field reads one value from a raw game state (a
nested dict / list / tuple, as JSON or gymnasium gives) and writes a fixed number of float32
columns of the flat observation vector. The JSON form is specified in ``docs/OBS_SPEC.md``.

Encoding runs in two phases:

1. *Gathering* (here, shared by both kernel paths): every field's values are collected into one
   contiguous typed array per batch, and the structure is checked: missing keys, wrong shapes or
   lengths, non-numeric values. The first field (in spec order) with such a problem is reported,
   at its first bad row.
2. *The kernel* (``fastrl._kernels.encode`` or its NumPy twin, bound by ``fastrl._kernels``) checks the
   values (ids in range, box values finite, binary values 0/1) and writes every byte of the
   output. The first bad row is reported, then the first bad field of that row in spec order.

Both phases raise :class:`~fastrl.errors.EncodeError` naming the field and the row.
"""

from __future__ import annotations

import json
import math
import operator
import reprlib
from collections.abc import Mapping
from functools import reduce
from itertools import chain

import numpy as np

from . import _kernels
from ._kernels import codes as K
from ._format import MAX_DIM
from ._threads import num_threads
from .errors import EncodeError, SpecError

__all__ = ["ObsSpec", "Field", "SPEC_VERSION", "FIELD_KINDS"]

SPEC_VERSION = 1
FIELD_KINDS = ("onehot", "onehot_array", "multihot", "box", "binary")
LAYOUTS = ("plane", "cell")

MAX_FIELDS = 1 << 16
MAX_NDIM = 32
MAX_PATH = 32
MAX_NAME = 256
MAX_START = 1 << 52        # keeps start + n exact in float64 (float ids are checked as doubles)
MAX_INDEX = (1 << 31) - 1  # largest integer path element
MAX_JSON_CHARS = 1 << 28

# Batches smaller than this many output floats run on one thread (an OpenMP region costs
# microseconds; below ~1 MiB of output that is more than the work).
_PARALLEL_MIN_FLOATS = 1 << 18

_FIELD_KEYS = {
    "onehot": {"name", "kind", "path", "n", "start"},
    "onehot_array": {"name", "kind", "path", "shape", "n", "start", "layout"},
    "multihot": {"name", "kind", "path", "n"},
    "box": {"name", "kind", "path", "shape", "scale", "offset", "low", "high"},
    "binary": {"name", "kind", "path", "shape"},
}
_KERNEL_KIND = {"onehot": K.KIND_IDS, "onehot_array": K.KIND_IDS, "multihot": K.KIND_MULTI,
                "box": K.KIND_BOX, "binary": K.KIND_BINARY}
_NATIVE_DTYPES = frozenset(K.INPUT_DTYPES)
_NOTHING = object()
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40


# --------------------------------------------------------------------------------------------
# Validation of spec values (the spec JSON is untrusted input)

def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) \
        and not isinstance(v, (bool, np.bool_))


def _check_int(v, where: str, what: str, lo: int, hi: int) -> int:
    if not _is_int(v):
        raise SpecError(f"{where}: {what} must be an integer, not {type(v).__name__}")
    v = int(v)
    if not lo <= v <= hi:
        raise SpecError(f"{where}: {what} must be in [{lo}, {hi}], got {v}")
    return v


def _check_float(v, where: str, what: str) -> float:
    if not _is_number(v):
        raise SpecError(f"{where}: {what} must be a number, not {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:
        raise SpecError(f"{where}: {what} {v} is too large") from None
    if not math.isfinite(f):
        raise SpecError(f"{where}: {what} must be finite, got {f}")
    return f


def _check_shape(v, where: str) -> tuple:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        raise SpecError(f"{where}: shape must be a list of integers, not {type(v).__name__}")
    if len(v) > MAX_NDIM:
        raise SpecError(f"{where}: shape has {len(v)} dimensions, at most {MAX_NDIM} allowed")
    shape = tuple(_check_int(d, where, "shape entry", 0, MAX_DIM) for d in v)
    if math.prod(shape) > MAX_DIM:
        raise SpecError(f"{where}: shape {list(shape)} has more than {MAX_DIM} cells")
    return shape


def _check_path(v, where: str) -> tuple:
    if not isinstance(v, (list, tuple)):
        raise SpecError(f"{where}: path must be a list of keys and indices, "
                        f"not {type(v).__name__}")
    if len(v) > MAX_PATH:
        raise SpecError(f"{where}: path has {len(v)} elements, at most {MAX_PATH} allowed")
    path = []
    for p in v:
        if isinstance(p, str):
            path.append(p)
        elif _is_int(p):
            path.append(_check_int(p, where, "path index", 0, MAX_INDEX))
        else:
            raise SpecError(f"{where}: path elements must be strings or integers, "
                            f"not {type(p).__name__}")
    return tuple(path)


def _per_cell(v, shape: tuple, cells: int, where: str, what: str, check, empty):
    """A number, or a list of one number per cell (nested like ``shape`` or flat): the number,
    or a tuple of ``cells`` numbers in row-major order when they are not all equal."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        return check(v, where, what)
    flat: list = []

    def walk(node, depth):
        if depth == len(shape):
            flat.append(check(node, where, what))
            return
        if not isinstance(node, (list, tuple)) or len(node) != shape[depth]:
            raise SpecError(f"{where}: {what} must be a number or a list shaped like "
                            f"{list(shape)} (or a flat list of {cells})")
        for item in node:
            walk(item, depth + 1)

    if len(shape) != 1 and len(v) == cells and all(not isinstance(x, (list, tuple)) for x in v):
        flat = [check(x, where, what) for x in v]
    else:
        walk(v, 0)
    if flat and all(x == flat[0] for x in flat):
        return flat[0]
    if not flat:  # zero cells: nothing to vary
        return empty
    return tuple(flat)


def _nested(v, shape: tuple):
    """A per-cell tuple back in the nested-list form of ``shape``."""
    if not isinstance(v, tuple):
        return v
    return np.array(v, dtype=object).reshape(shape).tolist()


class Field:
    """One field of an :class:`ObsSpec` (immutable). Build it from keywords or a JSON object::

        Field("board", "onehot_array", shape=[13, 16], n=3, layout="plane")
        Field.from_dict({"name": "hand", "kind": "multihot", "n": 52})

    Attributes: ``name``, ``kind``, ``path`` (tuple), ``shape`` (tuple of the input value),
    ``n``, ``start`` (int, or a tuple with one value per cell for onehot_array), ``layout``,
    ``scale``, ``offset``, ``low``, ``high`` (None, a float, or a tuple per cell), ``cells``
    (input values per row; 1 for onehot) and ``size`` (output floats).
    """

    __slots__ = ("name", "kind", "path", "shape", "n", "start", "layout", "scale", "offset",
                 "low", "high", "cells", "size")

    def __init__(self, name, kind, *, path=None, shape=None, n=None, start=None, layout=None,
                 scale=None, offset=None, low=None, high=None):
        d = {"name": name, "kind": kind}
        for key, val in (("path", path), ("shape", shape), ("n", n), ("start", start),
                         ("layout", layout), ("scale", scale), ("offset", offset), ("low", low),
                         ("high", high)):
            if val is not None:
                d[key] = val
        self._init(d, "field")

    @classmethod
    def from_dict(cls, d, *, where: str = "field") -> "Field":
        """A field from its JSON object; raises SpecError when it is malformed."""
        self = cls.__new__(cls)
        self._init(d, where)
        return self

    def _init(self, d, where):
        if not isinstance(d, Mapping):
            raise SpecError(f"{where}: a field must be an object, not {type(d).__name__}")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError(f"{where}: 'name' must be a non-empty string")
        if len(name) > MAX_NAME:
            raise SpecError(f"{where}: name longer than {MAX_NAME} characters")
        where = f"{where} {name!r}"
        kind = d.get("kind")
        if not isinstance(kind, str) or kind not in FIELD_KINDS:
            raise SpecError(f"{where}: unknown kind {kind!r} (expected one of "
                            f"{', '.join(FIELD_KINDS)})")
        unknown = set(d) - _FIELD_KEYS[kind]
        if unknown:
            raise SpecError(f"{where}: unknown keys for kind {kind!r}: "
                            f"{', '.join(sorted(map(str, unknown)))}")
        path = _check_path(d["path"], where) if "path" in d else (name,)
        shape: tuple = ()
        n = start = layout = scale = offset = low = high = None
        if kind in ("onehot_array", "box", "binary"):
            if "shape" not in d and kind == "onehot_array":
                raise SpecError(f"{where}: onehot_array needs a 'shape'")
            shape = _check_shape(d.get("shape", []), where)
        cells = math.prod(shape)

        def count(v, w, what):
            return _check_int(v, w, what, 1, MAX_DIM)

        def first(v, w, what):
            return _check_int(v, w, what, -MAX_START, MAX_START)

        if kind in ("onehot", "multihot"):
            if "n" not in d:
                raise SpecError(f"{where}: {kind} needs 'n'")
            n = count(d["n"], where, "n")
            if kind == "onehot":
                start = first(d.get("start", 0), where, "start")
            size = n
        elif kind == "onehot_array":
            if "n" not in d:
                raise SpecError(f"{where}: onehot_array needs 'n'")
            n = _per_cell(d["n"], shape, cells, where, "n", count, 1)
            start = _per_cell(d.get("start", 0), shape, cells, where, "start", first, 0)
            layout = d.get("layout", "plane")
            if layout not in LAYOUTS:
                raise SpecError(f"{where}: layout must be 'plane' or 'cell', got {layout!r}")
            if layout == "plane" and isinstance(n, tuple):
                raise SpecError(f"{where}: layout 'plane' needs the same n for every cell")
            size = sum(n) if isinstance(n, tuple) else cells * n
        elif kind == "box":
            def num(v, w, what):
                return _check_float(v, w, what)
            scale, offset, low, high = (
                _per_cell(d[key], shape, cells, where, key, num, None) if key in d else None
                for key in ("scale", "offset", "low", "high"))
            if low is not None and high is not None:
                lo_a = np.broadcast_to(np.asarray(low, dtype=np.float64), (cells,))
                hi_a = np.broadcast_to(np.asarray(high, dtype=np.float64), (cells,))
                if np.any(lo_a > hi_a):
                    raise SpecError(f"{where}: low must not exceed high")
            size = cells
        else:
            size = cells
        if size > MAX_DIM:
            raise SpecError(f"{where}: encodes to {size} floats, more than {MAX_DIM}")
        self.name, self.kind, self.path, self.shape = name, kind, path, shape
        self.n, self.start, self.layout = n, start, layout
        self.scale, self.offset, self.low, self.high = scale, offset, low, high
        self.cells = 1 if kind == "onehot" else (0 if kind == "multihot" else cells)
        self.size = size

    def __setattr__(self, key, value):
        if hasattr(self, "size"):
            raise AttributeError("Field is immutable")
        object.__setattr__(self, key, value)

    def to_dict(self) -> dict:
        """The JSON object of this field (defaults left out)."""
        d: dict = {"name": self.name, "kind": self.kind}
        if self.path != (self.name,):
            d["path"] = list(self.path)
        if self.kind in ("onehot_array", "box", "binary"):
            d["shape"] = list(self.shape)
        if self.n is not None:
            d["n"] = _nested(self.n, self.shape)
        if self.start not in (None, 0):
            d["start"] = _nested(self.start, self.shape)
        if self.layout is not None:
            d["layout"] = self.layout
        for key in ("scale", "offset", "low", "high"):
            val = getattr(self, key)
            if val is not None:
                d[key] = _nested(val, self.shape)
        return d

    def _key(self):
        return (self.name, self.kind, self.path, self.shape, self.n, self.start, self.layout,
                self.scale, self.offset, self.low, self.high)

    def __eq__(self, other):
        return isinstance(other, Field) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"Field.from_dict({self.to_dict()!r})"


# --------------------------------------------------------------------------------------------
# Kernel plans

def _plan(f: Field, off: int) -> tuple:
    """The kernel's view of one field (see ``_kernels.codes.PLAN_ITEMS``)."""
    kind = _KERNEL_KIND[f.kind]
    n = start = 0
    layout = K.LAYOUT_CELL
    cell_n = cell_start = cell_off = None
    scale = offset = low = high = None
    if f.kind in ("onehot", "multihot"):
        n, start = f.n, f.start or 0
    elif f.kind == "onehot_array":
        layout = K.LAYOUT_PLANE if f.layout == "plane" else K.LAYOUT_CELL
        varying_n = isinstance(f.n, tuple)
        varying_start = isinstance(f.start, tuple)
        n = 0 if varying_n else f.n
        start = 0 if varying_start else f.start
        if layout == K.LAYOUT_PLANE:
            if varying_start:
                cell_start = np.array(f.start, dtype=np.int64)
        elif varying_n or varying_start:
            cell_n = np.array(f.n if varying_n else [f.n] * f.cells, dtype=np.int64)
            cell_start = np.array(f.start if varying_start else [f.start] * f.cells,
                                  dtype=np.int64)
            cell_off = np.zeros(f.cells, dtype=np.int64)
            np.cumsum(cell_n[:-1], out=cell_off[1:])
    elif f.kind == "box":
        def arr(v, default):
            v = default if v is None else v
            return np.array(v if isinstance(v, tuple) else [v], dtype=np.float64)
        if f.scale is not None or f.offset is not None:
            scale, offset = arr(f.scale, 1.0), arr(f.offset, 0.0)
        if f.low is not None:
            low = arr(f.low, None)
        if f.high is not None:
            high = arr(f.high, None)
    return (kind, off, f.size, f.cells, n, start, layout, cell_n, cell_start, cell_off, scale,
            offset, low, high)


# --------------------------------------------------------------------------------------------
# Gathering

def _path_str(path) -> str:
    return "".join(f"[{p!r}]" for p in path) or "(the state itself)"


def _describe(v) -> str:
    if isinstance(v, (list, tuple)):
        return f"{type(v).__name__} of length {len(v)}"
    if isinstance(v, np.ndarray):
        return f"array of shape {v.shape} and dtype {v.dtype}"
    return f"{type(v).__name__} {_REPR.repr(v)}"  # bounded: states are untrusted


def _lookup_error(f: Field, states):
    """The EncodeError for the first state whose value at ``f.path`` cannot be looked up."""
    for i, s in enumerate(states):
        cur = s
        for j, key in enumerate(f.path):
            try:
                cur = cur[key]
            except Exception:
                return EncodeError(f"missing {_path_str(f.path[:j + 1])} "
                                   f"({type(cur).__name__} has no item {key!r})",
                                   field=f.name, row=i)
    return EncodeError(f"could not look up {_path_str(f.path)}", field=f.name, row=0)


def _pluck(f: Field, states: list) -> list:
    path = f.path
    try:
        if len(path) == 1:
            k = path[0]
            return [s[k] for s in states]
        if len(path) == 2:
            a, b = path
            return [s[a][b] for s in states]
        if not path:
            return list(states)
        return [reduce(operator.getitem, path, s) for s in states]
    except Exception:
        raise _lookup_error(f, states) from None


def _native(arr: np.ndarray, f: Field, row: int) -> np.ndarray:
    """``arr`` with a dtype the kernels read (values unchanged), or EncodeError."""
    dt = arr.dtype
    if dt in _NATIVE_DTYPES:
        return arr
    if dt.kind == "b":
        return arr.view(np.uint8)
    if dt.kind in "iuf" and dt.newbyteorder("=") in _NATIVE_DTYPES:
        return arr.astype(dt.newbyteorder("="))
    if dt.kind == "f" and dt.itemsize < 4:
        return arr.astype(np.float32)  # float16: exact
    if dt.kind == "f":
        return arr.astype(np.float64)  # long double
    raise EncodeError(f"values of dtype {dt} are not numbers", field=f.name, row=row)


def _first_problem(f: Field, vals: list):
    """(row, reason) of the first value that is not a numeric array of the field's shape (or
    ``(cells,)``), or None."""
    for i, v in enumerate(vals):
        reason = _value_problem(v, f.shape, f.cells, f.kind)
        if reason:
            return i, reason
    return None


def _value_problem(v, expected: tuple, cells: int, kind: str) -> str | None:
    what = f"an array of shape {expected}" if expected else "a number"
    try:
        a = np.asarray(v)
    except Exception:
        return f"expected {what}, got {_describe(v)}"
    if a.dtype.kind == "O" and kind in ("box", "binary"):
        try:
            a = np.asarray(v, dtype=np.float64)
        except Exception:
            pass
    if a.dtype.kind not in "biuf":
        if a.dtype.kind == "O" and a.shape in (expected, (cells,)):
            bad = next((x for x in a.flat if not _is_number(x)), _NOTHING)
            if bad is _NOTHING:
                return f"number too large in {_describe(v)}"
            return f"non-numeric value {_describe(bad)}"
        if a.shape in (expected, (cells,)):
            return f"non-numeric value {_describe(v)}"
        return f"expected {what}, got {_describe(v)}"
    if a.shape != expected and a.shape != (cells,) and (cells or a.size):
        return f"expected {what}, got {_describe(v)}"
    return None


def _stack(f: Field, vals: list) -> np.ndarray:
    """Per-field values of a list of states -> array ``(n, cells)`` (general path)."""
    nrows = len(vals)
    try:
        arr = np.array(vals)
    except Exception:
        arr = None
    if arr is not None and arr.dtype.kind in "biuf" and arr.ndim >= 1 and arr.shape[0] == nrows \
            and (arr.shape[1:] in (f.shape, (f.cells,)) or (f.cells == 0 and arr.size == 0)):
        return _native(arr.reshape(nrows, f.cells), f, 0)
    bad = _first_problem(f, vals)
    if bad is not None:
        raise EncodeError(bad[1], field=f.name, row=bad[0])
    # every row is fine on its own (e.g. a mix of nested and flat lists, or big ints in a box)
    dtype = np.float64 if f.kind in ("box", "binary") else None
    rows = [np.asarray(v, dtype=dtype).reshape(f.cells) for v in vals]
    arr = np.stack(rows) if rows else np.zeros((0, f.cells), dtype=np.int64)
    return _native(arr, f, 0)


def _ragged(f: Field, vals: list):
    """Multihot id lists -> (ids, offsets) (general path)."""
    ok_types = (list, tuple, np.ndarray)
    try:
        if not all(isinstance(v, ok_types) for v in vals):
            raise TypeError
        lengths = np.fromiter((len(v) for v in vals), dtype=np.int64, count=len(vals))
        flat = list(chain.from_iterable(vals))
        ids = np.array(flat) if flat else np.zeros(0, dtype=np.int64)
        if ids.dtype.kind not in "biuf" or ids.shape != (int(lengths.sum()),):
            raise TypeError
    except Exception:
        for i, v in enumerate(vals):
            reason = None
            if not isinstance(v, ok_types):
                reason = f"expected a list of ids, got {_describe(v)}"
            else:
                try:
                    a = np.asarray(v)
                except Exception:
                    a = None
                if a is None or a.ndim != 1:
                    reason = f"expected a flat list of ids, got {_describe(v)}"
                elif a.size and a.dtype.kind not in "biuf":
                    bad = next((x for x in a.flat if not _is_number(x)), _NOTHING)
                    reason = (f"non-numeric id {_describe(bad)}" if bad is not _NOTHING
                              else "id out of the int64 range")
            if reason:
                raise EncodeError(reason, field=f.name, row=i) from None
        raise EncodeError("id lists cannot be combined into one array", field=f.name,
                          row=0) from None
    offsets = np.zeros(len(vals) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return _native(ids, f, 0), offsets


def _gather_values(mod, f: Field, vals: list) -> tuple:
    """One field's per-row values -> its kernel input ``(data, offsets)``: the compiled fast
    path when it takes them, else the general NumPy path (which also finds every error)."""
    if f.kind == "multihot":
        got = mod.gather_ragged(vals)
        return got if got is not None else _ragged(f, vals)
    arr = mod.gather_nested(vals, f.shape, f.kind in ("box", "binary"))
    return (arr if arr is not None else _stack(f, vals)), None


def _rows_of(f: Field, col) -> list:
    if isinstance(col, list):
        return col
    if isinstance(col, (str, bytes, Mapping)) or not hasattr(col, "__iter__") \
            or (isinstance(col, np.ndarray) and col.ndim == 0):
        raise EncodeError(f"column must hold one id list per row, got {_describe(col)}",
                          field=f.name, row=0)
    return list(col)


def _column(cols: Mapping, f: Field):
    if f.name in cols:
        return cols[f.name]
    key = "/".join(str(p) for p in f.path)
    if key in cols:
        return cols[key]
    tried = repr(f.name) + (f" or {key!r}" if key != f.name else "")
    raise EncodeError(f"missing column {tried}", field=f.name, row=0)


def _check_rows(f: Field, count: int, nrows: int):
    if count != nrows:
        raise EncodeError(f"column has {count} rows, expected {nrows}", field=f.name,
                          row=min(count, nrows))


def _csr(f: Field, ids, offsets, nrows: int | None):
    """A CSR multihot column -> (ids, offsets, nrows), checked."""
    try:
        ids = np.asarray(ids)
        offsets = np.asarray(offsets)
    except Exception:
        raise EncodeError("(ids, offsets) must be two arrays", field=f.name, row=0) from None
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or offsets.size < 1:
        raise EncodeError("offsets must be a 1-D integer array", field=f.name, row=0)
    if nrows is None:
        nrows = offsets.size - 1
    _check_rows(f, offsets.size - 1, nrows)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "biuf"):
        raise EncodeError("ids must be a 1-D numeric array", field=f.name, row=0)
    if offsets.dtype == np.uint64 and offsets.size and offsets.max() > np.iinfo(np.int64).max:
        raise EncodeError("offsets out of range", field=f.name, row=0)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets[0] < 0:
        raise EncodeError(f"offsets[0] is negative ({int(offsets[0])})", field=f.name, row=0)
    dec = np.flatnonzero(np.diff(offsets) < 0)
    if dec.size:
        raise EncodeError("offsets decrease", field=f.name, row=int(dec[0]))
    if offsets[-1] > ids.size:
        r = int(np.searchsorted(offsets, ids.size, side="right")) - 1
        raise EncodeError(f"offsets go past the {ids.size} ids", field=f.name, row=max(r, 0))
    if not ids.size:
        ids = np.zeros(0, dtype=np.int64)
    return _native(np.ascontiguousarray(ids), f, 0), offsets, nrows


# --------------------------------------------------------------------------------------------
# The public class

class ObsSpec:
    """A declarative observation encoder (see ``docs/OBS_SPEC.md``).

    ``ObsSpec(fields)`` takes :class:`Field` objects or their JSON objects, in output order.
    ``spec.encode(states)`` turns a batch of raw states into float32 rows of ``spec.dim``.
    """

    def __init__(self, fields):
        if isinstance(fields, (str, bytes, Mapping)) or not hasattr(fields, "__iter__"):
            raise SpecError("fields must be a list of field objects")
        items = list(fields)
        if len(items) > MAX_FIELDS:
            raise SpecError(f"spec has {len(items)} fields, at most {MAX_FIELDS} allowed")
        parsed, names, off, plans, slices = [], set(), 0, [], {}
        for i, item in enumerate(items):
            f = item if isinstance(item, Field) else Field.from_dict(item, where=f"field {i}")
            if f.name in names:
                raise SpecError(f"field {i}: duplicate name {f.name!r}")
            names.add(f.name)
            if off + f.size > MAX_DIM:
                raise SpecError(f"spec encodes to more than {MAX_DIM} floats")
            parsed.append(f)
            plans.append(_plan(f, off))
            slices[f.name] = slice(off, off + f.size)
            off += f.size
        self._fields = tuple(parsed)
        self._plans = plans
        self._gather_specs = [(f.path, 2 if f.kind == "multihot" else
                               int(f.kind in ("box", "binary")), f.shape) for f in parsed]
        self._slices = slices
        self._dim = off

    # -- description -------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Length of one encoded observation."""
        return self._dim

    @property
    def fields(self) -> tuple:
        """The fields, in output order (tuple of :class:`Field`)."""
        return self._fields

    @property
    def slices(self) -> dict:
        """Field name -> ``slice`` of the flat observation vector."""
        return dict(self._slices)

    def __eq__(self, other):
        return isinstance(other, ObsSpec) and self._fields == other._fields

    def __hash__(self):
        return hash(self._fields)

    def __repr__(self):
        return f"ObsSpec(dim={self._dim}, fields=[{', '.join(f.name for f in self._fields)}])"

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON object of this spec: ``{"version": 1, "fields": [...]}``."""
        return {"version": SPEC_VERSION, "fields": [f.to_dict() for f in self._fields]}

    def to_json(self, *, indent: int | None = None) -> str:
        """The spec as a JSON string (round-trips exactly through :meth:`from_json`)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d) -> "ObsSpec":
        """A spec from its JSON object (or a bare list of fields); SpecError when malformed."""
        if isinstance(d, Mapping):
            unknown = set(d) - {"version", "fields"}
            if unknown:
                raise SpecError(f"unknown spec keys: {', '.join(sorted(map(str, unknown)))}")
            if "version" in d and (not _is_int(d["version"]) or d["version"] != SPEC_VERSION):
                raise SpecError(f"unsupported spec version {d['version']!r} "
                                f"(this fastrl reads version {SPEC_VERSION})")
            if "fields" not in d:
                raise SpecError("spec object needs 'fields'")
            d = d["fields"]
        if not isinstance(d, (list, tuple)):
            raise SpecError(f"'fields' must be a list, not {type(d).__name__}")
        return cls(d)

    @classmethod
    def from_json(cls, text) -> "ObsSpec":
        """A spec from a JSON string (or bytes, or an already parsed object)."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SpecError(f"spec JSON is not UTF-8: {exc}") from None
        if isinstance(text, str):
            if len(text) > MAX_JSON_CHARS:
                raise SpecError("spec JSON is too large")
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise SpecError(f"spec is not valid JSON: {exc}") from None
            return cls.from_dict(obj)
        return cls.from_dict(text)

    # -- gymnasium ---------------------------------------------------------------------------
    @classmethod
    def from_gymnasium(cls, space) -> "ObsSpec":
        """The spec whose ``encode([s])[0]`` equals ``gymnasium.spaces.flatten(space, s)`` cast
        to float32, for nested Dict/Tuple spaces of Discrete, MultiDiscrete, MultiBinary and Box.

        Field names are the path keys joined with "/" (``"obs"`` for a space that is not a Dict
        or Tuple); Dict subspaces come in the space's own key order, which is flatten's order.
        """
        try:
            from gymnasium import spaces as S
        except ImportError as exc:  # optional dependency
            raise ImportError("ObsSpec.from_gymnasium needs gymnasium "
                              "(pip install 'fastrl-batch[gymnasium]')") from exc
        fields: list = []
        names: set = set()

        def add(d, path):
            base = "/".join(str(p) for p in path) or "obs"
            name, k = base, 1
            while name in names:
                k += 1
                name = f"{base}~{k}"
            names.add(name)
            d = {"name": name, "path": list(path), **d}
            fields.append(Field.from_dict(d, where=f"space at {_path_str(path)}"))
            if len(fields) > MAX_FIELDS:
                raise SpecError(f"space has more than {MAX_FIELDS} leaves")

        def walk(sp, path):
            if len(path) > MAX_PATH:
                raise SpecError(f"space nested deeper than {MAX_PATH}")
            if isinstance(sp, S.Dict):
                for key, sub in sp.spaces.items():
                    if not isinstance(key, (str, int)) or isinstance(key, bool):
                        raise SpecError(f"Dict key {key!r} at {_path_str(path)} is not a "
                                        "string or integer")
                    walk(sub, path + [key])
            elif isinstance(sp, S.Tuple):
                for i, sub in enumerate(sp.spaces):
                    walk(sub, path + [i])
            elif isinstance(sp, S.Discrete):
                add({"kind": "onehot", "n": int(sp.n), "start": int(sp.start)}, path)
            elif isinstance(sp, S.MultiDiscrete):
                add({"kind": "onehot_array", "shape": list(sp.shape), "layout": "cell",
                     "n": np.asarray(sp.nvec).tolist(),
                     "start": np.asarray(sp.start).tolist()}, path)
            elif isinstance(sp, S.MultiBinary):
                add({"kind": "binary", "shape": list(sp.shape)}, path)
            elif isinstance(sp, S.Box):
                add({"kind": "box", "shape": list(sp.shape)}, path)
            else:
                raise SpecError(f"unsupported gymnasium space {type(sp).__name__} at "
                                f"{_path_str(path)}")

        walk(space, [])
        return cls(fields)

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, states, out: np.ndarray | None = None, *,
               threads: int | None = None) -> np.ndarray:
        """Encode a batch of raw states into float32 rows ``(n, dim)`` (C-contiguous).

        ``states`` is a list of states (nested dicts/lists/tuples, e.g. parsed JSON or gymnasium
        samples) or a dict of columns (the fast path): field name, or the field's path joined
        with "/", -> array with a leading batch axis (``(n,) + shape`` or ``(n, cells)``); a
        multihot column is a list of id lists, a 2-D array ``(n, k)`` of ids, or a tuple
        ``(ids, offsets)`` in CSR form (``offsets`` of length ``n + 1``).

        With ``out`` (a writeable C-contiguous float32 array of shape ``(n, dim)``, e.g. rows of
        a writer's buffer) the rows are written there, every byte, and ``out`` is returned.
        Raises EncodeError (naming the field and row) for a bad state.
        """
        if isinstance(states, Mapping):
            nrows, inputs = self._gather_columns(states, out)
        else:
            if not isinstance(states, (list, tuple)):
                if isinstance(states, (str, bytes)) or not hasattr(states, "__iter__"):
                    raise TypeError("states must be a list of states or a dict of columns")
                states = list(states)
            nrows, inputs = self._gather_states(states)
        out = self._check_out(out, nrows)
        if threads is not None and int(threads) < 1:
            raise ValueError(f"thread count must be >= 1, got {threads}")
        # num_threads() reads cgroup files (tens of microseconds): only for big batches
        nthreads = num_threads(threads) if nrows * self._dim >= _PARALLEL_MIN_FLOATS else 1
        row, fi, code, elem = _kernels.encode_batch(
            out, self._plans, inputs, nrows, nthreads)
        if row >= 0:
            raise self._value_error(inputs, int(row), int(fi), int(code), int(elem))
        return out

    def encode_one(self, state) -> np.ndarray:
        """Encode one state into a float32 vector ``(dim,)``."""
        return self.encode([state])[0]

    def _check_out(self, out, nrows: int) -> np.ndarray:
        if out is None:
            return np.empty((nrows, self._dim), dtype=np.float32)
        if not isinstance(out, np.ndarray) or out.dtype != np.float32 \
                or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be a writeable C-contiguous float32 array")
        if out.shape != (nrows, self._dim):
            raise ValueError(f"out has shape {out.shape}, expected {(nrows, self._dim)}")
        return out

    def _gather_states(self, states) -> tuple:
        nrows = len(states)
        mod = _kernels
        inputs = []
        fast = mod.gather_states(states, self._gather_specs)
        for f, got in zip(self._fields, fast):
            inputs.append(got if got is not None else _gather_values(mod, f, _pluck(f, states)))
        return nrows, inputs

    def _gather_columns(self, cols: Mapping, out) -> tuple:
        mod = _kernels
        nrows = None
        inputs = []
        for f in self._fields:
            col = _column(cols, f)
            if f.kind == "multihot":
                if isinstance(col, tuple):
                    if len(col) != 2:
                        raise EncodeError("a CSR column is a tuple (ids, offsets)", field=f.name,
                                          row=0)
                    ids, offsets, nrows = _csr(f, col[0], col[1], nrows)
                    inputs.append((ids, offsets))
                    continue
                if isinstance(col, np.ndarray) and col.ndim == 2 and col.dtype.kind in "biuf":
                    if nrows is None:
                        nrows = col.shape[0]
                    _check_rows(f, col.shape[0], nrows)
                    k = col.shape[1]
                    ids = np.ascontiguousarray(col).reshape(-1)
                    inputs.append((_native(ids, f, 0),
                                   np.arange(nrows + 1, dtype=np.int64) * k))
                    continue
                vals = _rows_of(f, col)
                if nrows is None:
                    nrows = len(vals)
                _check_rows(f, len(vals), nrows)
                inputs.append(_gather_values(mod, f, vals))
                continue
            if isinstance(col, (list, tuple)) or \
                    (isinstance(col, np.ndarray) and col.dtype.kind == "O" and col.ndim == 1):
                vals = list(col)  # per-row values: checked like states
                if nrows is None:
                    nrows = len(vals)
                _check_rows(f, len(vals), nrows)
                inputs.append(_gather_values(mod, f, vals))
                continue
            try:
                arr = np.asarray(col)
            except Exception:
                raise EncodeError(f"column is not an array ({_describe(col)})", field=f.name,
                                  row=0) from None
            if arr.ndim == 0:
                raise EncodeError(f"column needs a leading batch axis, got {_describe(col)}",
                                  field=f.name, row=0)
            if nrows is None:
                nrows = arr.shape[0]
            _check_rows(f, arr.shape[0], nrows)
            if arr.shape[1:] not in (f.shape, (f.cells,)):
                raise EncodeError(f"column has shape {arr.shape}, expected "
                                  f"{(nrows,) + f.shape}", field=f.name, row=0)
            if arr.dtype.kind not in "biuf":
                raise EncodeError(f"column of dtype {arr.dtype} is not numeric", field=f.name,
                                  row=0)
            arr = _native(np.ascontiguousarray(arr).reshape(nrows, f.cells), f, 0)
            inputs.append((arr, None))
        if nrows is None:
            nrows = out.shape[0] if isinstance(out, np.ndarray) and out.ndim == 2 else 0
        return nrows, inputs

    def _value_error(self, inputs, row: int, fi: int, code: int, elem: int) -> EncodeError:
        f = self._fields[fi]
        data, offsets = inputs[fi]
        if f.kind == "multihot":
            v = data[int(offsets[row]) + elem]
            where = f" at position {elem}"
        else:
            v = data.reshape(-1)[row * f.cells + elem]
            where = f" at index {tuple(int(i) for i in np.unravel_index(elem, f.shape))}" \
                if f.shape else ""
        text = repr(float(v)) if data.dtype.kind == "f" else str(int(v))
        if code == K.ERR_RANGE:
            if f.kind == "multihot":
                lo, hi = 0, f.n
            else:
                st = f.start[elem] if isinstance(f.start, tuple) else f.start
                n = f.n[elem] if isinstance(f.n, tuple) else f.n
                lo, hi = st, st + n
            reason = f"value {text}{where} out of range [{lo}, {hi})"
        elif code == K.ERR_NOT_INT:
            reason = f"value {text}{where} is not an integer"
        elif code == K.ERR_NONFINITE:
            reason = f"value {text}{where} is not finite"
        elif code == K.ERR_OVERFLOW:
            reason = f"value {text}{where} is not finite once scaled and rounded to float32"
        elif code == K.ERR_BINARY:
            reason = f"value {text}{where} is not 0 or 1"
        else:
            reason = f"kernel error code {code}{where}"
        return EncodeError(reason, field=f.name, row=row)
