"""Batches on any fsspec URL: local paths, ``s3://``, ``gs://``, ``memory://``, ...

Remote storage needs ``pip install "fastrl[remote]"`` (fsspec, plus s3fs for ``s3://``); local
paths never import fsspec and keep the memory-mapped fast path (nothing is copied).

The commit rule on object stores
--------------------------------
An object store has no atomic folder rename, so the rule of docs/FORMAT.md ("a folder without
``meta.json`` is not a batch") is what makes an upload atomic:

- :func:`upload_batch` uploads every column file first, then (sharded batch) every shard's own
  ``meta.json``, checks with one listing that every object arrived with its size, and uploads the
  batch's top-level ``meta.json`` (the manifest) last. The ``PUT`` of that one object is the
  commit: readers see the whole batch or nothing.
- :func:`list_batches` lists only prefixes ``batch_*/`` that hold a top-level ``meta.json``. An
  uploader killed half-way leaves a prefix without it: invisible to every reader, reported and
  deleted by :func:`clean_incomplete` once older than a grace period.
- :func:`fetch_batch` downloads a batch whole into a hidden temporary folder of the cache, checks
  it with ``fastrl.validate(..., check_data=False)`` (sizes and CRC-32 checksums), and renames it
  into place: a half download is never used, and a complete one is reused.

Batches are immutable once committed: uploading a batch name that already exists remotely with a
different ``meta.json`` is refused.

Nothing outside the target
--------------------------
- :func:`fetch_batch` trusts no remote listing: every object key must be a plain relative path
  (no absolute path, no ``..``, ``.`` or empty component, no backslash or NUL, no component over
  255 bytes); one that is not fails the fetch with an error naming the key, before anything is
  downloaded. Keys nested deeper than a shard's files are not part of a batch and are skipped.
  The remote ``meta.json`` is read up to the 64 MiB limit only.
- :func:`upload_batch` uploads regular files only: a symbolic link (or FIFO, device...) inside
  the batch is refused with an error naming it, never followed, so no file outside the batch
  can be sent.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import secrets
import shutil
import stat
import time
from pathlib import Path

from . import _format as F
from ._batch.commit import TempFolder, clean_stale, now_ms, stale_temp_folders
from ._batch.safeio import SafeFile, kind_of, name_problem
from ._progress import progress_bar
from .errors import BatchFormatError

__all__ = ["upload_batch", "list_batches", "fetch_batch", "open_remote_dataset",
           "clean_incomplete", "is_remote", "default_cache_dir"]

_INSTALL_HINT = 'pip install "fastrl[remote]"'
# Object stores: no directories to create, listings are flat.
_FLAT_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory",
                   "r2", "cos", "tos", "obs"}
DEFAULT_GRACE_S = 3600.0


# -- URLs and filesystems -------------------------------------------------------------------

def is_remote(url) -> bool:
    """True for a URL with a protocol other than ``file://`` (local paths are not remote)."""
    if isinstance(url, os.PathLike):
        return False
    text = str(url)
    if "://" not in text:
        return False
    return text.split("://", 1)[0].lower() not in ("file", "local")


