"""fastrl.ray: export over Ray tasks equals a local export transition for transition; reading a
sharded dataset with Ray Data gives one read task per shard, and ``filter`` prunes shards.

Skipped when Ray Data is not installed. One local Ray instance (2 CPUs, no dashboard) for the
module, shut down at teardown."""

import json
import os
import threading

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import fastrl  # noqa: E402
from fastrl import bot, game  # noqa: E402
from fastrl.errors import EpisodeError  # noqa: E402
from fastrl.export import export_episodes  # noqa: E402
from fastrl.ray.export import split_tasks  # noqa: E402

fray = pytest.importorskip("fastrl.ray")

pytestmark = [
    # Ray Data's own deprecation notices (ray.data.context), not ours to fix
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:ray.*"),
]

COLUMNS = ("obs", "actions", "rewards", "masks", "dones", "values", "logprobs", "truncated")
SHARD = 256 << 10


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 << 20,
             log_to_driver=False, configure_logging=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def episodes_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("eps") / "episodes"
    bot.write_episodes(d, episodes=18, seed=0, per_file=3, fsync=False)
    return d


@pytest.fixture(scope="module")
def local_export(episodes_dir, tmp_path_factory):
    res = export_episodes(episodes_dir, tmp_path_factory.mktemp("local"),
                          spec=game.game_spec(), shard_bytes=SHARD, progress=False)
    return res.path


@pytest.fixture(scope="module")
def ray_export(ray_cluster, episodes_dir, tmp_path_factory):
    return fray.export_ray(episodes_dir, tmp_path_factory.mktemp("ray"), num_tasks=2,
                           spec=game.game_spec(), shard_bytes=SHARD)


