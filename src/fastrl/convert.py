"""Conversions and summaries of a batch: ``to_npz`` and ``info``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import _kernels
from .dataset import open_dataset
from ._batch.meta import read_meta

__all__ = ["to_npz", "info", "format_info"]


def to_npz(path: str | os.PathLike, out: str | os.PathLike, *, compressed: bool = True) -> Path:
    """Write the batch at ``path`` as one ``.npz`` file: keys ``obs``, ``actions``, ``rewards``,
    ``masks``, ``dones`` (the origin document's), the optional columns present (``values``,
    ``logprobs``, ``truncated``), ``episode_starts`` (int64, episodes + 1) and ``meta`` (the
    meta.json text as a 0-d unicode array, so ``np.load`` needs no pickle:
    ``json.loads(str(z["meta"]))``). Written to a temporary file, then renamed. Returns ``out``."""
    ds = open_dataset(path)
    out = Path(out)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")  # np.savez would append it anyway
    names = sorted(set.intersection(*(set(b.columns) for b in ds.parts))) if ds.parts else []
    arrays = {n: np.concatenate([np.asarray(b.columns[n]) for b in ds.parts]) for n in names}
    arrays["episode_starts"] = np.concatenate(
        [[0]] + [np.asarray(b.episode_starts[1:]) + ds.row_starts[k]
                 for k, b in enumerate(ds.parts)]).astype(np.int64)
    arrays["meta"] = np.array(json.dumps(read_meta(path)))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.npz")
    try:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


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
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
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


def decompress(path: str | os.PathLike, out_root: str | os.PathLike | None = None) -> Path:
    """Write a plain (uncompressed, memory-mappable, seed-format) copy of the compressed batch at
    ``path`` as a new ``batch_<ms>`` in ``out_root`` (default: beside it); return its path.
    Every decoded column is checked against its recorded CRC32 first."""
    from ._batch.columnset import write_json
    from ._batch.commit import TempFolder
    from ._batch.meta import batch_parts, column_layout, meta_problems, size_problems
    from .errors import BatchFormatError
    from .reader import open_columns

    path = Path(path)
    top = read_meta(path)
    tmp = TempFolder(Path(out_root) if out_root is not None else path.parent)
    try:
        for part in batch_parts(path):
            dest = tmp.path if part == path else tmp.path / part.name
            dest.mkdir(exist_ok=True)
            meta = read_meta(part)
            probs = meta_problems(meta)
            codecs = meta.pop("codecs", None) or {}
            layout = column_layout(meta, part) if not probs else {}
            probs = probs or size_problems(layout, codecs)
            if probs:
                raise BatchFormatError(f"{part}: " + "; ".join(probs))
            cols = open_columns(layout, codecs, verify=True)
            sums = meta.get("checksums")
            for name, (fpath, _, _) in layout.items():
                np.ascontiguousarray(cols[name]).tofile(dest / fpath.name)
                if name in codecs and isinstance(sums, dict):
                    sums.pop(codecs[name]["file"], None)
                    sums[fpath.name] = codecs[name]["rawChecksum"]
            write_json(dest / "meta.json", meta)
        if top.get("sharded") is True:
            write_json(tmp.path / "meta.json", top)
        return tmp.commit()
    except BaseException:
        tmp.discard()
        raise
