"""``fastrl report``: the figures of a batch, as text (``fastrl info``) and as one HTML page.

:func:`batch_figures` reads a batch once (twice for the three small float columns), streaming over
memory-mapped columns in chunks of about ``chunk_bytes``, so memory stays bounded whatever the
batch size: only per-column observation statistics (obsDim floats), per-action counts
(numActions ints) and one length and one return per episode are kept. (Compressed columns are
decoded into memory by the reader, as everywhere in fastrl.) The result is a plain JSON-able
dict; :func:`format_figures` renders it as aligned text, :func:`render_html` as a self-contained
page (inline SVG drawn here, inline CSS, no script, no network, no external font), and
:func:`write_report` writes that page atomically.

Everything read from ``meta.json`` is untrusted: the page escapes every string it shows.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
from pathlib import Path

import numpy as np

from . import __version__
from . import _format as F
from ._batch.meta import read_meta
from .dataset import open_dataset
from .errors import FastrlError
from .reader import Batch, load_batch

__all__ = ["batch_figures", "format_figures", "render_html", "write_report",
           "default_report_path"]

CHUNK_BYTES = 32 << 20   # observation + mask bytes read per chunk
HIST_BINS = 30           # bins of a float histogram (integer data: unit bins up to 2x this)
TOP_ACTIONS = 20         # actions listed by name; the rest are summed
STRIP_BINS = 256         # action ids (and obs columns: 2x) grouped into at most this many bins
OBS_BLOCKS = 16          # observation blocks shown when the batch has no spec
_META_SKIP = ("columns", "checksums", "codecs", "obsSpec", "obsSlices", "shards")
_MAX_META_ROWS, _MAX_META_CHARS = 60, 400


# -- opening -----------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def iso_from_ms(ms) -> str:
    """An ISO-8601 UTC string from milliseconds since the epoch (``Date.now()``); ``str(ms)`` when
    the number is not a representable time."""
    try:
        t = _dt.datetime.fromtimestamp(float(ms) / 1000.0, tz=_dt.timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    except (OverflowError, ValueError, OSError):
        return str(ms)


def open_parts(path) -> tuple[dict, list[Batch], str]:
    """(top meta.json or {}, opened parts, kind) for a batch ("batch"), a sharded batch
    ("sharded batch": its shards) or a root folder of batches ("batches")."""
    path = Path(path)
    if not (path / F.META_FILE).is_file():
        return {}, open_dataset(path).parts, "batches"
    meta = read_meta(path)
    if meta.get("sharded") is True:
        return meta, open_dataset(path).parts, "sharded batch"
    return meta, [load_batch(path)], "batch"


def _backend_name() -> str:
    import fastrl
    return str(getattr(fastrl, "BACKEND", "?"))


def _spans(n: int, step: int):
    """(start, stop) row ranges of at most ``step`` rows covering ``[0, n)``."""
    return ((a, min(n, a + step)) for a in range(0, n, step))


def _chunk_rows(b: Batch, chunk_bytes: int) -> int:
    return max(1, chunk_bytes // (b.obs_dim * 4 + b.mask_dim + 17))


# -- streaming accumulators ------------------------------------------------------------------

def _chan(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Combine counts, means and sums of squared deviations of two samples (Chan et al.);
    works elementwise on arrays."""
    n = n_a + n_b
    safe = np.maximum(n, 1)
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / safe), m2_a + m2_b + delta * delta * (n_a * (n_b / safe))


class ScalarStats:
    """Streaming min / mean / std / max of a float column; non-finite values are counted apart
    and otherwise ignored. ``integral`` stays True while every value is a whole number."""

    def __init__(self):
        self.n, self.mean, self.m2, self.bad = 0, 0.0, 0.0, 0
        self.lo, self.hi, self.integral = math.inf, -math.inf, True

    def update(self, x) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        fin = np.isfinite(x)
        if not fin.all():
            self.bad += int(x.size - np.count_nonzero(fin))
            x = x[fin]
        if not x.size:
            return
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        self.integral = self.integral and bool(np.all(x == np.round(x)))
        m = float(x.mean())
        n, mean, m2 = _chan(self.n, self.mean, self.m2, x.size, m, float(np.sum((x - m) ** 2)))
        self.n, self.mean, self.m2 = int(n), float(mean), float(m2)

    def summary(self) -> dict:
        """``count`` (finite values), ``min``, ``mean``, ``std``, ``max`` (None when empty),
        ``nonFinite``."""
        if not self.n:
            return {"count": 0, "min": None, "mean": None, "std": None, "max": None,
                    "nonFinite": self.bad}
        return {"count": self.n, "min": self.lo, "mean": self.mean,
                "std": math.sqrt(self.m2 / self.n), "max": self.hi, "nonFinite": self.bad}


class ColumnStats:
    """Streaming per-column statistics of the (rows, dim) observation matrix: finite count, mean,
    sum of squared deviations, min, max, zeros and non-finite entries per column (float64/int64
    arrays of length dim)."""

    def __init__(self, dim: int):
        self.n = np.zeros(dim, np.int64)
        self.mean, self.m2 = np.zeros(dim), np.zeros(dim)
        self.lo, self.hi = np.full(dim, np.inf), np.full(dim, -np.inf)
        self.zeros, self.bad = np.zeros(dim, np.int64), np.zeros(dim, np.int64)

    def update(self, x) -> None:
        x = np.asarray(x)
        if not x.shape[0]:
            return
        fin = np.isfinite(x)
        if fin.all():
            n_b = np.full(x.shape[1], x.shape[0], np.int64)
            lo, hi, xd = x.min(axis=0), x.max(axis=0), x.astype(np.float64)
        else:
            n_b = np.count_nonzero(fin, axis=0)
            self.bad += x.shape[0] - n_b
            lo = np.where(fin, x, np.inf).min(axis=0)
            hi = np.where(fin, x, -np.inf).max(axis=0)
            xd = np.where(fin, x, 0).astype(np.float64)
        m = xd.sum(axis=0) / np.maximum(n_b, 1)
        xd -= m
        if not fin.all():
            xd[~fin] = 0
        np.square(xd, out=xd)
        self.n, self.mean, self.m2 = _chan(self.n, self.mean, self.m2, n_b, m, xd.sum(axis=0))
        np.minimum(self.lo, lo, out=self.lo)
        np.maximum(self.hi, hi, out=self.hi)
        self.zeros += np.count_nonzero(x == 0, axis=0)

    def summary(self, a: int, b: int) -> dict:
        """Statistics of the columns ``[a, b)`` taken together: ``min``, ``mean``, ``std``,
        ``max`` (None when no finite value), ``zeroFraction`` (of finite entries),
        ``constantColumns`` (columns whose every value is equal), ``nonFinite``."""
        n = self.n[a:b]
        tot = int(n.sum())
        out = {"min": None, "mean": None, "std": None, "max": None, "zeroFraction": None,
               "constantColumns": 0, "nonFinite": int(self.bad[a:b].sum())}
        if not tot:
            return out
        mean = float((n * self.mean[a:b]).sum() / tot)
        m2 = float((self.m2[a:b] + n * (self.mean[a:b] - mean) ** 2).sum())
        seen = n > 0
        out.update(min=float(self.lo[a:b][seen].min()), mean=mean, std=math.sqrt(m2 / tot),
                   max=float(self.hi[a:b][seen].max()),
                   zeroFraction=float(self.zeros[a:b].sum() / tot),
                   constantColumns=int(np.count_nonzero(seen & (self.lo[a:b] == self.hi[a:b]))))
        return out


