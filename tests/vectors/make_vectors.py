"""Shared test vectors for the Node.js writer (``js/batch_writer.mjs``).

Episodes as JSON, and what ``fastrl.BatchWriter`` writes for them: the SHA-256 of every column
file and its ``meta.json`` text; plus bad episodes with the message Python's writer gives, the
``repr`` of a set of floats (meta.json numbers) and a CRC-32. Both ``node --test`` (js/test/) and
``tests/test_js_writer.py`` check the Node writer against them.

Regenerate after a change to what the Python writer writes (the Python test fails until then):

    python tests/vectors/make_vectors.py          # rewrites writer_cases.json when it differs
    python tests/vectors/make_vectors.py --check   # exit 1 when it is out of date

Cases that need a writer feature this fastrl does not have yet (episodes without masks,
``final_obs``) are stored with ``"expected": null`` and ``"pending"`` saying why; regenerating
once the feature exists fills them in.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("writer_cases.json")

# Column files are every file of a batch but meta.json.
META = "meta.json"

# float64 values whose float32 rounding is worth pinning: ties to even, the float32 overflow edge,
# subnormals, values that underflow to (signed) zero.
ROUNDING = [
    0.1, -0.0, 1 + 2.0 ** -24, 1 + 3 * 2.0 ** -24, 1 - 2.0 ** -25, 3.4028235677973362e38,
    -3.4028235677973362e38, 1e-45, 2.0 ** -150, 2.0 ** -150 * (1 + 2.0 ** -52), 1e-40, 2.5e-39,
    16777217.0, 1 / 3, 1e30, -1e-30, 123456.789, 5e-324, -5e-324, 2.0 ** 24 + 3, 0.5, 65504.0,
]

SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def decode(x):
    """JSON value -> Python value, with the strings "NaN", "Infinity", "-Infinity" as floats
    (the vectors stay plain JSON that JSON.parse accepts)."""
    if isinstance(x, str):
        return SPECIAL.get(x, x)
    if isinstance(x, list):
        return [decode(v) for v in x]
    if isinstance(x, dict):
        return {k: decode(v) for k, v in x.items()}
    return x


# -- feature detection ---------------------------------------------------------------------------

def supports() -> dict:
    """Which optional writer features this fastrl has: final_obs, episodes without masks."""
    import fastrl
    final_obs = "final_obs" in inspect.signature(fastrl.BatchWriter.add_episode).parameters
    with tempfile.TemporaryDirectory() as d:
        w = fastrl.BatchWriter(d, n_actions=2, fsync=False)
        try:
            w.add_episode(obs=[[0.0]], actions=[0], rewards=[0.0])
            no_mask = True
        except (ValueError, TypeError):
            no_mask = False
        w.abort()
    return {"final_obs": final_obs, "no_mask": no_mask}


# -- episodes ------------------------------------------------------------------------------------

def _floats(rng, shape, short):
    x = rng.standard_normal(shape)
    if short:
        x = np.round(x * 4, 3)  # short JSON, still rounded by float32
    return x.tolist()


def episode(rng, T, obs_dim, n_actions, form, *, values=False, logprobs=False, truncated=False,
            final_obs=False, short=False):
    """A valid random episode in the JS writer's field names."""
    legal = [sorted(rng.choice(n_actions, size=int(rng.integers(1, n_actions + 1)),
                               replace=False).tolist()) for _ in range(T)]
    actions = [int(rng.choice(ids)) for ids in legal]
    ep = {"obs": _floats(rng, (T, obs_dim), short), "actions": actions,
          "rewards": _floats(rng, T, short)}
    if form == "legal":
        out = []
        for ids in legal:  # unsorted, sometimes with a repeated id
            ids = list(rng.permutation(ids).tolist())
            if len(ids) > 1 and rng.random() < 0.3:
                ids.append(ids[0])
            out.append(ids)
        ep["legal"] = out
    elif form in ("mask", "bool"):
        rows = []
        for ids in legal:
            row = [0] * n_actions
            for i in ids:
                row[i] = 1
            rows.append([bool(v) for v in row] if form == "bool" else row)
        ep["mask"] = rows
    elif form == "none":
        ep["actions"] = [int(a) for a in rng.integers(0, n_actions, T)]
    else:
        raise ValueError(form)
    if values:
        ep["values"] = _floats(rng, T, short)
    if logprobs:
        ep["logprobs"] = (-np.abs(np.asarray(_floats(rng, T, short)))).tolist()
    if truncated:
        ep["truncated"] = True
    if final_obs:
        ep["finalObs"] = _floats(rng, obs_dim, short)
    return ep


