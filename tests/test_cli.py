"""The command line's conventions: examples in every --help, plain words, one line and a non-zero
status for every failure (never a traceback), `fastrl demo` replacing its previous run, and the
batch commands validate / info / report / to-npz / to-parquet."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrl
import fastrl.cli as cli
from fastrl.cli import build_parser, describe_error, main
from fastrl.errors import FastrlError


def _subparsers(parser):
    for action in parser._actions:  # argparse keeps them here; no public accessor
        if action.__class__.__name__ == "_SubParsersAction":
            return action.choices
    raise AssertionError("no sub-commands")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("cli") / "data"
    with fastrl.BatchWriter(root, n_actions=5) as w:
        for i in range(12):
            T = int(rng.integers(3, 20))
            w.add_episode(obs=rng.standard_normal((T, 4)), actions=rng.integers(0, 5, T),
                          rewards=rng.standard_normal(T), values=rng.standard_normal(T),
                          truncated=i % 3 == 0)
    return w.path


def _run(*args, env=None, cwd=None):
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "fastrl", *args], capture_output=True, text=True,
                          timeout=300, env=full, cwd=cwd, stdin=subprocess.DEVNULL)


# -- help --------------------------------------------------------------------------------------

def test_every_help_has_examples():
    parser = build_parser()
    assert "examples:\n  fastrl demo" in parser.format_help()
    subs = _subparsers(parser)
    assert {"validate", "info", "to-npz", "to-parquet", "decompress", "report", "bot", "demo",
            "export"} <= set(subs)
    for name, p in subs.items():
        text = p.format_help()
        assert "examples:" in text and f"fastrl {name}" in text.split("examples:")[1], name


def test_help_uses_plain_words():
    parser = build_parser()
    texts = [parser.format_help()] + [p.format_help() for p in _subparsers(parser).values()]
    for text in texts:
        low = text.lower()
        assert "origin document" not in low and "seed-format" not in low, text


def test_help_keeps_example_lines_and_wraps_descriptions():
    p = _subparsers(build_parser())["validate"]
    text = p.format_help()
    epilog = text.split("examples:")[1]
    assert "\n  fastrl validate --quick data/binary/batch_1795736172459   # sizes" in epilog
    assert max(len(line) for line in text.split("examples:")[0].splitlines()) <= 100


# -- failures: one line, a status, no traceback ----------------------------------------------

@pytest.mark.parametrize("exc, status, words", [
    (FastrlError("x: not a folder"), 1, "fastrl info: error: x: not a folder"),
    (FileNotFoundError(2, "No such file or directory", "nope"), 1,
     "fastrl info: error: nope: No such file or directory"),
    (ValueError("bad\nvalue"), 1, "fastrl info: error: bad value"),
    (RuntimeError("boom"), 1, "fastrl info: error: RuntimeError: boom (FASTRL_DEBUG=1 shows"),
    (KeyboardInterrupt(), 130, "fastrl info: interrupted"),
])
def test_main_turns_failures_into_one_line(monkeypatch, capsys, exc, status, words):
    def fail(args):
        raise exc
    monkeypatch.setattr(cli, "_cmd_info", fail)
    monkeypatch.delenv("FASTRL_DEBUG", raising=False)
    assert main(["info", "x"]) == status
    err = capsys.readouterr().err
    assert err.startswith(words) and err.count("\n") == 1 and "Traceback" not in err


def test_fastrl_debug_shows_the_traceback(monkeypatch):
    def fail(args):
        raise RuntimeError("boom")
    monkeypatch.setattr(cli, "_cmd_info", fail)
    monkeypatch.setenv("FASTRL_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["info", "x"])


def test_missing_optional_package_names_the_extra():
    exc = ModuleNotFoundError("No module named 'zstandard'", name="zstandard")
    assert describe_error(exc) == ("No module named 'zstandard' "
                                   '(pip install "fastrl-batch[zstd]")')
    hinted = ImportError('needs pyarrow (pip install "fastrl-batch[parquet]")', name="pyarrow")
    assert describe_error(hinted).count("pip install") == 1


@pytest.mark.parametrize("args", [["demo", "--episodes", "-5"], ["demo", "--episodes", "x"],
                                  ["bot", "--episodes", "0"], ["validate"], ["nonsense"]])
def test_bad_arguments_exit_2_without_traceback(args):
    proc = _run(*args)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("cmd", [["validate"], ["info"], ["report"], ["to-npz", "{}/x.npz"],
                                 ["decompress"]])
def test_missing_batch_is_one_line_and_status_1(cmd, tmp_path):
    missing = str(tmp_path / "no-such-batch")
    args = [cmd[0], missing] + [a.format(tmp_path) for a in cmd[1:]]
    proc = _run(*args)
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr and "no-such-batch" in proc.stderr


def test_no_command_prints_help_and_exits_2():
    proc = _run()
    assert proc.returncode == 2 and "examples:" in proc.stderr


def test_python_m_fastrl_version():
    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith(f"fastrl {fastrl.__version__}")


# -- batch commands ----------------------------------------------------------------------------

def test_validate_verdict_and_root_notes_on_stderr(batch, monkeypatch, capsys):
    import importlib
    vmod = importlib.import_module("fastrl.validate")
    monkeypatch.setattr(vmod, "root_notes", lambda p: ["a note about the root"], raising=False)
    assert main(["validate", str(batch)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{batch}: OK\n"
    assert err == "fastrl validate: note: a note about the root\n"


def test_info_prints_the_figures(batch, capsys):
    from fastrl.report import batch_figures, format_figures
    assert main(["info", str(batch), "--ascii"]) == 0
    assert capsys.readouterr().out == format_figures(batch_figures(batch), ascii=True) + "\n"
    assert main(["info", "--json", str(batch)]) == 0
    figures = json.loads(capsys.readouterr().out)
    want = json.loads(json.dumps(batch_figures(batch)))
    figures.pop("generatedAt", None), want.pop("generatedAt", None)
    assert figures == want


def test_report_writes_one_page(batch, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(batch), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") or page.lower().startswith("<!doctype html>")
    assert "<svg" in page and "http://" not in page.replace("http://www.w3.org", "")


def test_to_npz_and_to_parquet(batch, tmp_path, capsys):
    assert main(["to-npz", str(batch), str(tmp_path / "b.npz"), "--quiet"]) == 0
    with np.load(tmp_path / "b.npz") as z:
        assert len(z["actions"]) == len(fastrl.load_batch(batch))
    pq = pytest.importorskip("pyarrow.parquet")
    assert main(["to-parquet", str(batch), str(tmp_path / "b.parquet")]) == 0
    assert pq.read_table(tmp_path / "b.parquet").num_rows == len(fastrl.load_batch(batch))


def test_decompress_refuses_a_plain_batch(batch, capsys):
    assert main(["decompress", str(batch)]) == 1
    assert "not compressed" in capsys.readouterr().err


# -- demo ----------------------------------------------------------------------------------------

def test_demo_twice_replaces_its_previous_run(tmp_path):
    work = tmp_path / "demo"
    for _ in range(2):
        proc = _run("demo", "--episodes", "12", "--dir", str(work), "--quiet")
        assert proc.returncode == 0, proc.stderr
    assert "removed the previous demo run" in proc.stdout
    batches = sorted((work / "data" / "binary").glob("batch_*"))
    assert len(batches) == 1 and str(batches[0]) in proc.stdout
    assert fastrl.open_dataset(work / "data" / "binary").num_episodes == 12
    listed = json.loads((work / ".fastrl-demo.json").read_text())["paths"]
    assert "report.html" in listed and (work / "report.html").is_file()


def test_demo_refuses_a_folder_with_other_batches(tmp_path):
    (tmp_path / "mine" / "data" / "binary" / "batch_1").mkdir(parents=True)
    proc = _run("demo", "--episodes", "3", "--dir", str(tmp_path / "mine"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "did not write" in proc.stderr
    assert (tmp_path / "mine" / "data" / "binary" / "batch_1").is_dir()


def test_demo_manifest_cannot_remove_outside_its_folder(tmp_path):
    from fastrl.demo import MANIFEST, remove_previous_run
    outside = tmp_path / "keep.txt"
    outside.write_text("x")
    work = tmp_path / "demo"
    work.mkdir()
    (work / MANIFEST).write_text(json.dumps({"paths": ["../keep.txt", str(outside), "gone"]}))
    assert remove_previous_run(work) == []
    assert outside.read_text() == "x" and not (work / MANIFEST).exists()
