"""``fastrl upload``, ``ls``, ``fetch``, ``clean-remote``: the command line of
:mod:`fastrl.storage` (local roots, or any fsspec URL such as ``s3://bucket/prefix``)."""

from __future__ import annotations

import argparse
import json
import sys

from .. import _format as F
from ..errors import FastrlError
from ..storage import (DEFAULT_GRACE_S, clean_incomplete, fetch_batch, filesystem, is_remote,
                       list_batches, local_path, upload_batch)

_FS_HELP = ('fsspec options as JSON, e.g. \'{"client_kwargs": {"endpoint_url": '
            '"http://127.0.0.1:9000"}}\' (default: the environment\'s credentials)')


def fs_options_arg(text):
    """``--fs-options``: a JSON object (argparse type)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--fs-options must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--fs-options must be a JSON object")
    return value


def _root_exists(root: str, fs_options) -> bool:
    if not is_remote(root):
        return local_path(root).is_dir()
    fs, path = filesystem(root, fs_options)
    return fs.exists(path)


def _cmd_upload(args) -> int:
    print(upload_batch(args.batch, args.url, args.fs_options,
                       progress=False if args.quiet else None))
    return 0


def _cmd_ls(args) -> int:
    if not _root_exists(args.root, args.fs_options):
        raise FastrlError(f"{args.root}: no such folder or prefix")
    urls = list_batches(args.root, args.fs_options)
    for url in urls:
        print(url)
    if not urls:
        print(f"fastrl ls: no committed batch in {args.root}", file=sys.stderr)
    return 0


def _cmd_fetch(args) -> int:
    urls = [args.url]
    if is_remote(args.url):
        fs, p = filesystem(args.url, args.fs_options)
        if not fs.exists(f"{p}/{F.META_FILE}"):
            if not fs.exists(p):
                raise FastrlError(f"{args.url}: no such batch or root")
            urls = list_batches(args.url, args.fs_options)
            if not urls:
                raise FastrlError(f"{args.url}: no committed batch there")
    for url in urls:
        print(fetch_batch(url, args.cache_dir, args.fs_options,
                          progress=False if args.quiet else None))
    return 0


def _cmd_clean_remote(args) -> int:
    found = clean_incomplete(args.root, grace_s=args.grace, dry_run=args.dry_run,
                             fs_options=args.fs_options)
    verb = "would delete" if args.dry_run else "deleted"
    for url in found:
        print(url)
    print(f"{verb} {len(found)} uncommitted batch prefix(es)", file=sys.stderr)
    return 0


def register(sub) -> None:
    """Add ``upload``, ``ls``, ``fetch`` and ``clean-remote`` to ``sub``."""
    from . import add_parser
    batch = "data/binary/batch_1795736172459"
    p = add_parser(sub, "upload", help="copy a committed batch under a root URL (s3://...), "
                                       "meta.json last",
                   example_lines=[f"fastrl upload {batch} s3://bucket/rl",
                                  f"fastrl upload {batch} /mnt/shared/rl   # a local root"])
    p.add_argument("batch", help="local batch folder")
    p.add_argument("url", help="remote root; the batch goes to <url>/<batch name>/")
    p.add_argument("--fs-options", type=fs_options_arg, help=_FS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_upload)
    p = add_parser(sub, "ls", help="list the committed batches of a root (local or URL)",
                   example_lines=["fastrl ls s3://bucket/rl", "fastrl ls data/binary"])
    p.add_argument("root")
    p.add_argument("--fs-options", type=fs_options_arg, help=_FS_HELP)
    p.set_defaults(func=_cmd_ls)
    p = add_parser(sub, "fetch", help="download a remote batch, or every batch of a root, into "
                                      "the local cache; print the local paths",
                   example_lines=["fastrl fetch s3://bucket/rl/batch_1795736172459",
                                  "fastrl fetch s3://bucket/rl --cache-dir ~/.cache/fastrl"])
    p.add_argument("url")
    p.add_argument("--cache-dir", help="default: $FASTRL_CACHE_DIR or ~/.cache/fastrl")
    p.add_argument("--fs-options", type=fs_options_arg, help=_FS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_fetch)
    p = add_parser(sub, "clean-remote", help="delete uncommitted batch prefixes (no meta.json) "
                                             "older than --grace seconds",
                   example_lines=["fastrl clean-remote s3://bucket/rl --dry-run"])
    p.add_argument("root")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE_S,
                   help=f"seconds (default {DEFAULT_GRACE_S:.0f}); must exceed the longest upload")
    p.add_argument("--dry-run", action="store_true", help="only list them")
    p.add_argument("--fs-options", type=fs_options_arg, help=_FS_HELP)
    p.set_defaults(func=_cmd_clean_remote)
