"""Gymnasium spaces <-> fastrl's flat float32 observations, vectorized over rows.

``gymnasium.spaces.flatten`` lays a (nested Dict/Tuple) space out leaf after leaf: a Box as its
values, a Discrete as a one-hot of ``n``, a MultiDiscrete as one one-hot per cell, a
MultiBinary as its 0/1 values (``ObsSpec.from_gymnasium(space).encode`` does the same, in
float32). :func:`unflatten_rows` is the inverse of that for many rows at once (what
``gymnasium.spaces.unflatten`` does for one), and checks that every row really is a value of the
space (one-hot blocks, integers, bounds), so nothing outside the space is ever stored.
"""

from __future__ import annotations

from functools import reduce
import math
import operator

import numpy as np


def _spaces():
    from gymnasium import spaces as S
    return S


def _path_str(path) -> str:
    return "".join(f"[{p!r}]" for p in path) or "(the space itself)"


def leaf_size(sp) -> int:
    S = _spaces()
    if isinstance(sp, S.Discrete):
        return int(sp.n)
    if isinstance(sp, S.MultiDiscrete):
        return int(np.sum(np.asarray(sp.nvec, dtype=np.int64)))
    if isinstance(sp, (S.MultiBinary, S.Box)):
        return int(math.prod(sp.shape))
    raise TypeError(type(sp).__name__)


def leaves(space, path=()):
    """(path, leaf space) for every leaf, in ``gymnasium.spaces.flatten``'s order."""
    S = _spaces()
    if isinstance(space, S.Dict):
        for key, sub in space.spaces.items():
            yield from leaves(sub, path + (key,))
    elif isinstance(space, S.Tuple):
        for i, sub in enumerate(space.spaces):
            yield from leaves(sub, path + (i,))
    else:
        yield path, space


def space_problem(space, obs_dim: int, what: str = "observation_space") -> str | None:
    """Why fastrl's (obsDim,) float32 observations cannot be stored under ``space``, or None."""
    S = _spaces()
    if not isinstance(space, S.Space):
        return f"{what} must be a gymnasium space, got {type(space).__name__}"
    total = 0
    for path, sp in leaves(space):
        if not isinstance(sp, (S.Box, S.Discrete, S.MultiDiscrete, S.MultiBinary)):
            return (f"{what} has a {type(sp).__name__} at {_path_str(path)}: only nested "
                    "Dict/Tuple spaces of Box, Discrete, MultiDiscrete and MultiBinary have a "
                    "fixed-size flat form")
        total += leaf_size(sp)
    if total != obs_dim:
        return (f"{what} {space} flattens to {total} values, the batch's observations have "
                f"obsDim={obs_dim}")
    return None


def _onehot_index(v: np.ndarray, where: str) -> np.ndarray:
    """Index of the 1 in each row of the (N, n) block ``v``; ValueError unless one-hot."""
    ok = ((v == 0) | (v == 1)).all(axis=-1) & (v.sum(axis=-1) == 1)
    if not ok.all():
        bad = np.argwhere(~ok)[0]
        raise ValueError(f"{where}: row {int(bad[0])} is not a one-hot block "
                         f"({v[tuple(bad)].tolist()})")
    return np.argmax(v, axis=-1)


def unflatten_rows(space, x: np.ndarray, row_offset: int = 0):
    """Rows ``x`` (N, flatdim) back into the structure of ``space``: a dict / tuple (nested
    like the space) of arrays with a leading axis N, or one array for a leaf space. Raises
    ValueError naming the leaf and row when a row is not a value of the space."""
    S = _spaces()
    x = np.asarray(x)
    N = x.shape[0]
    off = 0

    def leaf(sp, path):
        nonlocal off
        n = leaf_size(sp)
        v = x[:, off:off + n]
        off += n
        where = f"observation leaf {_path_str(path)} ({sp})"

        def fail(mask, what):
            r = int(np.argwhere(mask)[0][0])
            raise ValueError(f"{where}: row {r + row_offset} {what}")

        if isinstance(sp, S.Discrete):
            return (_onehot_index(v, where) + int(sp.start)).astype(sp.dtype)
        if isinstance(sp, S.MultiDiscrete):
            nvec = np.asarray(sp.nvec, dtype=np.int64).reshape(-1)
            start = np.broadcast_to(np.asarray(sp.start, dtype=np.int64), sp.shape).reshape(-1)
            if nvec.size and (nvec == nvec[0]).all():
                idx = _onehot_index(v.reshape(N, nvec.size, int(nvec[0])), where)
            else:
                idx = np.empty((N, nvec.size), np.int64)
                o = 0
                for c, k in enumerate(nvec):
                    idx[:, c] = _onehot_index(v[:, o:o + int(k)], where)
                    o += int(k)
            return (idx + start).astype(sp.dtype).reshape((N,) + tuple(sp.shape))
        if isinstance(sp, S.MultiBinary):
            bad = (v != 0) & (v != 1)
            if bad.any():
                fail(bad.any(axis=1), "has a value other than 0 and 1")
            return v.astype(sp.dtype).reshape((N,) + tuple(sp.shape))
        # Box
        vals = v.astype(sp.dtype)
        if np.issubdtype(sp.dtype, np.integer) or sp.dtype == np.bool_:
            bad = vals.astype(v.dtype) != v
            if bad.any():
                fail(bad.any(axis=1), f"has a value not representable as {sp.dtype}")
        vals = vals.reshape((N,) + tuple(sp.shape))
        if N:
            low = np.asarray(sp.low)
            high = np.asarray(sp.high)
            axes = tuple(range(1, vals.ndim))
            bad = ~((vals >= low) & (vals <= high)).all(axis=axes) if axes \
                else ~((vals >= low) & (vals <= high))
            if bad.any():
                fail(bad, "is outside the Box's low/high bounds")
        return vals

    def build(sp, path):
        if isinstance(sp, S.Dict):
            return {k: build(s, path + (k,)) for k, s in sp.spaces.items()}
        if isinstance(sp, S.Tuple):
            return tuple(build(s, path + (i,)) for i, s in enumerate(sp.spaces))
        return leaf(sp, path)

    out = build(space, ())
    if off != x.shape[1]:
        raise ValueError(f"space flattens to {off} values, rows have {x.shape[1]}")
    return out


def get_path(value, path):
    """``value[path[0]][path[1]]...`` (the leaf of a nested dict/tuple value)."""
    return reduce(operator.getitem, path, value) if path else value
