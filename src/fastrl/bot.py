"""``fastrl bot``: plays the built-in reference game (:mod:`fastrl.game`) and writes its episodes,
either as JSON episode files in the input schema of ``fastrl export`` (contract §2), or straight
into a batch through :class:`fastrl.BatchWriter` (``--direct``).

Policies (seeded, so a seed gives the same episodes everywhere):

- ``random``: a uniformly random legal action; ``logprob = log(1 / len(legal))``.
- ``greedy``: the legal action with the best immediate score change, ties broken uniformly at
  random; ``logprob = log(1 / number of ties)``.

Each step's ``value`` is the game's cheap heuristic (the squashed score lead), not a learned one.
Episode ``i`` of a run with seed ``S`` plays game seed ``S * 2**32 + i``, so runs with different
seeds never share an episode and a run's episodes do not depend on how they are split into files.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np

from ._progress import progress_bar
from .game import N_ACTIONS, N_COLS, N_ROWS, RefGame, game_spec

__all__ = ["POLICIES", "episode_seed", "play_episode", "play_columns", "write_episodes",
           "play_direct"]

POLICIES = ("random", "greedy")
FORMATS = ("jsonl", "json")
DEFAULT_PER_FILE = 50  # episodes per .jsonl file
_SEED_STRIDE = 1 << 32

try:  # the "fast" extra; the output is the same JSON either way
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without orjson
    _orjson = None


def episode_seed(seed: int, index: int) -> int:
    """The game seed of episode ``index`` of a run seeded with ``seed``."""
    return seed * _SEED_STRIDE + index


def _policy_rng(game_seed: int) -> random.Random:
    # A stream separate from the game's own (deck, opponent), so changing the policy does not
    # change the game's dealing.
    return random.Random(f"fastrl-policy-{game_seed}")


def _chooser(policy: str):
    """A function (game, legal, rand) -> (action, logprob) for ``policy``."""
    if policy == "random":
        def choose(game, legal, rand):
            n = len(legal)
            return legal[int(rand() * n)], -math.log(n)
    elif policy == "greedy":
        def choose(game, legal, rand):
            gain = game.gain
            gains = [gain(a) for a in legal]
            best = max(gains)
            ties = [a for a, g in zip(legal, gains) if g == best]
            n = len(ties)
            return ties[int(rand() * n)], -math.log(n)
    else:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    return choose


def play_episode(seed: int, policy: str = "random", *, with_obs: bool = False,
                 spec=None) -> dict:
    """Play one game from ``seed`` and return it in the episode schema of contract §2:
    ``{"steps": [{"state", "legal", "action", "reward", "value", "logprob"}, ...]}``, the last
    step with ``"done": True``. ``with_obs`` adds each step's encoded ``"obs"`` (688 floats, via
    ``spec`` or the game's :func:`~fastrl.game.game_spec`)."""
    choose = _chooser(policy)
    rand = _policy_rng(seed).random
    game = RefGame()
    state = game.reset(seed)
    steps = []
    done = False
    while not done:
        legal = game.legal_actions()
        action, logprob = choose(game, legal, rand)
        value = game.value_estimate()
        next_state, reward, done = game.step(action)
        steps.append({"state": state, "legal": legal, "action": action, "reward": reward,
                      "value": value, "logprob": logprob})
        state = next_state
    steps[-1]["done"] = True
    if with_obs:
        obs = (spec or game_spec()).encode([s["state"] for s in steps])
        for s, row in zip(steps, obs.tolist()):
            s["obs"] = row
    return {"steps": steps}


