"""Conversions and summaries of a batch: ``to_npz`` and ``info``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import _backend
from .reader import load_batch

__all__ = ["to_npz", "info", "format_info"]


def to_npz(path: str | os.PathLike, out: str | os.PathLike, *, compressed: bool = True) -> Path:
    """Write the batch at ``path`` as one ``.npz`` file: keys ``obs``, ``actions``, ``rewards``,
    ``masks``, ``dones`` (the origin document's), the optional columns present (``values``,
    ``logprobs``, ``truncated``), ``episode_starts`` (int64, episodes + 1) and ``meta`` (the
    meta.json text as a 0-d unicode array, so ``np.load`` needs no pickle:
    ``json.loads(str(z["meta"]))``). Written to a temporary file, then renamed. Returns ``out``."""
    batch = load_batch(path)
    out = Path(out)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")  # np.savez would append it anyway
    arrays = dict(batch.columns)
    arrays["episode_starts"] = np.asarray(batch.episode_starts)
    arrays["meta"] = np.array(json.dumps(batch.meta))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.npz")
    try:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def info(path: str | os.PathLike) -> dict:
    """Summary of a batch a person wants: sizes, episode lengths, rewards, mask density, bytes."""
    b = load_batch(path)
    lengths = np.diff(np.asarray(b.episode_starts))
    ends = np.asarray(b.episode_starts[1:]) - 1
    returns = np.add.reduceat(np.asarray(b.rewards, dtype=np.float64),
                              np.asarray(b.episode_starts[:-1])) if b.count else np.zeros(0)
    size = sum(f.stat().st_size for f in Path(b.path).iterdir() if f.is_file())
    density = 0.0
    if b.count:
        step = max(1, b.count // 20000)  # a sample of rows is enough for a density
        density = float(np.asarray(b.masks[::step, :b.n_actions]).mean())

    def stats(x):
        x = np.asarray(x, dtype=np.float64)
        if not x.size:
            return {"min": None, "mean": None, "max": None}
        return {"min": float(x.min()), "mean": float(x.mean()), "max": float(x.max())}

    return {
        "path": str(b.path),
        "formatVersion": b.meta.get("formatVersion", 1),
        "createdAt": b.meta.get("createdAt"),
        "transitions": b.count,
        "episodes": b.num_episodes,
        "obsDim": b.obs_dim,
        "maskDim": b.mask_dim,
        "numActions": b.n_actions,
        "columns": sorted(b.columns),
        "episodeLength": stats(lengths),
        "reward": stats(b.rewards),
        "episodeReturn": stats(returns),
        "truncatedEpisodes": int(np.count_nonzero(np.asarray(b.truncated)[ends]))
        if b.truncated is not None and b.count else 0,
        "maskDensity": density,
        "bytesOnDisk": size,
        "bytesPerTransition": size / b.count if b.count else None,
        "backend": _backend.BACKEND,
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
        f"format       v{d['formatVersion']}, created {d['createdAt']}",
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
