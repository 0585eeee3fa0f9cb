"""Conversions and summaries of a batch: ``to_npz`` and ``info``."""

from __future__ import annotations

import json
import os
import secrets
import stat
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from . import _format as F
from . import _kernels
from ._batch.checksum import crc32, format_crc
from ._batch.commit import creator_dead, now_ms
from ._batch.meta import read_meta
from ._progress import progress_bar
from .dataset import open_dataset
from .errors import BatchFormatError

NPZ_TMP_PREFIX = F.TMP_PREFIX + "npz-"  # .fastrl-tmp-npz-<ms>-<pid>-<hex>.npz beside the output


def clean_stale_npz(folder: Path) -> list[Path]:
    """Remove the temporary files of killed ``to_npz`` runs in ``folder``
    (``.fastrl-tmp-npz-<ms>-<pid>-<hex>.npz`` whose process is gone); return them."""
    removed = []
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if e.name.startswith(NPZ_TMP_PREFIX)
                       and e.name.endswith(".npz")]
    except OSError:
        return removed
    for e in entries:
        try:
            if not stat.S_ISREG(e.stat(follow_symlinks=False).st_mode):
                continue
        except OSError:
            continue
        if creator_dead(e.name[:-len(".npz")]):
            try:
                os.unlink(e.path)
                removed.append(Path(e.path))
            except OSError:
                pass
    return removed

__all__ = ["to_npz", "info", "format_info"]


def to_npz(path: str | os.PathLike, out: str | os.PathLike, *, compressed: bool = True,
           progress: bool | None = None) -> Path:
    """Write the batch at ``path`` as one ``.npz`` file: keys ``obs``, ``actions``, ``rewards``,
    ``masks``, ``dones`` (the origin document's), the optional columns present (``values``,
    ``logprobs``, ``truncated``, ``final_obs``: episodes x obsDim), ``episode_starts`` (int64,
    episodes + 1) and ``meta`` (the meta.json text as a 0-d unicode array, so ``np.load`` needs
    no pickle: ``json.loads(str(z["meta"]))``). Written to a temporary file beside ``out``
    (``.fastrl-tmp-npz-<ms>-<pid>-<hex>.npz``), then renamed; the temporary files of earlier
    runs that were killed (their process is gone) are removed first. ``progress``: a bar of the
    bytes written on stderr (default: when stderr is a terminal). Returns ``out``."""
    ds = open_dataset(path)
    out = Path(out)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")  # np.savez would append it anyway
    names = sorted(set.intersection(*(set(b.columns) for b in ds.parts))) if ds.parts else []
    arrays = {n: np.concatenate([np.asarray(b.columns[n]) for b in ds.parts]) for n in names}
    if ds.parts and all(b.final_obs is not None for b in ds.parts):
        arrays["final_obs"] = np.concatenate([np.asarray(b.final_obs) for b in ds.parts])
    arrays["episode_starts"] = np.concatenate(
        [[0]] + [np.asarray(b.episode_starts[1:]) + ds.row_starts[k]
                 for k, b in enumerate(ds.parts)]).astype(np.int64)
    arrays["meta"] = np.array(json.dumps(read_meta(path)))
    clean_stale_npz(out.parent)
    tmp = out.with_name(f"{NPZ_TMP_PREFIX}{now_ms()}-{os.getpid()}-{secrets.token_hex(4)}.npz")
    try:
        _write_npz(tmp, arrays, compressed, progress)
        os.replace(tmp, out)
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()
    return out