def cases() -> list[dict]:
    """The writer cases: name, options of the JS writer, episodes, features they need."""
    out = []

    def case(name, options, episodes, needs=()):
        out.append({"name": name, "options": options, "needs": list(needs),
                    "episodes": episodes})

    rng = np.random.default_rng(1)
    eps = [episode(rng, int(rng.integers(2, 9)), 3, 5, "mask") for _ in range(4)]
    eps.append(episode(rng, 5, 3, 5, "bool"))
    case("dense_masks", {"nActions": 5}, eps)
    case("dense_masks_inferred", {}, eps)  # nActions and obsDim from the first episode

    rng = np.random.default_rng(2)
    case("legal_lists", {"nActions": 7},
         [episode(rng, int(rng.integers(1, 12)), 4, 7, "legal") for _ in range(6)])

    rng = np.random.default_rng(3)
    case("padding", {"nActions": 6, "maskPad": 16, "obsDim": 2},
         [episode(rng, int(rng.integers(1, 8)), 2, 6, ("legal", "mask")[i % 2])
          for i in range(6)])

    rng = np.random.default_rng(4)
    case("values_logprobs", {"nActions": 4},
         [episode(rng, int(rng.integers(1, 10)), 3, 4, "legal", values=True, logprobs=True)
          for _ in range(5)])
    rng = np.random.default_rng(5)
    case("values_only", {"nActions": 4},
         [episode(rng, int(rng.integers(1, 6)), 2, 4, "mask", values=True) for _ in range(3)])

    rng = np.random.default_rng(6)
    case("truncated", {"nActions": 3},
         [episode(rng, int(rng.integers(1, 7)), 2, 3, "legal", truncated=i % 3 != 1)
          for i in range(7)])

    rng = np.random.default_rng(7)
    n = len(ROUNDING)
    ep = episode(rng, n, 3, 4, "legal", values=True, logprobs=True)
    ep["obs"] = [[ROUNDING[t], ROUNDING[(t + 5) % n], ROUNDING[(t + 11) % n]] for t in range(n)]
    ep["rewards"] = list(ROUNDING)
    ep["values"] = ROUNDING[3:] + ROUNDING[:3]
    ep["logprobs"] = [-abs(v) for v in ROUNDING[7:] + ROUNDING[:7]]
    case("float_rounding", {"nActions": 4},
         [ep, episode(rng, 3, 3, 4, "mask", values=True, logprobs=True)])

    rng = np.random.default_rng(8)
    case("one_step_episodes", {"nActions": 5, "maskPad": 8},
         [episode(rng, 1, 3, 5, ("legal", "mask", "bool")[i % 3], truncated=i == 2)
          for i in range(6)])

    # Returns summed like NumPy (pairwise beyond 8 and 128 values; mean over > 128 episodes).
    rng = np.random.default_rng(9)
    lengths = [1, 2, 7, 8, 9, 130, 300] + rng.integers(1, 12, 150).tolist()
    case("many_episodes_stats", {"nActions": 3},
         [episode(rng, int(T), 1, 3, "legal", short=True) for T in lengths])

    rng = np.random.default_rng(13)
    user = {"run": "bot-7 \u00e9t\u00e9 \U0001f3b2", "lr": 0.0003, "big": 1e22, "tiny": 1e-7,
            "n": 12, "ok": True, "none": None, "list": [1, 2.5, [], {}], "nested": {"a": {"b": []}},
            "quote": "a \"b\" \\ c\n\t\u0001"}
    case("user_meta", {"nActions": 3, "meta": user},
         [episode(rng, 2, 2, 3, "legal") for _ in range(2)])

    rng = np.random.default_rng(10)
    case("no_mask", {"nActions": 5, "maskPad": 8},
         [episode(rng, int(rng.integers(1, 6)), 3, 5, "none", truncated=i == 1)
          for i in range(4)], needs=["no_mask"])
    rng = np.random.default_rng(11)
    eps = [episode(rng, int(rng.integers(1, 6)), 3, 5, "none") for _ in range(2)]
    eps += [episode(rng, 4, 3, 5, "legal"), episode(rng, 3, 3, 5, "mask")]
    case("no_mask_mixed", {"nActions": 5}, eps, needs=["no_mask"])

    rng = np.random.default_rng(12)
    eps = [episode(rng, int(rng.integers(1, 6)), 4, 4, "legal", final_obs=True,
                   truncated=i % 2 == 0, values=True) for i in range(4)]
    eps[0]["finalObs"] = ROUNDING[:4]
    case("final_obs", {"nActions": 4}, eps, needs=["final_obs"])
    return out


