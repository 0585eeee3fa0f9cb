"""Optional coverage-guided fuzzing of fastrl's input parsers with atheris (libFuzzer for Python).

Not a test module and not run in CI: ``pip install atheris``, then e.g.::

    python tests/atheris_harness.py -runs=200000 -max_len=4096 [CORPUS_DIR]

(``tests/test_fuzz.py::test_atheris_harness_smoke`` runs it briefly under ``FASTRL_FULL=1``.)
Each input picks a target with its first byte: an episode file for ``export_episodes`` (``.json``
or ``.jsonl``), or a ``meta.json`` for ``load_batch`` / ``validate`` / ``open_dataset`` of an
otherwise sound batch. A fastrl error (``FastrlError``) is a correct answer; any other exception
is a crash that libFuzzer reports with the input that caused it. Bugs already known (pinned by
strict xfails in tests/test_fuzz.py) are ignored unless ``FASTRL_ATHERIS_STRICT=1``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["fastrl"]):
    import numpy as np

    import fastrl
    from fastrl.errors import FastrlError
    from fastrl.export import export_episodes

STRICT = os.environ.get("FASTRL_ATHERIS_STRICT") == "1"
WORK = Path(tempfile.mkdtemp(prefix="fastrl-atheris-"))
atexit.register(shutil.rmtree, WORK, True)

SEED_EPISODE = (b'{"steps": [{"obs": [0.5, 1], "action": 1, "reward": 0.25, "legal": [0, 1], '
                b'"value": 0.1}, {"obs": [1, -2], "action": 0, "reward": 1, "mask": [1, 0], '
                b'"done": true}], "truncated": false}')


def _known_bug(exc: BaseException) -> bool:
    if STRICT:
        return False
    if isinstance(exc, RecursionError):  # test_deeply_nested_value_gives_episode_error
        return True
    if isinstance(exc, TypeError) and "not iterable" in str(exc):  # ...shards_not_a_list
        return True
    return False


def _make_batch() -> Path:
    with fastrl.BatchWriter(WORK / "batches", n_actions=3) as w:
        w.add_episode(obs=np.zeros((4, 2)), actions=[0, 1, 2, 0], rewards=[0.0, 1, 2, 3],
                      legal=[[0], [1], [2], [0, 1]], values=[0.0] * 4)
    return w.path


BATCH = _make_batch()
META = (BATCH / "meta.json").read_bytes()


def _export(data: bytes, suffix: str) -> None:
    d = WORK / "episodes"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / f"ep{suffix}").write_bytes(data)
    out = WORK / "out"
    try:
        res = export_episodes(d, out, n_actions=None if data[:1] == b" " else 2,
                              on_error="skip" if len(data) % 2 else "fail", progress=False)
        problems = fastrl.validate(res.path)
    except FastrlError:
        return
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if problems:
        raise AssertionError(f"export wrote an invalid batch: {problems}")


def _meta(data: bytes) -> None:
    p = WORK / "damaged"
    shutil.rmtree(p, ignore_errors=True)
    shutil.copytree(BATCH, p)
    (p / "meta.json").write_bytes(data)
    for fn in (fastrl.load_batch, fastrl.open_dataset, fastrl.info):
        try:
            fn(p)
        except FastrlError:
            pass
    probs = fastrl.validate(p)
    if not isinstance(probs, list):
        raise AssertionError("validate did not return a list")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 3, data[1:]
    try:
        if target == 0:
            _export(body or SEED_EPISODE, ".json")
        elif target == 1:
            _export(body or SEED_EPISODE, ".jsonl")
        else:
            _meta(body or META)
    except Exception as exc:
        if not _known_bug(exc):
            raise


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
