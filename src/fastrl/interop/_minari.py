"""Minari: ``to_minari`` (a batch as a local Minari dataset) and ``from_minari`` (back)."""

from __future__ import annotations

import inspect
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..spec import ObsSpec
from ..writer import BatchWriter
from ._common import final_obs_kind, final_obs_of, meta_json, open_source, truncated_of
from ._spaces import get_path, space_problem, unflatten_rows

_NOTE_FINAL = {
    "final_obs": "each episode's last observation (index T) is the observation after the final "
                 "step, as recorded by the producer",
    "repeat_last": "the producer recorded no observation after the final step: each episode's "
                   "last observation (index T) repeats observation T-1, so do not learn from it",
    "mixed": "where the producer recorded the observation after the final step, each episode's "
             "last observation (index T) is that one; in the other episodes (see metadata "
             "fastrl.repeatedFinalObservation) it repeats observation T-1",
}


def _note(kind: str) -> str:
    return (f"Converted from fastrl batches. Observations (T+1 per episode): {_NOTE_FINAL[kind]}. "
            "terminations = dones & ~truncated; truncations = truncated (time limit). "
            "infos['action_mask'] (T+1, n) uint8 is the legal-action mask of each observation "
            "(1 = legal, column j = action j of the action space); its last row repeats row T-1.")


# Minari's reminders about optional metadata (author, code_permalink, eval_env, ...): to_minari
# exposes those arguments, so converting without them is a choice, not an accident.
_MINARI_NAGS = (r"`\w+` is set to None", r"env_spec is None")


def _import_minari(data_format=None, who="to_minari"):
    try:
        import minari
    except ImportError as e:
        raise ImportError(f"{who} needs minari (pip install minari h5py pillow; or "
                          f"pip install \"fastrl-batch[minari]\"): {e}") from None
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


def _recorded_minari(parts) -> dict | None:
    """The ``minari`` record ``from_minari`` left in the batches' user metadata, when every
    part carries the same one."""
    records = []
    for b in parts:
        user = b.meta.get("user")
        if not isinstance(user, dict) and "shard" in b.meta:  # a shard: the manifest has it
            user = (meta_json(Path(b.path).parent) or {}).get("user")
        rec = user.get("minari") if isinstance(user, dict) else None
        records.append(rec if isinstance(rec, dict) else None)
    first = records[0]
    return first if first is not None and all(r == first for r in records) else None


def _action_problem(action_space, n_actions: int, what: str) -> str | None:
    from gymnasium import spaces as S
    if not isinstance(action_space, S.Discrete):
        return (f"{what} {action_space} is not Discrete: fastrl actions are discrete ids "
                f"in [0, {n_actions})")
    if int(action_space.n) < n_actions:
        return (f"{what} {action_space} has fewer actions than the batch "
                f"(numActions={n_actions})")
    return None


