"""Dataset.column: one column across many parts, indexed like an ndarray without copying the
rest (property test against the concatenated arrays)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrl.columnview import ColumnView

PARTS = [np.arange(k * 30, k * 30 + n * 3, dtype=np.float32).reshape(n, 3)
         for k, n in enumerate([4, 0, 7, 1, 5])]
FULL = np.concatenate(PARTS)
VIEW = ColumnView("obs", PARTS)
N = len(FULL)


def test_shape_and_materialize():
    assert VIEW.shape == FULL.shape and VIEW.dtype == FULL.dtype and len(VIEW) == N
    np.testing.assert_array_equal(np.asarray(VIEW), FULL)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.integers(-N, N - 1),
    st.builds(slice, st.one_of(st.none(), st.integers(-N - 3, N + 3)),
              st.one_of(st.none(), st.integers(-N - 3, N + 3)),
              st.one_of(st.none(), st.integers(1, 4), st.integers(-4, -1))),
    st.lists(st.integers(-N, N - 1), max_size=40),
    st.lists(st.booleans(), min_size=N, max_size=N)))
def test_indexing_matches_the_concatenation(key):
    k = np.asarray(key) if isinstance(key, list) else key
    if isinstance(key, list) and not key:
        k = np.zeros(0, np.int64)
    np.testing.assert_array_equal(VIEW[k], FULL[k])


def test_tuple_index_and_errors():
    np.testing.assert_array_equal(VIEW[2:9, 1], FULL[2:9, 1])
    assert VIEW[5, 2] == FULL[5, 2]
    with pytest.raises(IndexError):
        VIEW[N]
    with pytest.raises(IndexError):
        VIEW[[0, N + 1]]
    with pytest.raises(IndexError):
        VIEW[np.array([0.5])]
    with pytest.raises(ValueError, match="differ"):
        ColumnView("x", [np.zeros((2, 3)), np.zeros((2, 4))])


def test_dataset_column_across_shards(tmp_path):
    import fastrl
    rng = np.random.default_rng(1)
    with fastrl.BatchWriter(tmp_path, n_actions=3, fsync=False, shard_bytes=300) as w:
        for _ in range(9):
            T = int(rng.integers(1, 6))
            w.add_episode(obs=rng.standard_normal((T, 2)), actions=[0] * T, rewards=[1.0] * T,
                          final_obs=rng.standard_normal(2))
    ds = fastrl.open_dataset(w.path)
    assert len(ds.parts) > 2
    obs = np.concatenate([p.obs for p in ds.parts])
    col = ds.column("obs")
    np.testing.assert_array_equal(col[3:11], obs[3:11])
    np.testing.assert_array_equal(col[[len(obs) - 1, 0, 5]], obs[[len(obs) - 1, 0, 5]])
    assert ds.column("final_obs").shape == (9, 2)
    with pytest.raises(KeyError, match="no column 'values'"):
        ds.column("values")


def test_final_obs_travels_to_npz_and_decompress(tmp_path):
    import fastrl
    rng = np.random.default_rng(2)
    finals = rng.standard_normal((4, 3))
    with fastrl.BatchWriter(tmp_path / "r", n_actions=2, fsync=False, compression="gzip") as w:
        for fin in finals:
            w.add_episode(obs=rng.standard_normal((3, 3)), actions=[0, 1, 0], rewards=[0.0] * 3,
                          final_obs=fin)
    z = np.load(fastrl.to_npz(w.path, tmp_path / "b.npz"))
    np.testing.assert_array_equal(z["final_obs"], finals.astype(np.float32))
    plain = fastrl.decompress(w.path, tmp_path / "plain")
    np.testing.assert_array_equal(fastrl.load_batch(plain).final_obs, finals.astype(np.float32))