class ActionStats:
    """Streaming action and mask counts: ``chosen`` (numActions,) times each action was taken,
    ``legal`` (maskDim,) steps at which each mask column was set, ``per_step`` (maskDim + 1,)
    steps with k legal actions, ``out_of_range`` and ``illegal`` choices."""

    def __init__(self, n_actions: int, mask_dim: int):
        self.n_actions = n_actions
        self.chosen = np.zeros(n_actions, np.int64)
        self.legal = np.zeros(mask_dim, np.int64)
        self.per_step = np.zeros(mask_dim + 1, np.int64)
        self.out_of_range = self.illegal = 0

    def update(self, actions, masks) -> None:
        a = np.asarray(actions, dtype=np.int64)
        m = np.asarray(masks)
        ok = (a >= 0) & (a < self.n_actions)
        self.out_of_range += int(a.size - np.count_nonzero(ok))
        bc = np.bincount(a[ok])
        self.chosen[:len(bc)] += bc
        bc = np.bincount(np.count_nonzero(m, axis=1))
        self.per_step[:len(bc)] += bc
        self.legal += m.sum(axis=0, dtype=np.int64)
        rows = np.flatnonzero(ok)
        self.illegal += int(np.count_nonzero(m[rows, a[rows]] == 0))


def episode_returns(rewards, starts: np.ndarray, step: int) -> np.ndarray:
    """Sum of rewards of each episode (float64, episodes,), reading ``rewards`` ``step`` rows at
    a time; ``starts`` holds the episode start rows and then the row count."""
    out = np.zeros(max(len(starts) - 1, 0))
    for a, z in _spans(int(starts[-1]) if len(starts) else 0, step):
        i0 = int(np.searchsorted(starts, a, side="right"))
        i1 = int(np.searchsorted(starts, z, side="left"))
        bounds = np.concatenate([[a], starts[i0:i1]]).astype(np.int64) - a
        sums = np.add.reduceat(np.asarray(rewards[a:z], dtype=np.float64), bounds)
        out[i0 - 1:i0 - 1 + len(sums)] += sums
    return out


# -- histograms ------------------------------------------------------------------------------

def hist_edges(lo, hi, integral: bool, bins: int = HIST_BINS) -> np.ndarray | None:
    """Bin edges for values in ``[lo, hi]``: whole numbers get bins of whole width centred on
    them (unit bins while the range has at most ``2 * bins`` values), other values ``bins``
    equal bins; None when there is no value."""
    if lo is None or not math.isfinite(lo) or not math.isfinite(hi):
        return None
    if integral:
        span = int(hi - lo) + 1
        width = 1 if span <= 2 * bins else math.ceil(span / bins)
        return lo - 0.5 + width * np.arange(math.ceil(span / width) + 1, dtype=np.float64)
    if lo == hi:
        return np.array([lo - 0.5, hi + 0.5])
    return np.linspace(lo, hi, bins + 1)


def hist_dict(edges, counts, integral: bool) -> dict:
    """``{"edges": [n + 1 floats], "counts": [n ints], "integer": bool}`` (empty lists when
    ``edges`` is None)."""
    if edges is None:
        return {"edges": [], "counts": [], "integer": integral}
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts],
            "integer": bool(integral)}


def summarize(values, bins: int = HIST_BINS) -> dict:
    """Summary (``count``, ``min``, ``mean``, ``std``, ``max``, ``nonFinite``) and ``hist`` of an
    in-memory 1-D array (one value per episode)."""
    st = ScalarStats()
    st.update(values)
    out = st.summary()
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    edges = hist_edges(out["min"], out["max"], st.integral, bins)
    counts = np.histogram(x, bins=edges)[0] if edges is not None else None
    out["hist"] = hist_dict(edges, counts, st.integral)
    return out


def hist_from_bincount(bc: np.ndarray, bins: int = HIST_BINS) -> dict:
    """Histogram (as :func:`hist_dict`) of whole numbers given by their counts ``bc[k]``."""
    nz = np.flatnonzero(bc)
    if not nz.size:
        return hist_dict(None, None, True)
    lo, hi = int(nz[0]), int(nz[-1])
    edges = hist_edges(lo, hi, True, bins)
    width = int(round(edges[1] - edges[0]))
    seg = np.zeros((len(edges) - 1) * width, np.int64)
    seg[:hi - lo + 1] = bc[lo:hi + 1]
    return hist_dict(edges, seg.reshape(-1, width).sum(axis=1), True)


def bincount_summary(bc: np.ndarray) -> dict:
    """``count``, ``min``, ``mean``, ``std``, ``max`` of whole numbers given by their counts."""
    n = int(bc.sum())
    if not n:
        return {"count": 0, "min": None, "mean": None, "std": None, "max": None}
    k = np.arange(len(bc), dtype=np.float64)
    mean = float((k * bc).sum() / n)
    nz = np.flatnonzero(bc)
    return {"count": n, "min": int(nz[0]), "mean": mean,
            "std": math.sqrt(float(((k - mean) ** 2 * bc).sum()) / n), "max": int(nz[-1])}


# -- figures ---------------------------------------------------------------------------------

def _obs_fields(meta: dict, dim: int) -> tuple[str, list[tuple]]:
    """(source, [(name, kind, start, stop)]) covering ``[0, dim)``: the spec's fields (from
    ``obsSlices``, or from ``obsSpec``), gaps named "(other)"; else equal column blocks."""
    spec = meta.get("obsSpec")
    fields = spec.get("fields") if isinstance(spec, dict) else spec
    kinds = {f["name"]: str(f.get("kind", "")) for f in fields
             if isinstance(f, dict) and isinstance(f.get("name"), str)} \
        if isinstance(fields, list) else {}
    slices = meta.get("obsSlices")
    if not isinstance(slices, dict) and spec is not None:
        try:
            from .spec import ObsSpec
            slices = {k: [s.start, s.stop] for k, s in ObsSpec.from_dict(spec).slices.items()}
        except Exception:  # noqa: BLE001 -- an unreadable spec only means no field names
            slices = None
    good = sorted((int(ab[0]), int(ab[1]), str(name)) for name, ab in slices.items()
                  if isinstance(ab, (list, tuple)) and len(ab) == 2
                  and all(_is_int(v) for v in ab) and 0 <= ab[0] < ab[1] <= dim) \
        if isinstance(slices, dict) else []
    out, pos = [], 0
    for a, b, name in good:
        if a < pos:
            continue  # overlapping entry: a broken meta.json, keep the first
        if a > pos:
            out.append(("(other)", "", pos, a))
        out.append((name, kinds.get(name, ""), a, b))
        pos = b
    if out:
        if pos < dim:
            out.append(("(other)", "", pos, dim))
        return "spec", out
    edges = np.linspace(0, dim, min(dim, OBS_BLOCKS) + 1).round().astype(int)
    return "blocks", [(f"obs[{a}]" if b == a + 1 else f"obs[{a}:{b}]", "", int(a), int(b))
                      for a, b in zip(edges[:-1], edges[1:])]


def _obs_figures(cs: ColumnStats, meta: dict, dim: int) -> dict:
    """Per-field summaries and a strip of at most ``2 * STRIP_BINS`` column groups."""
    source, fields = _obs_fields(meta, dim)
    rows = [dict(name=n, kind=k, start=a, stop=b, **cs.summary(a, b)) for n, k, a, b in fields]
    width = max(1, math.ceil(dim / (2 * STRIP_BINS)))
    strip = [cs.summary(a, min(dim, a + width)) for a in range(0, dim, width)]
    return {"source": source, "fields": rows, "nonFinite": int(cs.bad.sum()),
            "constantColumns": sum(r["constantColumns"] for r in rows),
            "strip": {"binWidth": width, "mean": [s["mean"] for s in strip],
                      "std": [s["std"] for s in strip],
                      "zeroFraction": [s["zeroFraction"] for s in strip]}}


