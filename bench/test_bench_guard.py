"""Regression guard (runs in quick mode too, in CI): speed ratios between the kernels and the
in-run baselines, measured within this run (never absolute times: CI machines differ), must stay
above the floors recorded in bench/baseline_ratios.json. Each ratio is a median of interleaved
repeats; a ratio under its floor is measured once more, longer, before the test fails."""

import pytest

from . import _benchlib as B

pytestmark = pytest.mark.bench

FLOORS = B.load_floors()["ratios"]


@pytest.fixture(scope="module")
def measured(quick_wl):
    pairs = {name: (r["fast"], r["slow"]) for name, r in FLOORS.items()}
    return B.measure_ratios(quick_wl, pairs)


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_ratio_above_floor(name, measured, quick_wl):
    rec = FLOORS[name]
    if name not in measured:
        pytest.skip(f"{rec['fast']} or {rec['slow']} is not available here")
    ratio = measured[name]
    if ratio < rec["floor"]:  # one retry, longer, before calling it a regression
        again = B.measure_ratios(quick_wl, {name: (rec["fast"], rec["slow"])}, repeats=15)
        ratio = max(ratio, again[name])
    assert ratio >= rec["floor"], (
        f"{rec['fast']} is {ratio:.2f}x as fast as {rec['slow']}, below the floor "
        f"{rec['floor']} (recorded ratios {rec['measured']}); a kernel regressed, or re-record "
        "the floors after a deliberate change: python bench/ratios.py --record-floors")


def test_floors_cover_every_pair():
    assert set(FLOORS) == set(B.GUARD_PAIRS)
