"""``fastrl demo``: the whole workflow on the built-in reference game, in seconds.

bot (episodes as JSONL with raw game states, plus the folder's sidecar file naming the game's
observation spec and action count) -> export (states encoded by the spec, masks padded 208 -> 256)
-> validate -> info -> report, then the same episodes written straight through ``BatchWriter``,
and how to load the result with NumPy and PyTorch.

Everything goes under ``workdir`` (default ``fastrl-demo/``)::

    fastrl-demo/.fastrl-demo.json      what this run wrote (the next run removes exactly that)
    fastrl-demo/dataset/episodes/      the bot's episode files
    fastrl-demo/data/binary/batch_<ms> the exported batch (the only batch of this root)
    fastrl-demo/data/direct/batch_<ms> the same episodes written through BatchWriter
    fastrl-demo/report.html            the exported batch's report page

A second run first removes what the previous run listed in ``.fastrl-demo.json``, so the folder
holds one run and ``open_dataset("fastrl-demo/data/binary")`` never counts a game twice. Files the
demo did not write are never removed: when the episode folder or a batch root holds any, the demo
stops before writing anything.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from . import _format as F
from . import _kernels
from ._threads import available_cpus
from .errors import FastrlError

__all__ = ["DEFAULT_DIR", "MANIFEST", "run_demo"]

DEFAULT_DIR = "fastrl-demo"
MANIFEST = ".fastrl-demo.json"   # in the demo's folder: the paths the last run wrote
_EPISODES = Path("dataset", "episodes")
_EXPORTED = Path("data", "binary")
_DIRECT = Path("data", "direct")
_REPORT = Path("report.html")
_OWNED_DIRS = (_EPISODES, _EXPORTED, _DIRECT, Path("dataset"), Path("data"))

_NUMPY_SNIPPET = """\
import numpy as np, json, os
root = '{root}'
with open(os.path.join(root, 'meta.json')) as f: meta = json.load(f)
obs = np.fromfile(os.path.join(root, 'obs.float32.bin'), dtype='<f4').reshape(meta['count'], meta['obsDim'])
actions = np.fromfile(os.path.join(root, 'actions.int32.bin'), dtype='<i4')
masks = np.fromfile(os.path.join(root, 'masks.uint8.bin'), dtype='uint8').reshape(meta['count'], meta['maskDim'])"""

_TORCH_SNIPPET = """\
import torch, fastrl
from fastrl.torch import TransitionDataset
loader = torch.utils.data.DataLoader(TransitionDataset('{root}'), batch_size=256, shuffle=True)
batch = next(iter(loader))                  # dict of tensors: batch['obs'] is (256, {obs_dim})
legal = batch['masks'].bool()"""


class _Manifest:
    """The demo folder's list of what the current run wrote, rewritten after every step, so a
    run stopped half-way is still cleaned up by the next one."""

    def __init__(self, work: Path):
        self.work = work
        self.paths: list[str] = []

    def add(self, *paths) -> None:
        for p in paths:
            rel = os.path.relpath(os.path.abspath(p), os.path.abspath(self.work))
            if rel not in self.paths:
                self.paths.append(rel)
        tmp = self.work / f"{MANIFEST}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps({"fastrlDemo": 1, "paths": self.paths}, indent=1) + "\n")
        os.replace(tmp, self.work / MANIFEST)


def _inside(work: Path, rel: str) -> Path | None:
    """``work / rel`` when ``rel`` is a plain relative path that stays inside ``work``."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return None
    parts = Path(rel).parts
    if ".." in parts or parts[0] == MANIFEST:
        return None
    return work / rel


