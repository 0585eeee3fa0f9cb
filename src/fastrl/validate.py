"""``validate``: find every problem in a batch folder (never raises for a bad batch).

``validate`` judges the batch: it reports exactly what a reader (``load_batch``,
``open_dataset``) refuses, plus the data rules of docs/FORMAT.md that readers do not check
(NaN/Inf, mask values, action legality, dones at episode ends...). What it notices beside the
batch, in its root (temporary folders abandoned by crashed writers), is not a problem of the
batch: :func:`root_notes` returns it separately.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import _format as F
from ._batch import commit
from ._batch.meta import (batch_parts, checksum_problems, column_layout, episode_starts_from,
                          folder_entry_problems, index_problems, meta_problems, read_meta,
                          shard_problems, size_problems)
from .errors import BatchFormatError
from .reader import open_columns

__all__ = ["validate", "root_notes"]

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

    Checks meta.json (strict JSON, keys and coherence), that every file is a regular file (no
    link, FIFO or device) with exactly the size its shape gives, checksums, the episode index,
    and (``check_data``) the data: compressed columns decode to their recorded CRC,
    NaN/Inf in float columns, mask values not 0/1, non-zero padding mask columns, actions
    outside [0, numActions) or not legal under their own mask, dones/truncated inconsistent
    with the episode index. Reads the files in chunks, so memory stays bounded (compressed
    columns are decoded in memory, within the decode budget).

    Anything it accepts, ``load_batch`` (a plain batch) and ``open_dataset`` (any batch) read;
    anything they refuse, it reports. Abandoned temporary folders beside the batch are not
    reported here: see :func:`root_notes`.
    """
    return _validate(Path(path), check_data, shard=False)


def root_notes(path: str | os.PathLike) -> list[str]:
    """Notes about the root the batch at ``path`` lies in, that are not problems of the batch:
    temporary folders left there by crashed writers (the next ``BatchWriter`` in that root
    removes them). The CLI prints them on stderr after ``validate``'s verdict."""
    root = Path(path).parent
    try:
        stale = commit.stale_temp_folders(root)
    except OSError:
        return []
    if not stale:
        return []
    names = ", ".join(sorted(p.name for p in stale)[:3])
    return [f"{root}: {len(stale)} abandoned temporary folder(s) from crashed writers (not part "
            f"of any batch; the next BatchWriter in this root removes them): {names}"]


def _validate(path: Path, check_data: bool, shard: bool) -> list[str]:
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
        if shard:
            return ["meta.json: a shard must not itself be sharded"]
        return _sharded_problems(path, meta, check_data)
    probs = folder_entry_problems(path)
    layout = column_layout(meta, path)
    codecs = meta.get("codecs") or {}
    probs += size_problems(layout, codecs)
    if probs:
        return probs
    probs += checksum_problems(path, meta)
    try:
        if not check_data:  # what load_batch reads besides the sizes: the episode index
            need = {F.EPISODE_INDEX[0]} if F.EPISODE_INDEX[0] in layout else {"dones"}
            cols = open_columns(layout, codecs, verify=True, names=need)
            probs += _index_only_problems(meta, cols)
        else:
            cols = open_columns(layout, codecs, verify=True)
            probs += _data_problems(meta, cols)
    except (OSError, ValueError) as exc:
        probs.append(f"{path}: cannot read column data ({exc})")
    return probs


def _index_only_problems(meta: dict, cols: dict) -> list[str]:
    if F.EPISODE_INDEX[0] in cols:
        starts = np.asarray(cols[F.EPISODE_INDEX[0]], dtype=np.int64)
    else:
        starts = episode_starts_from(cols["dones"])
    return index_problems(starts, meta["count"], meta["episodes"])


def _sharded_problems(path: Path, meta: dict, check_data: bool) -> list[str]:
    """A sharded batch: the manifest's shard list and totals, then every shard as a batch."""
    try:
        parts = batch_parts(path)
    except BatchFormatError as exc:
        return [str(exc)]
    probs = folder_entry_problems(path)
    rows = episodes = 0
    for index, (entry, part) in enumerate(zip(meta["shards"], parts)):
        sub = _validate(part, check_data, shard=True)
        probs += [f"{part.name}: {p}" for p in sub]
        if sub:
            continue
        m = read_meta(part)
        probs += [f"{part.name}: {p}" for p in shard_problems(meta, index, entry, m, rows,
                                                               episodes)]
        rows += m["count"]
        episodes += m["episodes"]
    if not probs and (rows, episodes) != (meta["count"], meta["episodes"]):
        probs.append(f"meta.json: totals {meta['count']} transitions / {meta['episodes']} "
                     f"episodes, shards hold {rows} / {episodes}")
    try:
        with os.scandir(path) as it:
            extra = sorted(e.name for e in it if e.is_dir(follow_symlinks=False)
                           and e.name not in {p.name for p in parts})
    except OSError:
        extra = []
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
        ("final_obs", "final_obs: NaN or infinite values"),
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
    if F.FINAL_OBS[0] in cols:
        fo = cols[F.FINAL_OBS[0]]
        step = max(1, _CHUNK_BYTES // max(1, meta["obsDim"] * 4))
        for lo in range(0, len(fo), step):
            block = np.asarray(fo[lo:lo + step])
            tallies["final_obs"].add(lo + np.flatnonzero(~np.isfinite(block).all(axis=1)))
    for t in tallies.values():
        probs += t.problems()
    return probs
