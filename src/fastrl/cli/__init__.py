"""Command line: ``fastrl <command>`` (also ``python -m fastrl``).

Every subcommand is registered from this package: ``bot`` and ``demo`` in :mod:`.refgame`,
``export`` in :mod:`.export`, the batch commands (validate, info, to-npz, to-parquet, decompress,
report) here, the storage commands (upload, ls, fetch, clean-remote) in :mod:`.storage`.
Each sets ``func(args) -> exit code``.

Conventions every command follows: ``--help`` ends with examples; ``-o``/``--out`` names where
the output goes; a failure exits non-zero with one line ``fastrl <command>: error: ...`` on
stderr, never a traceback (``FASTRL_DEBUG=1`` shows it); long commands draw a progress bar on
stderr when it is a terminal, and ``--quiet`` turns it off.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import textwrap

from .. import __version__, _kernels

# Modules that contribute sub-commands, in the order `fastrl --help` lists them.
_COMMAND_MODULES = ("fastrl.cli.refgame", "fastrl.cli.export", "fastrl.cli", "fastrl.cli.storage")

DIST_NAME = "fastrl-batch"  # the distribution's name on the package index (import name: fastrl)

# The optional extra that brings each optional import (for the hint of a missing one).
_EXTRAS = {"zstandard": "zstd", "pyarrow": "parquet", "fsspec": "remote", "s3fs": "remote",
           "ray": "ray", "minari": "minari", "h5py": "minari", "gymnasium": "gymnasium",
           "torch": "torch", "tensordict": "torchrl", "torchrl": "torchrl", "orjson": "fast"}

_BATCH = "data/binary/batch_1795736172459"  # the batch path the examples show

class HelpFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description (paragraphs are separated by a blank line) to the
    terminal's width, and keeps indented lines (examples, lists) as written."""

    def _fill_text(self, text, width, indent):
        out = []
        for para in text.split("\n\n"):
            if para.startswith("examples:") or any(ln.startswith(" ") for ln in para.splitlines()):
                out.append("\n".join(indent + ln for ln in para.splitlines()))
            else:  # never split a name such as fastrl-batch at its hyphen
                out.append(textwrap.fill(" ".join(para.split()), width, initial_indent=indent,
                                         subsequent_indent=indent, break_on_hyphens=False))
        return "\n\n".join(out)


