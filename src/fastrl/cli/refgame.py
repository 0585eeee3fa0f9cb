"""``fastrl bot`` and ``fastrl demo``: the built-in reference game's commands."""

from __future__ import annotations

import argparse
import sys
import time

from ..bot import DEFAULT_PER_FILE, FORMATS, POLICIES, play_direct, write_episodes
from ..demo import run_demo


def register(subparsers) -> None:
    """Add ``bot`` and ``demo`` to ``subparsers``."""
    _register_bot(subparsers)
    _register_demo(subparsers)


def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v
    return parse


def _register_bot(subparsers) -> argparse.ArgumentParser:
    """Add the ``bot`` sub-command to ``subparsers`` (an ``argparse`` sub-parsers action)."""
    p = subparsers.add_parser(
        "bot", help="play the built-in reference game and write episodes (dataset/episodes)",
        description="Play the built-in reference game (fastrl.game) with a seeded policy and "
                    "write its episodes as JSON files for `fastrl export`, or with --direct "
                    "straight into a batch. Prints the paths written, one per line.")
    p.add_argument("--episodes", type=_int_at_least(1), default=200,
                   help="number of episodes (default 200)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="run seed (default 0)")
    p.add_argument("--out", default="dataset/episodes",
                   help="folder for the episode files (default dataset/episodes)")
    p.add_argument("--format", choices=FORMATS, default="jsonl",
                   help="jsonl: several episodes per file, one per line (default); "
                        "json: one episode per file")
    p.add_argument("--per-file", type=_int_at_least(1), default=None,
                   help=f"episodes per .jsonl file (default {DEFAULT_PER_FILE})")
    p.add_argument("--policy", choices=POLICIES, default="random",
                   help="random legal action (default) or greedy on the immediate score")
    p.add_argument("--with-obs", action="store_true",
                   help="also store each step's encoded observation (688 floats) in the files")
    p.add_argument("--direct", action="store_true",
                   help="skip the JSON files: write one batch through BatchWriter instead")
    p.add_argument("--batch-root", default="data/binary",
                   help="output root for --direct (default data/binary)")
    p.set_defaults(func=_cmd_bot)
    return p


def _cmd_bot(args) -> int:
    """Run ``fastrl bot`` with parsed ``args``; print the paths written; return the exit code."""
    t0 = time.perf_counter()
    if args.direct:
        if args.format != "jsonl" or args.per_file is not None or args.with_obs:
            print("fastrl bot: note: --format, --per-file and --with-obs apply to episode files, "
                  "not to --direct", file=sys.stderr)
        path = play_direct(args.batch_root, args.episodes, args.seed, args.policy)
        what = f"1 batch in {args.batch_root}"
        paths = [path]
    else:
        paths = write_episodes(args.out, args.episodes, args.seed, args.format, args.per_file,
                               args.policy, with_obs=args.with_obs)
        what = f"{len(paths)} file(s) in {args.out}"
    dt = time.perf_counter() - t0
    print(f"fastrl bot: {args.episodes} episode(s), policy {args.policy}, seed {args.seed}: "
          f"{what} ({dt:.2f} s)", file=sys.stderr)
    if not args.direct and not args.with_obs:
        print("fastrl bot: the files hold raw states; export them with the game's spec, e.g.\n"
              "  python -c \"from fastrl.game import game_spec; print(game_spec().to_json())\" "
              f"> refgame-spec.json\n  fastrl export {args.out} --spec refgame-spec.json",
              file=sys.stderr)
    for p in paths:
        print(p)
    return 0


def _cmd_demo(args) -> int:
    return run_demo(args.dir, episodes=args.episodes, seed=args.seed, workers=args.workers)


def _register_demo(sub) -> None:
    p = sub.add_parser("demo", help="bot -> export -> validate -> info on the built-in game")
    p.add_argument("--dir", default="fastrl-demo", help="working folder (default: fastrl-demo)")
    p.add_argument("--episodes", type=int, default=300, help="games to play (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="export processes (default: 2)")
    p.set_defaults(func=_cmd_demo)
