"""``validate``: find every problem in a batch folder (never raises for a bad batch)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import _format as F
from ._batch import commit
from ._batch.meta import (batch_parts, checksum_problems, column_layout, episode_starts_from,
                          index_problems, meta_problems, read_meta, shard_record_problem,
                          size_problems)
from .errors import BatchFormatError
from .reader import open_columns

__all__ = ["validate"]

_CHUNK_BYTES = 32 << 20
_MAX_REPORTS_PER_CHECK = 5  # per kind of problem; the total count is always given


class _Tally:
    """Collects the first few rows failing one check, and how many failed in all."""

    def __init__(self, what):
        self.what = what
        self.rows = []
        self.total = 0

    def add(self, bad_rows: np.ndarray, detail=None):
        if bad_rows.size:
            self.total += int(bad_rows.size)
            for r in bad_rows[:_MAX_REPORTS_PER_CHECK - len(self.rows)]:
                self.rows.append(int(r) if detail is None else f"{int(r)} ({detail(int(r))})")

    def problems(self):
        if not self.total:
            return []
        shown = ", ".join(map(str, self.rows))
        more = f" and {self.total - len(self.rows)} more" if self.total > len(self.rows) else ""
        return [f"{self.what}: {self.total} rows, e.g. row {shown}{more}"]


def validate(path: str | os.PathLike, *, check_data: bool = True) -> list[str]:
    """Return every problem found in the batch at ``path`` (an empty list when it is sound).

    Checks meta.json keys and coherence, that every file exists with exactly the size its shape
    gives, checksums, and (``check_data``) the data: NaN/Inf in float columns, mask values not
    0/1, non-zero padding mask columns, actions outside [0, numActions) or not legal under their
    own mask, dones/truncated inconsistent with the episode index. Reads the files in chunks, so
    memory stays bounded.
    """
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: not a folder"]
    try:
        meta = read_meta(path)
    except BatchFormatError as exc:
        return [str(exc)]
    probs = meta_problems(meta)
    if probs:
        return probs
    if meta.get("sharded") is True:
        return _sharded_problems(path, meta, check_data) + _stale_problems(path.parent)
    layout = column_layout(meta, path)
    codecs = meta.get("codecs") or {}
    probs = size_problems(layout, codecs)
    if probs:
        return probs
    probs += checksum_problems(path, meta)
    if not path.name.startswith("shard_"):
        probs += _stale_problems(path.parent)
    if not check_data:
        return probs
    try:
        cols = open_columns(layout, codecs, verify=True)
        probs += _data_problems(meta, cols)
    except (OSError, ValueError) as exc:
        probs.append(f"{path}: cannot read column data ({exc})")
    return probs


def _stale_problems(root: Path) -> list[str]:
    stale = commit.stale_temp_folders(root)
    if not stale:
        return []
    return [f"{root}: {len(stale)} abandoned temporary folder(s) from crashed writers (not part "
            f"of any batch; the next BatchWriter in this root removes them): "
            f"{', '.join(p.name for p in stale[:3])}"]


def _sharded_problems(path: Path, meta: dict, check_data: bool) -> list[str]:
    """A sharded batch: the manifest's shard list and totals, then every shard as a batch."""
    try:
        parts = batch_parts(path)
    except BatchFormatError as exc:
        return [str(exc)]
    probs = []
    rows = episodes = 0
    for index, (entry, part) in enumerate(zip(meta["shards"], parts)):
        sub = validate(part, check_data=check_data)
        probs += [f"{part.name}: {p}" for p in sub]
        if sub:
            continue
        m = read_meta(part)
        for key, want in (("obsDim", meta["obsDim"]), ("maskDim", meta["maskDim"]),
                          ("count", entry.get("count")), ("episodes", entry.get("episodes"))):
            if m.get(key) != want:
                probs.append(f"{part.name}: {key} {m.get(key)!r} disagrees with the manifest "
                             f"({want!r})")
        problem = shard_record_problem(m, index, rows, episodes)
        if problem:
            probs.append(f"{part.name}: meta.json {problem}")
        rows += m.get("count", 0) if isinstance(m.get("count"), int) else 0
        episodes += m.get("episodes", 0) if isinstance(m.get("episodes"), int) else 0
    if not probs and (rows, episodes) != (meta["count"], meta["episodes"]):
        probs.append(f"meta.json: totals {meta['count']} transitions / {meta['episodes']} "
                     f"episodes, shards hold {rows} / {episodes}")
    extra = sorted(e.name for e in os.scandir(path) if e.is_dir()
                   and e.name not in {p.name for p in parts})
    if extra:
        probs.append(f"{path}: folders not listed in the manifest: {', '.join(extra[:5])}")
    return probs