def examples(*lines: str) -> str:
    """An argparse epilog: ``examples:`` and one indented command per line."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_parser(sub, name: str, *, help: str, description: str | None = None,
               example_lines=(), **kw) -> argparse.ArgumentParser:
    """``sub.add_parser`` with the CLI's conventions: the description wrapped paragraph by
    paragraph, and the examples as the epilog."""
    return sub.add_parser(name, help=help, description=description or help[:1].upper() + help[1:],
                          epilog=examples(*example_lines) if example_lines else None,
                          formatter_class=HelpFormatter, **kw)


# -- batch commands --------------------------------------------------------------------------

def _cmd_validate(args) -> int:
    vmod = importlib.import_module("fastrl.validate")  # the module; fastrl.validate: the function
    probs = vmod.validate(args.batch, check_data=not args.quick)
    notes = getattr(vmod, "root_notes", None)
    for note in (notes(args.batch) if notes is not None else []):
        print(f"fastrl validate: note: {note}", file=sys.stderr)
    if probs:
        print(f"{args.batch}: INVALID, {len(probs)} problem(s):", file=sys.stderr)
        for p in probs:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"{args.batch}: OK")
    return 0


def _cmd_info(args) -> int:
    from ..report import batch_figures, format_figures
    figures = batch_figures(args.batch)
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        enc = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
        print(format_figures(figures, ascii=args.ascii or enc != "utf8"))
    return 0


def _cmd_to_npz(args) -> int:
    from ..convert import to_npz
    print(to_npz(args.batch, args.out, compressed=not args.uncompressed,
                 progress=False if args.quiet else None))
    return 0


def _cmd_to_parquet(args) -> int:
    from ..interop import to_parquet
    compression = None if args.compression == "none" else args.compression
    print(to_parquet(args.batch, args.out, compression=compression,
                     progress=False if args.quiet else None))
    return 0


def _cmd_decompress(args) -> int:
    from ..convert import decompress
    print(decompress(args.batch, args.out, progress=False if args.quiet else None))
    return 0


def _cmd_report(args) -> int:
    from ..report import write_report
    print(write_report(args.batch, args.out))
    return 0


def register(sub) -> None:
    p = add_parser(
        sub, "validate", help="check a batch; exit 0 when it is sound, 1 with every problem",
        description="Check a batch folder: meta.json, file sizes, checksums and (unless --quick) "
                    "the values. Prints 'BATCH: OK' and exits 0 when the batch is sound; "
                    "else lists every problem on stderr and exits 1.\n\nNotes about the folder "
                    "around the batch (e.g. temporary folders left by a crashed writer) go to "
                    "stderr and do not change the verdict.",
        example_lines=[f"fastrl validate {_BATCH}",
                       f"fastrl validate --quick {_BATCH}   # sizes and checksums only"])
    p.add_argument("batch", help="batch folder")
    p.add_argument("--quick", action="store_true",
                   help="check meta.json, file sizes and checksums only, not the values")
    p.set_defaults(func=_cmd_validate)

    p = add_parser(
        sub, "info", help="print the figures of a batch: counts, episodes, rewards, actions, "
                          "observations",
        example_lines=[f"fastrl info {_BATCH}",
                       f"fastrl info --json {_BATCH} > figures.json"])
    p.add_argument("batch", help="batch folder")
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead")
    p.add_argument("--ascii", action="store_true",
                   help="draw the histograms with ASCII characters only")
    p.set_defaults(func=_cmd_info)

    p = add_parser(
        sub, "to-npz", help="write a batch as one NumPy .npz file",
        description="Write a batch as one NumPy .npz file: the arrays obs, actions, rewards, "
                    "masks, dones (and the optional columns present), episode_starts, and "
                    "meta (meta.json as text: json.loads(str(np.load(OUT)['meta']))).",
        example_lines=[f"fastrl to-npz {_BATCH} batch.npz"])
    p.add_argument("batch", help="batch folder")
    p.add_argument("out", help="output .npz file")
    p.add_argument("--uncompressed", action="store_true",
                   help="store the arrays uncompressed (np.savez; default: np.savez_compressed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_to_npz)

    p = add_parser(
        sub, "to-parquet", help="write a batch as one Parquet file, one row per transition",
        description="Write a batch (or a sharded batch, or a root of batches) as one Parquet "
                    "file, one row per transition: episode, step, obs, action, reward, done, "
                    "terminal, timeout, mask, and value, logprob, final_obs when present. "
                    "pyarrow, pandas, DuckDB and Hugging Face datasets read it. Needs pyarrow "
                    f'(pip install "{DIST_NAME}[parquet]").',
        example_lines=[f"fastrl to-parquet {_BATCH} transitions.parquet",
                       "fastrl to-parquet data/binary all.parquet --compression snappy"])
    p.add_argument("batch", help="batch folder (or a root of batches)")
    p.add_argument("out", help="output .parquet file")
    p.add_argument("--compression", choices=("zstd", "snappy", "gzip", "none"), default="zstd",
                   help="Parquet compression (default zstd)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_to_parquet)

    p = add_parser(
        sub, "decompress", help="write a plain, memory-mappable copy of a compressed batch",
        description="Write a plain (uncompressed, memory-mappable) copy of a compressed batch "
                    "under the same name in another root: by default <root>-decompressed beside "
                    "the batch's root, never the batch's own root (there the copy would count "
                    "every transition twice). A batch that is not compressed is refused.",
        example_lines=[f"fastrl decompress {_BATCH}            # -> data/binary-decompressed/",
                       f"fastrl decompress {_BATCH} -o plain   # -> plain/"])
    p.add_argument("batch", help="compressed batch folder")
    p.add_argument("-o", "--out", metavar="ROOT",
                   help="output root (default: <root>-decompressed beside the batch's root)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_decompress)

    p = add_parser(
        sub, "report", help="write one HTML page with pictures of a batch",
        description="Write one self-contained HTML page (no network needed) with pictures of a "
                    "batch: episode lengths and returns, action frequencies, legal actions per "
                    "step, observation fields. Prints the page's path.",
        example_lines=[f"fastrl report {_BATCH}    # -> ./batch_1795736172459-report.html",
                       f"fastrl report {_BATCH} -o report.html"])
    p.add_argument("batch", help="batch folder")
    p.add_argument("-o", "--out", metavar="FILE",
                   help="output file, or a folder to hold <batch name>-report.html "
                        "(default: <batch name>-report.html in the current folder)")
    p.set_defaults(func=_cmd_report)


# -- parser and entry point ------------------------------------------------------------------

_TOP_EXAMPLES = [
    "fastrl demo                       # the whole workflow on the built-in game, in seconds",
    "fastrl bot --episodes 200         # play the built-in game -> dataset/episodes/",
    "fastrl export                     # dataset/episodes -> data/binary/batch_<ms>",
    f"fastrl validate {_BATCH}",
    f"fastrl info {_BATCH}",
    f"fastrl report {_BATCH} -o report.html",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastrl", formatter_class=HelpFormatter,
        description="Turn game-bot trajectories into compact binary RL datasets.",
        epilog=examples(*_TOP_EXAMPLES) + "\n\n`fastrl COMMAND --help` shows a command's "
               "options and examples. FASTRL_DEBUG=1 shows the full traceback of an error.")
    parser.add_argument("--version", action="version",
                        version=f"fastrl {__version__} (backend: {_kernels.BACKEND})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in _COMMAND_MODULES:
        importlib.import_module(modname).register(sub)
    return parser


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def describe_error(exc: BaseException) -> str:
    """One line for ``exc``, as ``main`` prints it after ``fastrl <command>: error:``."""
    from ..errors import FastrlError
    if isinstance(exc, ImportError) and not isinstance(exc, FastrlError):
        msg = str(exc)
        top = (exc.name or "").split(".")[0]
        if "pip install" not in msg and top in _EXTRAS:
            msg += f' (pip install "{DIST_NAME}[{_EXTRAS[top]}]")'
        return _one_line(msg)
    if isinstance(exc, OSError) and exc.strerror and exc.filename and not isinstance(exc,
                                                                                   FastrlError):
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return _one_line(f"{where}: {exc.strerror}")
    if isinstance(exc, (FastrlError, OSError, ValueError)):
        return _one_line(str(exc) or type(exc).__name__)
    return _one_line(f"{type(exc).__name__}: {exc} (FASTRL_DEBUG=1 shows the traceback)")


def main(argv=None) -> int:
    """Run ``fastrl`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    prog = f"fastrl {args.command}"
    debug = os.environ.get("FASTRL_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fastrl info BATCH | head`: the reader left, not an error
        try:
            sys.stdout = open(os.devnull, "w")  # no second error when Python flushes stdout
        except OSError:
            pass
        return 141
    except Exception as exc:  # noqa: BLE001 -- every failure ends as one line and a status
        if debug:
            raise
        print(f"{prog}: error: {describe_error(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