def _action_figures(acc: ActionStats, top: int) -> dict:
    """Top-``top`` actions, the rest summed, and the per-id-bin strip of chosen vs legal."""
    chosen, n = acc.chosen, acc.n_actions
    order = np.argsort(-chosen, kind="stable")[:top]
    order = order[chosen[order] > 0]
    used = int(np.count_nonzero(chosen))
    width = max(1, math.ceil(n / STRIP_BINS))
    pad = lambda v: np.concatenate([v, np.zeros((-len(v)) % width, np.int64)])  # noqa: E731
    return {"numActions": n, "used": used, "total": int(chosen.sum()),
            "top": [[int(i), int(chosen[i])] for i in order],
            "otherCount": int(chosen.sum() - chosen[order].sum()),
            "otherActions": used - len(order),
            "outOfRange": acc.out_of_range, "illegal": acc.illegal,
            "strip": {"binWidth": width,
                      "chosen": pad(chosen).reshape(-1, width).sum(axis=1).tolist(),
                      "legal": pad(acc.legal[:n]).reshape(-1, width).sum(axis=1).tolist()}}


def _legal_figures(acc: ActionStats) -> dict:
    out = bincount_summary(acc.per_step)
    out["hist"] = hist_from_bincount(acc.per_step)
    out["density"] = out["mean"] / acc.n_actions if out["mean"] is not None else None
    return out


def _file_figures(path: Path, parts: list[Batch], transitions: int) -> dict:
    """Bytes on disk per file name (summed over shards), checksum presence, codecs."""
    by_name: dict[str, list[int]] = {}
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                size = os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                continue
            entry = by_name.setdefault(f, [0, 0])
            entry[0] += size
            entry[1] += 1
    total = sum(v[0] for v in by_name.values())
    codecs: dict[str, dict] = {}
    for b in parts:
        for col, c in (b.meta.get("codecs") or {}).items():
            if not isinstance(c, dict):
                continue
            e = codecs.setdefault(str(col), {"codec": str(c.get("codec")), "rawBytes": 0,
                                             "storedBytes": 0})
            e["rawBytes"] += int(c.get("rawBytes") or 0) if _is_int(c.get("rawBytes")) else 0
            try:
                e["storedBytes"] += (b.path / str(c.get("file"))).stat().st_size
            except OSError:
                pass
    return {"totalBytes": total, "bytesPerTransition": total / transitions if transitions else None,
            "files": [{"name": k, "bytes": v[0], "count": v[1]}
                      for k, v in sorted(by_name.items(), key=lambda kv: (-kv[1][0], kv[0]))],
            "checksums": {"parts": sum(1 for b in parts if isinstance(b.meta.get("checksums"), dict)
                                       and b.meta["checksums"]), "of": len(parts)},
            "compression": codecs}


def _meta_rows(meta: dict) -> list[list[str]]:
    """[key, compact JSON of the value] for the keys of meta.json a person reads (capped)."""
    rows = []
    for k, v in list(meta.items())[:_MAX_META_ROWS]:
        if k in _META_SKIP:
            continue
        try:
            text = json.dumps(v, ensure_ascii=False, default=str, allow_nan=True)
        except (TypeError, ValueError, RecursionError):
            text = repr(v)
        if len(text) > _MAX_META_CHARS:
            text = text[:_MAX_META_CHARS] + " …"
        rows.append([str(k)[:200], text])
    return rows


def _column_names(parts: list[Batch]) -> list[str]:
    names = set().union(*(b.columns for b in parts)) if parts else set()
    if any(getattr(b, "final_obs", None) is not None for b in parts):
        names.add("final_obs")
    return sorted(names)


def _created(meta: dict):
    v = meta.get("createdAt")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return iso_from_ms(v)
    return None if v is None else str(v)[:100]


def _producer(meta: dict) -> str | None:
    p = meta.get("producer")
    if isinstance(p, dict):
        return " ".join(str(x) for x in (f"fastrl {p.get('fastrl', '?')}",
                                         f"({p['backend']})" if "backend" in p else "") if x)
    return None if p is None else str(p)[:200]


def _pass1(parts: list[Batch], n_actions: int, mask_dim: int, obs_dim: int, chunk_bytes: int):
    """One read of every column: (ColumnStats, ActionStats, {column: ScalarStats}, lengths,
    returns, truncated episodes)."""
    cs, acc = ColumnStats(obs_dim), ActionStats(n_actions, mask_dim)
    scal = {n: ScalarStats() for n in ("rewards", "values", "logprobs")}
    lengths, returns, truncated = [], [], 0
    for b in parts:
        step = _chunk_rows(b, chunk_bytes)
        for a, z in _spans(b.count, step):
            cs.update(b.obs[a:z])
            acc.update(b.actions[a:z], b.masks[a:z])
            for name, st in scal.items():
                col = getattr(b, name)
                if col is not None:
                    st.update(col[a:z])
        starts = np.asarray(b.episode_starts, dtype=np.int64)
        lengths.append(np.diff(starts))
        returns.append(episode_returns(b.rewards, starts, step * 8))
        if b.truncated is not None and len(starts) > 1:
            truncated += int(np.count_nonzero(np.asarray(b.truncated)[starts[1:] - 1]))
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
    return cs, acc, scal, cat(lengths, np.int64), cat(returns, np.float64), truncated