def local_path(url) -> Path:
    text = os.fspath(url) if isinstance(url, os.PathLike) else str(url)
    for prefix in ("file://", "local://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return Path(text)


def filesystem(url: str, fs_options: dict | None):
    """(filesystem, path without protocol) for a remote URL; a clear ImportError when fsspec or
    the protocol's package (s3fs, gcsfs, ...) is missing."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ImportError(f"fastrl.storage needs fsspec for remote URLs such as {url!r}: "
                          f"{_INSTALL_HINT}") from None
    try:
        fs, path = url_to_fs(url, **(fs_options or {}))
    except ImportError as exc:
        raise ImportError(f"fastrl.storage cannot open {url!r}: {exc} ({_INSTALL_HINT} installs "
                          "fsspec and s3fs; other protocols need their fsspec package)") from None
    return fs, path.rstrip("/")


def join_url(url: str, *names: str) -> str:
    return "/".join([str(url).rstrip("/"), *names])


def _is_flat(fs) -> bool:
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return bool(_FLAT_PROTOCOLS.intersection(protos))


def _listing(fs, path: str) -> dict:
    """One recursive listing of ``path``: first-level name -> {path below it: info}.
    (One paginated LIST on an object store: about objects / 1000 requests.)"""
    out: dict = {}
    for rel, info in files_under(fs, path).items():
        top, _, rest = rel.partition("/")
        if rest:
            out.setdefault(top, {})[rest] = info
    return out


def files_under(fs, path: str) -> dict:
    """Relative file path -> info for every object under ``path`` (one listing of that prefix
    only)."""
    try:
        fs.invalidate_cache(path)
    except Exception:  # pragma: no cover - some filesystems have no cache
        pass
    try:
        found = fs.find(path, withdirs=False, detail=True)
    except FileNotFoundError:
        return {}
    base = path.rstrip("/") + "/"
    return {name[len(base):]: info for name, info in found.items()
            if name.startswith(base) and info.get("type") != "directory"}


def _mtime(info: dict) -> float | None:
    """Modification time (Unix seconds) from an fsspec info dict, whatever the backend calls it."""
    for key in ("LastModified", "last_modified", "mtime", "updated", "created", "timeCreated",
                "creation_time"):
        v = info.get(key)
        if v is None:
            continue
        if isinstance(v, _dt.datetime):
            if v.tzinfo is None:
                v = v.replace(tzinfo=_dt.timezone.utc)
            return v.timestamp()
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return _dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


# -- local batches --------------------------------------------------------------------------

def _local_problems(path: Path) -> list[str]:
    """``validate(check_data=False)`` problems of a local batch."""
    from .validate import validate
    return validate(path, check_data=False)


def _batch_files(src: Path) -> tuple[list[str], list[str], str]:
    """(data files, shard meta.json files, top meta.json) of the local batch ``src``, as paths
    relative to it, in upload order. Hidden files (``.owner``...) are never uploaded. Only
    regular files are: a symbolic link, FIFO, device or socket in the batch is refused
    (BatchFormatError naming it), so nothing outside the batch is ever read or sent."""
    from ._batch.meta import batch_parts, read_meta
    meta = read_meta(src)
    parts = batch_parts(src) if meta.get("sharded") is True else [src]
    data, metas = [], []
    for part in parts:
        rel = part.relative_to(src)
        with os.scandir(part) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                continue  # shard folders (listed through the manifest), or not the batch's
            if not stat.S_ISREG(mode):
                raise BatchFormatError(f"{entry.path}: is a {kind_of(mode)}; not uploaded (a "
                                       "batch holds regular files only, links are never "
                                       "followed)")
            if entry.name == F.META_FILE:
                continue
            data.append(str(rel / entry.name) if part != src else entry.name)
        if part != src:
            metas.append(str(rel / F.META_FILE))
    return data, metas, F.META_FILE


def _copy_local(src: Path, root: Path, name: str, files: list[str]) -> Path:
    """Copy a batch into a local root: into a hidden owned temporary folder, then rename.
    Each file is read through :mod:`fastrl._batch.safeio` (a regular file, no link)."""
    final = root / name
    tmp = TempFolder(root, kind="upload")
    try:
        for rel in files:
            dst = tmp.path / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            with SafeFile(src / rel, str(src / rel)) as fin, open(dst, "xb") as fout:
                for buf in fin.chunks():
                    fout.write(buf)
                fout.flush()
                os.fsync(fout.fileno())
        return tmp.commit_as(final)
    except BaseException:
        tmp.discard()
        raise


def _read_meta_bytes(path: Path) -> bytes:
    from ._batch.meta import MAX_META_BYTES
    with SafeFile(path) as f:
        return f.read_capped(MAX_META_BYTES)


def _lsize(path: Path) -> int | None:
    try:
        return os.lstat(path).st_size
    except OSError:
        return None


_MAX_KEY_BYTES = 4096


def remote_key_problem(rel) -> str | None:
    """Why a remote object key (relative to the batch prefix) cannot be written under the
    download folder, or None: absolute, ``..``/``.``/empty components, backslashes, NUL,
    components over 255 bytes, or over 4096 bytes in all."""
    if not isinstance(rel, str) or not rel:
        return "empty or not a string"
    if rel.startswith("/"):
        return "an absolute path"
    if len(rel.encode("utf-8", "surrogatepass")) > _MAX_KEY_BYTES:
        return f"longer than {_MAX_KEY_BYTES} bytes"
    for part in rel.split("/"):
        problem = name_problem(part)
        if problem:
            return f"component {part[:40]!r}: {problem}"
    return None


# -- public API -----------------------------------------------------------------------------

def upload_batch(local_batch_path, remote_root, fs_options: dict | None = None, *,
                 verify: bool = True, progress: bool | None = None) -> str:
    """Copy the committed local batch (plain or sharded) to ``<remote_root>/<batch name>/``
    and return its URL.

    Column files go first, then the shards' own ``meta.json``, then (after one listing confirms
    that every object is there with its size) the top-level ``meta.json``: until that last
    object exists the batch is invisible to :func:`list_batches` and every reader. ``verify``
    checks the local batch first (sizes and checksums, ``validate(check_data=False)``).
    Uploading the same batch again is a no-op; a different batch under the same name is
    refused (FileExistsError). A local ``remote_root`` gets a copy made in a hidden temporary
    folder and renamed, like every local batch. ``progress``: a bar of the files sent on stderr
    (default: when stderr is a terminal).
    """
    from ._batch.meta import read_meta
    src = Path(local_batch_path)
    read_meta(src)  # BatchFormatError when not a committed batch
    if verify:
        probs = _local_problems(src)
        if probs:
            raise BatchFormatError(f"{src}: not uploaded, the batch is not sound: "
                                   + "; ".join(probs[:10]))
    name = Path(os.path.abspath(src)).name
    data, metas, top = _batch_files(src)
    local_meta = _read_meta_bytes(src / top)

    if not is_remote(remote_root):
        root = local_path(remote_root)
        root.mkdir(parents=True, exist_ok=True)
        final = root / name
        if os.path.lexists(final / F.META_FILE):
            if _read_meta_bytes(final / F.META_FILE) == local_meta:
                return str(final)
            raise FileExistsError(f"{final} exists and is another batch (batches are immutable)")
        return str(_copy_local(src, root, name, data + metas + [top]))

    fs, root = filesystem(str(remote_root), fs_options)
    url = join_url(str(remote_root), name)
    dest = f"{root}/{name}"
    try:
        remote_meta = fs.cat_file(f"{dest}/{F.META_FILE}")
    except FileNotFoundError:
        remote_meta = None
    if remote_meta is not None:
        if remote_meta == local_meta:
            return url
        raise FileExistsError(f"{url} exists and is another batch (batches are immutable)")

    def put(rels):
        if not rels:
            return
        if not _is_flat(fs):
            for d in sorted({os.path.dirname(f"{dest}/{r}") for r in rels}):
                fs.makedirs(d, exist_ok=True)
        _put(fs, [str(src / r) for r in rels], [f"{dest}/{r}" for r in rels], progress,
             f"upload {name}")

    put(data)    # 1. every column file (concurrently where the filesystem can)
    put(metas)   # 2. every shard's own meta.json
    # 3. check that everything arrived, then commit by writing the manifest
    listed = files_under(fs, dest)
    missing = [r for r in data + metas
               if r not in listed or (listed[r].get("size") is not None
                                      and listed[r]["size"] != _lsize(src / r))]
    if missing:
        raise OSError(f"fastrl: upload of {src} to {url} incomplete ({len(missing)} objects "
                      f"missing or of the wrong size, e.g. {missing[0]}); not committed")
    _put(fs, [str(src / top)], [f"{dest}/{top}"])
    return url


def _put(fs, lpaths: list[str], rpaths: list[str], progress: bool | None = False,
         desc: str = "upload") -> None:
    """Upload files (one call: s3fs and other async filesystems send them concurrently)."""
    if len(lpaths) == 1:
        fs.put_file(lpaths[0], rpaths[0])
        return
    with _FileBar(len(lpaths), desc, progress) as callback:
        fs.put(lpaths, rpaths, **callback)


class _FileBar:
    """A progress bar over the files of one fsspec put/get call: ``with _FileBar(n, desc,
    progress) as kw: fs.get(..., **kw)`` (kw is empty when the bar is off)."""

    def __init__(self, files: int, desc: str, progress: bool | None):
        self.bar = progress_bar(files, desc, unit="file", enabled=progress)

    def __enter__(self) -> dict:
        if self.bar.disable:
            return {}
        from fsspec.callbacks import Callback
        bar = self.bar

        class Files(Callback):
            def branched(self, path_1, path_2, **kwargs):
                bar.update(1)
                return None

        return {"callback": Files()}

    def __exit__(self, *exc):
        self.bar.close()
        return False


def list_batches(remote_root, fs_options: dict | None = None) -> list[str]:
    """URLs of the committed batches in ``remote_root`` (prefixes ``batch_*`` holding a
    top-level ``meta.json``), sorted by name, i.e. by commit time. Local roots: paths."""
    if not is_remote(remote_root):
        root = local_path(remote_root)
        if not root.is_dir():
            return []
        from .dataset import root_batches
        return [str(root / n) for n in root_batches(root)]
    fs, root = filesystem(str(remote_root), fs_options)
    names = sorted(top for top, files in _listing(fs, root).items()
                   if top.startswith(F.BATCH_PREFIX) and F.META_FILE in files)
    return [join_url(str(remote_root), n) for n in names]


def default_cache_dir() -> Path:
    """``$FASTRL_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastrl``, else ``~/.cache/fastrl``."""
    env = os.environ.get("FASTRL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastrl"


def _cache_key(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return f"{name}-{digest}"


def _sizes_ok(path: Path) -> bool:
    """Cheap completeness check of a cached copy: meta.json readable, every column file of
    every part present with its exact size (no data read)."""
    from ._batch.meta import batch_parts, column_layout, meta_problems, read_meta, size_problems
    try:
        for part in batch_parts(path):
            meta = read_meta(part)
            if meta_problems(meta):
                return False
            if size_problems(column_layout(meta, part), meta.get("codecs") or {}):
                return False
    except (BatchFormatError, OSError):
        return False
    return True


def fetch_batch(url, cache_dir=None, fs_options: dict | None = None, *,
                refresh: bool = False, progress: bool | None = None) -> Path:
    """A local copy of the committed batch at ``url``; local paths are returned as they are.

    The batch is downloaded whole into a hidden temporary folder of ``cache_dir`` (default
    :func:`default_cache_dir`), checked with ``validate(..., check_data=False)`` (sizes and
    CRC-32 checksums) and renamed to ``<cache_dir>/<batch name>-<hash of the URL>``, so a half
    download is never used. A complete cached copy is reused without network access (its file
    sizes are checked); ``refresh=True`` downloads again. ``progress``: a bar of the files
    received on stderr (default: when stderr is a terminal).
    """
    if not is_remote(url):
        path = local_path(url)
        if not (path / F.META_FILE).is_file():
            raise BatchFormatError(f"{path}: no meta.json (not a batch, or not committed)")
        return path
    url = str(url).rstrip("/")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    _check_batch_name(url.rsplit("/", 1)[-1], url)
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / _cache_key(url)
    if os.path.lexists(final):
        if not refresh and not os.path.islink(final) and _sizes_ok(final):
            return final
        _remove_cached(final, cache)
    clean_stale(cache)
    fs, rpath = filesystem(url, fs_options)
    name = _check_batch_name(rpath.rsplit("/", 1)[-1], url)
    tmp = TempFolder(cache, kind="fetch")
    try:
        dst = tmp.path / name
        top_meta = _cat_capped(fs, f"{rpath}/{F.META_FILE}", url)
        files = files_under(fs, rpath)
        rels = []
        for r in sorted(files):
            problem = remote_key_problem(r)
            if problem:
                raise BatchFormatError(f"{url}: remote key {r[:200]!r} is not a plain relative "
                                       f"path ({problem}); nothing fetched")
            if r == F.META_FILE or any(p.startswith(".") for p in r.split("/")) \
                    or r.count("/") > 1:
                continue  # hidden files, and keys deeper than a shard's files: not the batch's
            rels.append(r)
        dst.mkdir(parents=True, exist_ok=True)
        for d in sorted({os.path.dirname(r) for r in rels} - {""}):
            (dst / d).mkdir(exist_ok=True)
        base = os.path.realpath(dst) + os.sep
        for r in rels:  # defence in depth: every target lies inside the download folder
            if not os.path.realpath(dst / r).startswith(base):
                raise BatchFormatError(f"{url}: remote key {r[:200]!r} would be written outside "
                                       "the download folder; nothing fetched")
        if rels:
            if len(rels) == 1:
                fs.get_file(f"{rpath}/{rels[0]}", str(dst / rels[0]))
            else:
                with _FileBar(len(rels), f"fetch {name}", progress) as callback:
                    fs.get([f"{rpath}/{r}" for r in rels], [str(dst / r) for r in rels],
                           **callback)
        with open(dst / F.META_FILE, "xb") as f:
            f.write(top_meta)
        from .validate import validate
        probs = validate(dst, check_data=False)
        if probs:
            raise BatchFormatError(f"{url}: the downloaded batch is not sound: "
                                   + "; ".join(probs[:10]))
        try:
            os.rename(dst, final)
        except OSError:
            if not (final.exists() and _sizes_ok(final)):  # another fetcher won the race
                raise
    finally:
        tmp.discard()
    return final


def _check_batch_name(name: str, url: str) -> str:
    problem = name_problem(name)
    if problem or name.startswith("."):
        raise BatchFormatError(f"{url}: the batch name {name[:80]!r} is not a plain folder name "
                               f"({problem or 'hidden'})")
    return name


def _cat_capped(fs, rpath: str, url: str) -> bytes:
    """A remote meta.json's bytes, read up to the meta.json size limit (never more)."""
    from ._batch.meta import MAX_META_BYTES
    try:
        with fs.open(rpath, "rb") as f:
            raw = f.read(MAX_META_BYTES + 1)
    except FileNotFoundError:
        raise BatchFormatError(f"{url}: no meta.json (not a batch, or not committed)") from None
    except IsADirectoryError:
        raise BatchFormatError(f"{url}: meta.json is not a file") from None
    if len(raw) > MAX_META_BYTES:
        raise BatchFormatError(f"{url}/meta.json: larger than the {MAX_META_BYTES}-byte limit")
    return raw


