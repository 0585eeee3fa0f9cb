"""The origin document's validation list, end to end on the reference game:
1. generate episodes (bot), 2. export, 3. meta.json coherent (obsDim == the encoder's,
maskDim 208, or 256 when padded), 4. load with NumPy and check there is no NaN."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrl
from fastrl.bot import write_episodes
from fastrl.export import export_episodes
from fastrl.game import N_ACTIONS, game_spec


@pytest.fixture(scope="module")
def episodes_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("episodes")
    write_episodes(d, episodes=24, seed=7, fmt="jsonl", per_file=5)
    return d


@pytest.mark.parametrize("mask_pad", [None, 256])
def test_seed_validation_list(backend, episodes_dir, tmp_path, mask_pad):
    spec = game_spec()
    res = export_episodes(episodes_dir, tmp_path / "binary", spec=spec, n_actions=N_ACTIONS,
                          mask_pad=mask_pad)
    root = str(res.path)
    with open(os.path.join(root, 'meta.json')) as f: meta = json.load(f)  # noqa: E701
    assert meta["obsDim"] == spec.dim == 688
    assert meta["maskDim"] == (256 if mask_pad else 208) and meta["numActions"] == 208
    assert meta["count"] == meta["steps"] and meta["episodes"] == 24
    obs = np.fromfile(os.path.join(root, 'obs.float32.bin'), dtype='<f4').reshape(meta['count'], meta['obsDim'])
    masks = np.fromfile(os.path.join(root, 'masks.uint8.bin'), dtype='uint8').reshape(meta['count'], meta['maskDim'])
    assert np.isnan(obs).sum() == 0
    assert fastrl.validate(res.path) == []
    assert meta["obsSpec"] == json.loads(spec.to_json())
    assert meta["obsSlices"]["board"] == [0, 624]
    assert masks[:, 208:].sum() == 0


def test_workers_identical_with_spec(episodes_dir, tmp_path):
    spec = game_spec()
    a = export_episodes(episodes_dir, tmp_path / "a", spec=spec, n_actions=N_ACTIONS)
    b = export_episodes(episodes_dir, tmp_path / "b", spec=spec, n_actions=N_ACTIONS, workers=2)
    for f in sorted(os.listdir(a.path)):
        if f.endswith(".bin"):
            assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f


def test_spec_file_on_cli(episodes_dir, tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(game_spec().to_json())
    proc = subprocess.run([sys.executable, "-m", "fastrl", "export", str(episodes_dir),
                           "--spec", str(spec_file), "--out", str(tmp_path / "o"),
                           "--mask-pad", "256", "--workers", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip().splitlines()[-1]
    assert fastrl.load_batch(path).obs_dim == 688


def test_direct_equals_export(backend, tmp_path):
    """`fastrl bot --direct` (BatchWriter with raw states) stores the same transitions as bot
    -> JSON -> export for the same seed."""
    from fastrl.bot import play_direct
    eps = tmp_path / "eps"
    write_episodes(eps, episodes=6, seed=3, fmt="json")
    exported = export_episodes(eps, tmp_path / "x", spec=game_spec(), n_actions=N_ACTIONS)
    direct = play_direct(tmp_path / "y", episodes=6, seed=3)
    for name in ("obs.float32.bin", "actions.int32.bin", "rewards.float32.bin",
                 "masks.uint8.bin", "dones.uint8.bin"):
        assert (exported.path / name).read_bytes() == (direct / name).read_bytes(), name


def test_demo_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastrl", "demo", "--episodes", "30",
                           "--dir", str(tmp_path / "demo")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "validate OK" in proc.stdout and "np.fromfile" in proc.stdout