def _write_npz(path: Path, arrays: dict, compressed: bool, progress) -> None:
    """What ``np.savez``/``np.savez_compressed`` write (one ``name.npy`` member per array, no
    pickle), one member at a time under a progress bar of the bytes."""
    mode = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    total = sum(a.nbytes for a in arrays.values())
    with progress_bar(total, "to-npz", enabled=progress) as bar, \
            zipfile.ZipFile(path, "w", compression=mode, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                npy_format.write_array(f, np.asanyarray(arr), allow_pickle=False)
            bar.update(arr.nbytes)


def info(path: str | os.PathLike) -> dict:
    """Summary of a batch (plain or sharded) a person wants: sizes, episode lengths, rewards,
    mask density, bytes on disk."""
    path = Path(path)
    ds = open_dataset(path)  # checks meta.json (the manifest too) and every file
    meta = read_meta(path)
    lengths = np.concatenate([np.diff(np.asarray(b.episode_starts)) for b in ds.parts]) \
        if ds.parts else np.zeros(0)
    returns, rewards, truncated, density = [], [], 0, 0.0
    for b in ds.parts:
        r = np.asarray(b.rewards, dtype=np.float64)
        rewards.append(r)
        returns.append(np.add.reduceat(r, np.asarray(b.episode_starts[:-1])))
        if b.truncated is not None:
            truncated += int(np.count_nonzero(np.asarray(b.truncated)[b.episode_starts[1:] - 1]))
    if ds.parts:
        b = ds.parts[0]
        step = max(1, b.count // 20000)  # a sample of rows is enough for a density
        density = float(np.asarray(b.masks[::step, :b.n_actions]).mean())
    size = _bytes_on_disk(path)
    count = len(ds)

    def stats(x):
        x = np.concatenate(x) if isinstance(x, list) and x else np.asarray(x, dtype=np.float64)
        if not x.size:
            return {"min": None, "mean": None, "max": None}
        return {"min": float(x.min()), "mean": float(x.mean()), "max": float(x.max())}

    first = ds.parts[0] if ds.parts else None
    return {
        "path": str(path),
        "formatVersion": meta.get("formatVersion", 1),
        "createdAt": meta.get("createdAt"),
        "shards": len(ds.parts) if meta.get("sharded") is True else 0,
        "transitions": count,
        "episodes": ds.num_episodes,
        "obsDim": meta["obsDim"],
        "maskDim": meta["maskDim"],
        "numActions": first.n_actions if first else meta.get("numActions", meta["maskDim"]),
        "columns": sorted(first.columns) if first else [],
        "episodeLength": stats(lengths),
        "reward": stats(rewards),
        "episodeReturn": stats(returns),
        "truncatedEpisodes": truncated,
        "maskDensity": density,
        "bytesOnDisk": size,
        "bytesPerTransition": size / count if count else None,
        "backend": _kernels.BACKEND,
    }


def _bytes_on_disk(path: Path) -> int:
    """Sum of the sizes of the regular files under ``path`` (links are not followed)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def format_info(d: dict) -> str:
    """Human-readable rendering of :func:`info`."""
    def s(st, fmt="{:.3g}"):
        if st["min"] is None:
            return "-"
        return f"min {fmt.format(st['min'])}  mean {st['mean']:.3g}  max {fmt.format(st['max'])}"

    mb = d["bytesOnDisk"] / 1e6
    lines = [
        f"batch        {d['path']}",
        f"format       v{d['formatVersion']}, created {d['createdAt']}"
        + (f", {d['shards']} shards" if d["shards"] else ""),
        f"transitions  {d['transitions']:,}",
        f"episodes     {d['episodes']:,}  (truncated: {d['truncatedEpisodes']:,})",
        f"length       {s(d['episodeLength'], '{:.0f}')}",
        f"reward       {s(d['reward'])}",
        f"return       {s(d['episodeReturn'])}",
        f"obsDim       {d['obsDim']}",
        f"masks        {d['maskDim']} columns for {d['numActions']} actions, "
        f"{100 * d['maskDensity']:.1f}% legal",
        f"columns      {', '.join(d['columns'])}",
        f"on disk      {mb:,.1f} MB"
        + (f" ({d['bytesPerTransition']:,.0f} bytes/transition)" if d["bytesPerTransition"] else ""),
        f"backend      {d['backend']}",
    ]
    return "\n".join(lines)


def default_decompress_root(path: Path) -> Path:
    """Where :func:`decompress` writes by default: ``<root>-decompressed`` beside the batch's
    root (``data/binary/batch_X`` -> ``data/binary-decompressed/batch_X``), so the plain copy
    is never a second copy of the same transitions in the source root."""
    root = Path(os.path.abspath(path)).parent
    return root.with_name(root.name + "-decompressed")


def decompress(path: str | os.PathLike, out_root: str | os.PathLike | None = None, *,
               progress: bool | None = None) -> Path:
    """Write a plain (uncompressed, memory-mappable) copy of the compressed batch at ``path``
    into ``out_root`` under the batch's own name (default :func:`default_decompress_root`:
    ``<root>-decompressed`` beside the source root; never the source root itself, where the
    copy would count every transition twice); return its path.

    Refused (BatchFormatError, nothing written): a batch with no compressed column (it already
    is the plain format), any problem ``validate(check_data=False)`` finds in the source (bad
    meta or manifest, wrong totals, a damaged plain column under its checksum...), or a copy
    whose name already exists in ``out_root``. Every column is checked against its recorded
    CRC32 as it is copied or decoded, and the copy is checked again before it is committed
    (written in a hidden temporary folder, renamed into place). ``progress``: a bar of the
    columns copied on stderr (default: when stderr is a terminal)."""
    from ._batch.columnset import write_json
    from ._batch.commit import TempFolder
    from ._batch.meta import batch_parts, column_layout
    from ._batch.safeio import SafeFile
    from .reader import open_columns
    from .validate import validate

    path = Path(path)
    src_abs = Path(os.path.abspath(path))
    probs = validate(path, check_data=False)
    if probs:
        raise BatchFormatError(f"{path}: not decompressed, the batch is not sound: "
                               + "; ".join(probs[:5]))
    top = read_meta(path)
    parts = batch_parts(path)
    metas = [read_meta(p) for p in parts]
    if not any(m.get("codecs") for m in metas):
        raise BatchFormatError(f"{path}: not compressed (no column has a codec): it already is "
                               "the plain format, nothing to decompress")
    root = Path(out_root) if out_root is not None else default_decompress_root(path)
    if os.path.abspath(root) == str(src_abs.parent):
        raise BatchFormatError(f"{root}: is the batch's own root; the plain copy would count "
                               "its transitions twice there (choose another output root)")
    final = root / src_abs.name
    if os.path.lexists(final):
        raise FileExistsError(f"{final} exists (decompressed before?); remove it or choose "
                              "another output root")
    tmp = TempFolder(root, kind="decompress")
    bar = progress_bar(sum(len(column_layout(m, p)) for p, m in zip(parts, metas)),
                       "decompress", unit="column", enabled=progress)
    try:
        for part, meta in zip(parts, metas):
            dest = tmp.path if part == path else tmp.path / part.name
            dest.mkdir(exist_ok=True)
            codecs = meta.pop("codecs", None) or {}
            layout = column_layout(meta, part)
            sums = meta.get("checksums")
            for name, (fpath, _, _) in layout.items():
                bar.update(1)
                out = dest / fpath.name
                if name in codecs:  # one column in memory at a time
                    col = open_columns(layout, codecs, verify=True, names=[name])[name]
                    np.ascontiguousarray(col).tofile(out)
                    del col
                    if isinstance(sums, dict):
                        sums.pop(codecs[name]["file"], None)
                        sums[fpath.name] = codecs[name]["rawChecksum"]
                    continue
                crc = 0
                with SafeFile(fpath, fpath.name) as f, open(out, "xb") as fo:
                    for buf in f.chunks():
                        crc = crc32(buf, crc)
                        fo.write(buf)
                want = sums.get(fpath.name) if isinstance(sums, dict) else None
                if want is not None and format_crc(crc) != str(want).lower():
                    raise BatchFormatError(f"{fpath}: checksum mismatch while copying "
                                           f"(meta.json {want}, file {format_crc(crc)})")
            for fpath in dest.iterdir():
                if fpath.is_file() and not fpath.name.startswith("."):
                    with open(fpath, "rb+") as fo:
                        os.fsync(fo.fileno())
            write_json(dest / F.META_FILE, meta)
        if top.get("sharded") is True:
            write_json(tmp.path / F.META_FILE, top)
        probs = validate(tmp.path, check_data=False)
        if probs:
            raise BatchFormatError(f"{path}: the plain copy does not validate, not committed: "
                                   + "; ".join(probs[:5]))
        return tmp.commit_as(final)
    except BaseException:
        tmp.discard()
        raise
    finally:
        bar.close()
