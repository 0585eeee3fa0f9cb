"""The Node.js writer (js/batch_writer.mjs) against fastrl.BatchWriter: the shared vectors are
up to date, the Node test suite passes, and for the same episodes the Node writer's batch
validates and equals the Python writer's file for file, byte for byte (meta.json: same keys,
same values but createdAt and producer). Also: Python's cleaner and Node writers share a root.

The tests that run Node skip, saying so, when ``node`` (>= 18) is not on PATH.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastrl

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "js"
VECTORS = REPO / "tests" / "vectors"
NODE = shutil.which("node")


def _load_make_vectors():
    spec = importlib.util.spec_from_file_location("fastrl_make_vectors",
                                                  VECTORS / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mv = _load_make_vectors()


def _node_version():
    if NODE is None:
        return None
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=30)
    try:
        return int(out.stdout.strip().lstrip("v").split(".")[0])
    except ValueError:
        return None


NODE_MAJOR = _node_version()
needs_node = pytest.mark.skipif(
    NODE_MAJOR is None or NODE_MAJOR < 18,
    reason="Node.js >= 18 not on PATH (`node`): the js/batch_writer.mjs tests need it "
           f"(found: {NODE or 'none'}{'' if NODE_MAJOR is None else f', v{NODE_MAJOR}'})")


def run_node(args, *, timeout=120, **kw):
    return subprocess.run([NODE, *args], capture_output=True, text=True, timeout=timeout, **kw)


def test_vectors_up_to_date():
    """The committed vectors are what this fastrl writes (regenerate them otherwise)."""
    want = mv.render(mv.build())
    have = (VECTORS / "writer_cases.json").read_text()
    assert have == want, ("tests/vectors/writer_cases.json is out of date with fastrl.BatchWriter: "
                          "run `python tests/vectors/make_vectors.py` and review the diff")


@needs_node
def test_node_test_suite():
    files = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.mjs"))
    assert files
    out = run_node(["--test", *files], cwd=JS)
    assert out.returncode == 0, f"node --test failed:\n{out.stdout[-20000:]}\n{out.stderr[-5000:]}"


# -- Node batch == Python batch --------------------------------------------------------------

FEATURES = mv.supports()
CASES = mv.cases()


def _js_write(tmp_path, jobs):
    """Write [(name, case, form)] with the Node writer in one process; name -> batch path."""
    job = {"root": str(tmp_path / "js"),
           "cases": [{"name": n, "options": c["options"], "episodes": c["episodes"], "form": f}
                     for n, c, f in jobs]}
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(job))
    out = run_node([str(JS / "tools" / "write_from_json.mjs"), str(spec)])
    assert out.returncode == 0, out.stderr
    return {k: Path(v) for k, v in json.loads(out.stdout).items()}


def _strip(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in ("createdAt", "producer")}


@pytest.fixture(scope="module")
def js_batches(tmp_path_factory):
    if NODE_MAJOR is None or NODE_MAJOR < 18:
        pytest.skip("Node.js >= 18 not on PATH")
    tmp = tmp_path_factory.mktemp("jsw")
    jobs = [(f"{c['name']}-{form}", c, form) for c in CASES for form in ("plain", "typed")]
    return _js_write(tmp, jobs)


@needs_node
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_js_batch_equals_python(case, js_batches, tmp_path):
    missing = [f for f in case["needs"] if not FEATURES[f]]
    for form in ("plain", "typed"):
        js = js_batches[f"{case['name']}-{form}"]
        assert fastrl.validate(js) == [], f"{js}: {fastrl.validate(js)}"
        b = fastrl.load_batch(js, verify=True)
        assert b.num_episodes == len(case["episodes"])
        js_meta = json.loads((js / "meta.json").read_text())
        assert js_meta["producer"] == {"fastrl": fastrl.__version__, "backend": "node"}
        if missing:
            continue
        py = mv.write_python(tmp_path / form, case)
        names = sorted(p.name for p in py.iterdir())
        assert sorted(p.name for p in js.iterdir()) == names
        for name in names:
            if name != "meta.json":
                assert (js / name).read_bytes() == (py / name).read_bytes(), \
                    f"{case['name']} ({form}): {name} differs"
            assert stat.S_IMODE((js / name).stat().st_mode) == \
                stat.S_IMODE((py / name).stat().st_mode), f"{name}: file mode differs"
        py_meta = json.loads((py / "meta.json").read_text())
        assert list(js_meta) == list(py_meta)  # same keys, same order
        assert list(js_meta["columns"]) == list(py_meta["columns"])
        assert _strip(js_meta) == _strip(py_meta)
        assert mv.normalized_meta_text((js / "meta.json").read_text()) == \
            mv.normalized_meta_text((py / "meta.json").read_text())
    if missing:
        pytest.skip(f"the Node batch validates, but this fastrl's BatchWriter lacks "
                    f"{', '.join(missing)}: no Python batch to compare with yet")


@needs_node
def test_js_writes_random_episodes_like_python(tmp_path):
    """A larger random run (several buffer flushes, long episodes) beyond the fixed vectors."""
    rng = np.random.default_rng(2024)
    eps = []
    for i in range(40):
        T = int(rng.integers(1, 300 if i % 10 == 0 else 40))
        eps.append(mv.episode(rng, T, 16, 9, ("legal", "mask", "bool")[i % 3], values=True,
                              truncated=bool(i % 4 == 0)))
    case = {"name": "random", "options": {"nActions": 9, "maskPad": 12}, "episodes": eps}
    js = _js_write(tmp_path, [("random", {**case, "options": {**case["options"],
                                                               "flushBytes": 20000}}, "typed")])
    py = mv.write_python(tmp_path / "py", case)
    assert mv.digest(js["random"]) == mv.digest(py)
    assert _strip(json.loads((js["random"] / "meta.json").read_text())) == \
        _strip(json.loads((py / "meta.json").read_text()))


# -- Node and Python writers in one root -------------------------------------------------------

_HOLD = """
import { BatchWriter } from %s;
const w = new BatchWriter(process.argv[1], { nActions: 3, fsync: false });
w.addEpisode({ obs: [[1, 2], [3, 4]], actions: [0, 2], rewards: [1, -1], legal: [[0], [1, 2]] });
console.log(w.tempPath);
process.stdin.once('data', () => { console.log(w.close()); process.exit(0); });
"""


def _start_holder(root):
    p = subprocess.Popen([NODE, "--input-type=module", "-e",
                          _HOLD % json.dumps((JS / "batch_writer.mjs").as_uri()), str(root)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    tmp = Path(p.stdout.readline().strip())
    if not (tmp.name.startswith(".fastrl-tmp-batch-") and tmp.is_dir()):
        pytest.fail(f"the Node writer did not start: {_reap(p)}")
    return p, tmp


def _reap(p):
    """Kill the holder if it still runs, close its pipes; return its stderr."""
    if p.poll() is None:
        p.kill()
    return p.communicate()[1]


@needs_node
def test_python_cleaner_leaves_a_live_node_writer_alone(tmp_path):
    """A Node writer's temporary folder has no .owner file; Python writers starting in the same
    root must not delete it while the Node process lives, however old the folder is."""
    p, tmp = _start_holder(tmp_path)
    try:
        old = time.time() - 3 * 3600  # a long-running harness: folder untouched for hours
        os.utime(tmp, (old, old))
        with fastrl.BatchWriter(tmp_path, n_actions=3) as w:  # runs the stale-folder cleaner
            w.add_episode(obs=[[0.0, 0.0]], actions=[1], rewards=[0.0], legal=[[1]])
        assert tmp.is_dir(), "Python's cleaner removed a live Node writer's temporary folder"
        out, err = p.communicate("go\n", timeout=60)
        assert p.returncode == 0, err
    finally:
        _reap(p)
    js = Path(out.strip())
    assert fastrl.validate(js) == []
    names = sorted(x.name for x in tmp_path.iterdir() if x.name.startswith("batch_"))
    assert names == sorted([w.path.name, js.name]) and w.path.name < js.name


@needs_node
def test_python_cleaner_removes_a_dead_node_writers_folder(tmp_path):
    p, tmp = _start_holder(tmp_path)
    p.send_signal(signal.SIGKILL)
    _reap(p)
    assert tmp.is_dir()
    fastrl.BatchWriter(tmp_path, n_actions=3).abort()  # runs the stale-folder cleaner
    assert not tmp.exists()


@needs_node
def test_names_increase_across_node_and_python_writers(tmp_path):
    names = []
    for i in range(3):
        with fastrl.BatchWriter(tmp_path, n_actions=3) as w:
            w.add_episode(obs=[[float(i)]], actions=[0], rewards=[0.0], legal=[[0]])
        names.append(w.path.name)
        out = run_node(["--input-type=module", "-e",
                        "import { BatchWriter } from %s;"
                        "const w = new BatchWriter(process.argv[1], { nActions: 3 });"
                        "w.addEpisode({ obs: [[1]], actions: [1], rewards: [0], legal: [[1]] });"
                        "console.log(w.close());" % json.dumps((JS / "batch_writer.mjs").as_uri()),
                        str(tmp_path)])
        assert out.returncode == 0, out.stderr
        names.append(Path(out.stdout.strip()).name)
    assert len(set(names)) == 6 and names == sorted(names)
    lock = (tmp_path / ".fastrl.lock").read_bytes()
    assert lock.decode().strip() == names[-1].split("_")[1] and len(lock) == 24


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