def _data_problems(meta: dict, cols: dict) -> list[str]:
    count, md = meta["count"], meta["maskDim"]
    na = meta.get("numActions", md)
    probs = []
    if F.EPISODE_INDEX[0] in cols:
        starts = np.asarray(cols[F.EPISODE_INDEX[0]], dtype=np.int64)
        idx_probs = index_problems(starts, count, meta["episodes"])
        probs += idx_probs
        if idx_probs:
            starts = None
    else:
        starts = None
    if starts is None:
        starts = episode_starts_from(cols["dones"])
        if len(starts) - 1 != meta["episodes"]:
            probs.append(f"dones: {len(starts) - 1} episode ends, meta.json says "
                         f"{meta['episodes']} episodes")
    if count and cols["dones"][count - 1] != 1:
        probs.append(f"dones: last row ({count - 1}) must be 1 (end of the last episode)")

    tallies = {k: _Tally(v) for k, v in (
        ("obs", "obs: NaN or infinite values"), ("rewards", "rewards: NaN or infinite"),
        ("values", "values: NaN or infinite"), ("logprobs", "logprobs: NaN or infinite"),
        ("mask01", "masks: values other than 0/1"),
        ("pad", f"masks: non-zero padding columns (>= numActions={na})"),
        ("arange", f"actions: outside [0, {na})"),
        ("illegal", "actions: not legal under the step's own mask"),
        ("dones", "dones: not 1 exactly on each episode's last row"),
        ("trunc", "truncated: flag set on a row that does not end an episode"))}
    ends = starts[1:] - 1
    row_bytes = F.row_bytes(meta["obsDim"], md)
    chunk = max(1, _CHUNK_BYTES // row_bytes)
    for lo in range(0, count, chunk):
        hi = min(count, lo + chunk)
        obs = np.asarray(cols["obs"][lo:hi])
        tallies["obs"].add(lo + np.flatnonzero(~np.isfinite(obs).all(axis=1)))
        for name in ("rewards", "values", "logprobs"):
            if name in cols:
                tallies[name].add(lo + np.flatnonzero(~np.isfinite(cols[name][lo:hi])))
        m = np.asarray(cols["masks"][lo:hi])
        tallies["mask01"].add(lo + np.flatnonzero((m > 1).any(axis=1)))
        if na < md:
            tallies["pad"].add(lo + np.flatnonzero(m[:, na:].any(axis=1)))
        a = np.asarray(cols["actions"][lo:hi]).astype(np.int64)
        inr = (a >= 0) & (a < na)
        tallies["arange"].add(lo + np.flatnonzero(~inr),
                              lambda r, a=a, lo=lo: f"action {a[r - lo]}")
        legal = np.zeros(hi - lo, bool)
        legal[inr] = m[np.flatnonzero(inr), a[inr]] != 0
        tallies["illegal"].add(lo + np.flatnonzero(inr & ~legal))
        is_end = np.zeros(hi - lo, bool)
        e = ends[(ends >= lo) & (ends < hi)]
        is_end[e - lo] = True
        d = np.asarray(cols["dones"][lo:hi])
        tallies["dones"].add(lo + np.flatnonzero(((d != 0) != is_end) | (d > 1)))
        if "truncated" in cols:
            t = np.asarray(cols["truncated"][lo:hi])
            tallies["trunc"].add(lo + np.flatnonzero(((t != 0) & ~is_end) | (t > 1)))
    for t in tallies.values():
        probs += t.problems()
    return probs