def play_columns(seed: int, policy: str = "random") -> dict:
    """Play one game from ``seed`` and return it as arrays, the cheapest form to hand to
    :meth:`fastrl.BatchWriter.add_episode`: ``actions`` int32 (T,), ``rewards`` / ``values`` /
    ``logprobs`` float32 (T,), ``legal`` as ``(ids int64, offsets int64 (T+1,))``, and
    ``states``, a dict of columns: ``board`` uint8 (T, 13, 16), ``hand`` in CSR form
    ``(ids uint8, offsets int64 (T+1,))`` (each row's tile kinds, in no particular order),
    ``phase`` int64 (T,), ``scalars`` float32 (T, 8)."""
    choose = _chooser(policy)
    rand = _policy_rng(seed).random
    game = RefGame()
    game.reset(seed)
    boards = bytearray()
    hand_ids = bytearray()
    hand_offsets, phases, scalars = [0], [], []
    ids, offsets = [], [0]
    actions, rewards, values, logprobs = [], [], [], []
    done = False
    while not done:
        legal = game.legal_actions()
        action, logprob = choose(game, legal, rand)
        game.record(boards, hand_ids)
        hand_offsets.append(len(hand_ids))
        phases.append(game.phase)
        scalars.append(game.scalars())
        values.append(game.value_estimate())
        ids += legal
        offsets.append(len(ids))
        reward, done = game.play(action)
        actions.append(action)
        rewards.append(reward)
        logprobs.append(logprob)
    T = len(actions)
    return {
        "actions": np.array(actions, dtype=np.int32),
        "rewards": np.array(rewards, dtype=np.float32),
        "values": np.array(values, dtype=np.float32),
        "logprobs": np.array(logprobs, dtype=np.float32),
        "legal": (np.array(ids, dtype=np.int64), np.array(offsets, dtype=np.int64)),
        "states": {
            "board": np.frombuffer(bytes(boards), dtype=np.uint8).reshape(T, N_ROWS, N_COLS),
            "hand": (np.frombuffer(bytes(hand_ids), dtype=np.uint8),
                     np.array(hand_offsets, dtype=np.int64)),
            "phase": np.array(phases, dtype=np.int64),
            "scalars": np.array(scalars, dtype=np.float32),
        },
    }


# -- writing episode files -------------------------------------------------------------------

def _dumps(obj) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _publish(tmp: Path, final: Path) -> Path:
    """Give the finished temporary file ``tmp`` its final name without ever replacing an
    existing file: ``final``, or ``final`` with ``.1``, ``.2``... before the extension."""
    stem, ext = final.name[: -len(final.suffix)], final.suffix
    k = 0
    while True:
        target = final if k == 0 else final.with_name(f"{stem}.{k}{ext}")
        try:
            os.link(tmp, target)  # fails if target exists: no clobbering, unlike rename
        except FileExistsError:
            k += 1
            continue
        except OSError:  # no hard links on this filesystem: check, then rename
            if target.exists():
                k += 1
                continue
            os.replace(tmp, target)
            return target
        os.unlink(tmp)
        return target


