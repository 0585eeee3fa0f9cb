"""``fastrl export``: the command line of :func:`fastrl.export.export_episodes` (and of the Ray
export with ``--ray``)."""

from __future__ import annotations

import argparse
import re
import sys
import time

from .. import _format as F
from .._batch.codecs import LEVELS
from .._batch.meta import read_meta




EPILOG = """examples:
  fastrl bot && fastrl export
      episodes of the built-in game; the spec and action count come from the folder's
      sidecar dataset/episodes/fastrl-episodes.json, written by `fastrl bot`
  fastrl export runs/episodes --spec spec.json --num-actions 208 --mask-pad 256 --workers 4
      re-encode each step's 'state' with an ObsSpec; masks 256 columns wide
  fastrl export runs/episodes --encoder mygame.features:encode --num-actions 9
      a Python function (importable from the current folder) maps one state to floats

Options given here override the sidecar key by key (write one for your own episodes with
fastrl.export.write_sidecar). The batch path is printed last, on stdout."""


def _check_args(args) -> None:
    """Ranges argparse types cannot check alone; a one-line usage error (exit 2) otherwise."""
    if args.compress_level is not None:
        if args.compress is None:
            args.export_parser.error("--compress-level needs --compress zstd, brotli or gzip")
        lo, hi = LEVELS[args.compress]
        if not lo <= args.compress_level <= hi:
            args.export_parser.error(f"argument --compress-level: {args.compress} levels are "
                               f"{lo}..{hi}, got {args.compress_level}")
    if getattr(args, "no_sidecar", False) and args.ray:
        args.export_parser.error("--no-sidecar is not supported with --ray")
    if isinstance(args.num_actions, int) and args.mask_pad is not None \
            and args.mask_pad < args.num_actions:
        args.export_parser.error(f"argument --mask-pad: {args.mask_pad} is smaller than "
                           f"--num-actions {args.num_actions}")


def report_sources(args) -> None:
    """Say on stderr which export settings came from the folder's sidecar and which from
    flags (nothing when the folder has no sidecar)."""
    from ..export.sidecar import read_sidecar
    if getattr(args, "no_sidecar", False):
        return
    side = read_sidecar(args.episodes_dir)
    if side is None:
        return
    parts = []
    if args.spec or args.encoder:
        parts.append("observations from " + ("--spec" if args.spec else "--encoder"))
    elif side["spec"] is not None:
        parts.append(f"observation spec (obsDim {side['spec'].dim}) from the sidecar")
    elif side["encoder"] is not None:
        parts.append(f"encoder {side['encoder']} from the sidecar")
    parts.append(f"numActions {args.num_actions} from --num-actions"
                 if args.num_actions is not None
                 else f"numActions {side['n_actions']} from the sidecar")
    if args.mask_pad is not None:
        parts.append(f"maskPad {args.mask_pad} from --mask-pad")
    elif side["mask_pad"] is not None:
        parts.append(f"maskPad {side['mask_pad']} from the sidecar")
    print(f"fastrl export: sidecar {side['path']}: " + "; ".join(parts), file=sys.stderr)


def _cmd_export(args) -> int:
    if getattr(args, "export_parser", None) is not None:
        _check_args(args)
    report_sources(args)
    if args.ray:
        return _cmd_export_ray(args)
    from ..export import export_episodes
    res = export_episodes(args.episodes_dir, args.out, spec=args.spec, encoder=args.encoder,
                          n_actions=args.num_actions, mask_pad=args.mask_pad,
                          workers=args.workers, on_error=args.on_error,
                          shard_bytes=args.shard_size, compression=compression_arg(args),
                          compression_level=args.compress_level,
                          progress=None if not args.quiet else False,
                          use_sidecar=not getattr(args, "no_sidecar", False))
    rate = res.transitions / max(res.seconds, 1e-9)
    print(f"exported {res.transitions:,} transitions in {res.episodes:,} episodes from "
          f"{res.files} files ({rate:,.0f} transitions/s)"
          + (f"; skipped {len(res.skipped)} episode(s)" if res.skipped else ""), file=sys.stderr)
    print(res.path)
    return 0