def remove_previous_run(work: Path) -> list[str]:
    """Remove what the previous demo run in ``work`` listed in its manifest; return those
    relative paths that existed. Empty folders the demo uses are pruned afterwards."""
    manifest = work / MANIFEST
    try:
        listed = json.loads(manifest.read_text()).get("paths", [])
    except FileNotFoundError:
        return []
    except (OSError, ValueError, AttributeError) as exc:
        raise FastrlError(f"{manifest}: unreadable ({exc}); remove it, or choose another --dir")
    removed = []
    for rel in listed if isinstance(listed, list) else []:
        path = _inside(work, rel)
        if path is None or not os.path.lexists(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(rel)
    for d in _OWNED_DIRS:  # deepest first
        try:
            if {e.name for e in os.scandir(work / d)} <= {F.LOCK_FILE}:
                if os.path.lexists(work / d / F.LOCK_FILE):
                    (work / d / F.LOCK_FILE).unlink()  # the writers' lock of a batch root
                (work / d).rmdir()
        except OSError:
            pass  # absent, or holds something the demo did not write
    manifest.unlink()
    return removed


def _foreign_entries(work: Path) -> list[str]:
    """Entries in the demo's episode folder and batch roots that the demo did not write."""
    found = []
    for d in (_EPISODES, _EXPORTED, _DIRECT):
        try:  # hidden entries are the writers' own (lock file, a crashed writer's temp folder)
            found += [str(d / name) for name in sorted(os.listdir(work / d))
                      if not name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            pass
    for f in (_REPORT,):
        if os.path.lexists(work / f):
            found.append(str(f))
    return found


def run_demo(workdir=DEFAULT_DIR, episodes=300, seed=0, workers=None, *,
             progress: bool | None = None) -> int:
    """Run the demo in ``workdir`` (see the module's docstring); print each step; return the
    exit status. ``progress``: progress bars on stderr (default: when it is a terminal)."""
    from .bot import play_direct, write_episodes
    from .export import export_episodes
    from .game import N_ACTIONS, game_spec
    from .report import batch_figures, format_figures, write_report
    from .validate import validate

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    t_start = time.perf_counter()
    work = Path(workdir)
    if work.exists() and not work.is_dir():
        raise FastrlError(f"{work}: not a folder; choose another --dir")
    removed = remove_previous_run(work) if work.is_dir() else []
    foreign = _foreign_entries(work)
    if foreign:
        shown = ", ".join(str(work / f) for f in foreign[:3]) + (", ..." if len(foreign) > 3
                                                                  else "")
        raise FastrlError(f"{work} holds files the demo did not write ({shown}); the demo's "
                          "batches would mix with them: choose another --dir, or remove them")
    work.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(work)
    ep_dir, out_root, direct_root = work / _EPISODES, work / _EXPORTED, work / _DIRECT
    print(f"fastrl demo (backend: {_kernels.BACKEND}) in {work.resolve()}")
    if removed:
        print(f"   removed the previous demo run there ({len(removed)} files and folders "
              f"listed in {work / MANIFEST})")

    t0 = time.perf_counter()
    manifest.add(ep_dir)  # the episode folder held nothing else: it is the demo's
    bot_progress = {"progress": progress} if _takes_progress(write_episodes) else {}
    files = write_episodes(ep_dir, episodes=episodes, seed=seed, fmt="jsonl", **bot_progress)
    plural = "s" if len(files) != 1 else ""
    print(f"1. bot      {episodes} games of the reference game -> {len(files)} JSONL file{plural} "
          f"in {ep_dir} ({time.perf_counter() - t0:.1f} s)")

    workers = workers or min(2, available_cpus())
    res = export_episodes(ep_dir, out_root, spec=game_spec(), n_actions=N_ACTIONS, mask_pad=256,
                          workers=workers, progress=progress)
    manifest.add(res.path)
    print(f"2. export   {res.transitions:,} transitions, {res.episodes} episodes -> {res.path} "
          f"({res.transitions / max(res.seconds, 1e-9):,.0f} transitions/s, {workers} "
          f"worker{'s' if workers > 1 else ''})")

    problems = validate(res.path)
    if problems:
        print("3. validate FAILED:", *problems, sep="\n   ", file=sys.stderr)
        return 1
    print("3. validate OK (sizes, checksums, no NaN/Inf, masks 0/1, actions legal, dones)")
    print("4. info")
    enc = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    text = format_figures(batch_figures(res.path), ascii=enc != "utf8")
    print("\n".join(f"   {line}" if line else "" for line in text.splitlines()))

    report = work / _REPORT
    manifest.add(report)
    write_report(res.path, report)
    print(f"5. report   {report} (open it in a browser)")

    t0 = time.perf_counter()
    direct = play_direct(direct_root, episodes=episodes, seed=seed, mask_pad=256,
                         **({"progress": progress} if _takes_progress(play_direct) else {}))
    manifest.add(direct)
    print(f"6. bot --direct (BatchWriter, no JSON files) -> {direct} "
          f"({time.perf_counter() - t0:.1f} s, playing included)")

    print(f"\nExport the episodes yourself (their folder's sidecar file names the spec and the "
          f"action count):\n  fastrl export {ep_dir} --out my-batches")
    print("\nLoad it with NumPy (the format's own three-line loader, no fastrl needed):\n")
    print(_NUMPY_SNIPPET.format(root=res.path))
    print("\nOr with fastrl + PyTorch:\n")
    print(_TORCH_SNIPPET.format(root=res.path, obs_dim=game_spec().dim))
    print(f"\ndemo finished in {time.perf_counter() - t_start:.1f} s; a new run in {work} "
          "replaces this one")
    return 0


def _takes_progress(fn) -> bool:
    import inspect
    try:
        return "progress" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
