"""Fixtures of the benchmark suites: the session workload (quick by default, full with
``FASTRL_BENCH_FULL=1``) and ``bench``, a thin wrapper around pytest-benchmark's ``pedantic`` that
tags each benchmark with what ``ratios.py`` needs (group, key, items per call, bytes per call).

The default ``pytest`` run is ``--benchmark-quiet`` (pyproject.toml): every benchmark and the
regression guard run, but pytest-benchmark prints no tables. ``FASTRL_BENCH_TABLES=1 pytest bench``
prints them (or ``python bench/ratios.py``: one table of throughputs and ratios)."""

from __future__ import annotations

import os
import statistics
import time

import pytest

from fastrl import _kernels as _backend

from . import _benchlib as B


def pytest_configure(config):
    # runs before pytest-benchmark's own pytest_configure (trylast), which reads the option
    if os.environ.get("FASTRL_BENCH_TABLES", "").strip().lower() in ("1", "true", "yes", "on"):
        config.option.benchmark_quiet = False


@pytest.fixture(scope="session")
def sizes() -> B.Sizes:
    return B.sizes()


@pytest.fixture(scope="session")
def wl(sizes):
    """The session workload (built lazily, piece by piece, on first use)."""
    w = B.workload(sizes.mode)
    yield w
    B.release(w)


@pytest.fixture(scope="session")
def quick_wl(wl):
    """A quick-size workload whatever the mode (the regression guard's floors are quick-mode)."""
    if wl.sizes.mode == "quick":
        yield wl
        return
    w = B.workload("quick")
    yield w
    B.release(w)


class Bench:
    def __init__(self, benchmark, sizes: B.Sizes):
        self._b = benchmark
        self.sizes = sizes

    def __call__(self, fn, *, group: str, key: str, items: int, unit: str, nbytes: int = 0,
                 backend: str | None = None, setup=None, teardown=None, rounds: int | None = None,
                 iterations: int = 1, slow: bool = False, paired=None):
        """Time ``fn()`` (under ``backend`` when given). ``items``/``unit``: work per call
        (transitions, states, ...); ``nbytes``: bytes produced or consumed per call.

        ``paired=(label, baseline_fn, baseline_teardown, baseline_items)``: time
        ``baseline_fn()`` (the baseline doing ``baseline_items`` of the same work) before every
        round of ``fn``, alternating with it, and store its min and median over the timed rounds
        in ``extra_info["paired"]``; ``ratios.py`` compares the throughputs (base ``@paired``).
        A machine whose speed drifts (a shared VM) then moves both sides alike, where separate
        benchmarks minutes apart can differ by 20%."""
        b = self._b
        b.group = group
        b.extra_info.update(key=key, items=int(items), unit=unit, bytes=int(nbytes),
                            mode=self.sizes.mode, backend=backend or _backend.BACKEND)
        pair_times = []
        if paired is not None:
            setup = self._paired_setup(paired, setup, pair_times)
        target = fn
        if backend is not None:
            def target():
                with _backend.use(backend):
                    return fn()
        B.freeze_garbage_collector()
        sz = self.sizes
        warmup = sz.warmup
        if rounds is None:
            rounds = sz.slow_rounds if slow else sz.rounds
            if sz.budget and warmup:
                # Time the warm-up round: cheap benchmarks get more rounds (up to max_rounds)
                # within the budget, so their min and median resist a noisy machine.
                if setup:
                    setup()
                t0 = time.perf_counter()
                for _ in range(iterations):
                    target()
                dt = time.perf_counter() - t0
                if teardown:
                    teardown()
                warmup -= 1
                rounds = max(rounds, min(sz.max_rounds, int(sz.budget / max(dt, 1e-9))))
        result = b.pedantic(target, setup=setup, teardown=teardown, rounds=rounds,
                            warmup_rounds=warmup, iterations=iterations)
        if paired is not None:  # the baseline runs that preceded the timed rounds
            kept = pair_times[-rounds:]
            b.extra_info["paired"] = {"label": paired[0], "items": int(paired[3]),
                                      "rounds": len(kept), "min": min(kept),
                                      "median": statistics.median(kept)}
        return result


    @staticmethod
    def _paired_setup(paired, setup, times: list):
        """A setup that also times one baseline run (appended to ``times``) before each round
        of the benchmark (warm-ups included; the caller keeps the last ``rounds``)."""
        _, base_fn, base_teardown, _ = paired

        def paired_setup():
            out = setup() if setup else None
            t0 = time.perf_counter()
            base_fn()
            times.append(time.perf_counter() - t0)
            if base_teardown:
                base_teardown()
            return out
        return paired_setup


@pytest.fixture
def bench(benchmark, sizes) -> Bench:
    return Bench(benchmark, sizes)