def _pass2(parts: list[Batch], scal: dict, chunk_bytes: int, bins: int) -> dict:
    """Histograms of the float columns whose range the first pass found: name -> summary."""
    out = {}
    for name, st in scal.items():
        if not any(getattr(b, name) is not None for b in parts):
            out[name] = None
            continue
        s = st.summary()
        edges = hist_edges(s["min"], s["max"], st.integral, bins)
        counts = np.zeros(0 if edges is None else len(edges) - 1, np.int64)
        for b in parts if edges is not None else []:
            col = getattr(b, name)
            for a, z in _spans(b.count if col is not None else 0, chunk_bytes // 8):
                x = np.asarray(col[a:z], dtype=np.float64)
                counts += np.histogram(x[np.isfinite(x)], bins=edges)[0]
        s["hist"] = hist_dict(edges, counts, st.integral)
        out[name] = s
    return out


def batch_figures(path, *, chunk_bytes: int = CHUNK_BYTES, top: int = TOP_ACTIONS,
                  bins: int = HIST_BINS) -> dict:
    """Every figure of the batch at ``path`` (plain, compressed or sharded; a root folder of
    batches works too), as a JSON-able dict. Keys:

    ``name``, ``path``, ``kind`` ("batch" / "sharded batch" / "batches"), ``parts``,
    ``createdAt`` (ISO string; numbers of ms are converted), ``formatVersion``, ``producer``,
    ``obsDim``, ``maskDim``, ``numActions``, ``columns``; counts ``transitions``, ``episodes``,
    ``truncatedEpisodes``; summaries (``count``, ``min``, ``mean``, ``std``, ``max``,
    ``nonFinite``, ``hist`` = ``{"edges", "counts", "integer"}``) ``episodeLength`` (steps),
    ``episodeReturn`` (sum of rewards), ``reward`` (per step), ``values``/``logprobs`` (None when
    absent); ``legalActions`` (legal actions per step: summary, ``hist``, ``density`` = mean /
    numActions); ``actions`` (``top`` [[id, count]], ``otherCount``, ``otherActions``, ``used``,
    ``outOfRange``, ``illegal``, ``strip`` of chosen/legal counts per id bin); ``observations``
    (``source`` "spec"/"blocks", ``fields`` with min/mean/std/max/zeroFraction/constantColumns
    per field, ``strip`` per column group); ``files`` (bytes per file name, checksums, codecs);
    ``meta`` ([key, JSON text] rows); ``origin`` (True when meta.json has only the six origin
    keys); ``fastrl``, ``backend``, ``generatedAt``.

    Columns are read ``chunk_bytes`` at a time (observation + mask bytes), so memory is bounded
    by about 4 x ``chunk_bytes`` plus O(obsDim + numActions + episodes).
    """
    path = Path(path)
    top_meta, parts, kind = open_parts(path)
    meta = top_meta or (parts[0].meta if parts else {})
    first = parts[0] if parts else None
    obs_dim = first.obs_dim if first else int(meta.get("obsDim") or 0)
    mask_dim = first.mask_dim if first else int(meta.get("maskDim") or 0)
    n_actions = first.n_actions if first else mask_dim
    cs, acc, scal, lengths, returns, truncated = _pass1(parts, n_actions, mask_dim, obs_dim,
                                                          chunk_bytes)
    floats = _pass2(parts, scal, chunk_bytes, bins)
    transitions = sum(b.count for b in parts)
    return {
        "name": path.resolve().name, "path": str(path), "kind": kind, "parts": len(parts),
        "createdAt": _created(meta), "formatVersion": meta.get("formatVersion", 1),
        "producer": _producer(meta), "origin": set(meta) <= set(F.REQUIRED_META_KEYS),
        "obsDim": obs_dim, "maskDim": mask_dim, "numActions": n_actions,
        "columns": _column_names(parts),
        "transitions": transitions, "episodes": int(len(lengths)),
        "truncatedEpisodes": truncated,
        "episodeLength": summarize(lengths, bins), "episodeReturn": summarize(returns, bins),
        "reward": floats["rewards"], "values": floats["values"], "logprobs": floats["logprobs"],
        "legalActions": _legal_figures(acc), "actions": _action_figures(acc, top),
        "observations": _obs_figures(cs, meta, obs_dim),
        "files": _file_figures(path, parts, transitions), "meta": _meta_rows(meta),
        "fastrl": __version__, "backend": _backend_name(),
        "generatedAt": iso_from_ms(_dt.datetime.now(_dt.timezone.utc).timestamp() * 1000),
    }


# -- text ------------------------------------------------------------------------------------

_SPARK = " ▁▂▃▄▅▆▇█"
_SPARK_ASCII = " .:-=+*#@"


def fmt_num(x, digits: int = 4) -> str:
    """A number for people: ints with thousands separators, floats to ``digits`` significant
    figures (large ones as whole numbers); "-" for None."""
    if x is None:
        return "-"
    if _is_int(x):
        return f"{int(x):,}"
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x != 0 and 1e4 <= abs(x) < 1e15:
        return f"{x:,.0f}"
    s = f"{x:.{digits}g}".replace("e-0", "e-").replace("e+0", "e+")
    return "0" if s == "-0" else s


def fmt_bytes(n) -> str:
    """Bytes as B / kB / MB / GB / TB (powers of 1000)."""
    if n is None:
        return "-"
    for unit, k in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:,.1f} {unit}"
    return f"{int(n)} B"


def fmt_pct(f, digits: int = 1) -> str:
    return "-" if f is None else f"{100 * f:.{digits}f}%"


def sparkline(counts, *, ascii: bool = False, width: int = 40) -> str:
    """Counts as one line of block characters (at most ``width``, neighbouring bins merged);
    every non-empty bin shows at least the lowest mark."""
    c = np.asarray(counts, dtype=np.float64)
    if not c.size or not c.max():
        return ""
    if c.size > width:
        k = math.ceil(c.size / width)
        c = np.concatenate([c, np.zeros((-c.size) % k)]).reshape(-1, k).sum(axis=1)
    marks = _SPARK_ASCII if ascii else _SPARK
    lv = np.where(c > 0, np.maximum(1, np.round(c / c.max() * (len(marks) - 1))), 0).astype(int)
    return "".join(marks[i] for i in lv)


def _nums(*xs) -> str:
    """Numbers right-aligned in columns of 10, always at least one space apart."""
    return "".join(f" {fmt_num(x):>9}" for x in xs)


def _stat_line(label: str, s: dict | None, unit: str, ascii: bool) -> str:
    if s is None:
        return f"  {label:<14}{'(absent)':>10}"
    spark = sparkline((s.get("hist") or {}).get("counts", []), ascii=ascii, width=24)
    bad = f"  ({fmt_num(s['nonFinite'])} non-finite)" if s.get("nonFinite") else ""
    return (f"  {label:<14}{_nums(s['min'], s['mean'], s['std'], s['max'])}   "
            f"{spark:<24}{unit if spark else ''}{bad}").rstrip()


def _head_lines(f: dict) -> list[str]:
    files = f["files"]
    comp = ", ".join(f"{k} {v['codec']}" for k, v in files["compression"].items()) or "none"
    ck = files["checksums"]
    lines = [
        f"{'batch':<15}{f['name']}  ({f['path']})",
        f"{'created':<15}{f['createdAt'] or '-'}   format v{f['formatVersion']}"
        + (f"   {f['producer']}" if f["producer"] else "")
        + (f"   {f['kind']} of {f['parts']} parts" if f["kind"] != "batch" else "")
        + ("   (origin-format meta.json)" if f["origin"] else ""),
        f"{'transitions':<15}{fmt_num(f['transitions'])}",
        f"{'episodes':<15}{fmt_num(f['episodes'])}  (truncated by a time limit: "
        f"{fmt_num(f['truncatedEpisodes'])})",
        f"{'layout':<15}obsDim {f['obsDim']}; {f['maskDim']} mask columns for "
        f"{f['numActions']} actions",
        f"{'columns':<15}{', '.join(f['columns'])}",
        f"{'on disk':<15}{fmt_bytes(files['totalBytes'])}"
        + (f"  ({fmt_num(round(files['bytesPerTransition']))} bytes/transition)"
           if files["bytesPerTransition"] else "")
        + f"; checksums in {ck['parts']} of {ck['of']} parts; compression: {comp}",
    ]
    return lines


def _action_lines(f: dict) -> list[str]:
    a, total = f["actions"], max(f["actions"]["total"], 1)
    lines = [f"{'actions':<15}{fmt_num(a['used'])} of {fmt_num(a['numActions'])} ids chosen; "
             f"{fmt_num(a['outOfRange'])} out of range; {fmt_num(a['illegal'])} illegal under "
             f"their mask"]
    items = [f"#{i} {fmt_pct(c / total)}" for i, c in a["top"]]
    for k in range(0, len(items), 8):
        lines.append(f"  {'top' if k == 0 else '':<13}" + "  ".join(items[k:k + 8]))
    if a["otherActions"]:
        lines.append(f"  {'other':<13}{fmt_num(a['otherActions'])} ids, "
                     f"{fmt_pct(a['otherCount'] / total)} of the choices")
    return lines


def _obs_lines(f: dict) -> list[str]:
    o = f["observations"]
    src = "spec fields" if o["source"] == "spec" else "column blocks (no spec)"
    kinds = any(r["kind"] for r in o["fields"])
    cut = lambda t, n: t if len(t) <= n else t[:n - 1] + "~"  # noqa: E731
    lines = [f"{'observations':<15}{f['obsDim']} floats, {len(o['fields'])} {src}; "
             f"{fmt_num(o['constantColumns'])} constant columns"
             + (f"; {fmt_num(o['nonFinite'])} non-finite values" if o["nonFinite"] else ""),
             f"  {'field':<14}{'kind' if kinds else '':<{13 if kinds else 0}}{'columns':>11}"
             + "".join(f" {t:>9}" for t in ("min", "mean", "std", "max")) + "   zero  const"]
    for r in o["fields"]:
        kind = f"{cut(r['kind'], 12):<13}" if kinds else ""
        cols = f"{r['start']}-{r['stop'] - 1}"
        lines.append(f"  {cut(r['name'], 14):<14}{kind}{cols:>11}"
                     f"{_nums(r['min'], r['mean'], r['std'], r['max'])}"
                     f"{fmt_pct(r['zeroFraction'], 0):>7}{r['constantColumns']:>7}")
    return lines