def _write_atomic(final: Path, chunks, fsync: bool) -> Path:
    # The temporary name starts with "." and ends in ".tmp", so an exporter globbing *.json /
    # *.jsonl never sees a half-written file; the file appears under its final name complete.
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.writelines(chunks)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        return _publish(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_episodes(out_dir: str | os.PathLike = "dataset/episodes", episodes: int = 100,
                   seed: int = 0, fmt: str = "jsonl", per_file: int | None = None,
                   policy: str = "random", *, with_obs: bool = False,
                   fsync: bool = True, sidecar: bool = True,
                   progress: bool | None = False) -> list[Path]:
    """Play ``episodes`` games and write them under ``out_dir`` in the contract §2 schema.

    ``fmt="jsonl"``: ``per_file`` episodes per file (default 50), one JSON object per line;
    ``fmt="json"``: one episode object per file. Files are named
    ``ep-<unix ms>-s<seed>-<index>.<fmt>`` (sorting by creation time, never replacing an existing
    file) and each appears only once complete (written under a hidden temporary name, then
    renamed). ``sidecar``: also write the folder's sidecar ``fastrl-episodes.json`` (the game's
    ObsSpec and action count), so that ``fastrl export <out_dir>`` needs no flags; a folder
    whose sidecar describes other episodes is refused before anything is written. Returns the
    episode files written, in order (not the sidecar). ``progress``: a progress bar of the
    episodes played on stderr (None: when stderr is a terminal).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 0:
        raise ValueError(f"episodes must be a non-negative integer, got {episodes!r}")
    if fmt == "json":
        if per_file not in (None, 1):
            raise ValueError("fmt='json' holds one episode per file; per_file must be 1")
        per_file = 1
    elif per_file is None:
        per_file = DEFAULT_PER_FILE
    elif isinstance(per_file, bool) or not isinstance(per_file, int) or per_file < 1:
        raise ValueError(f"per_file must be a positive integer, got {per_file!r}")
    _chooser(policy)  # reject a bad policy before creating anything
    spec = game_spec() if with_obs else None
    out = Path(out_dir)
    if sidecar:
        _check_sidecar(out)
    out.mkdir(parents=True, exist_ok=True)
    if sidecar:
        from .export.sidecar import write_sidecar
        write_sidecar(out, spec=game_spec(), n_actions=N_ACTIONS)
    stamp = f"ep-{time.time_ns() // 1_000_000:013d}-s{seed}"
    paths = []
    with progress_bar(episodes, "bot", unit="episode", enabled=progress) as bar:
        for file_index, first in enumerate(range(0, episodes, per_file)):
            # Serialize each episode as soon as it is played: holding many episodes' small
            # objects alive makes the garbage collector's passes dominate the run time.
            chunks = []
            for i in range(first, min(first + per_file, episodes)):
                chunks.append(_dumps(play_episode(episode_seed(seed, i), policy,
                                                  with_obs=with_obs, spec=spec)))
                chunks.append(b"\n")
                bar.update(1)
            paths.append(_write_atomic(out / f"{stamp}-{file_index:06d}.{fmt}", chunks, fsync))
    return paths


def _check_sidecar(out: Path) -> None:
    """Refuse a folder whose sidecar is not the reference game's (its episodes would be
    exported with the wrong spec or action count)."""
    from .errors import FastrlError
    from .export.sidecar import SIDECAR_NAME, read_sidecar, sidecar_dict
    path = out / SIDECAR_NAME
    if not path.exists():
        return
    try:
        side = read_sidecar(out)
    except FastrlError:
        side = None
    want = sidecar_dict(spec=game_spec(), n_actions=N_ACTIONS)
    if side is None or side["encoder"] is not None or side["mask_pad"] is not None \
            or side["n_actions"] != N_ACTIONS or side["spec"] is None \
            or json.loads(side["spec"].to_json()) != want["obsSpec"]:
        raise FastrlError(f"{path} describes other episodes than the reference game's; write "
                          "the bot's episodes to another folder (--out)")


# -- writing a batch directly ----------------------------------------------------------------

def play_direct(root: str | os.PathLike = "data/binary", episodes: int = 200, seed: int = 0,
                policy: str = "random", *, mask_pad: int | None = None,
                progress: bool | None = None, **writer_options) -> Path:
    """Play ``episodes`` games and write them straight into one batch under ``root`` through
    :class:`fastrl.BatchWriter` (raw states encoded by the game's ObsSpec, legal-id masks,
    values and logprobs), one ``add_episode`` call per episode. ``progress``: a bar of the
    episodes on stderr (default: when stderr is a terminal). Returns the batch path."""
    from .writer import BatchWriter

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    _chooser(policy)
    meta = {"game": "fastrl.game.RefGame", "policy": policy, "seed": seed,
            "episodeSeeds": f"seed * 2**32 + index, index 0..{episodes - 1}"}
    with BatchWriter(root, n_actions=N_ACTIONS, spec=game_spec(), mask_pad=mask_pad, meta=meta,
                     **writer_options) as w, \
            progress_bar(episodes, "bot", unit="episode", enabled=progress) as bar:
        for i in range(episodes):
            bar.update(1)
            ep = play_columns(episode_seed(seed, i), policy)
            w.add_episode(actions=ep["actions"], rewards=ep["rewards"], legal=ep["legal"],
                          values=ep["values"], logprobs=ep["logprobs"], states=ep["states"])
    return w.path
