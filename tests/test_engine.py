"""The write engine's guarantees: a writer is owned by its process (forked children cannot touch
its batch), calls from threads serialize with every episode contiguous, vector environments
(``add_steps``) store each environment's episode whole, final observations and mask-less
episodes; on both kernel backends."""

import gc
import multiprocessing as mp
import os
import signal
import sys
import threading
import warnings

import numpy as np
import pytest

import fastrl
from fastrl.errors import EpisodeError
from fastrl.writer import NotOwnerError

from conftest import random_episode

N_ACTIONS = 7


def _episodes(rng, n, **kw):
    return [random_episode(rng, int(rng.integers(1, 12)), obs_dim=5, n_actions=N_ACTIONS, **kw)
            for _ in range(n)]


def _write_reference(root, eps, **kw):
    with fastrl.BatchWriter(root, n_actions=N_ACTIONS, fsync=False, **kw) as w:
        for ep in eps:
            w.add_episode(**ep)
    return w.path


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name.endswith(".bin")}


# -- owned by one process -------------------------------------------------------------------------

CHILD_EXITS = ["with_exit", "close", "abort", "gc", "sys_exit", "os_exit", "exception", "signal"]


def _child(writer, how):
    """What a forked child of a harness might do with the parent's writer."""
    if how == "with_exit":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with writer:
                pass
    elif how == "close":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            writer.close()
    elif how == "abort":
        writer.abort()
    elif how == "gc":
        del writer
        gc.collect()
    elif how == "sys_exit":
        sys.exit(3)
    elif how == "os_exit":
        os._exit(0)
    elif how == "exception":
        with writer:
            raise ValueError("the child fails inside the parent's with block")
    elif how == "signal":
        os.kill(os.getpid(), signal.SIGTERM)
    os._exit(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("how", CHILD_EXITS)
def test_forked_child_leaves_parent_batch_alone(backend, tmp_path, rng, how):
    eps = _episodes(rng, 12)
    ref = _write_reference(tmp_path / "ref", eps)
    root = tmp_path / "root"
    ctx = mp.get_context("fork")
    with fastrl.BatchWriter(root, n_actions=N_ACTIONS, fsync=False, flush_bytes=512) as w:
        for ep in eps[:6]:
            w.add_episode(**ep)   # some rows already flushed to the temporary folder
        p = ctx.Process(target=_child, args=(w, how))
        p.start()
        p.join(30)
        assert p.exitcode is not None
        for ep in eps[6:]:
            w.add_episode(**ep)
    assert w.path is not None and fastrl.validate(w.path) == []
    assert _files(w.path) == _files(ref)
    assert sorted(n for n in os.listdir(root) if not n.startswith(".fastrl.lock")) == [w.path.name]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_cannot_add(tmp_path, rng):
    eps = _episodes(rng, 2)
    w = fastrl.BatchWriter(tmp_path, n_actions=N_ACTIONS, fsync=False)
    w.add_episode(**eps[0])
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            w.add_episode(**eps[1])
            os.write(wfd, b"added")
        except NotOwnerError as exc:
            os.write(wfd, str(exc).encode()[:200])
        os._exit(0)
    os.close(wfd)
    os.waitpid(pid, 0)
    said = os.read(r, 300).decode()
    os.close(r)
    assert "belongs to process" in said and "forked child" in said
    assert w.close() is not None and fastrl.load_batch(w.path).num_episodes == 1


# -- threads --------------------------------------------------------------------------------------

def test_threads_serialize_whole_episodes(backend, tmp_path):
    """8 threads add whole episodes and step-by-step episodes at once: every stored episode is
    one thread's, contiguous, and the batch validates."""
    n_threads, per_thread = 8, 25
    errors = []

    def work(k):
        try:
            r = np.random.default_rng(k)
            for j in range(per_thread):
                T = int(r.integers(1, 9))
                obs = np.full((T, 3), float(k))  # the thread's id in every value
                if j % 2:
                    w.add_episode(obs=obs, actions=[k % N_ACTIONS] * T, rewards=[float(j)] * T)
                else:
                    for t in range(T):
                        w.add_step(obs=obs[t], action=k % N_ACTIONS, reward=float(j))
                    w.end_episode()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with fastrl.BatchWriter(tmp_path, n_actions=N_ACTIONS, fsync=False, flush_bytes=4096) as w:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert fastrl.validate(w.path) == []
    b = fastrl.load_batch(w.path)
    assert b.num_episodes == n_threads * per_thread
    for ep in b.episodes():
        owner = ep.obs[0, 0]
        assert np.all(ep.obs == owner) and np.all(ep.rewards == ep.rewards[0])


# -- vector environments ------------------------------------------------------------------------

def _vector_run(w, rng, n_envs, steps, *, legal=False, final=True):
    """Drive add_steps with random episodes; return each env's finished episodes, in order."""
    done_eps = []
    cur = [[] for _ in range(n_envs)]
    for s in range(steps):
        obs = rng.standard_normal((n_envs, 4))
        acts = rng.integers(0, N_ACTIONS, n_envs)
        rews = rng.standard_normal(n_envs)
        term = rng.random(n_envs) < 0.15
        trunc = (rng.random(n_envs) < 0.05) & ~term
        fin = rng.standard_normal((n_envs, 4))
        kw = {}
        if legal:
            kw["legal"] = [sorted({int(a), 0}) for a in acts]
        w.add_steps(obs, acts, rews, term, trunc, final_obs=fin if final else None, **kw)
        for i in range(n_envs):
            cur[i].append((obs[i], acts[i], rews[i]))
            if term[i] or trunc[i]:
                done_eps.append((i, cur[i], bool(trunc[i]), fin[i]))
                cur[i] = []
    return done_eps, cur


def test_add_steps_stores_each_env_episode_whole(backend, tmp_path, rng):
    with fastrl.BatchWriter(tmp_path, n_actions=N_ACTIONS, fsync=False) as w:
        done_eps, open_eps = _vector_run(w, rng, n_envs=6, steps=60, legal=True)
    b = fastrl.load_batch(w.path)
    assert fastrl.validate(w.path) == []
    n_open = sum(1 for c in open_eps if c)
    assert b.num_episodes == len(done_eps) + n_open
    for k, (i, steps, trunc, fin) in enumerate(done_eps):
        ep = b.episode(k)
        np.testing.assert_array_equal(ep.obs, np.asarray([s[0] for s in steps], np.float32))
        np.testing.assert_array_equal(ep.actions, [s[1] for s in steps])
        assert ep.is_truncated == trunc
        np.testing.assert_array_equal(ep.final_obs, fin.astype(np.float32))
        assert ep.masks[np.arange(len(ep)), ep.actions].all() and ep.masks[:, 0].all()
    for ep in list(b.episodes())[len(done_eps):]:  # open at close: stored, truncated
        assert ep.is_truncated


def test_add_steps_equals_add_episode(backend, tmp_path, rng):
    """The same episodes through add_steps and add_episode give the same bytes."""
    with fastrl.BatchWriter(tmp_path / "v", n_actions=N_ACTIONS, fsync=False,
                            partial="drop") as w:
        done_eps, _ = _vector_run(w, rng, n_envs=4, steps=50)
    with fastrl.BatchWriter(tmp_path / "e", n_actions=N_ACTIONS, fsync=False) as e:
        for i, steps, trunc, fin in done_eps:
            e.add_episode(obs=[s[0] for s in steps], actions=[s[1] for s in steps],
                          rewards=[s[2] for s in steps], truncated=trunc, final_obs=fin)
    assert _files(w.path) == _files(e.path)


def test_add_steps_partial_drop_and_errors(tmp_path, rng):
    w = fastrl.BatchWriter(tmp_path, n_actions=N_ACTIONS, fsync=False, partial="drop")
    obs = np.zeros((3, 2))
    w.add_steps(obs, [0, 1, 2], [0.0, 0.0, 0.0], [False, True, False], [False] * 3)
    with pytest.raises(ValueError, match="earlier steps had 3"):
        w.add_steps(np.zeros((2, 2)), [0, 1], [0.0, 0.0], [False] * 2, [False] * 2)
    bad = np.zeros((3, 2))
    bad[0, 1] = np.nan
    with pytest.raises(EpisodeError, match=r"environment 0: obs\[1\] is NaN") as info:
        w.add_steps(bad, [0, 1, 2], [0.0] * 3, [True, True, False], [False] * 3)
    assert info.value.step == 1
    path = w.close()
    b = fastrl.load_batch(path)
    assert [len(e) for e in b.episodes()] == [1, 1]  # env 1 twice; env 0 rejected; env 2 dropped


def test_add_steps_gymnasium_sync_vector_env(tmp_path):
    gym = pytest.importorskip("gymnasium")
    from gymnasium.vector import AutoresetMode, SyncVectorEnv
    envs = SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=30)] * 4,
                         autoreset_mode=AutoresetMode.SAME_STEP)
    obs, info = envs.reset(seed=0)
    r = np.random.default_rng(0)
    with fastrl.BatchWriter(tmp_path, n_actions=2, fsync=False) as w:
        for _ in range(100):
            actions = r.integers(0, 2, 4)
            nxt, rew, term, trunc, info = envs.step(actions)
            w.add_steps(obs, actions, rew, term, trunc, final_obs=info.get("final_obs"))
            obs = nxt
    envs.close()
    b = fastrl.load_batch(w.path)
    assert fastrl.validate(w.path) == [] and b.final_obs is not None
    assert b.masks.all()  # CartPole has no action mask: every action legal