def _remove_cached(final: Path, cache: Path) -> None:
    """Take a bad or outdated cached copy out of the way atomically, then delete it."""
    trash = cache / f"{F.TMP_PREFIX}trash-{now_ms()}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(final, trash)
    except FileNotFoundError:
        return
    if os.path.islink(trash):
        os.unlink(trash)
        return
    shutil.rmtree(trash, ignore_errors=True)


def open_remote_dataset(remote_root_or_urls, cache_dir=None, fs_options: dict | None = None):
    """:func:`fastrl.open_dataset` over local copies of remote batches.

    Takes a root URL (every committed batch in it), a batch URL, a local path, or a list of
    these. Remote batches are fetched whole with :func:`fetch_batch` (cached); local paths are
    opened in place, memory-mapped. ``refresh()`` of the result re-scans local roots only: call
    this function again to pick up batches uploaded since.
    """
    from .dataset import open_dataset
    single = isinstance(remote_root_or_urls, (str, os.PathLike))
    sources = [remote_root_or_urls] if single else list(remote_root_or_urls)
    if single and not is_remote(remote_root_or_urls):
        return open_dataset(local_path(remote_root_or_urls))
    paths = []
    for src in sources:
        if not is_remote(src):
            paths.append(local_path(src))
            continue
        fs, p = filesystem(str(src), fs_options)
        urls = [str(src)] if fs.exists(f"{p}/{F.META_FILE}") else list_batches(src, fs_options)
        paths += [fetch_batch(u, cache_dir, fs_options) for u in urls]
    return open_dataset(paths)


