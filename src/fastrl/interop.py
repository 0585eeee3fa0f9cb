"""Hand a batch to other RL libraries without copying the big columns.

``d3rlpy_arrays`` gives what ``d3rlpy.dataset.MDPDataset`` takes: observations, actions,
rewards, terminals and timeouts. ``terminals = dones & ~truncated`` and ``timeouts = truncated``
(the D4RL/Minari convention), so an episode cut by a time limit is not learned as terminal.
For a plain batch, observations/actions/rewards are the memory-mapped columns themselves
(no copy); sharded batches are concatenated.
"""

from __future__ import annotations

import numpy as np

from .dataset import open_dataset

__all__ = ["d3rlpy_arrays", "to_d3rlpy"]


def d3rlpy_arrays(source) -> dict:
    """dict(observations (N, obsDim) float32, actions (N,) int32, rewards (N,) float32,
    terminals (N,) float32, timeouts (N,) float32) for ``fastrl.open_dataset(source)``."""
    ds = open_dataset(source)
    if not ds.parts:
        raise ValueError(f"{source}: no transitions")

    def col(name):
        arrays = [getattr(b, name) for b in ds.parts]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    dones = np.asarray(col("dones"))
    trunc = np.concatenate([np.asarray(b.truncated) if b.truncated is not None
                            else np.zeros(b.count, np.uint8) for b in ds.parts])
    return {
        "observations": col("obs"),
        "actions": col("actions"),
        "rewards": col("rewards"),
        "terminals": ((dones != 0) & (trunc == 0)).astype(np.float32),
        "timeouts": (trunc != 0).astype(np.float32),
    }


def to_d3rlpy(source, **kwargs):
    """A ``d3rlpy.dataset.MDPDataset`` of the batch (needs d3rlpy). Extra keyword arguments go
    to ``MDPDataset`` (e.g. ``action_space=d3rlpy.constants.ActionSpace.DISCRETE``)."""
    try:
        from d3rlpy.dataset import MDPDataset
    except ImportError:
        raise ImportError("to_d3rlpy needs d3rlpy (pip install d3rlpy); d3rlpy_arrays() gives "
                          "the arrays without it") from None
    return MDPDataset(**d3rlpy_arrays(source), **kwargs)