# -- final observations, mask-less episodes ------------------------------------------------------

def test_final_obs_column(backend, tmp_path, rng):
    eps = _episodes(rng, 5)
    finals = rng.standard_normal((5, 5))
    with fastrl.BatchWriter(tmp_path, n_actions=N_ACTIONS, fsync=False, shard_bytes=400) as w:
        for ep, fin in zip(eps, finals):
            w.add_episode(**ep, final_obs=fin)
    ds = fastrl.open_dataset(w.path)
    got = np.concatenate([p.final_obs for p in ds.parts])
    np.testing.assert_array_equal(got, finals.astype(np.float32))
    assert fastrl.validate(w.path) == []
    for part in ds.parts:
        assert os.stat(part.path / "final_obs.float32.bin").st_mode & 0o222 == 0  # read-only


def test_final_obs_must_agree(tmp_path, rng):
    eps = _episodes(rng, 2)
    w = fastrl.BatchWriter(tmp_path, n_actions=N_ACTIONS, fsync=False)
    w.add_episode(**eps[0], final_obs=np.zeros(5))
    with pytest.raises(EpisodeError, match="final_obs missing"):
        w.add_episode(**eps[1])
    with pytest.raises(EpisodeError, match=r"final_obs\[2\] is \+inf"):
        w.add_episode(**eps[1], final_obs=[0, 0, 1e39, 0, 0])
    with pytest.raises(EpisodeError, match=r"shape \(5,\)"):
        w.add_episode(**eps[1], final_obs=np.zeros(4))
    w.add_episode(**eps[1], final_obs=np.ones(5))
    assert fastrl.load_batch(w.close()).final_obs.shape == (2, 5)


