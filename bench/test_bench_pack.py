"""Group ``pack``: fastrl._batch.packing.pack of normalized episodes into preallocated columns (both
kernel paths, legal-id lists and dense masks, one thread) beside np.copyto of the same output
bytes and the best vectorized NumPy packing (bench/_benchlib.py: numpy_best_pack)."""

import functools

import numpy as np
import pytest

from fastrl._batch.packing import pack

from . import _benchlib as B

pytestmark = pytest.mark.bench

MASKS = ("legal", "dense")


@pytest.mark.parametrize("masks", MASKS)
@pytest.mark.parametrize("backend", B.backends())
def test_pack(bench, wl, backend, masks):
    eps = wl.episodes(masks)
    bench(functools.partial(pack, eps, wl.out_cols, 0, B.N_ACTIONS, threads=1), group="pack",
          key=f"pack:{backend}:{masks}", items=wl.n, unit="transitions",
          nbytes=wl.n * B.PACK_ROW_BYTES, backend=backend)
    for k, ref in wl.packed.items():
        assert np.array_equal(wl.out_cols[k], ref), k


def test_pack_copyto(bench, wl):
    """The floor: np.copyto of exactly the bytes pack writes (all six columns)."""
    src = wl.packed
    bench(functools.partial(B.copy_columns, wl.out_cols, src), group="pack", key="pack:copyto",
          items=wl.n, unit="transitions", nbytes=wl.n * B.PACK_ROW_BYTES)


@pytest.mark.parametrize("masks", MASKS)
def test_pack_numpy_best(bench, wl, masks):
    """The best vectorized NumPy packing (concatenate + one fancy-index mask fill, same checks)."""
    eps = wl.episodes(masks)
    bench(functools.partial(B.numpy_best_pack, eps, wl.out_cols, B.N_ACTIONS), group="pack",
          key=f"pack:npbest:{masks}", items=wl.n, unit="transitions",
          nbytes=wl.n * B.PACK_ROW_BYTES)
    for k, ref in wl.packed.items():
        assert np.array_equal(wl.out_cols[k], ref), k
