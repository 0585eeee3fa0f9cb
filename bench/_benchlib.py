"""Workload, outside baselines and timing helpers shared by the benchmark suites (``test_bench_*``),
the regression guard, ``ratios.py`` and ``scaling.py``.

Workload (seeded, built once per process and cached): ``episodes`` games of the built-in reference
game (:mod:`fastrl.game`, 20..180 moves each, ~100 on average) played by the random policy. They
give realistic episode lengths, actions, rewards and legal-action lists (~33 legal ids per step);
for packing and writing, each step gets a random float32 observation of ``OBS_DIM`` = 512 values
and masks are stored ``MASK_PAD`` = 256 wide for the game's 208 actions:
512*4 + 4 + 4 + 256 + 1 = 2,313 bytes per transition in the five required columns.

- full (``FASTRL_BENCH_FULL=1``): 2,000 episodes, ~200k transitions;
- quick (default, what CI runs): 50 episodes, ~5k transitions.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import fastrl
from fastrl import _kernels as _backend
from fastrl import _format as F
from fastrl._batch.episode import normalize_episode
from fastrl._batch.packing import allocate_columns, pack
from fastrl.game import N_ACTIONS, N_COLS, N_KINDS, N_ROWS, game_spec

OBS_DIM = 512
MASK_PAD = 256
ROW_BYTES = F.row_bytes(OBS_DIM, MASK_PAD)  # 2,313: the five required columns
VECTOR_ENVS = 64    # environments of the add_steps benchmark
SHORT_EPISODE = 8   # steps of the per-call overhead benchmark's episodes
PACK_ROW_BYTES = ROW_BYTES + 1              # pack also writes the truncated column
FIVE = ("obs", "actions", "rewards", "masks", "dones")
SEED = 20260517
MINIBATCH = 4096


def truthy(value) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Sizes:
    mode: str
    episodes: int             # reference-game episodes
    per_file: int             # episodes per JSONL file (export workload)
    rounds: int               # least timed rounds per benchmark (pytest-benchmark pedantic)
    warmup: int               # untimed rounds first
    slow_rounds: int          # least rounds for the slow end-to-end benchmarks (writer, export)
    gym_states: int           # states encoded one at a time by gymnasium.spaces.flatten
    savez_compressed_rows: int
    budget: float = 0.0       # more rounds, up to max_rounds, while they fit in this many s
    max_rounds: int = 0


QUICK = Sizes("quick", episodes=50, per_file=10, rounds=3, warmup=1, slow_rounds=2,
              gym_states=300, savez_compressed_rows=1000, budget=0.1, max_rounds=10)
FULL = Sizes("full", episodes=2000, per_file=50, rounds=5, warmup=1, slow_rounds=3,
             gym_states=5000, savez_compressed_rows=20000, budget=2.0, max_rounds=25)


def full_mode() -> bool:
    return truthy(os.environ.get("FASTRL_BENCH_FULL"))


def sizes() -> Sizes:
    return FULL if full_mode() else QUICK


def backends() -> list[str]:
    """Kernel paths to benchmark: both, or only NumPy when it is forced (FASTRL_PURE_NUMPY=1)."""
    if _backend.BACKEND == "numpy" and _backend.REASON.startswith("forced"):
        return ["numpy"]
    return _backend.available()


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from fastrl._threads import available_cpus
    return f"{model}, {available_cpus()} CPUs available"


# ----------------------------------------------------------------------------------------------
# Workload

class Workload:
    """Everything the suites need, built lazily (each piece once) from ``sizes`` and a seed."""

    def __init__(self, sz: Sizes, seed: int = SEED, workdir: str | None = None):
        self.sizes = sz
        self.seed = seed
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"fastrl-bench-{sz.mode}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    def cleanup(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- games ------------------------------------------------------------------------------
    @functools.cached_property
    def games(self) -> list:
        from fastrl.bot import episode_seed, play_columns
        return [play_columns(episode_seed(self.seed, i)) for i in range(self.sizes.episodes)]

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        return np.array([len(g["actions"]) for g in self.games], dtype=np.int64)

    @property
    def n(self) -> int:
        """Transitions in the workload."""
        return int(self.lengths.sum())

    @functools.cached_property
    def starts(self) -> np.ndarray:
        s = np.zeros(len(self.lengths) + 1, np.int64)
        np.cumsum(self.lengths, out=s[1:])
        return s

    # -- raw episodes, as a bot harness holds them ------------------------------------------
    @functools.cached_property
    def obs(self) -> np.ndarray:
        """(n, 512) float32 observations; episodes are row slices (C-contiguous views)."""
        rng = np.random.default_rng(self.seed)
        return rng.standard_normal((self.n, OBS_DIM), dtype=np.float32)

    @functools.cached_property
    def raw_episodes(self) -> list[dict]:
        """Keyword arguments of ``BatchWriter.add_episode`` (legal ids as (ids, offsets))."""
        out = []
        for g, a, b in zip(self.games, self.starts[:-1], self.starts[1:]):
            out.append({"obs": self.obs[a:b], "actions": g["actions"], "rewards": g["rewards"],
                        "legal": g["legal"]})
        return out

    @functools.cached_property
    def raw_episodes_dense(self) -> list[dict]:
        """Same episodes with dense masks: (T, N_ACTIONS) uint8 0/1."""
        out = []
        for ep in self.raw_episodes:
            ids, off = ep["legal"]
            T = len(ep["actions"])
            mask = np.zeros((T, N_ACTIONS), np.uint8)
            mask[np.repeat(np.arange(T), np.diff(off)), ids] = 1
            out.append({"obs": ep["obs"], "actions": ep["actions"], "rewards": ep["rewards"],
                        "mask": mask})
        return out

    @functools.cached_property
    def vector_steps(self) -> list[tuple]:
        """The workload's episodes dealt in turn to ``VECTOR_ENVS`` environments and replayed
        one step of all of them at a time, as a PPO harness calls ``add_steps``: a list of
        (obs (N, 512) float32, actions (N,), rewards (N,), terminated (N,), truncated (N,),
        mask (N, N_ACTIONS) uint8). Stops when the episodes run out (the last open ones are
        stored truncated at close)."""
        n_envs = VECTOR_ENVS
        queue = iter(self.raw_episodes)
        cur, pos = [None] * n_envs, [0] * n_envs
        steps = []
        while True:
            obs = np.empty((n_envs, OBS_DIM), np.float32)
            acts, rews = np.empty(n_envs, np.int64), np.empty(n_envs, np.float64)
            mask, term = np.zeros((n_envs, N_ACTIONS), np.uint8), np.zeros(n_envs, bool)
            for i in range(n_envs):
                if cur[i] is None or pos[i] == len(cur[i]["actions"]):
                    cur[i], pos[i] = next(queue, None), 0
                    if cur[i] is None:
                        return steps
                ep, t = cur[i], pos[i]
                ids, off = ep["legal"]
                obs[i], acts[i], rews[i] = ep["obs"][t], ep["actions"][t], ep["rewards"][t]
                mask[i, ids[off[t]:off[t + 1]]] = 1
                pos[i] += 1
                term[i] = pos[i] == len(ep["actions"])
            steps.append((obs, acts, rews, term, np.zeros(n_envs, bool), mask))

    @functools.cached_property
    def short_episodes(self) -> list[dict]:
        """The first ``SHORT_EPISODE`` steps of every episode: per-call overhead of add_episode."""
        out = []
        for ep in self.raw_episodes:
            ids, off = ep["legal"]
            k = min(SHORT_EPISODE, len(ep["actions"]))
            out.append({"obs": ep["obs"][:k], "actions": ep["actions"][:k],
                        "rewards": ep["rewards"][:k], "legal": (ids[:off[k]], off[:k + 1])})
        return out

    @functools.cached_property
    def raw_episodes_lists(self) -> list[dict]:
        """Same episodes with legal ids as T Python lists (the README's plainest form)."""
        out = []
        for ep in self.raw_episodes:
            ids, off = ep["legal"]
            lists = [ids[off[t]:off[t + 1]].tolist() for t in range(len(off) - 1)]
            out.append({**ep, "legal": lists})
        return out

    @functools.cached_property
    def dense_masks(self) -> list[np.ndarray]:
        out = []
        for g in self.games:
            ids, off = g["legal"]
            T = len(off) - 1
            m = np.zeros((T, N_ACTIONS), np.uint8)
            m[np.repeat(np.arange(T), np.diff(off)), ids] = 1
            out.append(m)
        return out

    # -- normalized episodes (the packing kernels' input) ------------------------------------
    def _normalized(self, dense: bool) -> list:
        eps = []
        for i, ep in enumerate(self.raw_episodes):
            kw = dict(ep)
            if dense:
                kw.pop("legal")
                kw["mask"] = self.dense_masks[i]
            eps.append(normalize_episode(i, obs_dim=OBS_DIM, n_actions=N_ACTIONS, **kw))
        return eps

    @functools.cached_property
    def episodes_legal(self) -> list:
        return self._normalized(False)

    @functools.cached_property
    def episodes_dense(self) -> list:
        return self._normalized(True)

    def episodes(self, masks: str) -> list:
        return self.episodes_dense if masks == "dense" else self.episodes_legal

    @functools.cached_property
    def out_cols(self) -> dict:
        """Preallocated, pre-faulted output columns shared by every packing benchmark."""
        cols = allocate_columns(self.n, OBS_DIM, MASK_PAD, values=False, logprobs=False)
        for c in cols.values():
            c.fill(0)
        return cols

    @functools.cached_property
    def packed(self) -> dict:
        """The packed columns (a private copy): the source of the np.copyto baseline and of the
        file-writing baselines."""
        cols = allocate_columns(self.n, OBS_DIM, MASK_PAD, values=False, logprobs=False)
        pack(self.episodes_legal, cols, 0, N_ACTIONS, threads=1)
        return cols

    # -- observation encoding ---------------------------------------------------------------
    @functools.cached_property
    def spec(self):
        return game_spec()

    @functools.cached_property
    def state_columns(self) -> dict:
        """The game states as a dict of columns (``ObsSpec.encode``'s fast input)."""
        st = [g["states"] for g in self.games]
        hand_ids = np.concatenate([s["hand"][0] for s in st])
        hand_off = np.zeros(self.n + 1, np.int64)
        np.cumsum(np.concatenate([np.diff(s["hand"][1]) for s in st]), out=hand_off[1:])
        return {"board": np.concatenate([s["board"] for s in st]),
                "hand": (hand_ids, hand_off),
                "phase": np.concatenate([s["phase"] for s in st]),
                "scalars": np.concatenate([s["scalars"] for s in st])}

    @functools.cached_property
    def state_dicts(self) -> list:
        """The same states as JSON-parsed dicts: read back from the export workload's files."""
        from fastrl.export.parse import loads as _loads
        states = []
        for p in self.jsonl_files:
            for line in p.read_bytes().split(b"\n"):
                if line.strip():
                    states.extend(s["state"] for s in _loads(line)["steps"])
        if len(states) != self.n:
            raise AssertionError(f"{len(states)} states in the JSONL files, {self.n} played")
        return states

    @functools.cached_property
    def encoded(self) -> np.ndarray:
        """Reference encoding of every state (the np.copyto baseline's source)."""
        return self.spec.encode(self.state_columns, threads=1)

    @functools.cached_property
    def encode_out(self) -> np.ndarray:
        out = np.empty((self.n, self.spec.dim), np.float32)
        out.fill(0)
        return out

    @functools.cached_property
    def gym(self):
        """(space, states) for gymnasium.spaces.flatten, or None without gymnasium: the game's
        state as a gymnasium Dict space (board MultiDiscrete 13x16 of 3, hand MultiBinary(52),
        phase Discrete(4), scalars Box(8)): 688 floats per state, like the game's ObsSpec."""
        try:
            from gymnasium import spaces as S
        except ImportError:
            return None
        space = S.Dict({"board": S.MultiDiscrete(np.full((N_ROWS, N_COLS), 3)),
                        "hand": S.MultiBinary(N_KINDS),
                        "phase": S.Discrete(4),
                        "scalars": S.Box(-1.0, 1.0, (8,), np.float32)})
        cols = self.state_columns
        k = min(self.sizes.gym_states, self.n)
        ids, off = cols["hand"]
        states = []
        for i in range(k):
            hand = np.zeros(N_KINDS, np.int8)
            hand[ids[off[i]:off[i + 1]]] = 1
            states.append({"board": cols["board"][i].astype(np.int64), "hand": hand,
                           "phase": int(cols["phase"][i]), "scalars": cols["scalars"][i].copy()})
        return space, states

    # -- files ------------------------------------------------------------------------------
    @functools.cached_property
    def jsonl_dir(self) -> Path:
        """Raw-state JSONL episode files written by ``fastrl.bot.write_episodes``."""
        from fastrl.bot import write_episodes
        d = self.workdir / "episodes"
        write_episodes(d, self.sizes.episodes, seed=self.seed, fmt="jsonl",
                       per_file=self.sizes.per_file, fsync=False)
        return d

    @property
    def jsonl_files(self) -> list[Path]:
        from fastrl.export import find_episode_files
        return find_episode_files(self.jsonl_dir)

    @functools.cached_property
    def jsonl_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.jsonl_files)

    @functools.cached_property
    def batch_path(self) -> Path:
        """One committed batch of the workload (for the load benchmarks)."""
        return write_batch(self.workdir / "batch", self.raw_episodes)

    @functools.cached_property
    def batch_in_ram(self) -> dict:
        """The batch's columns read into anonymous memory (the 'from RAM' side)."""
        b = fastrl.load_batch(self.batch_path)
        return {name: np.array(col) for name, col in b.columns.items()}