def format_figures(figures: dict, *, ascii: bool = False) -> str:
    """The figures of :func:`batch_figures` as aligned plain text (what ``fastrl info`` prints):
    the batch, its counts and size, a min/mean/std/max table with a one-line histogram per
    quantity, the most chosen actions, per-field observation statistics and the files.
    ``ascii=True`` draws the histograms with ASCII characters only."""
    f = figures
    lg = f["legalActions"]
    lines = _head_lines(f) + [
        "", f"  {'':<14}" + "".join(f" {t:>9}" for t in ("min", "mean", "std", "max"))
        + "   distribution",
        _stat_line("episode length", f["episodeLength"], "  steps", ascii),
        _stat_line("episode return", f["episodeReturn"], "", ascii),
        _stat_line("reward / step", f["reward"], "", ascii),
        _stat_line("legal / step", lg, f"  {fmt_pct(lg['density'])} of the actions", ascii),
    ]
    if f["values"] is not None:
        lines.append(_stat_line("value", f["values"], "", ascii))
    if f["logprobs"] is not None:
        lines.append(_stat_line("log-prob", f["logprobs"], "  nats", ascii))
    lines += [""] + _action_lines(f) + [""] + _obs_lines(f) + [""] + _file_lines(f)
    return "\n".join(lines)


def _file_lines(f: dict, show: int = 6) -> list[str]:
    files = f["files"]
    tot = max(files["totalBytes"], 1)
    cells = [f"{x['name'] + (' x' + str(x['count']) if x['count'] > 1 else ''):<24}"
             f"{fmt_bytes(x['bytes']):>10} {fmt_pct(x['bytes'] / tot, 0):>4}"
             for x in files["files"][:show]]
    rest = len(files["files"]) - show
    if rest > 0:
        cells.append(f"+ {rest} more, {fmt_bytes(sum(x['bytes'] for x in files['files'][show:]))}")
    return [f"{'files' if k == 0 else '':<15}" + "   ".join(cells[k:k + 2])
            for k in range(0, len(cells), 2)]


# -- SVG -------------------------------------------------------------------------------------

def esc(s) -> str:
    """``s`` as HTML text or attribute value (quotes escaped too)."""
    return html.escape(str(s), quote=True)


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About ``n`` round tick values inside ``[lo, hi]`` (steps 1, 2, 2.5 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1, round(step))
    start = math.ceil(lo / step - 1e-9) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def tick_label(x: float) -> str:
    """Short axis label: 1.5k, 2M, 0.25, -3."""
    ax = abs(x)
    for unit, k in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if ax >= k:
            return f"{x / k:.3g}{unit}"
    s = f"{x:.3g}"
    return "0" if s in ("-0", "0.0") else s


