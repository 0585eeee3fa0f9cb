"""Peak resident memory of a BatchWriter run that writes N transitions (obsDim 512, 208 actions
padded to 256, episodes of 20-180 steps, legal-id lists) generated episode by episode, so the
input never sits in RAM: what the writer itself holds (two staging buffers of ``flush_bytes``,
the vector-env rows, the CRC state).

    python bench/writer_rss.py [transitions] [--fsync] [--vector]

Prints one JSON line: transitions, seconds, peak RSS (MiB, ``VmHWM`` of /proc/self/status: this
process's own high-water mark; ``ru_maxrss`` would include the RSS of the parent that started it,
which Linux carries across exec) and the baseline RSS before the writer started.
"""

import json
import resource
import sys
import tempfile
import time

import numpy as np

import fastrl

OBS_DIM, N_ACTIONS, MASK_PAD = 512, 208, 256


def episodes(n, rng):
    done = 0
    while done < n:
        T = int(min(rng.integers(20, 181), n - done))
        legal = [np.sort(rng.choice(N_ACTIONS, 12, replace=False)) for _ in range(T)]
        yield {"obs": rng.standard_normal((T, OBS_DIM), dtype=np.float32),
               "actions": np.array([ids[0] for ids in legal]), "rewards": rng.standard_normal(T),
               "legal": legal}
        done += T


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv):
    n = int(argv[0]) if argv and argv[0].isdigit() else 200_000
    fsync, vector = "--fsync" in argv, "--vector" in argv
    rng = np.random.default_rng(0)
    base = peak_rss_mib()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        with fastrl.BatchWriter(root, n_actions=N_ACTIONS, mask_pad=MASK_PAD, fsync=fsync) as w:
            if not vector:
                for ep in episodes(n, rng):
                    w.add_episode(**ep)
            else:
                envs, steps = 64, n // 64
                for s in range(steps):
                    acts = rng.integers(0, N_ACTIONS, envs)
                    w.add_steps(rng.standard_normal((envs, OBS_DIM), dtype=np.float32), acts,
                                rng.standard_normal(envs), rng.random(envs) < 0.01,
                                np.zeros(envs, bool), legal=[[int(a)] for a in acts])
        seconds = time.perf_counter() - t0
    peak = peak_rss_mib()
    print(json.dumps({"transitions": w.transitions, "seconds": round(seconds, 3),
                      "peak_rss_mib": round(peak, 1), "baseline_rss_mib": round(base, 1),
                      "fsync": fsync, "vector": vector}))
    return peak


if __name__ == "__main__":
    main(sys.argv[1:])