def freeze_garbage_collector() -> None:
    """Move every object alive now (the workload's millions of parsed-JSON objects above all)
    into the collector's permanent generation, so that the code timed next pays only for
    collecting its own garbage, as it would in a process of its own (e.g. ``fastrl export``)."""
    gc.collect()
    gc.freeze()


def release(w: Workload) -> None:
    """Drop a workload: its files, its cached pieces, and the frozen objects."""
    w.cleanup()
    workload.cache_clear()
    w.__dict__.clear()
    gc.unfreeze()
    gc.collect()


@functools.lru_cache(maxsize=None)
def workload(mode: str | None = None) -> Workload:
    """The process-wide workload of ``mode`` ("quick"/"full"; default: FASTRL_BENCH_FULL)."""
    sz = {"quick": QUICK, "full": FULL}.get(mode) if mode else sizes()
    return Workload(sz)


# ----------------------------------------------------------------------------------------------
# Operations timed by the suites (fastrl side)

def writer_supports(option: str) -> bool:
    """Whether this fastrl's BatchWriter takes keyword ``option`` (e.g. ``fsync``)."""
    import inspect
    return option in inspect.signature(fastrl.BatchWriter).parameters


def write_batch(root, episodes, *, checksum: bool = True, spec=None, **options) -> Path:
    """BatchWriter end to end: episodes in RAM -> committed batch; return its path."""
    with fastrl.BatchWriter(root, n_actions=N_ACTIONS, mask_pad=MASK_PAD, checksum=checksum,
                            spec=spec, **options) as w:
        for ep in episodes:
            w.add_episode(**ep)
    return w.path