class Plot:
    """A chart frame of ``w`` x ``h`` px with margins; maps data to pixels and collects SVG."""

    def __init__(self, w=520, h=230, left=58, right=14, top=12, bottom=46, label=""):
        self.w, self.h, self.l, self.r, self.t, self.b = w, h, left, right, top, bottom
        self.parts = [f'<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
                      f'role="img" aria-label="{esc(label)}">']

    @property
    def pw(self):
        return self.w - self.l - self.r

    @property
    def ph(self):
        return self.h - self.t - self.b

    def x(self, v, lo, hi):
        return self.l + (v - lo) / (hi - lo) * self.pw if hi > lo else self.l + self.pw / 2

    def y(self, v, top):
        return self.t + self.ph - (v / top * self.ph if top else 0)

    def add(self, s: str):
        self.parts.append(s)

    def y_axis(self, top: float, label: str):
        """Horizontal grid lines and labels from 0 to ``top``, and the rotated axis label."""
        for v in nice_ticks(0, top, 4, integer=top >= 4):
            y = self.y(v, top)
            self.add(f'<line class="grid" x1="{self.l}" x2="{self.w - self.r}" y1="{y:.1f}" '
                     f'y2="{y:.1f}"/><text class="tick" x="{self.l - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{esc(tick_label(v))}</text>')
        cy = self.t + self.ph / 2
        self.add(f'<text class="axis-label" x="14" y="{cy:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {cy:.1f})">{esc(label)}</text>')

    def x_axis(self, lo: float, hi: float, label: str, integer: bool = False):
        """Baseline, ticks with labels between ``lo`` and ``hi``, and the axis label."""
        base = self.t + self.ph
        self.add(f'<line class="axis" x1="{self.l}" x2="{self.w - self.r}" y1="{base}" '
                 f'y2="{base}"/>')
        for v in nice_ticks(lo, hi, max(2, self.pw // 80), integer):
            x = self.x(v, lo, hi)
            self.add(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{base}" '
                     f'y2="{base + 4}"/><text class="tick" x="{x:.1f}" y="{base + 16}" '
                     f'text-anchor="middle">{esc(tick_label(v))}</text>')
        self.add(f'<text class="axis-label" x="{self.l + self.pw / 2:.1f}" y="{self.h - 6}" '
                 f'text-anchor="middle">{esc(label)}</text>')

    def svg(self) -> str:
        return "".join(self.parts) + "</svg>"


def _empty_chart(label: str, w=520, h=230) -> str:
    return (f'<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{esc(label)}"><text class="tick" x="{w / 2}" y="{h / 2}" '
            f'text-anchor="middle">no data</text></svg>')


def _bin_text(lo: float, hi: float, integer: bool) -> str:
    if integer:
        a, b = math.ceil(lo), math.floor(hi)
        return fmt_num(a) if a == b else f"{fmt_num(a)}–{fmt_num(b)}"
    return f"{fmt_num(lo)} to {fmt_num(hi)}"


def svg_histogram(hist: dict, *, xlabel: str, ylabel: str, unit: str = "", w=500,
                  h=230) -> str:
    """A histogram (``{"edges", "counts", "integer"}``) as an SVG column chart with axes; each
    bar has a tooltip with its range and count."""
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if not counts or not sum(counts):
        return _empty_chart(xlabel, w, h)
    p = Plot(w, h, label=f"histogram of {xlabel}")
    lo, hi, top = edges[0], edges[-1], max(nice_ticks(0, max(counts), 4)[-1], max(counts))
    p.y_axis(top, ylabel)
    gap = 1 if p.pw / len(counts) > 4 else 0
    for a, b, c in zip(edges[:-1], edges[1:], counts):
        x0, x1 = p.x(a, lo, hi), p.x(b, lo, hi)
        y = min(p.y(c, top), p.t + p.ph - 1.5) if c else p.y(0, top)  # a count is never invisible
        tip = f"{_bin_text(a, b, hist.get('integer'))}{unit}: {fmt_num(c)} {ylabel}"
        p.add(f'<rect class="bar" x="{x0 + gap / 2:.1f}" y="{y:.1f}" '
              f'width="{max(x1 - x0 - gap, 0.8):.1f}" height="{p.t + p.ph - y:.1f}">'
              f'<title>{esc(tip)}</title></rect>')
    p.x_axis(lo, hi, xlabel, bool(hist.get("integer")))
    return p.svg()


def svg_top_actions(a: dict, w=500) -> str:
    """Horizontal bars: the most chosen actions and, last, all the other actions together."""
    rows = [(f"#{i}", c, "bar") for i, c in a["top"]]
    if not rows:
        return _empty_chart("actions", w, 120)
    total, big = max(a["total"], 1), max(c for _, c, _ in rows)
    if a["otherActions"]:  # summed: shown as text, its bar would flatten the others
        rows.append((f"{fmt_num(a['otherActions'])} others", 0, "bar2"))
    rh, left, h = 17, 92, 17 * len(rows) + 30
    pw = w - left - 110
    out = [f'<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="most chosen actions">']
    for k, (label, c, cls) in enumerate(rows):
        y, bw = 6 + k * rh, max(c / big * pw, 1)
        if not c:
            out.append(f'<text class="tick" x="{left - 8}" y="{y + 12}" text-anchor="end">'
                       f'{esc(label)}</text><text class="val" x="{left}" y="{y + 12}">'
                       f'{esc(fmt_num(a["otherCount"]))} steps together '
                       f'({esc(fmt_pct(a["otherCount"] / total))})</text>')
            continue
        out.append(f'<text class="tick" x="{left - 8}" y="{y + 12}" text-anchor="end">'
                   f'{esc(label)}</text><rect class="{cls}" x="{left}" y="{y + 2}" '
                   f'width="{bw:.1f}" height="{rh - 4}"><title>{esc(label)}: {fmt_num(c)} '
                   f'steps ({fmt_pct(c / total)})</title></rect><text class="val" '
                   f'x="{left + bw + 6:.1f}" y="{y + 12}">{esc(fmt_num(c))} '
                   f'({esc(fmt_pct(c / total))})</text>')
    out.append(f'<text class="axis-label" x="{left + pw / 2:.1f}" y="{h - 6}" '
               f'text-anchor="middle">steps on which the action was chosen</text></svg>')
    return "".join(out)


def svg_action_strip(a: dict, w=1080, h=210) -> str:
    """Share of the choices (bars) and share of the legal slots (outline) per action-id bin:
    where the policy concentrates relative to what the game allows."""
    s = a["strip"]
    chosen, legal = np.asarray(s["chosen"], float), np.asarray(s["legal"], float)
    if not chosen.sum() and not legal.sum():
        return _empty_chart("action ids", w, h)
    cs, ls = chosen / max(chosen.sum(), 1), legal / max(legal.sum(), 1)
    p = Plot(w, h, label="chosen and legal share per action id")
    top = max(nice_ticks(0, max(cs.max(), ls.max()), 4)[-1], cs.max(), ls.max())
    p.y_axis(top, "share")
    n, wd = len(cs), s["binWidth"]
    for k in range(n):
        x0, x1 = p.x(k, 0, n), p.x(k + 1, 0, n)
        ids = f"#{k * wd}" if wd == 1 else f"#{k * wd}–{min((k + 1) * wd, a['numActions']) - 1}"
        tip = f"{ids}: chosen {fmt_pct(cs[k], 2)}, legal {fmt_pct(ls[k], 2)}"
        p.add(f'<rect class="bar" x="{x0:.2f}" y="{p.y(cs[k], top):.1f}" '
              f'width="{max(x1 - x0, 0.6):.2f}" height="{p.t + p.ph - p.y(cs[k], top):.1f}">'
              f'<title>{esc(tip)}</title></rect>')
    pts = " ".join(f"{p.x(k + d, 0, n):.2f},{p.y(ls[k], top):.1f}" for k in range(n)
                   for d in (0, 1))
    p.add(f'<polyline class="line2" points="{pts}"/>')
    p.x_axis(0, a["numActions"] if wd > 1 else n, "action id", True)
    return p.svg()


def _color(t: float, hue: str) -> str:
    """A fill for ``t`` in [-1, 1] (diverging "div") or [0, 1] ("seq", "gray")."""
    t = 0.0 if t is None or not math.isfinite(t) else max(-1.0, min(1.0, t))
    if hue == "div":
        base = (203, 24, 29) if t > 0 else (33, 102, 172)
    else:
        base = (8, 81, 156) if hue == "seq" else (60, 60, 60)
    a = abs(t)
    r, g, b = (round(247 + (c - 247) * a) for c in base)
    return f"#{r:02x}{g:02x}{b:02x}"


def svg_obs_strip(o: dict, obs_dim: int, w=1080) -> str:
    """Three heat rows over the observation columns (grouped into at most 512 bins): mean
    (blue < 0 < red, scaled by the largest |mean|), std (scaled by the largest std) and fraction
    of zeros; field boundaries and names above."""
    s = o["strip"]
    n, wd = len(s["mean"]), s["binWidth"]
    if not n or all(m is None for m in s["mean"]):
        return _empty_chart("observation columns", w, 120)
    left, right, top, rh = 80, 14, 30, 20
    pw, h = w - left - right, 30 + 3 * 20 + 40
    xs = lambda c: left + c / obs_dim * pw  # noqa: E731
    vals = lambda k: [v for v in s[k] if v is not None]  # noqa: E731
    mm, sm = max(map(abs, vals("mean")), default=0) or 1, max(vals("std"), default=0) or 1
    out = [f'<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="observation columns" shape-rendering="crispEdges">']
    rows = (("mean", "mean", lambda v: v / mm, "div"), ("std", "std", lambda v: v / sm, "seq"),
            ("zero", "zeroFraction", lambda v: v, "gray"))
    for r, (label, key, norm, hue) in enumerate(rows):
        y = top + r * rh
        out.append(f'<text class="tick" x="{left - 8}" y="{y + 14}" text-anchor="end">'
                   f'{label}</text>')
        for k, v in enumerate(s[key]):
            a, b = k * wd, min((k + 1) * wd, obs_dim)
            cols = f"column {a}" if b == a + 1 else f"columns {a}–{b - 1}"
            fill = "#ffffff" if v is None else _color(norm(v), hue)
            shown = fmt_pct(v) if key == "zeroFraction" else fmt_num(v)
            out.append(f'<rect x="{xs(a):.2f}" y="{y}" width="{max(xs(b) - xs(a), 0.5):.2f}" '
                       f'height="{rh - 2}" fill="{fill}"><title>{esc(cols)}: {label} '
                       f'{esc(shown)}</title></rect>')
    out += [f'<rect class="frame" x="{left}" y="{top + r * rh}" width="{pw}" height="{rh - 2}"/>'
            for r in range(len(rows))]
    for f in o["fields"]:
        x = xs(f["start"])
        out.append(f'<line class="sep" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 14}" '
                   f'y2="{top + 3 * rh}"/>')
        if xs(f["stop"]) - x > 7 * len(f["name"]) + 6:  # the name fits above its columns
            out.append(f'<text class="tick" x="{x + 4:.1f}" y="{top - 5}">{esc(f["name"])}</text>')
    base = top + 3 * rh
    for v in nice_ticks(0, obs_dim, 10, True):
        out.append(f'<text class="tick" x="{xs(v):.1f}" y="{base + 14}" text-anchor="middle">'
                   f'{esc(tick_label(v))}</text>')
    out.append(f'<text class="axis-label" x="{left + pw / 2:.1f}" y="{h - 6}" '
               f'text-anchor="middle">observation column (float index)</text></svg>')
    return "".join(out)


def svg_range(r: dict, w=170, h=16) -> str:
    """A field's spread on its own [min, max] scale: the line spans min..max, the box
    mean ± std, the tick the mean."""
    if r["min"] is None:
        return ""
    lo, hi, m, sd = r["min"], r["max"], r["mean"], r["std"]
    x = lambda v: 4 + ((v - lo) / (hi - lo) * (w - 8) if hi > lo else (w - 8) / 2)  # noqa: E731
    a, b = x(max(lo, m - sd)), x(min(hi, m + sd))
    tip = f"min {fmt_num(lo)}, mean {fmt_num(m)} ± {fmt_num(sd)}, max {fmt_num(hi)}"
    return (f'<svg class="range" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
            f'<line class="axis" x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="8" y2="8"/>'
            f'<rect class="bar2" x="{a:.1f}" y="3" width="{max(b - a, 1):.1f}" height="10"/>'
            f'<line class="meanline" x1="{x(m):.1f}" x2="{x(m):.1f}" y1="1" y2="15"/>'
            f'<title>{esc(tip)}</title></svg>')


# -- HTML ------------------------------------------------------------------------------------

_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--bg:#fff;--card:#f6f8fa;--line:#d1d9e0;--bar:#3b6fd4;
--bar2:#9db8ea;--line2:#d4762c;--warn:#9a6700;--warnbg:#fff8c5;--bad:#cf222e}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;
--card:#151b23;--line:#3d444d;--bar:#4f8ef7;--bar2:#2f4f86;--line2:#f0883e;--warn:#d29922;
--warnbg:#2b2111}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1140px;margin:0 auto;padding:22px 28px 40px}
h1{font-size:24px;margin:0 0 2px;word-break:break-all}
h2{font-size:17px;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
.sub{color:var(--muted);font-size:13px;word-break:break-all}
.badge{display:inline-block;border:1px solid var(--line);border-radius:10px;padding:0 8px;
margin-left:6px;font-size:12px;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:10px;
margin-top:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:9px 13px}
.card .k{color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.05em}
.card .v{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card .d{color:var(--muted);font-size:12px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:14px}
.grid3{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:14px}
svg.chart{display:block;max-width:100%;height:auto}
figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:10px 12px;overflow-x:auto}
figcaption{font-weight:600;margin-bottom:2px}
.note{color:var(--muted);font-size:12px;margin:0 0 6px}
.checks{margin-top:12px;font-size:13px}
.ok{color:var(--muted)}.warn{background:var(--warnbg);color:var(--warn);border-radius:6px;
padding:6px 10px;margin-top:8px}
svg .bar{fill:var(--bar)}svg .bar2{fill:var(--bar2)}svg .grid{stroke:var(--line);
stroke-dasharray:2 3}svg .axis{stroke:var(--muted)}svg .sep{stroke:var(--fg);stroke-width:1}
svg .tick,svg .val{fill:var(--muted);font-size:11px}svg .axis-label{fill:var(--fg);font-size:12px}
svg .line2{fill:none;stroke:var(--line2);stroke-width:2}
svg .meanline{stroke:var(--fg);stroke-width:2}svg .frame{fill:none;stroke:var(--line)}
.legend span{display:inline-block;width:12px;height:10px;margin:0 4px 0 12px;
vertical-align:middle}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;vertical-align:middle}
th{color:var(--muted);font-weight:600;font-size:12px}
th.l,td.l{text-align:left}
td code{font-size:12px;word-break:break-all;white-space:pre-wrap}
.share{display:inline-block;height:9px;background:var(--bar);border-radius:2px;
vertical-align:middle}
footer{margin-top:32px;color:var(--muted);font-size:12px}
"""


def _card(key: str, value: str, detail: str = "") -> str:
    return (f'<div class="card"><div class="k">{esc(key)}</div><div class="v">{esc(value)}</div>'
            f'<div class="d">{esc(detail)}</div></div>')


def _figure(caption: str, note: str, body: str) -> str:
    return (f'<figure><figcaption>{esc(caption)}</figcaption><p class="note">{esc(note)}</p>'
            f'{body}</figure>')


def _range_text(s: dict | None, unit: str = "") -> str:
    if not s or s.get("min") is None:
        return "no values"
    return f"min {fmt_num(s['min'])} · mean {fmt_num(s['mean'])} · max {fmt_num(s['max'])}{unit}"


def _header_html(f: dict) -> str:
    badges = [f["kind"] + (f" · {f['parts']} parts" if f["kind"] != "batch" else "")]
    if f["origin"]:
        badges.append("origin-format meta.json")
    bits = [f"created {f['createdAt'] or '?'}", f"format v{f['formatVersion']}"]
    if f["producer"]:
        bits.append(f"written by {f['producer']}")
    return (f'<header><h1>{esc(f["name"])}'
            + "".join(f'<span class="badge">{esc(b)}</span>' for b in badges)
            + f'</h1><div class="sub">{esc(f["path"])}</div>'
            f'<div class="sub">{esc(" · ".join(bits))}</div></header>')


def _cards_html(f: dict) -> str:
    el, er, lg, a, fl = (f["episodeLength"], f["episodeReturn"], f["legalActions"],
                         f["actions"], f["files"])
    comp = ", ".join(sorted({v["codec"] for v in fl["compression"].values()})) or "none"
    ck = fl["checksums"]
    cards = [
        _card("Transitions", fmt_num(f["transitions"]), f"{f['obsDim']} obs floats each"),
        _card("Episodes", fmt_num(f["episodes"]),
              f"{fmt_num(f['truncatedEpisodes'])} truncated by a time limit"),
        _card("Episode length", fmt_num(el["mean"], 3), _range_text(el, " steps")),
        _card("Episode return", fmt_num(er["mean"], 3), _range_text(er)),
        _card("Actions used", f"{fmt_num(a['used'])} / {fmt_num(a['numActions'])}",
              f"{f['maskDim']} mask columns"),
        _card("Legal per step", fmt_num(lg["mean"], 3),
              f"{fmt_pct(lg['density'])} of the actions" if lg["mean"] is not None else "no steps"),
        _card("On disk", fmt_bytes(fl["totalBytes"]),
              f"{fmt_num(round(fl['bytesPerTransition']))} bytes / transition"
              if fl["bytesPerTransition"] else "empty batch"),
        _card("Checksums", "CRC-32" if ck["parts"] == ck["of"] and ck["of"] else
              ("partial" if ck["parts"] else "none"), f"compression: {comp}"),
    ]
    return '<section class="cards">' + "".join(cards) + "</section>"


def _checks_html(f: dict) -> str:
    a, o = f["actions"], f["observations"]
    bad = [(a["outOfRange"], "actions out of range"),
           (a["illegal"], "actions illegal under their own mask"),
           (o["nonFinite"], "non-finite observation values")]
    for key, label in (("reward", "rewards"), ("values", "values"), ("logprobs", "log-probs")):
        if f[key] is not None and f[key]["nonFinite"]:
            bad.append((f[key]["nonFinite"], f"non-finite {label}"))
    found = [f"{fmt_num(n)} {label}" for n, label in bad if n]
    if found:
        return ('<div class="checks warn">Found: ' + esc("; ".join(found))
                + esc(". Run fastrl validate for the details.") + "</div>")
    return ('<div class="checks ok">No action out of range or illegal under its mask, no '
            'non-finite value. (Checksums are not recomputed here: fastrl validate does.)</div>')


def _episodes_html(f: dict) -> str:
    el, er = f["episodeLength"], f["episodeReturn"]
    return ('<h2>Episodes</h2><section class="grid2">'
            + _figure("Episode length", _range_text(el, " steps"),
                      svg_histogram(el["hist"], xlabel="episode length (steps)",
                                    ylabel="episodes", unit=" steps"))
            + _figure("Episode return", _range_text(er) + " (sum of an episode's rewards)",
                      svg_histogram(er["hist"], xlabel="episode return", ylabel="episodes"))
            + "</section>")


def _actions_html(f: dict) -> str:
    a, lg = f["actions"], f["legalActions"]
    wd = a["strip"]["binWidth"]
    legend = ('<p class="note legend"><span style="background:var(--bar)"></span>share of the '
              'choices<span style="background:var(--line2);height:3px"></span>share of the '
              f'legal slots (mask ones), per action id{f" bin of {wd}" if wd > 1 else ""}</p>')
    return ('<h2>Actions</h2><section class="grid2">'
            + _figure(f"Most chosen actions (top {len(a['top'])})",
                      f"{fmt_num(a['used'])} of {fmt_num(a['numActions'])} action ids were "
                      f"chosen at least once", svg_top_actions(a))
            + _figure("Legal actions per step",
                      f"{_range_text(lg)}; {fmt_pct(lg['density'])} of the "
                      f"{fmt_num(a['numActions'])} actions legal on average",
                      svg_histogram(lg["hist"], xlabel="legal actions at the step",
                                    ylabel="steps", unit=" legal"))
            + '</section><section style="margin-top:14px">'
            + _figure("Chosen vs legal, across action ids",
                      "Bars above the line: chosen more often than legal; below: avoided.",
                      legend + svg_action_strip(a))
            + "</section>")


def _steps_html(f: dict) -> str:
    """Per-step float columns: reward, and the policy's value and log-prob when present."""
    charts = (("reward", "Reward per step", "reward", ""),
              ("values", "Value estimate", "value estimate", ""),
              ("logprobs", "Log-probability of the chosen action", "log-probability (nats)",
               " nats"))
    figs = [_figure(title, _range_text(f[key], unit),
                    svg_histogram(f[key]["hist"], xlabel=xlabel, ylabel="steps", w=340, h=220))
            for key, title, xlabel, unit in charts if f[key] is not None]
    return '<h2>Per step</h2><section class="grid3">' + "".join(figs) + "</section>"


def _obs_row(r: dict, kinds: bool) -> str:
    cells = [(esc(r["name"]), "l")] + ([(esc(r["kind"]), "l")] if kinds else []) + [
        (esc(f"{r['start']}–{r['stop'] - 1}" if r["stop"] > r["start"] + 1 else r["start"]), ""),
        *((esc(fmt_num(r[k])), "") for k in ("min", "mean", "std", "max")),
        (esc(fmt_pct(r["zeroFraction"])), ""),
        (esc(f"{r['constantColumns']} / {r['stop'] - r['start']}"), ""), (svg_range(r), "l")]
    return "<tr>" + "".join(f'<td class="{c}">{v}</td>' for v, c in cells) + "</tr>"


def _obs_html(f: dict) -> str:
    o = f["observations"]
    src = ("field of the observation spec (meta.json obsSlices)" if o["source"] == "spec"
           else "block of columns (the batch has no observation spec)")
    kinds = any(r["kind"] for r in o["fields"])
    head = "".join(f'<th class="{c}">{esc(t)}</th>' for t, c in (
        [("field", "l")] + ([("kind", "l")] if kinds else []) + [
            ("columns", ""), ("min", ""), ("mean", ""), ("std", ""), ("max", ""),
            ("zeros", ""), ("constant cols", ""), ("spread: min · mean ± std · max", "l")]))
    return (f'<h2>Observations</h2><p class="note">{esc(f["obsDim"])} floats per step, '
            f'summarized per {esc(src)}. A constant column holds one value in every step.</p>'
            + _figure("Observation columns at a glance",
                      "Per column: mean (blue negative, red positive, scaled to the largest "
                      "|mean|), standard deviation (scaled to the largest) and fraction of "
                      "zeros; hover for values.", svg_obs_strip(o, f["obsDim"]))
            + f'<figure style="margin-top:14px"><table><thead><tr>{head}</tr></thead><tbody>'
            + "".join(_obs_row(r, kinds) for r in o["fields"]) + "</tbody></table></figure>")


def _files_html(f: dict) -> str:
    fl = f["files"]
    tot = max(fl["totalBytes"], 1)
    rows = []
    for x in fl["files"]:
        share = x["bytes"] / tot
        rows.append(f'<tr><td class="l"><code>{esc(x["name"])}</code></td>'
                    f'<td>{esc(x["count"])}</td><td>{esc(fmt_bytes(x["bytes"]))}</td>'
                    f'<td class="l"><span class="share" style="width:{160 * share:.0f}px">'
                    f'</span> {esc(fmt_pct(share))}</td></tr>')
    ratio = lambda v: (fmt_num(v["rawBytes"] / v["storedBytes"], 3) + "x"  # noqa: E731
                       if v["storedBytes"] else "-")
    comp = "".join(f'<tr><td class="l">{esc(k)}</td><td class="l">{esc(v["codec"])}</td>'
                   f'<td>{esc(fmt_bytes(v["rawBytes"]))}</td>'
                   f'<td>{esc(fmt_bytes(v["storedBytes"]))}</td><td>{esc(ratio(v))}</td></tr>'
                   for k, v in fl["compression"].items())
    out = ('<h2>Files</h2><section class="grid2"><figure><figcaption>Bytes on disk</figcaption>'
           '<table><thead><tr><th class="l">file</th><th>files</th><th>bytes</th>'
           '<th class="l">share</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
           "</figure>")
    if comp:
        out += ('<figure><figcaption>Compressed columns</figcaption><table><thead><tr>'
                '<th class="l">column</th><th class="l">codec</th><th>raw</th><th>stored</th>'
                '<th>ratio</th></tr></thead><tbody>' + comp + "</tbody></table></figure>")
    return out + "</section>"


def _meta_html(f: dict) -> str:
    rows = "".join(f'<tr><td class="l"><code>{esc(k)}</code></td><td class="l"><code>{esc(v)}'
                   f'</code></td></tr>' for k, v in f["meta"])
    return ('<h2>meta.json</h2><figure><table><tbody>' + rows + '</tbody></table>'
            '<p class="note">Column list, checksums, codecs, observation spec and shard list '
            'omitted.</p></figure>')


def render_html(figures: dict) -> str:
    """One self-contained HTML page (inline CSS and SVG; no script, no network, no external
    font) of the figures from :func:`batch_figures`. Every string is escaped. The markup is
    also well-formed XML."""
    f = figures
    charts = (_checks_html(f) + _episodes_html(f) + _actions_html(f) + _steps_html(f)
              + _obs_html(f)) if f["transitions"] else \
        '<div class="checks warn">This batch holds no transitions: no data to draw.</div>'
    body = (_header_html(f) + _cards_html(f) + charts + _files_html(f) + _meta_html(f)
            + f'<footer>Made by fastrl {esc(f["fastrl"])} ({esc(f["backend"])}) on '
              f'{esc(f["generatedAt"])} with fastrl report. Self-contained: no script, no '
              f'network.</footer>')
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
            f'<title>{esc(f["name"])} · fastrl report</title><style>{_CSS}</style></head>'
            f'<body><main>{body}</main></body></html>\n')


# -- writing ---------------------------------------------------------------------------------

def default_report_path(path) -> Path:
    """``<current directory>/<batch name>-report.html``. Not beside the batch: a file in the
    data root could be taken for a batch by scripts that list ``batch_*`` there."""
    return Path.cwd() / f"{Path(path).resolve().name}-report.html"


def write_report(path, out=None, **kw) -> Path:
    """Compute the figures of the batch at ``path`` and write the page to ``out`` (a file, or an
    existing folder to hold ``<batch name>-report.html``; default :func:`default_report_path`),
    via a temporary file renamed into place. Refuses (FastrlError) to write inside the batch
    folder. ``kw`` go to :func:`batch_figures`. Returns the page's path."""
    src = Path(path).resolve()
    out = default_report_path(path) if out is None else Path(out)
    if out.is_dir():
        out = out / f"{src.name}-report.html"
    target = out.resolve()
    if target == src or src in target.parents:
        raise FastrlError(f"{out}: refusing to write the report inside the batch folder {src}; "
                          f"choose another place with -o")
    page = render_html(batch_figures(path, **kw))
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
