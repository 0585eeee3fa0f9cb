"""``fastrl bot`` and ``fastrl demo``: the built-in reference game's commands."""

from __future__ import annotations

import argparse
import sys
import time

from ..bot import DEFAULT_PER_FILE, FORMATS, POLICIES, play_direct, write_episodes
from ..demo import DEFAULT_DIR, run_demo
from . import HelpFormatter, add_parser, examples


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
        formatter_class=HelpFormatter,
        epilog=examples("fastrl bot                                  # 200 games -> "
                        "dataset/episodes/*.jsonl",
                        "fastrl bot --episodes 1000 --policy greedy --seed 7",
                        "fastrl bot --out my/episodes && fastrl export my/episodes",
                        "fastrl bot --direct --batch-root data/binary  # straight into a batch"),
        description="Play the built-in reference game (fastrl.game) with a seeded policy and "
                    "write its episodes as JSON files for `fastrl export`, with the folder's "
                    "sidecar fastrl-episodes.json (the game's ObsSpec and action count, so "
                    "`fastrl bot && fastrl export` needs no flags), or with --direct straight "
                    "into a batch. Prints the paths written, one per line.")
    p.add_argument("--episodes", type=_int_at_least(1), default=200,
                   help="number of episodes (default 200)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="run seed (default 0)")
    p.add_argument("-o", "--out", default="dataset/episodes",
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bot)
    return p


def _cmd_bot(args) -> int:
    """Run ``fastrl bot`` with parsed ``args``; print the paths written; return the exit code."""
    t0 = time.perf_counter()
    if args.direct:
        if args.format != "jsonl" or args.per_file is not None or args.with_obs:
            print("fastrl bot: note: --format, --per-file and --with-obs apply to episode files, "
                  "not to --direct", file=sys.stderr)
        path = play_direct(args.batch_root, args.episodes, args.seed, args.policy,
                           progress=False if args.quiet else None)
        what = f"1 batch in {args.batch_root}"
        paths = [path]
    else:
        paths = write_episodes(args.out, args.episodes, args.seed, args.format, args.per_file,
                               args.policy, with_obs=args.with_obs,
                               progress=False if args.quiet else None)
        what = f"{len(paths)} file(s) in {args.out}"
    dt = time.perf_counter() - t0
    print(f"fastrl bot: {args.episodes} episode(s), policy {args.policy}, seed {args.seed}: "
          f"{what} ({dt:.2f} s)", file=sys.stderr)
    if not args.direct:
        print(f"fastrl bot: {args.out}/fastrl-episodes.json records the game's spec and action "
              f"count; export with: fastrl export {args.out}", file=sys.stderr)
    for p in paths:
        print(p)
    return 0


def _cmd_demo(args) -> int:
    return run_demo(args.dir, episodes=args.episodes, seed=args.seed, workers=args.workers,
                    progress=False if args.quiet else None)


def _register_demo(sub) -> None:
    p = add_parser(
        sub, "demo", help="the whole workflow on the built-in game: bot -> export -> validate "
                          "-> info -> report",
        description="Play the built-in reference game, export the episodes to a batch, validate "
                    "it, print its figures, write its HTML report and show how to load it with "
                    "NumPy and PyTorch. Takes seconds.\n\n"
                    f"Everything goes under --dir (default {DEFAULT_DIR}/). A second run there "
                    "first removes what the previous demo run wrote (and only that: the files "
                    "are listed in the folder's .fastrl-demo.json), so the folder always holds "
                    "one run. When its episode folder or batch roots hold files the demo did not "
                    "write, the demo stops before writing anything.",
        example_lines=["fastrl demo",
                       "fastrl demo --episodes 50 --dir /tmp/fastrl-demo"])
    p.add_argument("--dir", default=DEFAULT_DIR,
                   help=f"working folder (default: {DEFAULT_DIR})")
    p.add_argument("--episodes", type=_int_at_least(1), default=300,
                   help="games to play (default 300)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="run seed (default 0)")
    p.add_argument("--workers", type=_int_at_least(1), default=None,
                   help="export processes (default: 2, or 1 on a single CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)
