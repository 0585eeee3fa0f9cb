"""Hand a batch to other RL libraries without copying the big columns.

``d3rlpy_arrays`` gives what ``d3rlpy.dataset.MDPDataset`` takes: observations, actions,
rewards, terminals and timeouts. ``terminals = dones & ~truncated`` and ``timeouts = truncated``
(the D4RL/Minari convention), so an episode cut by a time limit is not learned as terminal.
``to_minari`` writes a local Minari dataset (same convention; see its docstring for the mapping).
For a plain batch, observations/actions/rewards are the memory-mapped columns themselves
(no copy); sharded batches are concatenated.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np

from .dataset import open_dataset

__all__ = ["d3rlpy_arrays", "minari_episode_buffers", "to_d3rlpy", "to_minari"]


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


# --------------------------------------------------------------------------------------------
# Minari

_MINARI_NOTE = (
    "Converted from fastrl batches. fastrl stores T observations per episode (the state before "
    "each step) and not the observation after the final step, which Minari expects: each "
    "episode's last observation (index T) repeats observation T-1, so do not learn from it. "
    "terminations = dones & ~truncated; truncations = truncated (time limit). "
    "infos['action_mask'] (T+1, numActions) uint8 is the legal-action mask of each observation "
    "(1 = legal); its last row repeats row T-1 like the observation."
)

# Minari's reminders about optional metadata (author, code_permalink, eval_env, ...): to_minari
# exposes those arguments, so converting without them is a choice, not an accident.
_MINARI_NAGS = (r"`\w+` is set to None", r"env_spec is None")


def _import_minari(data_format):
    try:
        import minari
    except ImportError as e:
        raise ImportError("to_minari needs minari (pip install minari h5py pillow; or "
                          f"pip install \"fastrl[minari]\"): {e}") from None
    # Minari imports its storage backend (h5py or pyarrow, and Pillow, which minari 0.5.4
    # imports but does not declare) only when a dataset is written, after it has made the
    # dataset folder: import it now so a missing package fails before anything is created.
    try:
        from minari.dataset._storages import get_minari_storage
    except ImportError:  # private layout moved in another minari version: skip the pre-check
        return minari
    fmt = data_format or "hdf5"
    try:
        get_minari_storage(fmt)
    except KeyError:
        raise ValueError(f"minari has no data_format {fmt!r}") from None
    except ImportError as e:
        pkg = {"hdf5": "h5py", "arrow": "pyarrow", "parquet": "pyarrow"}.get(fmt, "")
        raise ImportError(f"minari's {fmt!r} storage cannot be imported ({e}); "
                          f"pip install {pkg} pillow".replace("  ", " ")) from None
    return minari


def _check_dataset_id(dataset_id):
    if not isinstance(dataset_id, str):
        raise TypeError(f"dataset_id must be a string, got {type(dataset_id).__name__}")
    try:
        from minari.dataset.minari_dataset import parse_dataset_id
    except ImportError:
        return
    try:
        version = parse_dataset_id(dataset_id)[2]
    except (ValueError, TypeError):  # TypeError: minari 0.5.4 on an id without "-v<n>"
        version = None
    if version is None:  # checked before Minari makes any folder for it
        raise ValueError(f"bad Minari dataset id {dataset_id!r}: it must look like "
                         "'[namespace/]name-v<version>', e.g. 'fastrl/mygame/bot-v0'")


def minari_episode_buffers(ds, action_space, observation_space, n_actions: int):
    """Yield one ``minari.data_collector.EpisodeBuffer`` per episode of the fastrl ``Dataset``
    ``ds`` (see :func:`to_minari` for the mapping)."""
    from minari.data_collector import EpisodeBuffer

    act_dtype = getattr(action_space, "dtype", None)
    obs_dtype = getattr(observation_space, "dtype", None)
    obs_shape = getattr(observation_space, "shape", None)
    if obs_shape is None or int(np.prod(obs_shape)) != ds.obs_dim:
        obs_shape = (ds.obs_dim,)  # e.g. a Dict space: the caller's business
    n = 0
    for b in ds.parts:
        for ep in b.episodes():
            T = len(ep)
            obs = np.empty((T + 1, ds.obs_dim),
                           dtype=ep.obs.dtype if obs_dtype is None else obs_dtype)
            obs[:T] = ep.obs
            obs[T] = ep.obs[T - 1]
            obs = obs.reshape((T + 1,) + tuple(obs_shape))
            mask = np.zeros((T + 1, n_actions), np.uint8)
            width = min(n_actions, ep.masks.shape[1])
            mask[:T, :width] = ep.masks[:, :width]
            mask[T] = mask[T - 1]
            dones = np.asarray(ep.dones) != 0
            trunc = (np.zeros(T, bool) if ep.truncated is None
                     else np.asarray(ep.truncated) != 0)
            actions = np.asarray(ep.actions)
            yield EpisodeBuffer(
                id=n,
                observations=obs,
                actions=actions.astype(act_dtype) if act_dtype is not None else actions.copy(),
                rewards=np.array(ep.rewards, dtype=np.float32),
                terminations=dones & ~trunc,
                truncations=trunc,
                infos={"action_mask": mask},
            )
            n += 1


def to_minari(source, dataset_id: str, *, env_id=None, observation_space=None,
              action_space=None, author=None, description=None, data_format=None,
              chunk_steps: int = 1 << 18, **kwargs):
    """Write ``fastrl.open_dataset(source)`` (a batch, a sharded batch, a root of batches or a
    list of them) as the local Minari dataset ``dataset_id`` and return it
    (``minari.MinariDataset``); ``minari.load_dataset(dataset_id)`` opens it later. Needs
    ``minari`` with a storage backend (``pip install minari h5py pillow``).

    The dataset goes under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``).
    ``dataset_id`` has Minari's form ``[namespace/]name-v<version>``; an existing dataset is
    never overwritten (``ValueError``).

    Mapping of each episode of T transitions:

    - ``observations`` (T+1, obsDim): fastrl keeps no observation after the final step, so the
      last one repeats observation T-1 (noted in the dataset's ``description`` and in its
      metadata key ``fastrl``). ``actions`` (T,), ``rewards`` (T,) float32.
    - ``terminations = dones & ~truncated``, ``truncations = truncated`` (all False when the
      batch has no ``truncated`` column).
    - ``infos["action_mask"]`` (T+1, numActions) uint8: the legal-action mask of each
      observation (padding columns dropped), last row repeated like the observation.
      ``values``/``logprobs`` are not exported.

    ``observation_space`` defaults to ``Box(-inf, inf, (obsDim,), float32)``, ``action_space``
    to ``Discrete(numActions)``; observations and actions are cast to the spaces' dtypes, and
    observations reshaped to the space's shape when it holds obsDim values (e.g. (84, 84)).
    ``env_id`` (a Gymnasium id, ``EnvSpec`` or ``Env``) is recorded as the dataset's env spec;
    Minari instantiates it (``gym.make``), so it must be registered; the spaces still default
    to the ones above, not the env's. ``description`` is prepended to the mapping note.
    ``data_format`` is Minari's (``"hdf5"`` default, ``"arrow"``). Other keyword arguments go
    to ``minari.create_dataset_from_buffers`` (``algorithm_name``, ``author_email``,
    ``code_permalink``, ``eval_env``, ``requirements``, ...). Episodes are written
    ``chunk_steps`` transitions at a time, so memory stays bounded. Minari's warnings about
    unset optional metadata are silenced. On any failure the partly written dataset is removed.
    """
    minari = _import_minari(data_format)
    import gymnasium as gym

    _check_dataset_id(dataset_id)
    ds = open_dataset(source)
    if not ds.parts:
        raise ValueError(f"{source}: no transitions")
    n_actions = max(b.n_actions for b in ds.parts)
    if observation_space is None:
        observation_space = gym.spaces.Box(-np.inf, np.inf, (ds.obs_dim,), np.float32)
    if action_space is None:
        action_space = gym.spaces.Discrete(n_actions)
    if not isinstance(chunk_steps, (int, np.integer)) or chunk_steps < 1:
        raise ValueError(f"chunk_steps must be a positive integer, got {chunk_steps!r}")

    from minari.storage import get_dataset_path

    path = get_dataset_path(dataset_id)
    if path.exists():
        raise ValueError(f"a Minari dataset {dataset_id!r} already exists at {path}")
    note = _MINARI_NOTE if not description else f"{description}\n\n{_MINARI_NOTE}"
    if data_format is not None:
        kwargs["data_format"] = data_format

    def chunks():
        buf, steps = [], 0
        for e in minari_episode_buffers(ds, action_space, observation_space, n_actions):
            buf.append(e)
            steps += len(e)
            if steps >= chunk_steps:
                yield buf
                buf, steps = [], 0
        if buf:
            yield buf

    try:
        it = chunks()
        with warnings.catch_warnings():
            for msg in _MINARI_NAGS:
                warnings.filterwarnings("ignore", message=msg, category=UserWarning)
            dataset = minari.create_dataset_from_buffers(
                dataset_id, next(it), env=env_id, author=author, description=note,
                observation_space=observation_space, action_space=action_space, **kwargs)
        for buf in it:
            dataset.update_dataset_from_buffer(buf)
        dataset.storage.update_metadata({"fastrl": {
            "sources": [str(b.path) for b in ds.parts],
            "numActions": n_actions,
            "finalObservation": "repeat_last",
            "terminations": "dones & ~truncated",
            "truncations": "truncated",
            "infos": {"action_mask": "(T+1, numActions) uint8, last row repeated"},
        }})
    except BaseException as e:
        exists_error = isinstance(e, ValueError) and "already exists" in str(e)
        if not exists_error and path.exists():  # never leave a half-written dataset behind
            shutil.rmtree(path, ignore_errors=True)
        raise
    return dataset
