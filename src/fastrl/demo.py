"""``fastrl demo``: the whole workflow on the built-in reference game, in well under a minute.

bot (episodes as JSONL with raw states) -> export (re-encoded by the game's ObsSpec, masks padded
208 -> 256) -> validate -> info, then the same episodes written straight through ``BatchWriter``,
and how to load the result with NumPy and PyTorch. Everything goes under ``--dir``
(default ``fastrl-demo/``); the demo's previous episode files there are replaced.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from . import _kernels
from ._threads import available_cpus

_NUMPY_SNIPPET = """\
import numpy as np, json, os
root = '{root}'
with open(os.path.join(root,'meta.json')) as f: meta = json.load(f)
obs = np.fromfile(os.path.join(root,'obs.float32.bin'), dtype='<f4').reshape(meta['count'], meta['obsDim'])
actions = np.fromfile(os.path.join(root,'actions.int32.bin'), dtype='<i4')
masks = np.fromfile(os.path.join(root,'masks.uint8.bin'), dtype='uint8').reshape(meta['count'], meta['maskDim'])"""

_TORCH_SNIPPET = """\
import torch, fastrl
b = fastrl.load_batch('{root}')            # memory-mapped, opens in milliseconds
mb = b.sample(4096, rng=0)                  # random minibatch (dict of NumPy arrays)
obs = torch.from_numpy(mb['obs'])           # (4096, {obs_dim}) float32, no copy
legal = torch.from_numpy(mb['masks']).bool()"""


def run_demo(workdir="fastrl-demo", episodes=300, seed=0, workers=None) -> int:
    from .bot import play_direct, write_episodes
    from .convert import format_info, info
    from .export import export_episodes
    from .game import GAME_SPEC_JSON, N_ACTIONS, game_spec
    from .validate import validate

    t_start = time.perf_counter()
    work = Path(workdir)
    ep_dir = work / "dataset" / "episodes"
    out_root = work / "data" / "binary"
    if ep_dir.exists():
        shutil.rmtree(ep_dir)
    print(f"fastrl demo (backend: {_kernels.BACKEND}) in {work.resolve()}")

    t0 = time.perf_counter()
    files = write_episodes(ep_dir, episodes=episodes, seed=seed, fmt="jsonl")
    print(f"1. bot      {episodes} games of the reference game -> {len(files)} JSONL files in "
          f"{ep_dir} ({time.perf_counter() - t0:.1f} s)")

    spec_path = work / "spec.json"
    spec_path.write_text(game_spec().to_json())
    workers = workers or min(2, available_cpus())
    res = export_episodes(ep_dir, out_root, spec=game_spec(), n_actions=N_ACTIONS, mask_pad=256,
                          workers=workers, progress=False)
    print(f"2. export   {res.transitions:,} transitions, {res.episodes} episodes -> {res.path} "
          f"({res.transitions / max(res.seconds, 1e-9):,.0f} transitions/s, {workers} workers)")

    problems = validate(res.path)
    if problems:
        print("3. validate FAILED:", *problems, sep="\n   ", file=sys.stderr)
        return 1
    print("3. validate OK (sizes, checksums, no NaN/Inf, masks 0/1, actions legal, dones)")
    print("4. info")
    print("   " + format_info(info(res.path)).replace("\n", "\n   "))

    t0 = time.perf_counter()
    direct = play_direct(out_root, episodes=episodes, seed=seed, mask_pad=256)
    dt = time.perf_counter() - t0
    print(f"5. bot --direct (BatchWriter, no JSON) -> {direct} ({dt:.1f} s, playing included)")

    print(f"\nFiles: episodes in {ep_dir}, observation spec in {spec_path} "
          f"({len(GAME_SPEC_JSON['fields'])} fields, {game_spec().dim} floats), batches in "
          f"{out_root}")
    print("\nLoad with NumPy (the origin document's loader):\n")
    print(_NUMPY_SNIPPET.format(root=res.path))
    print("\nOr with fastrl + PyTorch:\n")
    print(_TORCH_SNIPPET.format(root=res.path, obs_dim=game_spec().dim))
    print(f"\ndemo finished in {time.perf_counter() - t_start:.1f} s")
    return 0