def error_cases() -> list[dict]:
    """Bad episodes whose message the JS writer words exactly like Python's: good episodes,
    then the bad one (index len(good)); "NaN"/"Infinity" strings stand for those floats."""
    out = []

    def base(seed, n_good=1, form="legal", **kw):
        rng = np.random.default_rng(seed)
        good = [episode(rng, 3, 3, 6, form, **kw) for _ in range(n_good)]
        bad = episode(rng, 5, 3, 6, form, **kw)
        return good, bad

    def add(name, good, bad, options=None, needs=()):
        out.append({"name": name, "options": options or {"nActions": 6}, "needs": list(needs),
                    "good": good, "bad": bad})

    g, b = base(20)
    b["obs"][2][1] = "NaN"
    add("obs_nan", g, b)
    g, b = base(21, n_good=2)
    b["obs"][3][2] = 1e39  # finite in float64, +inf in float32
    add("obs_overflow", g, b)
    g, b = base(22)
    b["rewards"][1] = -1e39
    add("reward_overflow", g, b)
    g, b = base(23, values=True, logprobs=True)
    b["values"][4] = "NaN"
    add("value_nan", g, b)
    g, b = base(24, values=True, logprobs=True)
    b["logprobs"][0] = "-Infinity"
    add("logprob_inf", g, b)
    g, b = base(25, form="mask")
    b["mask"][3][2] = 2
    add("mask_value", g, b)
    g, b = base(26)
    b["legal"][2] = [1, 9]
    add("legal_id_high", g, b)
    g, b = base(27)
    b["legal"][4] = [-1, 2]
    add("legal_id_negative", g, b)
    g, b = base(28)
    b["actions"][3] = 9
    b["legal"][3] = [0, 1, 2, 3, 4, 5]
    add("action_high", g, b)
    g, b = base(29)
    b["actions"][1] = -1
    add("action_negative", g, b)
    g, b = base(30)
    b["legal"][2] = [i for i in range(6) if i != b["actions"][2]]
    add("action_illegal", g, b)
    g, b = base(31, form="mask")
    b["mask"][0] = [0] * 6
    add("action_illegal_mask", g, b)
    g, b = base(32, values=True)
    del b["values"]
    add("values_missing", g, b)
    g, b = base(33)
    b["logprobs"] = [-0.5] * 5
    add("logprobs_given", g, b)
    g, b = base(34)
    b["rewards"] = b["rewards"][:3]
    add("rewards_length", g, b)
    g, b = base(35, values=True)
    b["values"] = b["values"][:4]
    add("values_length", g, b)
    g, b = base(36)
    b["obs"] = b["obs"][:4]
    add("obs_rows", g, b)
    g, b = base(37, form="mask")
    b["mask"] = b["mask"][:2]
    add("mask_rows", g, b)
    g, b = base(38)
    b["legal"] = b["legal"][:4]
    add("legal_rows", g, b)
    g, b = base(39)
    b.update(obs=[], actions=[], rewards=[], legal=[])
    add("no_steps", g, b)
    g, b = base(40, n_good=0)
    b["obs"][0][0] = "Infinity"
    b["actions"][2] = 7
    add("first_error_wins", g, b)  # step 0 (obs) before step 2 (action)
    g, b = base(41)
    b["rewards"][2] = "NaN"
    b["actions"][2] = 6
    add("reward_before_action", g, b)  # same step: reward is checked first
    g, b = base(42)
    b["mask"] = [[1] * 6 for _ in range(5)]
    add("mask_and_legal", g, b)
    g, b = base(43, form="none")
    b["actions"][3] = 6
    add("no_mask_action_high", g, b, needs=["no_mask"])
    g, b = base(44, final_obs=True)
    b["finalObs"][1] = "NaN"
    b["obs"][0][0] = "NaN"
    add("final_obs_nan", g, b, needs=["final_obs"])  # checked before the steps, at the last one
    g, b = base(45, final_obs=True)
    b["finalObs"] = b["finalObs"][:2]
    add("final_obs_width", g, b, needs=["final_obs"])
    g, b = base(46, final_obs=True)
    del b["finalObs"]
    add("final_obs_missing", g, b, needs=["final_obs"])
    g, b = base(47)
    b["finalObs"] = [0.0, 1.0, 2.0]
    add("final_obs_given", g, b, needs=["final_obs"])
    return out


def _py_episode(ep: dict) -> dict:
    kw = decode(dict(ep))
    if "finalObs" in kw:
        kw["final_obs"] = kw.pop("finalObs")
    return kw


def _py_writer(root, options):
    import fastrl
    return fastrl.BatchWriter(root, n_actions=options.get("nActions"),
                              obs_dim=options.get("obsDim"), mask_pad=options.get("maskPad"),
                              meta=options.get("meta"), fsync=False)


