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


def _export_run(wl, workers, scanner, out):
    """export_episodes of the workload's files into ``out`` with the scanner on ("1") or off."""
    def run():
        old = os.environ.get("FASTRL_EXPORT_SCANNER")
        os.environ["FASTRL_EXPORT_SCANNER"] = scanner
        try:  # no spec, no action count: they come from the folder's sidecar
            return export_episodes(wl.jsonl_dir, out, mask_pad=B.MASK_PAD, workers=workers,
                                   progress=False)
        finally:
            if old is None:
                del os.environ["FASTRL_EXPORT_SCANNER"]
            else:
                os.environ["FASTRL_EXPORT_SCANNER"] = old
    return run


def _export_bench(bench, wl, workers, scanner, key, paired=None):
    # The batch goes to tmpfs like the writer rows' (B.output_root): the parse-only baselines
    # touch no disk, and the time a disk takes to flush 460 MB is the disk's, not the exporter's.
    out = B.output_root(wl, "export-out")
    if paired == "orjson":  # orjson parse-only of the same files, in alternation
        orjson = pytest.importorskip("orjson")
        files = wl.jsonl_files
        paired = ("orjson parse-only", lambda: B.parse_only(files, orjson.loads), None, wl.n)
    elif paired == "w1":  # the same export with one worker, in alternation
        out1 = out.with_name("export-out-w1")
        paired = ("export (scanner), 1 worker", _export_run(wl, 1, scanner, out1),
                  lambda: shutil.rmtree(out1, ignore_errors=True), wl.n)
    try:
        res = bench(_export_run(wl, workers, scanner, out), group="export", key=key,
                    items=wl.n, unit="transitions", nbytes=wl.jsonl_bytes,
                    teardown=lambda: shutil.rmtree(out, ignore_errors=True), slow=True,
                    paired=paired)
    finally:
        shutil.rmtree(out.parent if out.parent != wl.workdir else out, ignore_errors=True)
    assert res.transitions == wl.n


@pytest.mark.parametrize("workers", (1, 2))
def test_export(bench, wl, workers):
    """The default path: the scanner (when built), the orjson path for what it does not take;
    timed in alternation with its target's baseline (1 worker: orjson parse-only; 2 workers:
    1 worker)."""
    if scan.scanner_plan(None, None) is scan.NO_SCAN:
        pytest.skip("jscan kernel not built, or the NumPy backend runs")
    _export_bench(bench, wl, workers, "1", f"export:w{workers}",
                  paired="orjson" if workers == 1 else "w1")


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