def clean_incomplete(remote_root, *, grace_s: float = DEFAULT_GRACE_S, dry_run: bool = False,
                     fs_options: dict | None = None) -> list[str]:
    """Delete (``dry_run``: only report) the uncommitted batch prefixes of ``remote_root``:
    ``batch_*`` prefixes without a top-level ``meta.json`` whose newest object is older than
    ``grace_s`` seconds (``grace_s <= 0``: whatever their age). Returns their URLs.

    The grace period must exceed the longest upload: an uploader still sending its files is
    younger than it and is left alone. On a local root this also removes the hidden temporary
    folders of dead writers (``.fastrl-tmp-*``, proven abandoned by their owner lock).
    """
    now = time.time()
    out = []
    if not is_remote(remote_root):
        root = local_path(remote_root)
        if not root.is_dir():
            return []
        stale = stale_temp_folders(root)
        if not dry_run:
            stale = clean_stale(root)
        out += [str(p) for p in stale]
        for e in sorted(os.scandir(root), key=lambda e: e.name):
            if not (e.name.startswith(F.BATCH_PREFIX) and e.is_dir(follow_symlinks=False)) \
                    or os.path.lexists(os.path.join(e.path, F.META_FILE)):
                continue
            newest = max([_lmtime(os.path.join(d, f))
                          for d, _, fs_ in os.walk(e.path) for f in fs_]
                         + [e.stat(follow_symlinks=False).st_mtime])
            if grace_s <= 0 or now - newest > grace_s:
                if not dry_run:
                    shutil.rmtree(e.path, ignore_errors=True)
                out.append(e.path)
        return out
    fs, root = filesystem(str(remote_root), fs_options)
    for top, files in sorted(_listing(fs, root).items()):
        if not top.startswith(F.BATCH_PREFIX) or F.META_FILE in files:
            continue
        times = [_mtime(info) for info in files.values()]
        if grace_s > 0:
            if any(t is None for t in times) or now - max(times) <= grace_s:
                continue  # too young, or age unknown: leave it
        if not dry_run:
            fs.rm(f"{root}/{top}", recursive=True)
        out.append(join_url(str(remote_root), top))
    return out


def _lmtime(path: str) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


# -- command line (``fastrl upload | ls | fetch | clean-remote``) ------------------------------