def _same(a_path, b_path):
    a, b = fastrl.open_dataset(a_path), fastrl.open_dataset(b_path)
    assert len(a) == len(b) > 0 and a.num_episodes == b.num_episodes
    idx = np.arange(len(a))
    ga, gb = a.gather(idx), b.gather(idx)
    assert set(ga) == set(gb) == set(COLUMNS)
    for name in COLUMNS:
        assert np.array_equal(ga[name], gb[name]), name
    for i in (0, a.num_episodes // 2, a.num_episodes - 1):
        assert np.array_equal(a.episode(i).actions, b.episode(i).actions)


def test_export_ray_equals_local_export(ray_export, local_export):
    assert fastrl.validate(ray_export) == []
    _same(ray_export, local_export)
    m = json.loads((ray_export / "meta.json").read_text())
    local = json.loads((local_export / "meta.json").read_text())
    assert m["sharded"] is True and m["ray"] == {"tasks": 2}
    assert m["shardBytes"] == SHARD and m["obsSpec"] == local["obsSpec"]
    assert (m["count"], m["episodes"]) == (local["count"], local["episodes"])
    # shard boundaries may differ only where a task's last shard ends early
    assert len(local["shards"]) <= len(m["shards"]) <= len(local["shards"]) + 1
    for k, entry in enumerate(m["shards"]):
        own = json.loads((ray_export / entry["path"] / "meta.json").read_text())["shard"]
        assert own == {"index": k, "firstRow": entry["firstRow"],
                       "firstEpisode": entry["firstEpisode"]}
    assert not [e for e in os.listdir(ray_export.parent) if e.startswith(".fastrl-tmp")]


@pytest.fixture(scope="module")
def ray_export_3(ray_cluster, episodes_dir, tmp_path_factory):
    """Without shard_bytes: one shard per task."""
    return fray.export_ray(episodes_dir, tmp_path_factory.mktemp("ray3"), num_tasks=3,
                           spec=game.game_spec())


def test_export_ray_one_shard_per_task_without_shard_bytes(ray_export_3, local_export):
    out = ray_export_3
    m = json.loads((out / "meta.json").read_text())
    assert len(m["shards"]) == 3 and m["shardBytes"] is None
    assert fastrl.validate(out) == []
    _same(out, local_export)


def test_cmd_export_ray(ray_cluster, episodes_dir, local_export, tmp_path, capsys):
    """What ``fastrl export --ray --ray-tasks 2`` runs (the flags are added to export.py)."""
    import argparse

    from fastrl.cli.export import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    spec = tmp_path / "spec.json"
    spec.write_text(game.game_spec().to_json())
    args = parser.parse_args(["export", str(episodes_dir), "--out", str(tmp_path / "out"),
                              "--spec", str(spec), "--shard-size", "256KiB", "--ray",
                              "--ray-tasks", "2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert fastrl.validate(out) == []
    _same(out, local_export)


def test_export_ray_skip_and_fail_like_local(ray_cluster, episodes_dir, tmp_path):
    bad = tmp_path / "eps"
    bad.mkdir()
    for p in sorted(episodes_dir.iterdir())[:3]:
        (bad / p.name).write_bytes(p.read_bytes())
    lines = (bad / sorted(os.listdir(bad))[1]).read_text().splitlines()
    lines[1] = lines[1].replace('"action":', '"action_":', 1)  # episode 1 of file 1 is bad
    target = bad / sorted(os.listdir(bad))[1]
    target.write_text("\n".join(lines) + "\n")
    local = export_episodes(bad, tmp_path / "l", spec=game.game_spec(), on_error="skip",
                            n_actions=game.N_ACTIONS, progress=False)
    out = fray.export_ray(bad, tmp_path / "r", num_tasks=2, spec=game.game_spec(),
                          n_actions=game.N_ACTIONS, on_error="skip")
    _same(out, local.path)
    m = json.loads((out / "meta.json").read_text())
    assert m["skippedCount"] == 1 and m["skipped"] == local.skipped
    with pytest.raises(EpisodeError) as exc:
        fray.export_ray(bad, tmp_path / "f", num_tasks=2, spec=game.game_spec(),
                        n_actions=game.N_ACTIONS)
    assert exc.value.source == str(target) and exc.value.episode == 1
    assert os.listdir(tmp_path / "f") == [".fastrl.lock"] or \
        not [e for e in os.listdir(tmp_path / "f") if not e.startswith(".fastrl.lock")]


def test_split_tasks_contiguous_and_balanced():
    tasks = [(f"f{i}", 0, size) for i, size in enumerate([5, 1, 1, 1, 8, 1, 1, 1, 1])]
    for n in range(1, 12):
        groups = split_tasks(tasks, n)
        assert len(groups) == min(n, len(tasks)) and all(groups)
        assert [t for g in groups for t in g] == tasks  # file order kept
    assert [len(g) for g in split_tasks(tasks, 2)] == [4, 5]  # 8 + 12 bytes


def _rows(ds):
    """Every row, in global transition order (Ray does not keep the order of parts)."""
    rows = ds.take_all()
    rows.sort(key=lambda r: r["index"])
    return rows


def test_read_dataset_equals_local(ray_export):
    parts = fray.plan_parts(ray_export)
    n_shards = len(json.loads((ray_export / "meta.json").read_text())["shards"])
    src = fray.FastrlDatasource(parts, ("obs", "index"), 688, 208)
    assert len(src.get_read_tasks(1)) == len(src.get_read_tasks(64)) == n_shards
    ref = fastrl.open_dataset(ray_export)
    want = ref.gather(np.arange(len(ref)))
    ds = fray.read_dataset(ray_export, columns=COLUMNS + ("index",))
    assert ds.count() == len(ref)
    got = ds.to_numpy_refs()  # blocks -> dict of arrays
    cols = [ray.get(r) for r in got]
    index = np.concatenate([c["index"] for c in cols])
    order = np.argsort(index)
    assert np.array_equal(index[order], np.arange(len(ref)))
    for name in COLUMNS:
        arr = np.concatenate([c[name] for c in cols])[order]
        assert arr.dtype == want[name].dtype and np.array_equal(arr, want[name]), name


def test_read_dataset_plain_batches_in_a_root(ray_cluster, tmp_path):
    from conftest import random_episode
    rng = np.random.default_rng(3)
    for n in (7, 5):  # two plain batches (other producers may omit optional columns)
        with fastrl.BatchWriter(tmp_path, n_actions=10, fsync=False) as w:
            for _ in range(n):
                w.add_episode(**random_episode(rng, int(rng.integers(1, 20))))
    parts = fray.plan_parts(tmp_path)
    assert [p.shard for p in parts] == [None, None]
    assert parts[0].filter_view()["episodeReturn"] is not None
    ref = fastrl.open_dataset(tmp_path)
    rows = _rows(fray.read_dataset(tmp_path, columns=("obs", "actions", "index")))
    want = ref.gather(np.arange(len(ref)))["obs"]
    assert np.array_equal(np.stack([r["obs"] for r in rows]), want)
    first = fray.read_dataset(tmp_path, filter=lambda s: s["rowStart"] == 0)
    assert first.count() == ref.parts[0].count


def test_read_dataset_torch_and_splits(ray_export):
    torch = pytest.importorskip("torch")
    ds = fray.read_dataset(ray_export, columns=("obs", "actions", "masks"))
    batch = next(iter(ds.iter_torch_batches(batch_size=64)))
    assert batch["obs"].dtype == torch.float32 and tuple(batch["obs"].shape) == (64, 688)
    assert batch["masks"].dtype == torch.uint8 and tuple(batch["masks"].shape) == (64, 208)
    assert batch["actions"].dtype == torch.int32
    total = len(fastrl.open_dataset(ray_export))
    assert sum(s.count() for s in ds.split(2)) == total
    counts = [0, 0]

    def consume(i, it):
        for b in it.iter_batches(batch_size=128, batch_format="numpy"):
            counts[i] += len(b["actions"])

    its = ds.streaming_split(2)  # consumed concurrently, as by two trainer workers
    threads = [threading.Thread(target=consume, args=(i, it)) for i, it in enumerate(its)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sum(counts) == total


def test_filter_prunes_shards(ray_export):
    m = json.loads((ray_export / "meta.json").read_text())
    keep = [s for s in m["shards"] if s["stats"]["episodeReturn"]["max"] > 0]
    assert 0 < len(keep) < len(m["shards"])
    seen = []

    def pred(stats):
        seen.append(stats["shard"])
        return stats["episodeReturn"]["max"] > 0

    ds = fray.read_dataset(ray_export, filter=pred, columns=("actions", "index"))
    assert sorted(seen) == list(range(len(m["shards"])))  # called once per shard, up front
    rows = _rows(ds)
    want = np.concatenate([np.arange(s["firstRow"], s["firstRow"] + s["count"]) for s in keep])
    assert np.array_equal([r["index"] for r in rows], want)
    ref = fastrl.open_dataset(ray_export).gather(want)
    assert np.array_equal([r["actions"] for r in rows], ref["actions"])
    none = fray.read_dataset(ray_export, filter=lambda s: False)
    assert none.count() == 0


def test_read_dataset_from_s3(ray_export_3, s3):
    """Workers read their shard straight from an S3 API (moto server on loopback)."""
    from fastrl import storage
    bucket, opts = s3
    url = storage.upload_batch(ray_export_3, f"{bucket}/ray-root", opts)
    keep = lambda st: st["shard"] % 2 == 0  # noqa: E731
    ds = fray.read_dataset(f"{bucket}/ray-root", fs_options=opts, filter=keep,
                           columns=("obs", "rewards", "index"))
    rows = _rows(ds)
    local = fray.read_dataset(ray_export_3, filter=keep, columns=("obs", "rewards", "index"))
    want = _rows(local)
    assert len(rows) == len(want) > 0
    assert all(a["index"] == b["index"] and np.array_equal(a["obs"], b["obs"])
               and a["rewards"] == b["rewards"] for a, b in zip(rows, want, strict=True))
    assert url.endswith(ray_export_3.name)
