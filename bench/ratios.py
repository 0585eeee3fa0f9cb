"""One table of the benchmark suites' throughputs and their ratios to the baselines measured in
the same run (np.copyto, the best vectorized NumPy code, gymnasium, raw tofile, orjson, in-RAM
arrays), with the project's targets marked met or missed.

    python bench/ratios.py                        # run the suites (quick sizes), print the table
    python bench/ratios.py --full                 # the full workload (FASTRL_BENCH_FULL=1)
    python bench/ratios.py --save run.json        # ... and keep pytest-benchmark's JSON
    python bench/ratios.py --benchmark-json run.json   # table of an earlier run, nothing re-run
    python bench/ratios.py --markdown             # the table as Markdown (bench/README.md)
    python bench/ratios.py --record-floors        # re-measure the regression guard's ratios and
                                                  # rewrite bench/baseline_ratios.json

Ratios are throughput ratios (per transition, state or byte, so a baseline measured on a subset
compares fairly), except rows marked "time", which compare time per item (lower is better).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Rows of the table, in order: (key, label). Keys are the ``extra_info['key']`` the suites set.
ROWS = {
    "pack": [
        ("pack:cython:legal", "cython, legal-id lists"),
        ("pack:cython:dense", "cython, dense masks"),
        ("pack:numpy:legal", "numpy path, legal-id lists"),
        ("pack:numpy:dense", "numpy path, dense masks"),
        ("pack:npbest:legal", "best vectorized NumPy, legal ids"),
        ("pack:npbest:dense", "best vectorized NumPy, dense"),
        ("pack:copyto", "np.copyto of the output bytes"),
    ],
    "encode": [
        ("encode:cython:columns", "cython, from columns"),
        ("encode:cython:dicts", "cython, from JSON-parsed dicts"),
        ("encode:numpy:columns", "numpy path, from columns"),
        ("encode:numpy:dicts", "numpy path, from dicts"),
        ("encode:copyto", "np.copyto of the output"),
        ("encode:gym_flatten", "gymnasium flatten, 1 state/call"),
    ],
    "writer": [
        ("writer:cython:arrays", "BatchWriter, cython"),
        ("writer:numpy:arrays", "BatchWriter, numpy path"),
        ("writer:nofsync", "BatchWriter, fsync=False"),
        ("writer:crc_nofsync", "BatchWriter, CRC on, fsync off"),
        ("writer:dense_crc_nofsync", "same, dense masks"),
        ("writer:add_steps64", "add_steps, 64 envs, fsync off"),
        ("writer:short_episodes", "add_episode, 8-step episodes"),
        ("writer:lists", "BatchWriter, legal as lists"),
        ("writer:tofile", "ndarray.tofile, 5 columns"),
        ("writer:tofile_fsync", "ndarray.tofile + fsync"),
        ("writer:savez", "np.savez"),
        ("writer:savez_compressed", "np.savez_compressed (subset)"),
        ("writer:h5py", "h5py, 5 datasets"),
    ],
    "export": [
        ("export:w1", "export (scanner), 1 worker"),
        ("export:w2", "export (scanner), 2 workers"),
        ("export:w1_orjson", "export (orjson path), 1 worker"),
        ("export:w2_orjson", "export (orjson path), 2 workers"),
        ("export:orjson_parse", "orjson parse-only"),
        ("export:json_parse", "stdlib json parse-only"),
        ("export:orjson_parse_2proc", "orjson parse-only, 2 processes"),
    ],
    "load": [
        ("load:open", "load_batch (open)"),
        ("load:episodes:disk", "batch.episode(i), every i"),
        ("load:episodes:ram", "slices of in-RAM columns"),
        ("load:sample:disk", "batch.sample(4096), open batch"),
        ("load:sample:disk-fresh", "load_batch + sample(4096)"),
        ("load:sample:ram", "same gather, in-RAM arrays"),
        ("load:fromfile", "np.fromfile, whole batch"),
        ("load:materialize", "load_batch + copy to RAM"),
    ],
    "checksum": [
        ("checksum:crc32", "zlib.crc32"),
        ("checksum:fastrl", "fastrl's CRC-32 (isal)"),
        ("checksum:copyto", "np.copyto, same bytes"),
        ("checksum:writer_on", "BatchWriter checksum=True"),
        ("checksum:writer_off", "BatchWriter checksum=False"),
    ],
}

# key -> comparisons (baseline key, kind, target). kind "speed": throughput ratio key/baseline
# (higher is better); "time": time-per-item ratio (lower is better). target: (op, value) or None.
# Special baselines: "@rate" compares the throughput itself (items/s) with the target,
# "@time" the time per call (seconds), "@paired" the baseline timed in alternation with the
# benchmark itself (``bench(..., paired=...)``): ratio = baseline time / benchmark time.
COMPARE = {
    "pack:cython:legal": [("pack:copyto", "speed", (">=", 0.6)),
                          ("pack:npbest:legal", "speed", (">=", 6.0)),
                          ("pack:numpy:legal", "speed", None)],
    "pack:cython:dense": [("pack:copyto", "speed", (">=", 0.6)),
                          ("pack:npbest:dense", "speed", (">=", 6.0)),
                          ("pack:numpy:dense", "speed", None)],
    "pack:numpy:legal": [("pack:npbest:legal", "speed", None)],
    "pack:numpy:dense": [("pack:npbest:dense", "speed", None)],
    "pack:npbest:legal": [("pack:copyto", "speed", None)],
    "pack:npbest:dense": [("pack:copyto", "speed", None)],
    "encode:cython:columns": [("encode:copyto", "speed", (">=", 0.6)),
                              ("encode:numpy:columns", "speed", (">=", 2.5)),
                              ("encode:gym_flatten", "speed", (">=", 35.0))],
    "encode:cython:dicts": [("@rate", "speed", (">=", 1e6)),
                            ("encode:numpy:dicts", "speed", None),
                            ("encode:gym_flatten", "speed", None)],
    "encode:numpy:columns": [("encode:gym_flatten", "speed", None)],
    "writer:crc_nofsync": [("@paired", "speed", (">=", 0.9)),
                           ("writer:tofile", "speed", None)],
    "writer:dense_crc_nofsync": [("@paired", "speed", (">=", 0.9)),
                                 ("writer:tofile", "speed", None)],
    "writer:add_steps64": [("@paired", "speed", (">=", 0.8)),
                           ("writer:tofile", "speed", None)],
    "writer:short_episodes": [("@time", "time", None)],
    "writer:cython:arrays": [("@paired", "speed", (">=", 0.9)),
                             ("writer:tofile_fsync", "speed", None)],
    "writer:numpy:arrays": [("writer:tofile_fsync", "speed", None)],
    "writer:nofsync": [("writer:tofile", "speed", (">=", 0.8))],
    "writer:lists": [("writer:tofile_fsync", "speed", None)],
    "writer:savez": [("writer:tofile", "speed", None)],
    "writer:savez_compressed": [("writer:tofile", "speed", None)],
    "writer:h5py": [("writer:tofile", "speed", None)],
    "export:w1": [("@paired", "speed", (">=", 1.0)),
                  ("export:orjson_parse", "speed", None),
                  ("export:w1_orjson", "speed", None),
                  ("export:json_parse", "speed", None)],
    "export:w1_orjson": [("export:orjson_parse", "speed", None)],
    "export:w2_orjson": [("export:w1_orjson", "speed", None)],
    "export:w2": [("@paired", "speed", (">=", 1.8)),
                  ("export:w1", "speed", None),
                  ("export:orjson_parse", "speed", None)],
    "export:orjson_parse": [("export:json_parse", "speed", None)],
    "export:orjson_parse_2proc": [("export:orjson_parse", "speed", None)],
    "load:open": [("@time", "time", ("<", 5e-3))],
    "load:episodes:disk": [("load:episodes:ram", "time", None)],
    "load:sample:disk": [("load:sample:ram", "time", ("<=", 1.2))],
    "load:sample:disk-fresh": [("load:sample:ram", "time", None)],
    "load:materialize": [("load:fromfile", "speed", None)],
    "checksum:crc32": [("checksum:copyto", "speed", None)],
    "checksum:fastrl": [("checksum:crc32", "speed", None), ("checksum:copyto", "speed", None)],
    "checksum:writer_on": [("checksum:writer_off", "speed", (">=", 0.95))],
}

UNITS = {"transitions": "trans", "states": "states", "episodes": "eps", "bytes": "B",
         "opens": "opens"}


def _fmt_rate(v: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:.3g} {suffix}"
    return f"{v:.3g} "


def _fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def _fmt_target(op: str, value: float, special: str | None) -> str:
    if special == "@rate":
        return f"{op} {_fmt_rate(value).strip()}/s"
    if special == "@time":
        return f"{op} {_fmt_time(value)}"
    return f"{op} {value:g}x"


def _ok(op: str, got: float, want: float) -> bool:
    return {">=": got >= want, "<=": got <= want, "<": got < want, ">": got > want}[op]


def load_results(path) -> tuple[dict, dict]:
    """(key -> benchmark record, the JSON's machine/commit info)."""
    with open(path) as f:
        doc = json.load(f)
    out = {}
    for b in doc.get("benchmarks", []):
        key = (b.get("extra_info") or {}).get("key")
        if key:
            out[key] = b
    return out, doc


def build_table(results: dict, stat: str = "min") -> tuple[list[list[str]], list[tuple]]:
    """Rows of strings and the list of (target text, shown value, met) for every target with
    data. ``stat``: which statistic of each benchmark's rounds is used ("min" or "median")."""
    header = ["group", "benchmark", f"{stat}/call", "throughput", "GB/s", "ratio", "vs",
              "target", "met"]
    rows = [header]
    verdicts = []

    def secs(b):
        return b["stats"][stat]

    def rate(b):
        return b["extra_info"]["items"] / secs(b)

    for group, entries in ROWS.items():
        for key, label in entries:
            b = results.get(key)
            if b is None:
                continue
            ex = b["extra_info"]
            med = secs(b)
            unit = UNITS.get(ex.get("unit"), ex.get("unit", ""))
            gbs = f"{ex['bytes'] / med / 1e9:.2f}" if ex.get("bytes") else ""
            first = [group, label, _fmt_time(med), f"{_fmt_rate(rate(b))}{unit}/s", gbs]
            comps = []
            for base, kind, target in COMPARE.get(key, []):
                if base == "@rate":
                    got, vs = rate(b), "absolute"
                    shown = f"{_fmt_rate(got).strip()}/s"
                elif base == "@time":
                    got, vs = med / ex["items"], "absolute"
                    shown = _fmt_time(got)
                elif base == "@paired":
                    pair = ex.get("paired")
                    if not pair:
                        continue
                    got = (ex["items"] / med) / (pair["items"] / pair[stat])
                    vs = f"{pair['label']} (alternating rounds)"
                    shown = f"{got:.3g}x"
                else:
                    ob = results.get(base)
                    if ob is None:
                        continue
                    vs = dict(e for g in ROWS.values() for e in g).get(base, base)
                    if kind == "speed":
                        got = rate(b) / rate(ob)
                        shown = f"{got:.3g}x"
                    else:
                        got = (med / ex["items"]) / (secs(ob) / ob["extra_info"]["items"])
                        shown = f"{got:.3g}x time"
                tgt = met = ""
                if target is not None:
                    op, want = target
                    special = base if base in ("@rate", "@time") else None
                    tgt = _fmt_target(op, want, special)
                    ok = _ok(op, got, want)
                    met = "yes" if ok else "NO"
                    verdicts.append((f"{group}: {label} {tgt}"
                                     + ("" if special else f" {vs}"), shown, ok))
                comps.append([shown, vs, tgt, met])
            if not comps:
                rows.append(first + ["", "", "", ""])
            for i, c in enumerate(comps):
                rows.append((first if i == 0 else ["", "", "", "", ""]) + c)
    return rows, verdicts


def render(rows, markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |",
                 "|" + "|".join("---" for _ in rows[0]) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {2, 3, 4, 5}
    out = []
    for j, r in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def describe(results: dict, doc: dict, stat: str) -> str:
    any_b = next(iter(results.values()), None)
    ex = any_b["extra_info"] if any_b else {}
    n = results.get("pack:copyto", {}).get("extra_info", {}).get("items", "?")
    mi = doc.get("machine_info", {})
    cpu = (mi.get("cpu") or {}).get("brand_raw") or mi.get("processor") or "?"
    when = doc.get("datetime", "")[:19].replace("T", " ")
    return (f"fastrl benchmarks, {ex.get('mode', '?')} mode: {n} transitions; run {when} UTC on "
            f"{cpu} ({os.cpu_count()} CPUs), Python {mi.get('python_version', '?')}; kernels "
            f"single-threaded; files in the page cache; throughputs and ratios from each "
            f"benchmark's {stat} round time")


def run_suite(json_path: Path, full: bool, extra: list[str]) -> int:
    env = dict(os.environ)
    if full:
        env["FASTRL_BENCH_FULL"] = "1"
    cmd = [sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:cacheprovider",
           "-k", "not guard and not tools", f"--benchmark-json={json_path}",
           "--benchmark-columns=median,rounds", *extra]
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark-json", help="read this pytest-benchmark JSON instead of running")
    p.add_argument("--full", action="store_true", help="full workload (FASTRL_BENCH_FULL=1)")
    p.add_argument("--save", help="keep the JSON of the run here")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--stat", choices=("min", "median"), default="min",
                   help="round statistic used (default min: the least disturbed round, the "
                        "steadiest choice on a shared machine)")
    p.add_argument("--record-floors", action="store_true",
                   help="measure the guard's ratios (quick workload, 3 runs) and rewrite "
                        "bench/baseline_ratios.json")
    p.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    args = p.parse_args(argv)

    if args.record_floors:
        sys.path.insert(0, str(ROOT))
        from bench import _benchlib as B
        w = B.workload("quick")
        try:
            doc = B.record_floors(w)
        finally:
            w.cleanup()
        for name, r in doc["ratios"].items():
            print(f"{name:32s} measured {r['measured']}  floor {r['floor']}")
        print(f"wrote {B.BASELINE_FILE}")
        return 0

    if args.benchmark_json:
        path = Path(args.benchmark_json)
    else:
        path = Path(args.save) if args.save else Path(tempfile.mkstemp(suffix=".json")[1])
        rc = run_suite(path.resolve(), args.full, args.pytest_args)
        if rc != 0:
            print(f"ratios.py: the suite failed (pytest exit {rc})", file=sys.stderr)
            return rc
    results, doc = load_results(path)
    if not args.benchmark_json and not args.save:
        path.unlink(missing_ok=True)
    if not results:
        print(f"ratios.py: no fastrl benchmarks in {path}", file=sys.stderr)
        return 1
    rows, verdicts = build_table(results, args.stat)
    print()
    print(describe(results, doc, args.stat))
    print(f"(table printed {datetime.datetime.now():%Y-%m-%d %H:%M})")
    print()
    print(render(rows, args.markdown))
    met = sum(ok for *_, ok in verdicts)
    print()
    print(f"targets: {met} met, {len(verdicts) - met} missed"
          + ("" if met == len(verdicts) else ": "
             + "; ".join(f"{t} (got {s})" for t, s, ok in verdicts if not ok)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