def test_episodes_without_masks(backend, tmp_path, rng):
    with fastrl.BatchWriter(tmp_path, n_actions=3, mask_pad=8, fsync=False) as w:
        w.add_episode(obs=rng.standard_normal((4, 2)), actions=[0, 2, 1, 0], rewards=[1.0] * 4)
        w.add_step(obs=[0.0, 1.0], action=2, reward=0.5)
        w.end_episode(truncated=True)
    b = fastrl.load_batch(w.path)
    assert b.masks[:, :3].all() and not b.masks[:, 3:].any()
    with pytest.raises(EpisodeError, match="n_actions is required when episodes have no action"):
        fastrl.BatchWriter(tmp_path / "x").add_episode(obs=[[0.0]], actions=[0], rewards=[0.0])
    with pytest.raises(EpisodeError, match="outside"):
        fastrl.BatchWriter(tmp_path / "y", n_actions=2).add_episode(
            obs=[[0.0]], actions=[2], rewards=[0.0])


def test_bad_open_episode_at_close_costs_only_itself(tmp_path):
    w = fastrl.BatchWriter(tmp_path, n_actions=2, fsync=False)
    w.add_steps(np.zeros((2, 1)), [0, 1], [0.0, 0.0], [True, False], [False, False])
    w.add_steps(np.zeros((2, 1)), [0, 1], [0.0, np.inf], [False, False], [False, False])
    with pytest.warns(RuntimeWarning, match="environment 1 was not stored"):
        path = w.close()
    b = fastrl.load_batch(path)
    assert [len(e) for e in b.episodes()] == [1, 1] and b.episode(1).is_truncated


