"""Group ``export``: fastrl.export.export_episodes of the raw-state JSONL files written by
fastrl.bot.write_episodes (with their sidecar ``fastrl-episodes.json``: the game's ObsSpec and
action count), masks padded to 256, with 1 and 2 worker processes, through the JSON scanner
(``fastrl._kernels.jscan``, the default) and through its fallback, the orjson path
(``FASTRL_EXPORT_SCANNER=0``); beside parse-only reading of the same files (read, split lines,
one ``loads`` per line) with the stdlib json and orjson, and orjson parse-only spread over 2
processes (what this machine lets 2 workers gain)."""

import json
import os
import shutil

import pytest

from fastrl.export import export_episodes, scan

from . import _benchlib as B

pytestmark = pytest.mark.bench


def _export_bench(bench, wl, workers, scanner, key):
    src, out = wl.jsonl_dir, wl.workdir / "export-out"

    def run():
        old = os.environ.get("FASTRL_EXPORT_SCANNER")
        os.environ["FASTRL_EXPORT_SCANNER"] = scanner
        try:  # no spec, no action count: they come from the folder's sidecar
            return export_episodes(src, out, mask_pad=B.MASK_PAD, workers=workers,
                                   progress=False)
        finally:
            if old is None:
                del os.environ["FASTRL_EXPORT_SCANNER"]
            else:
                os.environ["FASTRL_EXPORT_SCANNER"] = old

    res = bench(run, group="export", key=key, items=wl.n, unit="transitions",
                nbytes=wl.jsonl_bytes, teardown=lambda: shutil.rmtree(out, ignore_errors=True),
                slow=True)
    assert res.transitions == wl.n


@pytest.mark.parametrize("workers", (1, 2))
def test_export(bench, wl, workers):
    """The default path: the scanner (when built), the orjson path for what it does not take."""
    if scan.scanner_plan(None, None) is scan.NO_SCAN:
        pytest.skip("jscan kernel not built, or the NumPy backend runs")
    _export_bench(bench, wl, workers, "1", f"export:w{workers}")


@pytest.mark.parametrize("workers", (1, 2))
def test_export_fallback(bench, wl, workers):
    """The orjson path alone (what runs without the scanner, and for what it does not take)."""
    _export_bench(bench, wl, workers, "0", f"export:w{workers}_orjson")


@pytest.mark.parametrize("parser", ("json", "orjson"))
def test_export_parse_only(bench, wl, parser):
    if parser == "orjson":
        orjson = pytest.importorskip("orjson")
        loads = orjson.loads
    else:
        loads = json.loads
    files = wl.jsonl_files
    steps = bench(lambda: B.parse_only(files, loads), group="export", key=f"export:{parser}_parse",
                  items=wl.n, unit="transitions", nbytes=wl.jsonl_bytes, slow=True)
    assert steps == wl.n


def test_export_parse_only_2proc(bench, wl):
    pytest.importorskip("orjson")
    files = wl.jsonl_files
    steps = bench(lambda: B.parse_only_processes(files, "orjson", 2), group="export",
                  key="export:orjson_parse_2proc", items=wl.n, unit="transitions",
                  nbytes=wl.jsonl_bytes, slow=True)
    assert steps == wl.n
