"""``ColumnView``: one column of a dataset of many parts (batches, shards) seen as one array.

``Dataset.column("obs")[1000:2000]``, ``[idx]`` with an integer or boolean index array, or an
integer read only the rows asked for, part by part (slices of the memory-mapped files), and return
a new ndarray of just those rows: nothing else is copied. ``np.asarray(view)`` materializes the
whole column (its size in RAM).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ColumnView"]


class ColumnView:
    """Rows of ``arrays`` (one per part, same dtype and row shape) as one column.

    ``shape`` is ``(total rows,) + row shape``; ``dtype`` the column's; ``len(view)`` the rows.
    Indexing: an int (a row, as ``arr[i]`` gives it), a slice (any step), a 1-D integer array or
    list (fancy, any order, repeats allowed, negative from the end), or a boolean mask of
    ``len(view)``; ``view[i, j]``-style tuples apply the first index here and the rest to the
    result. IndexError for rows out of range.
    """

    def __init__(self, name: str, arrays: list):
        self.name = name
        self.arrays = list(arrays)
        if not self.arrays:
            raise ValueError(f"column {name!r}: no parts")
        first = self.arrays[0]
        for a in self.arrays[1:]:
            if a.dtype != first.dtype or a.shape[1:] != first.shape[1:]:
                raise ValueError(f"column {name!r}: parts differ in dtype or row shape "
                                 f"({first.dtype}{first.shape[1:]} vs {a.dtype}{a.shape[1:]})")
        self.starts = np.zeros(len(self.arrays) + 1, np.int64)
        np.cumsum([len(a) for a in self.arrays], out=self.starts[1:])
        self.dtype = first.dtype
        self.shape = (int(self.starts[-1]),) + tuple(first.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self):
        return (f"ColumnView({self.name!r}, shape={self.shape}, dtype={self.dtype}, "
                f"parts={len(self.arrays)})")

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if not key:
                return self[:]
            return self[key[0]][(slice(None),) + key[1:]] if not _is_scalar(key[0]) \
                else self[key[0]][key[1:]]
        if _is_scalar(key):
            return self._row(int(key))
        if isinstance(key, slice):
            return self._slice(key)
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean index of shape {idx.shape} for {len(self)} rows")
            idx = np.flatnonzero(idx)
        if idx.size == 0:
            return np.empty((0,) + self.shape[1:], self.dtype)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"column index must be an int, a slice or an integer/boolean "
                             f"array, got {idx.dtype}")
        return self._take(idx.astype(np.int64, copy=False))

    def _row(self, i: int):
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for a column of {n} rows")
        k = int(np.searchsorted(self.starts, i, "right")) - 1
        return self.arrays[k][i - self.starts[k]]

    def _slice(self, sl: slice):
        start, stop, step = sl.indices(len(self))
        if step != 1:
            return self._take(np.arange(start, stop, step, dtype=np.int64))
        if stop <= start:
            return np.empty((0,) + self.shape[1:], self.dtype)
        out = np.empty((stop - start,) + self.shape[1:], self.dtype)
        for k, a in enumerate(self.arrays):
            lo, hi = max(start, self.starts[k]), min(stop, self.starts[k + 1])
            if lo < hi:
                out[lo - start:hi - start] = a[lo - self.starts[k]:hi - self.starts[k]]
        return out

    def _take(self, idx: np.ndarray):
        n = len(self)
        idx = np.where(idx < 0, idx + n, idx)
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise IndexError(f"row {int(idx[np.argmax(bad)])} out of range for a column of "
                             f"{n} rows")
        part = np.searchsorted(self.starts, idx, "right") - 1
        out = np.empty((len(idx),) + self.shape[1:], self.dtype)
        for k in np.unique(part):
            sel = np.flatnonzero(part == k)
            out[sel] = np.take(self.arrays[k], idx[sel] - self.starts[k], axis=0)
        return out


def _is_scalar(key) -> bool:
    return isinstance(key, (int, np.integer)) and not isinstance(key, bool)
