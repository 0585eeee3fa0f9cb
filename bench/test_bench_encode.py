"""Group ``encode``: the reference game's ObsSpec (688 floats, fastrl.game.game_spec()) encoding
every workload state, from a dict of columns and from JSON-parsed state dicts, on both kernel paths
(one thread), beside np.copyto of the output and gymnasium.spaces.flatten one state at a time."""

import functools

import numpy as np
import pytest

from . import _benchlib as B

pytestmark = pytest.mark.bench


@pytest.mark.parametrize("source", ("columns", "dicts"))
@pytest.mark.parametrize("backend", B.backends())
def test_encode(bench, wl, backend, source):
    states = wl.state_columns if source == "columns" else wl.state_dicts
    out = wl.encode_out
    bench(functools.partial(wl.spec.encode, states, out=out, threads=1), group="encode",
          key=f"encode:{backend}:{source}", items=wl.n, unit="states",
          nbytes=out.nbytes, backend=backend)
    assert np.array_equal(out, wl.encoded)


def test_encode_copyto(bench, wl):
    bench(functools.partial(np.copyto, wl.encode_out, wl.encoded), group="encode",
          key="encode:copyto", items=wl.n, unit="states", nbytes=wl.encoded.nbytes)


def test_encode_gymnasium_flatten(bench, wl):
    """gymnasium.spaces.flatten of the equivalent Dict space, one state at a time (a subset of
    the states: it is slow; throughput is per state)."""
    if wl.gym is None:
        pytest.skip("gymnasium is not installed")
    space, states = wl.gym
    out = np.empty((len(states), wl.spec.dim), np.float32)
    bench(functools.partial(B.gym_flatten_all, space, states, out), group="encode",
          key="encode:gym_flatten", items=len(states), unit="states", nbytes=out.nbytes)
    # Same numbers as fastrl's spec of that space (ObsSpec.from_gymnasium) gives.
    from fastrl import ObsSpec
    assert np.array_equal(out, ObsSpec.from_gymnasium(space).encode(states))
