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


def test_num_actions_inferred_from_legal(tmp_path, rng, capsys):
    src = write_dir(tmp_path / "eps", rng, form="legal")
    res = export_episodes(src, tmp_path / "out")
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
