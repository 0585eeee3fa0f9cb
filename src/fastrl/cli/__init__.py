"""Command line: ``fastrl <command>`` (also ``python -m fastrl``).

Every subcommand is registered from this package: the batch commands (validate, info, to-npz,
decompress, report) here, ``export`` in :mod:`.export`, the storage commands (upload, ls, fetch,
clean-remote) in :mod:`.storage`, ``bot`` and ``demo`` in :mod:`.refgame`. Each sets
``func(args) -> exit code``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from .. import __version__, _kernels

# Modules that contribute sub-commands, in the order `fastrl --help` lists them.
_COMMAND_MODULES = ("fastrl.cli.export", "fastrl.cli", "fastrl.storage", "fastrl.cli.refgame")


def _cmd_validate(args) -> int:
    from ..validate import validate
    probs = validate(args.batch, check_data=not args.quick)
    if probs:
        print(f"{args.batch}: INVALID, {len(probs)} problem(s):", file=sys.stderr)
        for p in probs:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"{args.batch}: OK")
    return 0


def _cmd_info(args) -> int:
    from ..convert import format_info, info
    d = info(args.batch)
    print(json.dumps(d, indent=1) if args.json else format_info(d))
    return 0


def _cmd_to_npz(args) -> int:
    from ..convert import to_npz
    out = to_npz(args.batch, args.out, compressed=not args.uncompressed)
    print(out)
    return 0


def _cmd_decompress(args) -> int:
    from ..convert import decompress
    print(decompress(args.batch, args.out))
    return 0


def register(sub) -> None:
    p = sub.add_parser("validate", help="check a batch; exit 0 when sound, 1 with every problem")
    p.add_argument("batch", help="batch folder")
    p.add_argument("--quick", action="store_true",
                   help="check meta.json, file sizes and checksums only, not the values")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("info", help="print a summary of a batch")
    p.add_argument("batch", help="batch folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("to-npz", help="convert a batch to one .npz file (the origin document's)")
    p.add_argument("batch", help="batch folder")
    p.add_argument("out", help="output .npz path")
    p.add_argument("--uncompressed", action="store_true", help="np.savez instead of savez_compressed")
    p.set_defaults(func=_cmd_to_npz)
    p = sub.add_parser("decompress", help="write a plain (seed-format) copy of a compressed batch")
    p.add_argument("batch", help="compressed batch folder")
    p.add_argument("--out", help="output root (default: the batch's own root)")
    p.set_defaults(func=_cmd_decompress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastrl", description="Turn game-bot trajectories into compact binary RL datasets.")
    parser.add_argument("--version", action="version",
                        version=f"fastrl {__version__} (backend: {_kernels.BACKEND})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in _COMMAND_MODULES:
        importlib.import_module(modname).register(sub)
    return parser


def main(argv=None) -> int:
    from ..errors import FastrlError
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("fastrl: interrupted; nothing was committed", file=sys.stderr)
        return 130
    except (FastrlError, OSError) as exc:
        print(f"fastrl {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
