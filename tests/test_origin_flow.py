"""The origin document's validation list (phase 4.5, "Validation à effectuer"), run as written,
as a new user would, with the commands' defaults and no flags:

1. generate a few episodes with the bot (`fastrl bot`);
2. run the export (`fastrl export`, no arguments);
3. check that meta.json is coherent (obsDim == the encoder's, maskDim == 256 or 208 depending
   on padding);
4. load in Python with the document's NumPy snippet and check there is no NaN.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrl

from fastrl.export import SIDECAR_NAME, read_sidecar, write_sidecar
from fastrl.game import N_ACTIONS, game_spec


def run(cwd, *args):
    proc = subprocess.run([sys.executable, "-m", "fastrl", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, FASTRL_PROGRESS="0"))
    assert proc.returncode == 0, proc.stderr
    return proc


def origin_loader(root):
    """The origin document's snippet, unchanged (root = the batch folder)."""
    with open(os.path.join(root,'meta.json')) as f: meta = json.load(f)  # noqa: E231,E701
    obs = np.fromfile(os.path.join(root,'obs.float32.bin'), dtype='<f4').reshape(meta['count'], meta['obsDim'])  # noqa: E231,E501
    actions = np.fromfile(os.path.join(root,'actions.int32.bin'), dtype='<i4')  # noqa: E231
    rewards = np.fromfile(os.path.join(root,'rewards.float32.bin'), dtype='<f4')  # noqa: E231
    masks = np.fromfile(os.path.join(root,'masks.uint8.bin'), dtype='uint8').reshape(meta['count'], meta['maskDim'])  # noqa: E231,E501
    dones = np.fromfile(os.path.join(root,'dones.uint8.bin'), dtype='uint8')  # noqa: E231
    return meta, obs, actions, rewards, masks, dones


@pytest.mark.parametrize("padded", [False, True])
def test_origin_validation_list_with_no_flags(tmp_path, padded):
    # 1. generate a few episodes (the bot's defaults write dataset/episodes and its sidecar)
    run(tmp_path, "bot", "--episodes", "12")
    episodes = tmp_path / "dataset" / "episodes"
    assert (episodes / SIDECAR_NAME).is_file()
    if padded:  # the padding recorded in the folder: still no flag on the export
        write_sidecar(episodes, spec=game_spec(), n_actions=N_ACTIONS, mask_pad=256)
    # 2. run the export, no arguments
    proc = run(tmp_path, "export")
    root = proc.stdout.strip().splitlines()[-1]
    assert "from the sidecar" in proc.stderr
    root = os.path.join(tmp_path, root) if not os.path.isabs(root) else root
    assert os.path.dirname(root) == os.path.join(tmp_path, "data", "binary")
    # 3. meta.json coherent
    meta, obs, actions, rewards, masks, dones = origin_loader(root)
    assert meta["obsDim"] == game_spec().dim == 688
    assert meta["maskDim"] == (256 if padded else 208)
    assert meta["count"] == meta["steps"] == len(actions) == len(rewards) == len(dones)
    assert meta["episodes"] == 12 == int(dones.sum())
    # 4. load with NumPy, no NaN
    assert np.isnan(obs).sum() == 0
    assert masks[np.arange(len(actions)), actions].all()
    assert masks[:, N_ACTIONS:].sum() == 0
    # and the same batch fastrl's own checks accept
    assert fastrl.validate(root) == []


def test_bot_sidecar_round_trip(tmp_path):
    run(tmp_path, "bot", "--episodes", "2", "--out", "eps")
    side = read_sidecar(tmp_path / "eps")
    assert side["n_actions"] == N_ACTIONS and side["mask_pad"] is None
    assert side["encoder"] is None
    assert json.loads(side["spec"].to_json()) == json.loads(game_spec().to_json())
