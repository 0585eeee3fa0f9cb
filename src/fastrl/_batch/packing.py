"""The one entry point to the packing kernels: checks the output buffers, runs the active kernel
(or a given one), and turns its status into an :class:`~fastrl.errors.EpisodeError`."""

from __future__ import annotations

import numpy as np

from .. import _kernels
from .. import _format as F
from .episode import Episode, step_error
from .._threads import num_threads

# Rows below which threads cost more than they save (an OpenMP region is ~microseconds).
_PARALLEL_MIN_ROWS = 8192


def allocate_columns(rows: int, obs_dim: int, mask_dim: int, *, values: bool, logprobs: bool,
                     truncated: bool = True) -> dict:
    """Output buffers for ``rows`` transitions: name -> little-endian array (uninitialized)."""
    cols = {}
    for name, (_, dtype, width) in F.ALL_COLUMNS.items():
        if (name == "values" and not values) or (name == "logprobs" and not logprobs) \
                or (name == "truncated" and not truncated):
            continue
        w = {"obsDim": obs_dim, "maskDim": mask_dim, None: None}[width]
        cols[name] = np.empty((rows, w) if w is not None else (rows,), dtype=dtype)
    return cols


def _check_out(cols: dict, rows_needed: int, n_actions: int):
    for name in ("obs", "actions", "rewards", "masks", "dones"):
        if name not in cols:
            raise ValueError(f"output column {name!r} missing")
    for name, arr in cols.items():
        if name not in F.ALL_COLUMNS:
            raise ValueError(f"unknown output column {name!r}")
        _, dtype, width = F.ALL_COLUMNS[name]
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or not arr.flags.c_contiguous \
                or not arr.flags.writeable:
            raise ValueError(f"output column {name!r} must be a writeable C-contiguous {dtype} array")
        if arr.ndim != (2 if width else 1) or arr.shape[0] < rows_needed:
            raise ValueError(f"output column {name!r} has shape {arr.shape}, needs {rows_needed} rows")
    if cols["obs"].shape[1] < 1 or cols["masks"].shape[1] < n_actions:
        raise ValueError("output obs/masks widths too small")


def pack(episodes: list[Episode], cols: dict, row0: int, n_actions: int, *, episode_base: int = 0,
         threads: int | None = None, impl=None, trusted: bool = False) -> int:
    """Pack checked episodes into rows ``row0 ..`` of ``cols``; return the number of rows written.

    ``episode_base`` is added to the episode index in error messages. ``impl`` overrides the
    active kernel module (differential tests). Raises EpisodeError for the first bad value.
    ``trusted``: the caller guarantees what the checks below re-verify (``Stager``: episodes
    from ``normalize_episode`` with the stager's own dims, buffers from ``allocate_columns``
    with room for them); only the row bound is checked then.
    """
    total = sum(ep.length for ep in episodes)
    if row0 < 0:
        raise ValueError("row0 must be >= 0")
    if trusted:
        if len(cols["dones"]) < row0 + total:
            raise ValueError("output columns too short")
    else:
        _check_episodes(episodes, cols, row0 + total, n_actions, episode_base)
    nthreads = num_threads(threads) if total >= _PARALLEL_MIN_ROWS else 1
    kernel = impl.pack_episodes if impl is not None else _kernels.pack_episodes
    e, code, step, col = kernel(
        list(episodes), cols["obs"], cols["actions"], cols["rewards"], cols["masks"],
        cols["dones"], cols.get("truncated"), cols.get("values"), cols.get("logprobs"),
        int(row0), int(n_actions), int(nthreads))
    if e >= 0:
        raise step_error(episodes[e], episode_base + e, code, step, col, n_actions)
    return total


def _check_episodes(episodes, cols, rows_needed, n_actions, episode_base):
    _check_out(cols, rows_needed, n_actions)
    obs_dim, mask_dim = cols["obs"].shape[1], cols["masks"].shape[1]
    for i, ep in enumerate(episodes):
        # The kernel trusts these; normalize_episode guarantees them, re-check cheaply anyway.
        if ep.obs is not None and (ep.obs.shape != (ep.length, obs_dim)
                                   or not ep.obs.flags.c_contiguous
                                   or ep.obs.dtype not in (np.float32, np.float64)):
            raise ValueError(f"episode {episode_base + i}: obs not normalized for obsDim {obs_dim}")
        if ep.mask is not None and (ep.mask.shape != (ep.length, n_actions)
                                    or ep.mask.dtype != np.uint8 or n_actions > mask_dim):
            raise ValueError(f"episode {episode_base + i}: mask not normalized")
        if ep.mask is None and (ep.legal_offsets is None
                                or ep.legal_offsets.shape != (ep.length + 1,)
                                or ep.legal_offsets[-1] != ep.legal_ids.shape[0]):
            raise ValueError(f"episode {episode_base + i}: legal ids not normalized")
        if (ep.values is None) != ("values" not in cols) or \
                (ep.logprobs is None) != ("logprobs" not in cols):
            raise ValueError(f"episode {episode_base + i}: values/logprobs columns disagree")