def _cmd_export_ray(args) -> int:
    """``fastrl export --ray``: the export command's arguments, run by :func:`export_ray`
    (``--ray-tasks N``: number of tasks; Ray joins the cluster named by ``RAY_ADDRESS``, else
    starts a local one). Prints the batch path last, like ``fastrl export``."""
    try:
        import ray

        from ..ray import export_ray
    except ImportError as exc:
        print(f"fastrl export --ray: {exc}", file=sys.stderr)
        return 1
    if not ray.is_initialized():
        ray.init()  # not counted in the rate below
    t0 = time.perf_counter()
    path = export_ray(args.episodes_dir, args.out, num_tasks=getattr(args, "ray_tasks", None),
                      spec=args.spec, encoder=args.encoder, n_actions=args.num_actions,
                      mask_pad=args.mask_pad, on_error=args.on_error,
                      shard_bytes=args.shard_size, compression=compression_arg(args),
                      compression_level=args.compress_level)
    meta = read_meta(path)
    seconds = time.perf_counter() - t0
    print(f"exported {meta['count']:,} transitions in {meta['episodes']:,} episodes from "
          f"{meta['source']['files']} files with {meta['ray']['tasks']} Ray tasks into "
          f"{len(meta['shards'])} shards ({meta['count'] / max(seconds, 1e-9):,.0f} "
          "transitions/s)" + (f"; skipped {meta['skippedCount']} episode(s)"
                              if meta.get("skippedCount") else ""), file=sys.stderr)
    print(path)
    return 0


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def bounded_int(lo, hi, *, scan=False):
    """An argparse type: an integer in [lo, hi] (or the word "scan" when ``scan``)."""
    def parse(text):
        if scan and text.strip().lower() == "scan":
            return "scan"
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not an integer{' or scan' if scan else ''}: {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi}], got {v}")
        return v
    return parse


def compression_arg(args):
    if args.compress is None and not args.pack_masks:
        return None
    cols = {c: args.compress for c in list(F.ALL_COLUMNS) + [F.EPISODE_INDEX[0]]}
    if args.pack_masks:
        cols["masks"] = "packbits"
    return cols


def parse_size(text):
    """'256MiB', '1G', '4096', '64k' -> bytes (binary units: k/M/G = 1024^1..3)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB, 1G, 65536)")
    value = float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1 byte, got {text!r}")
    return int(value)


def register(sub) -> None:
    p = sub.add_parser("export", help="episode files -> one binary batch folder",
                       description="Read the episode files (*.json, *.jsonl) of a folder and "
                                   "write one batch folder <out>/batch_<ms>.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("episodes_dir", nargs="?", default="dataset/episodes",
                   help="folder of *.json / *.jsonl episodes (default: dataset/episodes)")
    p.add_argument("--out", default="data/binary",
                   help="output root; the batch is <out>/batch_<ms> (default: data/binary)")
    enc = p.add_mutually_exclusive_group()
    enc.add_argument("--spec", help="ObsSpec JSON file: re-encode each step's 'state' "
                                    "(default: the folder's sidecar, if any)")
    enc.add_argument("--encoder", help="package.module:function mapping a state to a list of "
                                       "floats (default: the folder's sidecar, if any)")
    p.add_argument("--num-actions", type=bounded_int(1, F.MAX_DIM, scan=True), metavar="N",
                   help="the game's action count (default: the folder's sidecar, else the "
                        "width of the first dense mask; 'scan': infer it from the largest "
                        "legal id, reading every file twice)")
    p.add_argument("--mask-pad", type=bounded_int(1, F.MAX_DIM), metavar="WIDTH",
                   help="store masks this many columns wide, e.g. 256 for 208 actions "
                        "(default: the sidecar's, else numActions)")
    p.add_argument("--no-sidecar", action="store_true",
                   help="ignore the folder's sidecar fastrl-episodes.json (e.g. to store the "
                        "steps' own obs)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="parallel processes, at most the CPUs available (output is identical "
                        "for any number; default 1)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="bad episode: stop with an error (default) or skip it and report it")
    p.add_argument("--shard-size", type=parse_size, metavar="SIZE",
                   help="write a sharded batch, shards of about SIZE (e.g. 256MiB); each shard "
                        "is a complete batch folder, episodes are never split")
    p.add_argument("--compress", choices=("zstd", "brotli", "gzip"),
                   help="compress every column (not memory-mappable; `fastrl decompress` undoes)")
    p.add_argument("--compress-level", type=bounded_int(0, 22), metavar="LEVEL",
                   help="codec level: zstd 1..22 (default 3), gzip 0..9 (default 6)")
    p.add_argument("--pack-masks", action="store_true",
                   help="store masks bit-packed (np.packbits, 8 actions per byte)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--ray", action="store_true",
                   help='spread the export over Ray tasks (pip install "fastrl[ray]"; joins '
                        "RAY_ADDRESS, else starts a local Ray): one sharded batch with the same "
                        "transitions")
    p.add_argument("--ray-tasks", type=positive_int, metavar="N",
                   help="with --ray: number of Ray tasks (default: the cluster's CPUs)")
    p.set_defaults(func=_cmd_export, export_parser=p)

