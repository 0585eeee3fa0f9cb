"""Small helpers shared by the converters (public names of fastrl only)."""

from __future__ import annotations

import numpy as np

from .._batch.meta import read_meta
from ..dataset import open_dataset
from ..errors import BatchFormatError


def open_source(source):
    """``fastrl.open_dataset(source)``, refusing a source without transitions."""
    ds = open_dataset(source)
    if not ds.parts:
        raise ValueError(f"{source}: no transitions")
    return ds


def final_obs_of(batch):
    """(episodes, obsDim) float32 final observations of one batch/shard, or None."""
    return getattr(batch, "final_obs", None)


def truncated_of(batch) -> np.ndarray:
    """The batch's truncated flags as a bool array (all False without the column)."""
    t = batch.truncated
    if t is None:
        return np.zeros(batch.count, bool)
    return np.asarray(t) != 0


def final_obs_kind(parts) -> str:
    """"final_obs" when every part stores final observations, "repeat_last" when none does,
    "mixed" otherwise."""
    have = [final_obs_of(b) is not None for b in parts]
    return "final_obs" if all(have) else "repeat_last" if not any(have) else "mixed"


def meta_json(folder) -> dict | None:
    """The parsed ``meta.json`` of a batch folder (docs/FORMAT.md), or None when unreadable."""
    try:
        return read_meta(folder)
    except BatchFormatError:
        return None