def test_add_steps_long_episode_pages_out(backend, tmp_path, rng):
    """An episode longer than the shared buffers (MAX_PAGE steps) is stored whole and equal."""
    from fastrl._batch.vector import MAX_PAGE
    T = 2 * MAX_PAGE + 37
    obs = rng.standard_normal((T, 2, 3))
    acts = rng.integers(0, N_ACTIONS, (T, 2))
    rews = rng.standard_normal((T, 2))
    term = np.zeros((T, 2), bool)
    term[-1, 0] = True
    term[::5, 1] = True   # env 1: short episodes meanwhile
    with fastrl.BatchWriter(tmp_path / "v", n_actions=N_ACTIONS, fsync=False) as w:
        for t in range(T):
            w.add_steps(obs[t], acts[t], rews[t], term[t], [False, False])
    b = fastrl.load_batch(w.path)
    long_ep = max(b.episodes(), key=len)
    assert len(long_ep) == T
    np.testing.assert_array_equal(long_ep.obs, obs[:, 0].astype(np.float32))
    np.testing.assert_array_equal(long_ep.actions, acts[:, 0])
    assert b.count == 2 * T and fastrl.validate(w.path) == []


def test_rejected_first_episode_decides_nothing(tmp_path):
    w = fastrl.BatchWriter(tmp_path, fsync=False)
    with pytest.raises(EpisodeError, match="reward is NaN"):
        w.add_episode(obs=[[0.0, 1.0]], actions=[0], rewards=[np.nan], mask=[[1, 1, 1]],
                      values=[0.5])
    assert w.layout is None and not any(p.name.startswith(".fastrl-tmp") for p in
                                        tmp_path.iterdir())
    w.add_episode(obs=[[0.0, 1.0, 2.0]], actions=[1], rewards=[1.0], mask=[[1, 1]])
    b = fastrl.load_batch(w.close())
    assert (b.obs_dim, b.n_actions, b.values) == (3, 2, None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_another_thread_holds_the_writer(tmp_path, rng):
    """A child forked while another thread is inside a writer call must not hang on the
    writer's lock when it leaves the with block or closes."""
    eps = _episodes(rng, 3)
    w = fastrl.BatchWriter(tmp_path, n_actions=N_ACTIONS, fsync=False)
    w.add_episode(**eps[0])
    w._lock.acquire()  # stands for a harness thread in the middle of add_episode
    try:
        pid = os.fork()
        if pid == 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w.close()
                w.abort()
                w.__exit__(None, None, None)
            os._exit(0)
    finally:
        w._lock.release()
    deadline = 20
    import time
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the writer's lock")
    assert os.waitstatus_to_exitcode(status) == 0
    w.add_episode(**eps[1])
    assert fastrl.load_batch(w.close()).num_episodes == 2
