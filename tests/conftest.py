"""Shared fixtures: every test that takes ``backend`` runs once per kernel implementation."""

import os
import secrets
import socket

import numpy as np
import pytest

from fastrl import _kernels as _backend


def _backends():
    if _backend.BACKEND == "numpy" and _backend.REASON.startswith("forced"):
        return ["numpy"]  # FASTRL_PURE_NUMPY=1: the CI run that proves the fallback alone
    return _backend.available()


@pytest.fixture(params=_backends())
def backend(request):
    """Run the test with the ``cython`` or the ``numpy`` kernels active."""
    with _backend.use(request.param):
        yield request.param


def random_episode(rng, T, obs_dim=6, n_actions=10, form="legal", values=False, logprobs=False,
                   obs_dtype=np.float64, truncated=False):
    """A valid random episode: keyword arguments for ``BatchWriter.add_episode``."""
    legal = [sorted(rng.choice(n_actions, size=int(rng.integers(1, n_actions + 1)),
                               replace=False).tolist()) for _ in range(T)]
    actions = [int(rng.choice(ids)) for ids in legal]
    ep = {"obs": rng.standard_normal((T, obs_dim)).astype(obs_dtype), "actions": actions,
          "rewards": rng.standard_normal(T), "truncated": truncated}
    if form == "legal":
        ep["legal"] = legal
    else:
        mask = np.zeros((T, n_actions), dtype=bool if form == "bool" else np.uint8)
        for t, ids in enumerate(legal):
            mask[t, ids] = 1
        ep["mask"] = mask
    if values:
        ep["values"] = rng.standard_normal(T)
    if logprobs:
        ep["logprobs"] = -rng.random(T)
    return ep


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def pytest_report_header(config):
    return (f"fastrl backend: {_backend.BACKEND} ({_backend.REASON}); "
            f"available: {', '.join(_backend.available())}; "
            f"FASTRL_PURE_NUMPY={os.environ.get('FASTRL_PURE_NUMPY', '')}")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """(bucket URL, fs_options) of a moto S3 server on 127.0.0.1, stopped at teardown."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        import s3fs
        opts = {"key": "testing", "secret": "testing", "skip_instance_cache": True,
                "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}",
                                  "region_name": "us-west-2"}}
        # moto keeps its buckets per process, across server instances: one bucket per module
        bucket = f"fastrl-test-{secrets.token_hex(4)}"
        s3fs.S3FileSystem(**opts).mkdir(bucket)
        yield f"s3://{bucket}", opts
    finally:
        server.stop()