def minari_episode_buffers(ds, action_space, observation_space, n_actions: int | None = None):
    """Yield one ``minari.data_collector.EpisodeBuffer`` per episode of the fastrl ``Dataset``
    ``ds`` (see :func:`to_minari` for the mapping). ``observation_space`` must pass
    :func:`to_minari`'s checks (its flat size is obsDim); ``action_space`` is Discrete."""
    from minari.data_collector import EpisodeBuffer

    width = int(action_space.n)
    start = int(action_space.start)
    n = 0
    for b in ds.parts:
        fo = final_obs_of(b)
        trunc_all = truncated_of(b)
        for ep in b.episodes():
            T = len(ep)
            flat = np.empty((T + 1, ds.obs_dim), np.float32)
            flat[:T] = ep.obs
            flat[T] = fo[ep.index] if fo is not None else ep.obs[T - 1]
            try:
                obs = unflatten_rows(observation_space, flat)
            except ValueError as e:
                raise ValueError(f"episode {n} ({b.path}, episode {ep.index}): {e}; pass an "
                                 "observation_space that holds the observations") from None
            mask = np.zeros((T + 1, width), np.uint8)
            w = min(width, ep.masks.shape[1])
            mask[:T, :w] = ep.masks[:, :w]
            mask[T] = mask[T - 1]
            dones = np.asarray(ep.dones) != 0
            trunc = trunc_all[ep.start:ep.stop]
            actions = np.asarray(ep.actions).astype(action_space.dtype) + start
            yield EpisodeBuffer(
                id=n,
                observations=obs,
                actions=actions,
                rewards=np.array(ep.rewards, dtype=np.float32),
                terminations=dones & ~trunc,
                truncations=trunc.copy(),
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

    **Spaces.** The observation space is, in this order: ``observation_space``; the
    environment's (``env_id`` given: the space ``recover_environment()`` builds); the space
    recorded by :func:`from_minari` when the batch came from Minari; else
    ``Box(-inf, inf, (obsDim,), float32)``. Any nested Dict/Tuple space of Box, Discrete,
    MultiDiscrete and MultiBinary whose flat size (``gymnasium.spaces.flatdim``) is obsDim
    works: each flat observation is unflattened (the inverse of ``gymnasium.spaces.flatten``,
    what ``ObsSpec.from_gymnasium(space).encode`` wrote), so Minari stores and returns the
    space's own structure (dicts/tuples of arrays, integer ids for Discrete, ...). Every value
    is checked against the space (one-hot blocks, integers, Box bounds). The action space is
    chosen the same way (default ``Discrete(numActions)``) and must be Discrete with at least
    numActions actions; action id ``a`` is stored as ``space.start + a``. A space that cannot
    hold the batch (wrong flat size, Text/Graph/Sequence leaves, a non-Discrete action space,
    an env whose spaces do not fit) is refused before anything is written; a value outside the
    space is found while writing, and the partial dataset is removed.

    Mapping of each episode of T transitions:

    - ``observations`` (T+1, ...): rows 0..T-1 are the batch's; row T is the observation after
      the last step from the batch's ``final_obs`` column when it has one; without it row T
      repeats row T-1 (noted in the dataset's ``description`` and in its metadata key
      ``fastrl.finalObservation``: ``"final_obs"``, ``"repeat_last"`` or ``"mixed"``).
      ``actions`` (T,), ``rewards`` (T,) float32.
    - ``terminations = dones & ~truncated``, ``truncations = truncated`` (all False when the
      batch has no ``truncated`` column).
    - ``infos["action_mask"]`` (T+1, n) uint8, n = the action space's size: the legal-action
      mask of each observation (padding columns dropped, zero columns added when the space
      has more actions than the batch), last row repeated from row T-1 (no mask is stored for
      the final observation). ``values``/``logprobs`` are not exported.

    ``env_id`` (a Gymnasium id, ``EnvSpec`` or ``Env``) is recorded as the dataset's env spec;
    the environment is made (``gym.make``) to read its spaces, so it must be registered.
    ``description`` is prepended to the mapping note. ``data_format`` is Minari's (``"hdf5"``
    default, ``"arrow"``). Minari's lossy JPEG encoding of image spaces is off unless
    ``jpeg_encoding=True`` is passed. Other keyword arguments go to
    ``minari.create_dataset_from_buffers`` (``algorithm_name``, ``author_email``,
    ``code_permalink``, ``eval_env``, ``requirements``, ...). Episodes are written
    ``chunk_steps`` transitions at a time, so memory stays bounded. Minari's warnings about
    unset optional metadata are silenced. On any failure the partly written dataset is removed.
    """
    minari = _import_minari(data_format)
    import gymnasium as gym

    _check_dataset_id(dataset_id)
    if not isinstance(chunk_steps, (int, np.integer)) or chunk_steps < 1:
        raise ValueError(f"chunk_steps must be a positive integer, got {chunk_steps!r}")
    ds = open_source(source)
    n_actions = max(b.n_actions for b in ds.parts)

    env = None
    made_env = False
    if env_id is not None and (observation_space is None or action_space is None):
        if isinstance(env_id, gym.Env):
            env = env_id
        else:
            env = gym.make(env_id)
            made_env = True
    try:
        return _to_minari(minari, gym, ds, dataset_id, env, env_id, observation_space,
                          action_space, n_actions, author, description, data_format,
                          chunk_steps, kwargs)
    finally:
        if made_env:
            env.close()


def _to_minari(minari, gym, ds, dataset_id, env, env_id, observation_space, action_space,
               n_actions, author, description, data_format, chunk_steps, kwargs):
    from minari.serialization import deserialize_space

    recorded = None if env is not None else _recorded_minari(ds.parts)
    origin = {}
    for name, given in (("observation", observation_space), ("action", action_space)):
        space = given
        how = "argument"
        if space is None and env is not None:
            space, how = getattr(env, f"{name}_space"), "environment"
        if space is None and recorded is not None and f"{name}Space" in recorded:
            try:
                space, how = deserialize_space(recorded[f"{name}Space"]), "recorded"
            except Exception:
                space = None
        if space is None:
            how = "default"
            space = gym.spaces.Box(-np.inf, np.inf, (ds.obs_dim,), np.float32) \
                if name == "observation" else gym.spaces.Discrete(n_actions)
        origin[name] = (space, how)
    observation_space, obs_how = origin["observation"]
    action_space, act_how = origin["action"]
    src = {"environment": f" of the environment {env_id!r}",
           "recorded": " recorded by from_minari"}
    problem = space_problem(observation_space, ds.obs_dim,
                            "observation_space" + src.get(obs_how, ""))
    if problem:
        raise ValueError(f"{problem}: pass an observation_space that fits (see to_minari's "
                         "docstring)")
    problem = _action_problem(action_space, n_actions, "action_space" + src.get(act_how, ""))
    if problem:
        raise ValueError(problem)

    from minari.storage import get_dataset_path

    path = get_dataset_path(dataset_id)
    if path.exists():
        raise ValueError(f"a Minari dataset {dataset_id!r} already exists at {path}")
    kind = final_obs_kind(ds.parts)
    note = _note(kind)
    note = note if not description else f"{description}\n\n{note}"
    if data_format is not None:
        kwargs["data_format"] = data_format
    try:
        if "jpeg_encoding" in inspect.signature(minari.create_dataset_from_buffers).parameters:
            kwargs.setdefault("jpeg_encoding", False)  # lossless unless asked
    except (TypeError, ValueError):
        pass

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

    record = {
        "sources": [str(b.path) for b in ds.parts],
        "numActions": n_actions,
        "finalObservation": kind,
        "terminations": "dones & ~truncated",
        "truncations": "truncated",
        "infos": {"action_mask": "(T+1, n) uint8, last row repeated"},
    }
    if kind == "mixed":
        eps = np.concatenate([np.arange(b.num_episodes) + ds.episode_starts[k]
                              for k, b in enumerate(ds.parts) if final_obs_of(b) is None])
        record["repeatedFinalObservation"] = eps.astype(int).tolist()
    try:
        it = chunks()
        first = next(it)  # unflattening checks run here, before Minari makes any folder
        with warnings.catch_warnings():
            for msg in _MINARI_NAGS:
                warnings.filterwarnings("ignore", message=msg, category=UserWarning)
            dataset = minari.create_dataset_from_buffers(
                dataset_id, first, env=env if env is not None else env_id, author=author,
                description=note, observation_space=observation_space,
                action_space=action_space, **kwargs)
        for buf in it:
            dataset.update_dataset_from_buffer(buf)
        dataset.storage.update_metadata({"fastrl": record})
    except BaseException as e:
        exists_error = isinstance(e, ValueError) and "already exists" in str(e)
        if not exists_error and path.exists():  # never leave a half-written dataset behind
            shutil.rmtree(path, ignore_errors=True)
        raise
    return dataset


# --------------------------------------------------------------------------------------------
# Minari -> fastrl

def from_minari(dataset, root="data/binary", *, episode_indices=None, mask_pad=None,
                meta=None, **writer_kwargs) -> Path:
    """Write the Minari dataset ``dataset`` (a ``minari.MinariDataset`` or a local dataset id)
    as one fastrl batch under ``root`` and return the batch path.

    - Observations are flattened through ``ObsSpec.from_gymnasium(observation_space)``
      (= ``gymnasium.spaces.flatten``, float32; nested Dict/Tuple spaces of Box, Discrete,
      MultiDiscrete, MultiBinary); the spec goes into meta.json (``obsSpec``, ``obsSlices``).
    - Each episode's last observation (index T, after the final step) becomes the batch's
      ``final_obs``; rows 0..T-1 are the transitions.
    - The action space must be a Discrete space starting at 0; its ``n`` is the batch's
      ``numActions``. Action masks come from ``infos["action_mask"]`` ((T+1, n) or (T, n);
      row t is the mask of observation t) when present, else every action is legal.
    - ``truncated`` = the episode's last truncation flag. An episode that ends with neither
      flag (cut short when the data was collected) is stored as truncated; termination or
      truncation flags before the last step are an error.
    - ``rewards`` as float32. Infos other than ``action_mask`` are not kept.

    The Minari spaces (serialized), dataset id and env spec are recorded in meta.json under
    ``user.minari``, so :func:`to_minari` of the batch gets the same spaces back.
    ``episode_indices`` selects episodes (default: all, in order). ``mask_pad``, ``meta`` (more
    user metadata, merged) and other keyword arguments (``shard_bytes``, ``compression``,
    ``fsync``, ...) go to :class:`fastrl.BatchWriter`. Nothing is committed on failure.
    """
    minari = _import_minari(None, who="from_minari")
    from gymnasium import spaces as S
    from minari.serialization import serialize_space

    if isinstance(dataset, str):
        dataset = minari.load_dataset(dataset)
    obs_space, act_space = dataset.observation_space, dataset.action_space
    if not isinstance(act_space, S.Discrete) or int(act_space.start) != 0:
        raise ValueError(f"from_minari needs a Discrete action space starting at 0 (fastrl "
                         f"actions are ids in [0, n)); this dataset has {act_space}")
    spec = ObsSpec.from_gymnasium(obs_space)
    n = int(act_space.n)
    record = {"datasetId": getattr(dataset, "id", None),
              "observationSpace": serialize_space(obs_space),
              "actionSpace": serialize_space(act_space)}
    env_spec = getattr(dataset, "env_spec", None)
    if env_spec is not None:
        try:
            record["envSpec"] = env_spec.to_json()
        except Exception:
            pass
    user = dict(meta) if meta else {}
    user["minari"] = record

    path = None
    with BatchWriter(root, n_actions=n, spec=spec, mask_pad=mask_pad, meta=user,
                     **writer_kwargs) as w:
        for ep in dataset.iterate_episodes(episode_indices):
            T = len(ep)
            where = f"Minari episode {ep.id}"
            if T == 0:
                raise ValueError(f"{where}: no steps")
            cols = {f.name: get_path(ep.observations, f.path) for f in spec.fields}
            obs = spec.encode(cols)
            if obs.shape[0] != T + 1:
                raise ValueError(f"{where}: {obs.shape[0]} observations for {T} steps "
                                 "(Minari stores T+1)")
            term = np.asarray(ep.terminations, bool).reshape(-1)
            trunc = np.asarray(ep.truncations, bool).reshape(-1)
            if (term[:-1] | trunc[:-1]).any():
                raise ValueError(f"{where}: terminated or truncated before its last step")
            actions = np.asarray(ep.actions)
            if actions.shape != (T,) or actions.dtype.kind not in "iub":
                raise ValueError(f"{where}: actions of shape {actions.shape} and dtype "
                                 f"{actions.dtype}, expected ({T},) integers")
            mask = None
            infos = ep.infos if isinstance(ep.infos, dict) else {}
            if "action_mask" in infos:
                m = np.asarray(infos["action_mask"])
                if m.ndim != 2 or m.shape[0] not in (T, T + 1) or m.shape[1] != n:
                    raise ValueError(f"{where}: infos['action_mask'] has shape {m.shape}, "
                                     f"expected ({T + 1}, {n}) or ({T}, {n})")
                mask = m[:T]
            else:
                mask = np.ones((T, n), np.uint8)
            w.add_episode(obs=obs[:T], actions=actions, rewards=np.asarray(ep.rewards),
                          mask=mask, truncated=bool(trunc[-1] or not term[-1]),
                          final_obs=obs[T])
    path = w.path
    if path is None:
        raise ValueError("from_minari: the dataset has no episodes")
    return path
