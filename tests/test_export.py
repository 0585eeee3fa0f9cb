"""fastrl export from episode files (contract §2): stored obs, dense masks or legal ids,
workers, skip/fail on bad episodes; the CLI prints the batch path last."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrl
from fastrl import _format as F
from fastrl.cli import main
from fastrl.errors import EpisodeError, FastrlError
from fastrl.export import export_episodes


def make_steps(rng, T, obs_dim=5, n_actions=8, form="legal", extras=True):
    steps = []
    for t in range(T):
        legal = sorted(rng.choice(n_actions, size=int(rng.integers(1, n_actions)),
                                  replace=False).tolist())
        s = {"obs": [round(float(x), 3) for x in rng.standard_normal(obs_dim)],
             "action": int(rng.choice(legal)), "reward": 0.0 if t < T - 1 else 1.0}
        if form == "legal":
            s["legal"] = legal
        else:
            s["mask"] = [1 if i in legal else 0 for i in range(n_actions)]
        if extras:
            s["value"] = 0.5
            s["logprob"] = -1.25
        steps.append(s)
    steps[-1]["done"] = True
    return steps


def write_dir(d, rng, n_files=4, per_file=3, form="mask", extras=True):
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        if i % 2:
            lines = [json.dumps({"steps": make_steps(rng, int(rng.integers(1, 9)), form=form,
                                                    extras=extras),
                                 "truncated": j == 1}) for j in range(per_file)]
            (d / f"ep{i:02d}.jsonl").write_text("\n".join(lines) + "\n")
        else:
            (d / f"ep{i:02d}.json").write_text(json.dumps(make_steps(rng, 5, form=form, extras=extras)))
    return d


def bins(path):
    return {f: (path / f).read_bytes() for f in sorted(os.listdir(path)) if f.endswith(".bin")}


@pytest.mark.parametrize("form", ["mask", "legal"])
def test_export_roundtrip(backend, tmp_path, rng, form):
    src = write_dir(tmp_path / "eps", rng, form=form)
    res = export_episodes(src, tmp_path / "out", n_actions=8 if form == "legal" else None,
                          mask_pad=16)
    assert res.episodes == 2 * 1 + 2 * 3 and fastrl.validate(res.path) == []
    b = fastrl.load_batch(res.path)
    assert b.mask_dim == 16 and b.n_actions == 8 and b.values is not None
    assert b.truncated.sum() == 2
    first = json.loads((src / "ep00.json").read_text())
    assert np.array_equal(b.episode(0).obs, np.asarray([s["obs"] for s in first], np.float32))


def test_workers_and_repeat_byte_identical(tmp_path, rng):
    src = write_dir(tmp_path / "eps", rng, n_files=9, per_file=4)
    r1 = export_episodes(src, tmp_path / "o1", workers=1)
    r2 = export_episodes(src, tmp_path / "o2", workers=2)
    r3 = export_episodes(src, tmp_path / "o1", workers=1)
    assert bins(r1.path) == bins(r2.path) == bins(r3.path)


def test_jsonl_split_into_tasks(tmp_path, rng, monkeypatch):
    from fastrl.export import parse
    src = write_dir(tmp_path / "eps", rng, n_files=2, per_file=40)
    ref = export_episodes(src, tmp_path / "o1")
    monkeypatch.setattr(parse, "TASK_BYTES", 500)
    assert len(parse.make_tasks(parse.find_episode_files(src))) > 5
    small = export_episodes(src, tmp_path / "o2", workers=2)
    assert bins(ref.path) == bins(small.path)
    # error line numbers stay absolute across task boundaries
    lines = (src / "ep01.jsonl").read_text().splitlines()
    bad = json.loads(lines[33])
    bad["steps"][1]["action"] = 99
    lines[33] = json.dumps(bad)
    (src / "ep01.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(EpisodeError, match=r"ep01.jsonl, episode 33, step 1: action 99"):
        export_episodes(src, tmp_path / "o3")


BAD = {
    "not_json": (b"{not json", "not valid JSON", None),
    "truncated_file": (b'{"steps": [{"obs": [1,2,3,4,5], "action": 0', "not valid JSON", None),
    "no_steps": (b'{"foo": 1}', "no 'steps' list", None),
    "empty": (b"[]", "episode has no steps", None),
    "action_str": (b'[{"obs":[0,0,0,0,0],"action":"a","reward":0,"mask":[1,0,0,0,0,0,0,0]}]',
                   "action must be an integer", 0),
    "reward_bool": (b'[{"obs":[0,0,0,0,0],"action":0,"reward":true,"mask":[1,0,0,0,0,0,0,0]}]',
                    "reward must be a number", 0),
    "illegal": (b'[{"obs":[0,0,0,0,0],"action":1,"reward":0,"mask":[1,0,0,0,0,0,0,0]}]',
                "action 1 is not legal", 0),
    "bad_mask": (b'[{"obs":[0,0,0,0,0],"action":0,"reward":0,"mask":[1,2,0,0,0,0,0,0]}]',
                 "mask[1] is 2", 0),
    "short_mask": (b'[{"obs":[0,0,0,0,0],"action":0,"reward":0,"mask":[1,0]}]',
                   "numActions=8", None),
    "nan_obs": (b'[{"obs":[0,NaN,0,0,0],"action":0,"reward":0,"mask":[1,0,0,0,0,0,0,0]}]',
                "", None),
    "ragged_obs": (b'[{"obs":[0,0,0,0,0],"action":0,"reward":0,"mask":[1,0,0,0,0,0,0,0]},'
                   b'{"obs":[0,0],"action":0,"reward":0,"mask":[1,0,0,0,0,0,0,0]}]',
                   "obs must be a list of 5 numbers", 1),
    "no_obs": (b'[{"action":0,"reward":0,"mask":[1,0,0,0,0,0,0,0]}]', "no 'obs'", 0),
    "early_done": (b'[{"obs":[0,0,0,0,0],"action":0,"reward":0,"mask":[1,0,0,0,0,0,0,0],'
                   b'"done":true},{"obs":[0,0,0,0,0],"action":0,"reward":0,'
                   b'"mask":[1,0,0,0,0,0,0,0]}]', "done is true before", 0),
    "deep": (b"[" * 50000, "", None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_episode_fail_and_skip(tmp_path, rng, case):
    content, msg, step = BAD[case]
    src = write_dir(tmp_path / "eps", rng, n_files=2, per_file=2, extras=False)
    (src / "ep01b_bad.json").write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(FastrlError, match=r"ep01b_bad\.json") as info:
        export_episodes(src, out)
    assert msg in str(info.value)
    if step is not None:
        assert f"step {step}" in str(info.value)
    assert not out.exists() or not any(p.name.startswith("batch_") for p in out.iterdir())
    assert not any(p.name.startswith(F.TMP_PREFIX) for p in out.iterdir()) if out.exists() \
        else True
    res = export_episodes(src, out, on_error="skip")
    assert res.episodes == 1 + 2 and len(res.skipped) == 1
    meta = fastrl.load_batch(res.path).meta
    assert meta["skippedCount"] == 1 and meta["skipped"][0]["file"].endswith("ep01b_bad.json")
    assert fastrl.validate(res.path) == []


def test_no_files_and_missing_dir(tmp_path):
    with pytest.raises(FastrlError, match="does not exist"):
        export_episodes(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FastrlError, match="no \\*.json"):
        export_episodes(tmp_path / "empty", tmp_path / "out")


def test_num_actions_from_legal_needs_a_source(tmp_path, rng, capsys):
    """Legal-id lists do not give the action count: without an option or a sidecar the error
    says what to add; inference (a second pass over every file) only on request."""
    src = write_dir(tmp_path / "eps", rng, form="legal")
    with pytest.raises(FastrlError, match="--num-actions N .*write_sidecar"):
        export_episodes(src, tmp_path / "out")
    res = export_episodes(src, tmp_path / "out", n_actions="scan")
    assert fastrl.load_batch(res.path).n_actions <= 8
    assert "inferred" in capsys.readouterr().err


def test_encoder_option(tmp_path, rng, monkeypatch):
    mod = tmp_path / "my_encoder_mod.py"
    mod.write_text("def encode(state):\n    return [state['a'], state['b'] * 2.0]\n")
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "eps"
    src.mkdir()
    steps = [{"state": {"a": t, "b": 1.5}, "obs": [9, 9, 9], "action": 0, "reward": 0,
              "legal": [0, 1]} for t in range(4)]
    (src / "e.json").write_text(json.dumps({"steps": steps}))
    res = export_episodes(src, tmp_path / "out", encoder="my_encoder_mod:encode", n_actions=2)
    b = fastrl.load_batch(res.path)
    assert b.obs.tolist() == [[t, 3.0] for t in range(4)]


def test_cli_export_prints_path_last(tmp_path, rng):
    src = write_dir(tmp_path / "eps", rng)
    proc = subprocess.run([sys.executable, "-m", "fastrl", "export", str(src), "--out",
                           str(tmp_path / "out"), "--mask-pad", "16", "--workers", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip().splitlines()[-1]
    assert os.path.basename(path).startswith("batch_")
    assert main(["validate", path]) == 0
    assert main(["info", path]) == 0
    assert main(["to-npz", path, str(tmp_path / "x.npz")]) == 0
    (src / "zz.json").write_text("{")
    proc = subprocess.run([sys.executable, "-m", "fastrl", "export", str(src), "--out",
                           str(tmp_path / "out2")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "zz.json" in proc.stderr and "not valid JSON" in proc.stderr


# -- self-describing folders (sidecar), one pass, options ------------------------------------

from fastrl.export import SIDECAR_NAME, find_episode_files, read_sidecar, write_sidecar  # noqa: E402
from fastrl.export import parse as _parse  # noqa: E402


def state_dir(d, n_eps=3, T=4, masks=True):
    """Episodes with raw states {"a", "b"} and no obs; legal ids of 3 actions."""
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for e in range(n_eps):
        steps = [{"state": {"a": float(t), "b": float(e)}, "action": t % 3, "reward": 1.0}
                 for t in range(T)]
        if masks:
            for s in steps:
                s["legal"] = [0, 1, 2]
        lines.append(json.dumps({"steps": steps}))
    (d / "e.jsonl").write_text("\n".join(lines) + "\n")
    return d


AB_SPEC = {"fields": [{"name": "a", "kind": "box", "shape": []}, {"name": "b", "kind": "box", "shape": []}]}


def test_sidecar_write_read_and_skipped_as_episode_file(tmp_path):
    d = state_dir(tmp_path / "eps")
    path = write_sidecar(d, spec=AB_SPEC, n_actions=3, mask_pad=8)
    assert path.name == SIDECAR_NAME == "fastrl-episodes.json"
    doc = json.loads(path.read_text())
    assert doc["format"] == "fastrl-episodes" and doc["formatVersion"] == 1
    assert doc["numActions"] == 3 and doc["maskPad"] == 8 and "obsSpec" in doc
    side = read_sidecar(d)
    assert side["n_actions"] == 3 and side["mask_pad"] == 8 and side["spec"].dim == 2
    assert [p.name for p in find_episode_files(d)] == ["e.jsonl"]
    assert read_sidecar(tmp_path) is None
    res = export_episodes(d, tmp_path / "out")  # no options: all from the sidecar
    b = fastrl.load_batch(res.path)
    assert (b.obs_dim, b.n_actions, b.mask_dim) == (2, 3, 8)
    assert b.obs[:4].tolist() == [[t, 0.0] for t in range(4)]
    # options override the sidecar key by key
    res = export_episodes(d, tmp_path / "out", mask_pad=4)
    b = fastrl.load_batch(res.path)
    assert (b.n_actions, b.mask_dim) == (3, 4)
    with pytest.raises(FastrlError, match="no 'obs'"):  # the sidecar ignored on request
        export_episodes(d, tmp_path / "out", use_sidecar=False, n_actions=3)


@pytest.mark.parametrize("content,match", [
    ("{", "not valid JSON"),
    ("[]", "JSON object"),
    ('{"format": "x", "formatVersion": 1, "numActions": 3}', "'format'"),
    ('{"format": "fastrl-episodes", "formatVersion": 9, "numActions": 3}', "formatVersion"),
    ('{"format": "fastrl-episodes", "formatVersion": 1}', "'numActions' is missing"),
    ('{"format": "fastrl-episodes", "formatVersion": 1, "numActions": true}', "numActions"),
    ('{"format": "fastrl-episodes", "formatVersion": 1, "numActions": 3, "maskPad": 2}',
     "smaller"),
    ('{"format": "fastrl-episodes", "formatVersion": 1, "numActions": 3, "obsSpec": {"x": 1}}',
     "not a valid ObsSpec"),
    ('{"format": "fastrl-episodes", "formatVersion": 1, "numActions": 3, "encoder": "os:system"}',
     "standard-library"),
    ('{"format": "fastrl-episodes", "formatVersion": 1, "numActions": 3, "encoder": "nocolon"}',
     "package.module:function"),
])
def test_malformed_sidecar_one_line_error_naming_the_file(tmp_path, content, match):
    d = state_dir(tmp_path / "eps")
    (d / SIDECAR_NAME).write_text(content)
    with pytest.raises(FastrlError, match=match) as exc:
        export_episodes(d, tmp_path / "out")
    msg = str(exc.value)
    assert SIDECAR_NAME in msg and "\n" not in msg
    assert main(["export", str(d), "--out", str(tmp_path / "out"), "--quiet"]) == 1


def test_states_without_obs_error_says_what_to_add(tmp_path):
    d = state_dir(tmp_path / "eps")
    with pytest.raises(EpisodeError) as exc:
        export_episodes(d, tmp_path / "out", n_actions=3)
    msg = str(exc.value)
    assert "--spec" in msg and "--encoder" in msg and SIDECAR_NAME in msg
    assert "write_sidecar" in msg and exc.value.step == 0


def test_episodes_without_masks_all_legal(tmp_path):
    d = state_dir(tmp_path / "eps", masks=False)
    with pytest.raises(FastrlError, match="numActions unknown.*no masks"):
        export_episodes(d, tmp_path / "out", spec=AB_SPEC)
    res = export_episodes(d, tmp_path / "out", spec=AB_SPEC, n_actions=3, mask_pad=5)
    b = fastrl.load_batch(res.path)
    assert b.masks[:, :3].all() and not b.masks[:, 3:].any()
    assert fastrl.validate(res.path) == []


@pytest.mark.parametrize("scanner", ["0", "1"])
def test_first_episode_parsed_once_and_no_second_pass(tmp_path, rng, monkeypatch, scanner):
    from fastrl.export import scan
    src = write_dir(tmp_path / "eps", rng, form="legal", n_files=3, per_file=3)
    monkeypatch.setenv("FASTRL_EXPORT_SCANNER", scanner)
    calls = []
    real = _parse.loads
    monkeypatch.setattr(_parse, "loads", lambda data: calls.append(1) or real(data))
    res = export_episodes(src, tmp_path / "out", n_actions=8)
    if scanner == "1" and scan.scanner_plan(None, None) is not scan.NO_SCAN:
        # the plan parses the first episode; the scanner reads the others
        assert len(calls) == 1
    else:  # every episode parsed exactly once
        assert len(calls) == res.episodes


def test_workers_capped_by_cpus(tmp_path, rng, capsys):
    src = write_dir(tmp_path / "eps", rng, n_files=3, per_file=2)
    ref = export_episodes(src, tmp_path / "o1")
    res = export_episodes(src, tmp_path / "o2", workers=100_000)
    assert "CPU" in capsys.readouterr().err
    assert bins(ref.path) == bins(res.path)


@pytest.mark.parametrize("argv,match", [
    (["--num-actions", "0"], "--num-actions"),
    (["--num-actions", str(F.MAX_DIM + 1)], "--num-actions"),
    (["--num-actions", "x"], "--num-actions"),
    (["--mask-pad", "-3"], "--mask-pad"),
    (["--num-actions", "8", "--mask-pad", "4"], "--mask-pad"),
    (["--compress", "gzip", "--compress-level", "12"], "--compress-level"),
    (["--compress", "zstd", "--compress-level", "0"], "--compress-level"),
    (["--compress-level", "3"], "--compress-level"),
])
def test_cli_ranges_are_usage_errors(tmp_path, argv, match):
    proc = subprocess.run([sys.executable, "-m", "fastrl", "export", str(tmp_path), *argv],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and match in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith(
        "fastrl export: error:")


def test_cli_help_has_examples_and_reports_sources(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "examples:" in capsys.readouterr().out
    d = state_dir(tmp_path / "eps")
    write_sidecar(d, spec=AB_SPEC, n_actions=3)
    assert main(["export", str(d), "--out", str(tmp_path / "o"), "--quiet",
                 "--mask-pad", "4"]) == 0
    err = capsys.readouterr().err
    assert "numActions 3 from the sidecar" in err and "maskPad 4 from --mask-pad" in err
    assert main(["export", str(d), "--out", str(tmp_path / "o"), "--quiet", "--no-sidecar",
                 "--num-actions", "3"]) == 1  # states, no spec: the error says what to add
    assert "--spec" in capsys.readouterr().err


def test_complex_encoder_output_names_the_step(tmp_path, monkeypatch):
    (tmp_path / "cplx_enc.py").write_text(
        "def encode(state):\n    return [state['a'] * (1j if state['a'] == 2 else 1)]\n")
    monkeypatch.chdir(tmp_path)
    d = state_dir(tmp_path / "eps")
    with pytest.raises(EpisodeError, match="complex") as exc:
        export_episodes(d, tmp_path / "out", encoder="cplx_enc:encode", n_actions=3)
    assert exc.value.episode == 0 and exc.value.step == 2


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["obs", "reward"])
def test_non_finite_literal_names_the_step_with_any_parser(tmp_path, rng, monkeypatch,
                                                           literal, where):
    steps = make_steps(rng, 5, form="mask")
    text = json.dumps(steps)
    steps[3]["reward" if where == "reward" else "obs"] = "MARK" if where == "reward" else \
        [0.0, 0.0, "MARK", 0.0, 0.0]
    text = json.dumps(steps).replace('"MARK"', literal)
    d = tmp_path / "eps"
    d.mkdir()
    (d / "a.jsonl").write_text(json.dumps(make_steps(rng, 2, form="mask")) + "\n" + text + "\n")
    errors = []
    for orjson in (_parse.orjson, None):
        monkeypatch.setattr(_parse, "orjson", orjson)
        with pytest.raises(EpisodeError) as exc:
            export_episodes(d, tmp_path / "out")
        errors.append(str(exc.value))
        assert exc.value.episode == 1 and exc.value.step == 3, str(exc.value)
    assert errors[0] == errors[1]


def test_string_in_obs_names_the_step(tmp_path, rng):
    steps = make_steps(rng, 5, form="mask")
    steps[2]["obs"][1] = "oops"
    d = tmp_path / "eps"
    d.mkdir()
    (d / "a.json").write_text(json.dumps(steps))
    with pytest.raises(EpisodeError) as exc:
        export_episodes(d, tmp_path / "out")
    assert exc.value.step == 2 and "oops" in str(exc.value)
