"""Group ``export``: fastrl.export.export_episodes of the raw-state JSONL files written by
fastrl.bot.write_episodes, re-encoded with the game's ObsSpec (``fastrl export --spec ...
--num-actions 208 --mask-pad 256``), with 1 and 2 worker processes, beside parse-only reading of
the same files (read, split lines, one ``loads`` per line) with the stdlib json and orjson, and
orjson parse-only spread over 2 processes (what this machine lets 2 workers gain)."""

import json
import shutil

import pytest

from fastrl.export import export_episodes

from . import _benchlib as B

pytestmark = pytest.mark.bench


@pytest.mark.parametrize("workers", (1, 2))
def test_export(bench, wl, workers):
    src, out = wl.jsonl_dir, wl.workdir / "export-out"
    spec = wl.spec

    def run():
        return export_episodes(src, out, spec=spec, n_actions=B.N_ACTIONS, mask_pad=B.MASK_PAD,
                               workers=workers, progress=False)

    res = bench(run, group="export", key=f"export:w{workers}", items=wl.n, unit="transitions",
                nbytes=wl.jsonl_bytes, teardown=lambda: shutil.rmtree(out, ignore_errors=True),
                slow=True)
    assert res.transitions == wl.n


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