def write_python(root, case: dict) -> Path:
    """Write one case's episodes with fastrl.BatchWriter; return the batch path."""
    with _py_writer(root, case["options"]) as w:
        for ep in case["episodes"]:
            w.add_episode(**_py_episode(ep))
    return Path(w.path)


def digest(batch: Path) -> dict:
    """file name -> SHA-256 of every file in the batch folder but meta.json."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(batch.iterdir()) if p.name != META}


def normalized_meta_text(text: str) -> str:
    """meta.json text with the values that legitimately differ (createdAt, producer) blanked."""
    meta = json.loads(text)
    lines = []
    for line in text.splitlines():
        if line.startswith(' "createdAt": '):
            line = ' "createdAt": "*",'
        lines.append(line)
    text = "\n".join(lines) + "\n"
    # producer is an object: blank its two values
    if "producer" in meta:
        for key in ("fastrl", "backend"):
            text = text.replace(f'  "{key}": {json.dumps(meta["producer"][key])}', f'  "{key}": "*"')
    return text


def python_error(case: dict) -> str:
    """str() of the EpisodeError Python's writer raises for the case's bad episode."""
    import fastrl
    with tempfile.TemporaryDirectory() as d:
        w = _py_writer(d, case["options"])
        try:
            for ep in case["good"]:
                w.add_episode(**_py_episode(ep))
            try:
                w.add_episode(**_py_episode(case["bad"]))
            except fastrl.EpisodeError as exc:
                return str(exc)
            raise AssertionError(f"error case {case['name']}: Python accepted the bad episode")
        finally:
            w.abort()


def build() -> dict:
    import fastrl
    have = supports()
    out_cases = []
    with tempfile.TemporaryDirectory() as d:
        for i, c in enumerate(cases()):
            missing = [f for f in c["needs"] if not have[f]]
            c = dict(c)
            if missing:
                c["expected"] = None
                c["pending"] = ("this fastrl's BatchWriter lacks " + ", ".join(missing)
                                + "; regenerate the vectors once it has it")
            else:
                batch = write_python(Path(d) / str(i), c)
                text = (batch / META).read_text()
                c["expected"] = {"files": digest(batch), "meta": normalized_meta_text(text)}
            out_cases.append(c)
    errors = []
    for c in error_cases():
        if all(have[f] for f in c["needs"]):  # else left out until this fastrl has them
            errors.append({**c, "message": python_error(c)})
    rng = np.random.default_rng(99)
    floats = (ROUNDING + [float(np.float32(v)) for v in ROUNDING]
              + (rng.standard_normal(200) * 10.0 ** rng.integers(-30, 30, 200)).tolist()
              + [1e16, 1e15, 9999999999999998.0, 1e-4, 1e-5, 0.0001234, 123456789012345680.0,
                 1.5, 100.0, 2.0 ** 60, -2.5e-7])
    crc_data = bytes(range(256)) * 40 + b"fastrl"
    return {
        "comment": "Generated by tests/vectors/make_vectors.py from fastrl.BatchWriter; "
                   "do not edit by hand.",
        "fastrl": fastrl.__version__,
        "cases": out_cases,
        "errors": errors,
        "floatReprs": [repr(float(v)) for v in floats if math.isfinite(v)],
        "crc32": {"data": "bytes(range(256)) * 40 + b'fastrl'",
                  "value": f"{zlib.crc32(crc_data):08x}",
                  "check": f"{zlib.crc32(b'123456789'):08x}"},
    }


def render(obj) -> str:
    """JSON with one episode per line (small diffs, small file)."""
    def go(x, ind):
        if isinstance(x, dict) and ("actions" in x or not x):
            return json.dumps(x)
        inner = ind + " "
        if isinstance(x, dict):
            items = [f"{inner}{json.dumps(k)}: {go(v, inner)}" for k, v in x.items()]
            return "{\n" + ",\n".join(items) + "\n" + ind + "}"
        if isinstance(x, list) and x and all(isinstance(v, (dict, list)) for v in x):
            return "[\n" + ",\n".join(inner + go(v, inner) for v in x) + "\n" + ind + "]"
        return json.dumps(x)
    return go(obj, "") + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when writer_cases.json is stale")
    args = ap.parse_args(argv)
    text = render(build())
    old = OUT.read_text() if OUT.exists() else None
    if args.check:
        if old != text:
            print(f"{OUT} is out of date: run python {Path(__file__).as_posix()}",
                  file=sys.stderr)
            return 1
        return 0
    if old != text:
        OUT.write_text(text)
        print(f"wrote {OUT}")
    else:
        print(f"{OUT} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
