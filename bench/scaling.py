"""Thread scaling of the kernels beside a threaded np.copyto, measured in the same run.

    python bench/scaling.py                 # full workload (~200k transitions), 1..CPUs threads
    python bench/scaling.py --episodes 200  # a smaller workload (>= 8192 rows to use threads)
    python bench/scaling.py --max-threads 8 --repeats 9

For each thread count k, every kernel runs with ``threads=k`` (the argument of
``fastrl._batch.packing.pack`` and ``ObsSpec.encode``; ``FASTRL_NUM_THREADS`` sets the same default),
and np.copyto of the kernel's output bytes runs split into k row blocks on a thread pool. The
speed-up is time(1 thread) / time(k threads); the target is a kernel speed-up of at least 0.8x
the copy's speed-up at every k (the copy shows what the memory system allows).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _benchlib as B  # noqa: E402
from fastrl._batch.packing import pack  # noqa: E402
from fastrl._threads import available_cpus  # noqa: E402

TARGET = 0.8


def copy_all(dst: dict, src: dict, pool, k: int) -> None:
    for name, a in src.items():
        B.threaded_copy(dst[name], a, pool, k)


def _crc_units(bufs: list, pool, k: int) -> None:
    """k threads, each CRC-ing its own cache-sized buffer 8 times (zlib drops the GIL)."""
    def one(buf):
        for _ in range(8):
            B.crc32_of(buf)
    if k == 1:
        one(bufs[0])
        return
    for f in [pool.submit(one, bufs[i]) for i in range(k)]:
        f.result()


def cpu_capacity(max_threads: int, repeats: int, min_time: float = 0.05) -> dict:
    """{k: how many cores' worth of CPU-bound work k threads get done}, measured with k threads
    CRC-ing their own 256 KiB buffers (cache-resident: no memory-bandwidth limit). k on an idle
    machine; less when other processes hold cores."""
    pool = ThreadPoolExecutor(max_workers=max_threads)
    bufs = [bytes(range(256)) * 1024 for _ in range(max_threads)]
    fns = {k: functools.partial(_crc_units, bufs, pool, k) for k in range(1, max_threads + 1)}
    med = B.interleaved_medians(fns, repeats=repeats, min_time=min_time)
    pool.shutdown()
    return {k: k * med[1] / med[k] for k in fns}


def measure(w: B.Workload, max_threads: int, repeats: int, backend: str,
            min_time: float = 0.05) -> list[dict]:
    ks = list(range(1, max_threads + 1))
    pool = ThreadPoolExecutor(max_workers=max_threads)
    cols, packed = w.out_cols, w.packed
    enc_out, enc_ref = w.encode_out, w.encoded
    copy_dst = {k: v for k, v in cols.items()}
    kernels = {
        "pack, legal ids": ("pack", lambda k: functools.partial(
            pack, w.episodes_legal, cols, 0, B.N_ACTIONS, threads=k)),
        "pack, dense masks": ("pack", lambda k: functools.partial(
            pack, w.episodes_dense, cols, 0, B.N_ACTIONS, threads=k)),
        "encode, columns": ("encode", lambda k: functools.partial(
            w.spec.encode, w.state_columns, out=enc_out, threads=k)),
        "encode, dicts": ("encode", lambda k: functools.partial(
            w.spec.encode, w.state_dicts, out=enc_out, threads=k)),
    }
    copies = {
        "pack": lambda k: functools.partial(copy_all, copy_dst, packed, pool, k),
        "encode": lambda k: functools.partial(B.threaded_copy, enc_out, enc_ref, pool, k),
    }
    fns, bes = {}, {}
    for name, (fam, make) in kernels.items():
        for k in ks:
            fns[(name, k)] = make(k)
            bes[(name, k)] = backend
    for fam, make in copies.items():
        for k in ks:
            fns[("copy:" + fam, k)] = make(k)
    med = B.interleaved_medians(fns, repeats=repeats, min_time=min_time, backends=bes)
    pool.shutdown()
    rows = []
    for name, (fam, _) in kernels.items():
        for k in ks:
            ks_up = med[(name, 1)] / med[(name, k)]
            cp_up = med[("copy:" + fam, 1)] / med[("copy:" + fam, k)]
            rows.append({"kernel": name, "threads": k, "time": med[(name, k)],
                         "speedup": ks_up, "copy_time": med[("copy:" + fam, k)],
                         "copy_speedup": cp_up, "relative": ks_up / cp_up})
    return rows


def render(rows: list[dict], markdown: bool = False) -> str:
    head = ["kernel", "threads", "kernel time", "speed-up", "threaded copy", "copy speed-up",
            "kernel/copy", f"target >= {TARGET}"]
    body = []
    for r in rows:
        ok = r["threads"] == 1 or r["relative"] >= TARGET
        body.append([r["kernel"], str(r["threads"]), f"{r['time'] * 1e3:.2f} ms",
                     f"{r['speedup']:.2f}x", f"{r['copy_time'] * 1e3:.2f} ms",
                     f"{r['copy_speedup']:.2f}x", f"{r['relative']:.2f}",
                     "" if r["threads"] == 1 else ("yes" if ok else "NO")])
    rows_s = [head] + body
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in rows_s) for i in range(len(head))]
    lines = []
    for j, r in enumerate(rows_s):
        lines.append("  ".join(c.rjust(w) if 1 <= i <= 6 else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=B.FULL.episodes,
                   help=f"reference-game episodes (default {B.FULL.episodes}, ~200k transitions)")
    p.add_argument("--max-threads", type=int, default=available_cpus(),
                   help="largest thread count (default: CPUs available)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats (median)")
    p.add_argument("--backend", default=B.backends()[0], help="kernel path (default: cython)")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    sz = B.Sizes("custom", episodes=args.episodes, per_file=50, rounds=1, warmup=0,
                 slow_rounds=1, gym_states=0, savez_compressed_rows=0)
    w = B.Workload(sz)
    try:
        t0 = time.perf_counter()
        w.episodes_legal, w.episodes_dense, w.packed, w.encoded, w.state_dicts  # noqa: B018
        print(f"workload: {w.n} transitions in {len(w.lengths)} episodes (built in "
              f"{time.perf_counter() - t0:.1f} s); {B.machine()}; backend {args.backend}")
        if w.n < 8192:
            print("note: pack uses threads only from 8192 rows on")
        rows = measure(w, args.max_threads, args.repeats, args.backend)
        cap = cpu_capacity(args.max_threads, args.repeats)
    finally:
        w.cleanup()
    print("CPU-bound capacity (k threads of cache-resident zlib.crc32; k on an idle machine): "
          + ", ".join(f"{k} threads -> {c:.2f} cores" for k, c in cap.items()))
    print()
    print(render(rows, args.markdown))
    bad = [r for r in rows if r["threads"] > 1 and r["relative"] < TARGET]
    print(f"\ntarget (kernel speed-up >= {TARGET}x the threaded copy's): "
          + ("met at every thread count" if not bad else
             "missed for " + ", ".join(f"{r['kernel']} @ {r['threads']}" for r in bad)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
