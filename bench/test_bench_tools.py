"""Smoke tests of the reporting tools (no timing asserted): ratios.py builds its table and
verdicts from a pytest-benchmark JSON, scaling.py measures and renders on a tiny workload."""

import json

import pytest

from . import _benchlib as B
from . import ratios, scaling

pytestmark = pytest.mark.bench


def _bench(key, median, items, unit="transitions", nbytes=0):
    return {"group": key.split(":")[0], "name": key,
            "stats": {"median": median, "min": median * 0.9},
            "extra_info": {"key": key, "items": items, "unit": unit, "bytes": nbytes,
                           "mode": "quick"}}


def test_ratios_table_from_json(tmp_path, capsys):
    doc = {"datetime": "2026-01-01T00:00:00", "machine_info": {"python_version": "3"},
           "benchmarks": [_bench("pack:cython:legal", 0.010, 10000, nbytes=23130000),
                          _bench("pack:copyto", 0.005, 10000, nbytes=23130000),
                          _bench("pack:npbest:legal", 0.100, 10000),
                          _bench("load:open", 0.001, 1, unit="opens"),
                          _bench("load:sample:disk", 0.0013, 4096),
                          _bench("load:sample:ram", 0.0010, 4096)]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    results, _ = ratios.load_results(path)
    rows, verdicts = ratios.build_table(results)
    got = {t.split(" (")[0]: (shown, ok) for t, shown, ok in verdicts}
    assert [(s, ok) for s, ok in got.values()] == [("0.5x", False), ("10x", True),
                                                   ("900 us", True), ("1.3x time", False)]
    assert ratios.main(["--benchmark-json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "np.copyto of the output bytes" in out and "targets: 2 met, 2 missed" in out
    assert ratios.render(rows, markdown=True).startswith("| group | benchmark")


def test_scaling_smoke():
    sz = B.Sizes("tiny", episodes=2, per_file=2, rounds=1, warmup=0, slow_rounds=1,
                 gym_states=0, savez_compressed_rows=0)
    w = B.Workload(sz)
    try:
        rows = scaling.measure(w, max_threads=2, repeats=1, backend=B.backends()[0],
                               min_time=0.0)
    finally:
        w.cleanup()
    assert {(r["kernel"], r["threads"]) for r in rows} == {
        (k, t) for k in ("pack, legal ids", "pack, dense masks", "encode, columns",
                         "encode, dicts") for t in (1, 2)}
    assert "kernel/copy" in scaling.render(rows)
    assert set(scaling.cpu_capacity(2, repeats=1, min_time=0.0)) == {1, 2}