def sample_columns(columns: dict, count: int, n: int, rng) -> dict:
    """``Batch.sample`` (replace=True) applied to any dict of columns: the same indices, the same
    sorted gather. Used on in-RAM arrays as the baseline of sampling memory-mapped files."""
    rng = np.random.default_rng(rng)
    idx = np.sort(rng.integers(0, count, size=n)).astype(np.int64)
    out = {name: np.take(col, idx, axis=0) for name, col in columns.items()}
    out["index"] = idx
    return out


# ----------------------------------------------------------------------------------------------
# Outside baselines

def copy_columns(dst: dict, src: dict) -> None:
    """np.copyto of every column: the memory-bandwidth floor for writing the same bytes."""
    for k, v in src.items():
        np.copyto(dst[k], v)


def numpy_best_pack(episodes, cols: dict, n_actions: int) -> int:
    """The best vectorized NumPy packing we could write: one concatenate per column straight into
    the output, one fancy-index fill for all legal ids (or one strided copy of the dense masks),
    and the same checks as the kernels (finite obs/rewards, ids and actions in range, every
    action legal), done on whole columns. Returns the rows written; ValueError when a check fails.
    """
    lengths = np.fromiter((e.length for e in episodes), np.int64, len(episodes))
    n = int(lengths.sum())
    obs, masks = cols["obs"][:n], cols["masks"][:n]
    M = masks.shape[1]
    np.concatenate([e.obs for e in episodes], out=obs, casting="same_kind")
    # Whole-column finiteness in one pass without a bool temporary: a float32 sum is finite
    # when every term is (an overflowing sum of finite values falls back to the exact test).
    if not np.isfinite(obs.sum()) and not np.isfinite(obs).all():
        raise ValueError("non-finite obs")
    rew = cols["rewards"][:n]
    np.concatenate([e.rewards for e in episodes], out=rew, casting="same_kind")
    if not np.isfinite(rew).all():
        raise ValueError("non-finite reward")
    act = np.concatenate([e.actions for e in episodes])
    if act.min() < 0 or act.max() >= n_actions:
        raise ValueError("action out of range")
    cols["actions"][:n] = act
    flat = masks.reshape(-1)
    if episodes[0].mask is None:
        ids = np.concatenate([e.legal_ids for e in episodes])
        if ids.min() < 0 or ids.max() >= n_actions:
            raise ValueError("legal id out of range")
        counts = np.concatenate([np.diff(e.legal_offsets) for e in episodes])
        masks.fill(0)
        pos = np.repeat(np.arange(0, n * M, M, dtype=np.int64), counts)
        pos += ids
        flat[pos] = 1
    else:
        A = episodes[0].mask.shape[1]
        np.concatenate([e.mask for e in episodes], out=masks[:, :A])
        masks[:, A:] = 0
        if masks.max() > 1:
            raise ValueError("mask value not 0/1")
    if not flat[np.arange(0, n * M, M, dtype=np.int64) + act].all():
        raise ValueError("illegal action")
    ends = np.cumsum(lengths) - 1
    d = cols["dones"][:n]
    d.fill(0)
    d[ends] = 1
    if "truncated" in cols:
        tr = cols["truncated"][:n]
        tr.fill(0)
        tr[ends[np.fromiter((e.truncated for e in episodes), bool, len(episodes))]] = 1
    return n


