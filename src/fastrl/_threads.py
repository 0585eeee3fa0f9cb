"""One place that decides how many threads the kernels may use."""

from __future__ import annotations

import os


def _cgroup_cpu_limit() -> int | None:
    """CPUs allowed by a cgroup v2 (``cpu.max``) or v1 (``cfs_quota_us``) quota, if any."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, int(int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0 and period > 0:
            return max(1, quota // period)
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may run on: affinity mask, capped by a cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(n, limit) if limit else n)


def num_threads(requested: int | None = None) -> int:
    """Thread count for a kernel call: ``requested`` if given (>= 1), else ``FASTRL_NUM_THREADS``,
    else ``OMP_NUM_THREADS``, else the CPUs available to this process."""
    if requested is not None:
        if int(requested) < 1:
            raise ValueError(f"thread count must be >= 1, got {requested}")
        return int(requested)
    for var in ("FASTRL_NUM_THREADS", "OMP_NUM_THREADS"):
        val = os.environ.get(var, "").split(",")[0].strip()
        if val.isdigit() and int(val) >= 1:
            return int(val)
    return available_cpus()
