"""d3rlpy: the arrays ``d3rlpy.dataset.MDPDataset`` takes."""

from __future__ import annotations

import numpy as np

from ._common import final_obs_of, open_source, truncated_of


def d3rlpy_arrays(source, *, final_obs: bool = True) -> dict:
    """dict(observations (N, obsDim) float32, actions (N,) int32, rewards (N,) float32,
    terminals (N,) float32, timeouts (N,) float32) for ``fastrl.open_dataset(source)``: exactly
    the keyword arguments of ``d3rlpy.dataset.MDPDataset``.

    ``terminals = dones & ~truncated``, ``timeouts = truncated`` (D4RL/Minari convention).

    d3rlpy keeps no observation after an episode's last step: it learns a terminal episode's
    last step with a zero next observation (right: nothing follows), but drops the last step of
    a timeout episode, which has no next observation to bootstrap from. With ``final_obs``
    (default) and a batch that stores final observations, each timeout episode instead gets one
    extra row after its last step: observation = the stored final observation, action = the
    last action repeated, reward 0, and the timeout flag moves to that row. d3rlpy then learns
    every real step, the last one with the true next observation; the extra row itself is never
    learned as a transition (d3rlpy drops the last row of a timeout episode), but it shows up
    as a step of the episode for Transformer-style algorithms that slice whole trajectories
    (Decision Transformer): pass ``final_obs=False`` for those. N is then ``count`` plus the
    number of such episodes, and the columns are copies.

    Otherwise (``final_obs=False``, or no final observations, or no timeout episodes) N is the
    batch's ``count`` and, for a plain batch, observations/actions/rewards are the
    memory-mapped columns themselves (no copy); several parts are concatenated.
    """
    ds = open_source(source)
    out = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    for b in ds.parts:
        dones = np.asarray(b.dones) != 0
        trunc = truncated_of(b)
        obs, actions, rewards = b.obs, b.actions, b.rewards
        terminals = (dones & ~trunc).astype(np.float32)
        timeouts = trunc.astype(np.float32)
        fo = final_obs_of(b) if final_obs else None
        if fo is not None and trunc.any():
            ends = np.flatnonzero(trunc)                       # last rows of timeout episodes
            eps = np.searchsorted(np.asarray(b.episode_starts), ends, side="right") - 1
            at = ends + 1                                      # np.insert: before row ends+1
            obs = np.insert(np.asarray(obs), at, np.asarray(fo)[eps], axis=0)
            actions = np.insert(np.asarray(actions), at, np.asarray(actions)[ends])
            rewards = np.insert(np.asarray(rewards), at, np.float32(0))
            terminals = np.insert(terminals, at, np.float32(0))
            timeouts[ends] = 0
            timeouts = np.insert(timeouts, at, np.float32(1))
        for k, v in zip(out, (obs, actions, rewards, terminals, timeouts)):
            out[k].append(v)
    return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in out.items()}


def to_d3rlpy(source, *, final_obs: bool = True, **kwargs):
    """A ``d3rlpy.dataset.MDPDataset`` of the batch (needs d3rlpy); the arrays of
    :func:`d3rlpy_arrays` (``final_obs`` as there). Extra keyword arguments go to
    ``MDPDataset``; ``action_space`` defaults to ``ActionSpace.DISCRETE`` and ``action_size``
    to the batch's action count."""
    try:
        from d3rlpy.constants import ActionSpace
        from d3rlpy.dataset import MDPDataset
    except ImportError:
        raise ImportError("to_d3rlpy needs d3rlpy (pip install d3rlpy); d3rlpy_arrays() gives "
                          "the arrays without it") from None
    ds = open_source(source)
    kwargs.setdefault("action_space", ActionSpace.DISCRETE)
    kwargs.setdefault("action_size", max(b.n_actions for b in ds.parts))
    return MDPDataset(**d3rlpy_arrays(source, final_obs=final_obs), **kwargs)