def gym_flatten_all(space, states, out: np.ndarray) -> None:
    """gymnasium.spaces.flatten, one state at a time, into float32 rows."""
    from gymnasium.spaces import flatten
    for i, s in enumerate(states):
        out[i] = flatten(space, s)


def parse_only(files, loads) -> int:
    """Read and parse every episode of the JSONL files the way export does (one ``loads`` per
    line), keep nothing; return the number of steps (transitions) parsed."""
    steps = 0
    for p in files:
        with open(p, "rb") as f:
            data = f.read()
        for line in data.split(b"\n"):
            if line.strip():
                steps += len(loads(line)["steps"])
    return steps


def _parse_file(path: str, parser: str) -> int:
    import orjson
    return parse_only([path], orjson.loads if parser == "orjson" else json.loads)


def parse_only_processes(files, parser: str, workers: int) -> int:
    """``parse_only`` spread over ``workers`` processes (a pool started per call, one file per
    task, like export's pool): what the machine allows a 2-worker export to gain."""
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(_parse_file, [str(p) for p in files], [parser] * len(files)))


def file_name(name: str) -> str:
    return F.ALL_COLUMNS[name][0]


def tofile_columns(folder: Path, cols: dict, *, fsync: bool) -> None:
    """Raw ``ndarray.tofile`` of the five required columns (optionally fsynced, like the writer)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FIVE:
        with open(folder / file_name(name), "wb") as f:
            cols[name].tofile(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def fromfile_columns(path: Path, count: int) -> dict:
    """np.fromfile of the five required columns of a batch."""
    out = {}
    for name in FIVE:
        _, dtype, width = F.ALL_COLUMNS[name]
        a = np.fromfile(path / file_name(name), dtype=dtype)
        out[name] = a.reshape(count, -1) if width else a
    return out


def h5py_write(path: Path, cols: dict) -> None:
    import h5py
    with h5py.File(path, "w") as f:
        for name in FIVE:
            f.create_dataset(name, data=cols[name])


def crc32_of(buf) -> int:
    """The standard library's zlib.crc32 (the baseline fastrl's CRC is compared with)."""
    return zlib.crc32(buf)


def output_root(wl, name: str) -> Path:
    """Where the writer benchmarks (BatchWriter and their tofile/savez baselines alike) write:
    a folder on tmpfs (``/dev/shm``) when there is one, like the write-engine targets specify
    (a disk-backed page cache that recycles just-freed pages flatters ``tofile``), else the
    workload folder. ``FASTRL_BENCH_OUT`` chooses another root."""
    root = os.environ.get("FASTRL_BENCH_OUT")
    if root is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        root = "/dev/shm"
    base = Path(root) / f"fastrl-bench-{os.getpid()}" if root else wl.workdir
    return base / name


def write_vector(root, steps, *, fsync: bool = False) -> Path:
    """BatchWriter.add_steps end to end over ``Workload.vector_steps``; return the batch path."""
    with fastrl.BatchWriter(root, n_actions=N_ACTIONS, mask_pad=MASK_PAD, fsync=fsync) as w:
        for obs, acts, rews, term, trunc, mask in steps:
            w.add_steps(obs, acts, rews, term, trunc, mask=mask)
    return w.path


def threaded_copy(dst: np.ndarray, src: np.ndarray, pool: ThreadPoolExecutor | None,
                  nthreads: int) -> None:
    """np.copyto split into ``nthreads`` row blocks run on a thread pool (copyto drops the GIL)."""
    if nthreads <= 1 or pool is None:
        np.copyto(dst, src)
        return
    edges = np.linspace(0, len(src), nthreads + 1).astype(int)
    futs = [pool.submit(np.copyto, dst[a:b], src[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    for f in futs:
        f.result()


# ----------------------------------------------------------------------------------------------
# Timing outside pytest-benchmark (regression guard, scaling): interleaved medians

def _time_loop(fn, loops: int) -> float:
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    return time.perf_counter() - t0


def interleaved_medians(fns: dict, *, repeats: int = 7, min_time: float = 0.01,
                        backends: dict | None = None) -> dict:
    """Median seconds per call of each ``fns[name]()``, measured in ``repeats`` interleaved
    rounds (A B C, A B C, ...) so that a slow phase of the machine hits every candidate alike.
    Each sample loops the call enough times to last ``min_time``. ``backends[name]`` runs that
    candidate under ``fastrl._kernels.use(...)``."""
    backends = backends or {}
    freeze_garbage_collector()
    runners, loops = {}, {}
    for k, f in fns.items():
        be = backends.get(k)
        if be is None:
            runners[k] = lambda n, f=f: _time_loop(f, n)
        else:
            runners[k] = lambda n, f=f, be=be: _with_backend(be, f, n)
        run = runners[k]
        run(1)  # warm-up
        n = 1
        while True:
            t = run(n)
            if t >= min_time or n >= 1 << 16:
                break
            n = max(n * 2, int(n * min_time / max(t, 1e-9) * 1.2))
        loops[k] = n
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k in fns:
            samples[k].append(runners[k](loops[k]) / loops[k])
    return {k: statistics.median(v) for k, v in samples.items()}


def _with_backend(backend: str, fn, loops: int) -> float:
    with _backend.use(backend):
        return _time_loop(fn, loops)


# ----------------------------------------------------------------------------------------------
# Regression guard: ratios measured within one run, compared with recorded floors

BASELINE_FILE = Path(__file__).with_name("baseline_ratios.json")


def guard_candidates(w: Workload) -> dict:
    """name -> (backend or None, zero-argument callable). Quick-size work for the guard."""
    c = {}
    cols = w.out_cols
    for be in backends():
        for masks in ("legal", "dense"):
            eps = w.episodes(masks)
            c[f"pack:{be}:{masks}"] = (be, functools.partial(pack, eps, cols, 0, N_ACTIONS,
                                                             threads=1))
        c[f"encode:{be}:columns"] = (be, functools.partial(w.spec.encode, w.state_columns,
                                                           out=w.encode_out, threads=1))
        c[f"encode:{be}:dicts"] = (be, functools.partial(w.spec.encode, w.state_dicts,
                                                         out=w.encode_out, threads=1))
    packed = w.packed
    c["pack:copyto"] = (None, functools.partial(copy_columns, cols, packed))
    c["pack:npbest:legal"] = (None, functools.partial(numpy_best_pack, w.episodes_legal, cols,
                                                      N_ACTIONS))
    enc = w.encoded
    c["encode:copyto"] = (None, functools.partial(np.copyto, w.encode_out, enc))
    return c


def load_floors() -> dict:
    with open(BASELINE_FILE) as f:
        return json.load(f)


def measure_ratios(w: Workload, pairs: dict, *, repeats: int = 7) -> dict:
    """{ratio name: fast-vs-slow speed ratio} for ``pairs`` = {name: (fast, slow)} whose
    candidates exist on this install; each ratio is median(slow) / median(fast)."""
    cands = guard_candidates(w)
    needed = sorted({k for pair in pairs.values() for k in pair if k in cands})
    med = interleaved_medians({k: cands[k][1] for k in needed}, repeats=repeats,
                              backends={k: cands[k][0] for k in needed if cands[k][0]})
    return {name: med[slow] / med[fast] for name, (fast, slow) in pairs.items()
            if fast in med and slow in med}


# name -> (fast candidate, slow candidate, smallest floor allowed). The ratio is how many times
# faster ``fast`` runs than ``slow`` on the quick workload. A floor is a third of the ratio
# measured when it was recorded, but never below the third item: a Cython kernel must stay
# clearly faster than its NumPy twin however noisy the machine.
GUARD_PAIRS = {
    "pack_cython_vs_numpy_legal": ("pack:cython:legal", "pack:numpy:legal", 1.5),
    "pack_cython_vs_numpy_dense": ("pack:cython:dense", "pack:numpy:dense", 1.5),
    "pack_cython_vs_numpy_best": ("pack:cython:legal", "pack:npbest:legal", 1.0),
    "pack_cython_vs_copyto": ("pack:cython:legal", "pack:copyto", 0.0),
    "pack_numpy_vs_copyto": ("pack:numpy:legal", "pack:copyto", 0.0),
    "encode_cython_vs_numpy_columns": ("encode:cython:columns", "encode:numpy:columns", 1.5),
    "encode_cython_vs_numpy_dicts": ("encode:cython:dicts", "encode:numpy:dicts", 1.5),
    "encode_cython_vs_copyto": ("encode:cython:columns", "encode:copyto", 0.0),
    "encode_numpy_vs_copyto": ("encode:numpy:columns", "encode:copyto", 0.0),
}
FLOOR_FRACTION = 1 / 3


def record_floors(w: Workload, runs: int = 3) -> dict:
    """Measure every guard ratio ``runs`` times on ``w`` (quick) and write baseline_ratios.json
    with floor = max(min measured * FLOOR_FRACTION, smallest floor)."""
    pairs = {k: v[:2] for k, v in GUARD_PAIRS.items()}
    seen = [measure_ratios(w, pairs) for _ in range(runs)]
    ratios = {}
    for name, (fast, slow, least) in GUARD_PAIRS.items():
        vals = [s[name] for s in seen if name in s]
        if not vals:
            continue
        ratios[name] = {"fast": fast, "slow": slow,
                        "measured": [round(v, 3) for v in vals],
                        "floor": round(max(min(vals) * FLOOR_FRACTION, least), 3)}
    doc = {
        "about": "Regression floors of bench/test_bench_guard.py: speed ratios (how many times "
                 "faster 'fast' runs than 'slow') measured within one run on the quick "
                 "workload; a ratio below its floor fails the guard. Re-record with "
                 "`python bench/ratios.py --record-floors` (after a deliberate change).",
        "recorded": {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                     "mode": w.sizes.mode, "transitions": w.n,
                     "floor": f"max(min(measured) * {FLOOR_FRACTION:.3f}, least)"},
        "ratios": ratios,
    }
    with open(BASELINE_FILE, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return doc
