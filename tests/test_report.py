"""fastrl report: figures checked against NumPy on small hand-made batches (plain, sharded,
compressed, origin-format, empty), the text of ``fastrl info``, and the HTML page: well-formed,
self-contained, escaping a hostile meta.json, and rendered by a real headless browser when one
is installed."""

import html.parser
import json
import math
import os
import shutil
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import fastrl
from fastrl.errors import FastrlError
from fastrl.report import (batch_figures, default_report_path, format_figures, render_html,
                           write_report)

from conftest import random_episode

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
SPEC = {"version": 1, "fields": [{"name": "pos", "kind": "box", "shape": [3]},
                                 {"name": "flag", "kind": "onehot", "n": 3},
                                 {"name": "hp", "kind": "box", "shape": [2]}]}
N_ACTIONS = 10


def _episodes(rng, n=40):
    eps = []
    for i in range(n):
        ep = random_episode(rng, int(rng.integers(1, 30)), obs_dim=8, n_actions=N_ACTIONS,
                            form="mask", values=True, logprobs=True, truncated=i % 4 == 0)
        ep["obs"][:, 3:6] = np.eye(3)[rng.integers(0, 3, len(ep["obs"]))]  # a one-hot field
        ep["obs"][:, 7] = 0.0  # a constant column
        ep["rewards"] = np.round(ep["rewards"], 1)
        eps.append(ep)
    return eps


def _write(root, eps, **kw):
    kw.setdefault("meta", {"note": HOSTILE})
    with fastrl.BatchWriter(root, n_actions=N_ACTIONS, mask_pad=16,
                            spec=fastrl.ObsSpec.from_dict(SPEC), **kw) as w:
        for ep in eps:
            w.add_episode(**ep)
    return w.path


@pytest.fixture
def eps(rng):
    return _episodes(rng)


@pytest.fixture
def batch(tmp_path, eps):
    return _write(tmp_path / "data", eps)


def _columns(eps):
    cat = lambda k: np.concatenate([np.asarray(e[k]) for e in eps])  # noqa: E731
    masks = np.concatenate([np.asarray(e["mask"], np.uint8) for e in eps])
    return {"obs": cat("obs").astype(np.float32), "actions": cat("actions"),
            "rewards": cat("rewards").astype(np.float32), "masks": masks,
            "values": cat("values").astype(np.float32),
            "logprobs": cat("logprobs").astype(np.float32),
            "lengths": np.array([len(e["actions"]) for e in eps]),
            "truncated": sum(bool(e["truncated"]) for e in eps)}


def _total(h):
    return sum(h["counts"])


def _check_against_numpy(f, c):
    n = len(c["actions"])
    assert f["transitions"] == n and f["episodes"] == len(c["lengths"])
    assert f["truncatedEpisodes"] == c["truncated"]
    el = f["episodeLength"]
    assert _total(el["hist"]) == len(c["lengths"]) and el["hist"]["integer"]
    assert (el["min"], el["max"]) == (c["lengths"].min(), c["lengths"].max())
    assert el["mean"] == pytest.approx(c["lengths"].mean())
    assert np.array_equal(el["hist"]["counts"],
                          np.histogram(c["lengths"], bins=el["hist"]["edges"])[0])
    starts = np.concatenate([[0], np.cumsum(c["lengths"])[:-1]])
    returns = np.add.reduceat(c["rewards"].astype(np.float64), starts)
    er = f["episodeReturn"]
    assert _total(er["hist"]) == len(returns)
    assert er["mean"] == pytest.approx(returns.mean()) and er["max"] == pytest.approx(returns.max())
    counts = np.bincount(c["actions"], minlength=N_ACTIONS)
    a = f["actions"]
    assert a["numActions"] == N_ACTIONS and a["used"] == np.count_nonzero(counts)
    for i, k in a["top"]:
        assert counts[i] == k
    assert [k for _, k in a["top"]] == sorted(counts[counts > 0], reverse=True)[:len(a["top"])]
    assert sum(k for _, k in a["top"]) + a["otherCount"] == n
    assert sum(a["strip"]["chosen"]) == n
    assert sum(a["strip"]["legal"]) == c["masks"].sum()
    assert a["outOfRange"] == 0 and a["illegal"] == 0
    legal = c["masks"].sum(axis=1)
    lg = f["legalActions"]
    assert _total(lg["hist"]) == n
    assert np.array_equal(lg["hist"]["counts"], np.histogram(legal, bins=lg["hist"]["edges"])[0])
    assert (lg["min"], lg["max"]) == (legal.min(), legal.max())
    assert lg["mean"] == pytest.approx(legal.mean())
    assert lg["density"] == pytest.approx(legal.mean() / N_ACTIONS)
    for key in ("values", "logprobs", "rewards"):
        s = f["reward" if key == "rewards" else key]
        assert _total(s["hist"]) == n
        assert s["min"] == pytest.approx(c[key].min()) and s["max"] == pytest.approx(c[key].max())
        assert s["std"] == pytest.approx(c[key].astype(np.float64).std(), rel=1e-6)
    o = f["observations"]
    assert o["source"] == "spec"
    assert [(r["name"], r["kind"], r["start"], r["stop"]) for r in o["fields"]] == \
        [("pos", "box", 0, 3), ("flag", "onehot", 3, 6), ("hp", "box", 6, 8)]
    for r in o["fields"]:
        x = c["obs"][:, r["start"]:r["stop"]].astype(np.float64)
        assert r["min"] == pytest.approx(x.min()) and r["max"] == pytest.approx(x.max())
        assert r["mean"] == pytest.approx(x.mean()) and r["std"] == pytest.approx(x.std())
        assert r["zeroFraction"] == pytest.approx((x == 0).mean())
    assert o["fields"][2]["constantColumns"] == 1 and o["constantColumns"] == 1
    assert o["fields"][1]["zeroFraction"] == pytest.approx(2 / 3)


def test_figures_match_numpy(batch, eps):
    f = batch_figures(batch)
    _check_against_numpy(f, _columns(eps))
    assert f["kind"] == "batch" and f["parts"] == 1 and not f["origin"]
    assert f["obsDim"] == 8 and f["maskDim"] == 16 and f["numActions"] == N_ACTIONS
    assert f["columns"] == sorted(["obs", "actions", "rewards", "masks", "dones", "values",
                                   "logprobs", "truncated"])
    files = {x["name"]: x["bytes"] for x in f["files"]["files"]}
    assert files["obs.float32.bin"] == f["transitions"] * 8 * 4
    assert f["files"]["totalBytes"] == sum(p.stat().st_size for p in batch.iterdir())
    assert f["files"]["checksums"] == {"parts": 1, "of": 1}
    assert f["files"]["compression"] == {}
    json.dumps(f, allow_nan=False)  # JSON-able, no NaN


def test_streaming_in_small_chunks_gives_the_same_figures(batch):
    whole, small = batch_figures(batch), batch_figures(batch, chunk_bytes=100)
    for key in ("episodeLength", "legalActions", "actions"):
        assert small[key] == whole[key], key
    assert small["episodeReturn"]["hist"] == whole["episodeReturn"]["hist"]
    for a, b in zip(small["observations"]["fields"], whole["observations"]["fields"]):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k]), k


def test_text_has_the_figures(batch):
    f = batch_figures(batch)
    text = format_figures(f)
    for word in ("transitions", "episodes", "episode length", "episode return", "legal / step",
                 "value", "log-prob", "observations", "pos", "flag", "hp", "onehot",
                 "obs.float32.bin", f"{f['transitions']:,}"):
        assert word in text, word
    top_id, _ = f["actions"]["top"][0]
    assert f"#{top_id} " in text
    assert any(ch in text for ch in "▁▂▃▄▅▆▇█")
    ascii_text = format_figures(f, ascii=True)
    assert ascii_text.isascii() or all(ord(ch) < 128 for ch in ascii_text.replace("…", ""))


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs


def _check_page(page, charts=True):
    root = ET.fromstring(page)  # the whole page is well-formed XML
    svgs = list(root.iter("svg"))
    assert bool(svgs) == charts
    assert all(int(s.get("width")) > 0 and int(s.get("height")) > 0 for s in svgs)
    p = _Collect()
    p.feed(page)
    p.close()
    assert ("svg" in p.tags) == charts and "table" in p.tags
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(p.tags)
    low = page.lower()
    for bad in ("http://", "https://", "url(", "@import", "javascript:", "<script"):
        assert bad not in low, bad
    assert not any(name.startswith("on") or name in ("src", "href") for name, _ in p.attrs)
    return root


def test_html_is_self_contained_and_escapes_meta(batch, tmp_path):
    meta = json.loads((batch / "meta.json").read_text())
    meta["obsSlices"] = {f"<b>{k}</b>": v for k, v in meta["obsSlices"].items()}
    meta["<i>key</i>"] = "</table></main>" + HOSTILE
    meta["createdAt"] = "<script>x</script>"
    (batch / "meta.json").write_text(json.dumps(meta))
    f = batch_figures(batch)
    page = render_html(f)
    _check_page(page)
    assert HOSTILE not in page and "<b>pos</b>" not in page and "<i>key</i>" not in page
    assert "&lt;script&gt;alert(" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b&gt;pos&lt;/b&gt;" in page
    assert f["name"] in page and "Episode length" in page and "Legal actions per step" in page


def test_sharded_batch(tmp_path, eps, batch):
    sharded = _write(tmp_path / "sh", eps, shard_bytes=1500, flush_bytes=1000)
    f, plain = batch_figures(sharded), batch_figures(batch)
    assert f["kind"] == "sharded batch" and f["parts"] > 1
    _check_against_numpy(f, _columns(eps))
    for key in ("episodeLength", "legalActions", "actions"):
        assert f[key] == plain[key], key
    obs_file = next(x for x in f["files"]["files"] if x["name"] == "obs.float32.bin")
    assert obs_file["count"] == f["parts"]
    assert f["files"]["checksums"] == {"parts": f["parts"], "of": f["parts"]}
    _check_page(render_html(f))


def test_compressed_batch(tmp_path, eps):
    path = _write(tmp_path / "c", eps, compression={"obs": "gzip", "masks": "packbits",
                                                    "rewards": "gzip"})
    f = batch_figures(path)
    _check_against_numpy(f, _columns(eps))
    comp = f["files"]["compression"]
    assert comp["obs"]["codec"] == "gzip" and comp["masks"]["codec"] == "packbits"
    assert comp["obs"]["rawBytes"] == f["transitions"] * 8 * 4
    assert 0 < comp["masks"]["storedBytes"] < comp["masks"]["rawBytes"]
    page = render_html(f)
    _check_page(page)
    assert "packbits" in page and "packbits" in format_figures(f)


def _origin_batch(root, obs, actions, rewards, masks, dones, created):
    """A batch as the origin document's Node tool writes it: raw files, six meta keys."""
    root.mkdir(parents=True)
    np.asarray(obs, "<f4").tofile(root / "obs.float32.bin")
    np.asarray(actions, "<i4").tofile(root / "actions.int32.bin")
    np.asarray(rewards, "<f4").tofile(root / "rewards.float32.bin")
    np.asarray(masks, "u1").tofile(root / "masks.uint8.bin")
    np.asarray(dones, "u1").tofile(root / "dones.uint8.bin")
    n = len(actions)
    meta = {"count": n, "obsDim": int(np.shape(obs)[1]), "maskDim": int(np.shape(masks)[1]),
            "episodes": int(np.sum(dones)), "steps": n, "createdAt": created}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("created", [1690000000123, "2023-07-22T04:26:40.123Z"])
def test_origin_format_batch(tmp_path, rng, created):
    n, od, md = 50, 40, 6
    obs = rng.standard_normal((n, od))
    obs[3, 5] = np.nan  # invalid data is reported, not a crash
    masks = (rng.random((n, md)) < 0.5).astype(np.uint8)
    masks[:, 0] = 1
    actions = np.zeros(n, int)
    actions[7], actions[8] = 9, 1  # out of range; 1 may be illegal
    masks[8, 1] = 0
    dones = np.zeros(n, np.uint8)
    dones[[9, 29, 49]] = 1
    path = _origin_batch(tmp_path / "batch_1690000000123", obs, actions, rng.random(n), masks,
                         dones, created)
    f = batch_figures(path)
    assert f["origin"] and f["createdAt"] == "2023-07-22T04:26:40.123Z"
    assert f["formatVersion"] == 1 and f["numActions"] == md
    assert f["transitions"] == n and f["episodes"] == 3 and f["truncatedEpisodes"] == 0
    el = f["episodeLength"]
    assert (el["min"], el["max"], _total(el["hist"])) == (10, 20, 3)
    assert f["values"] is None and f["logprobs"] is None
    assert f["actions"]["outOfRange"] == 1 and f["actions"]["illegal"] == 1
    o = f["observations"]
    assert o["source"] == "blocks" and o["nonFinite"] == 1
    assert o["fields"][0]["start"] == 0 and o["fields"][-1]["stop"] == od
    assert sum(r["stop"] - r["start"] for r in o["fields"]) == od
    assert o["fields"][0]["mean"] == pytest.approx(np.nanmean(obs[:, :o["fields"][0]["stop"]]),
                                                   rel=1e-5)
    page = render_html(f)
    _check_page(page)
    assert "out of range" in page and "non-finite" in page
    assert "origin-format" in format_figures(f)


def test_empty_batch(tmp_path):
    path = _origin_batch(tmp_path / "batch_1", np.zeros((0, 4)), [], [], np.zeros((0, 3)), [],
                         "2026-01-01T00:00:00.000Z")
    f = batch_figures(path)
    assert f["transitions"] == 0 and f["episodes"] == 0
    assert f["episodeLength"]["hist"]["counts"] == [] and f["episodeLength"]["mean"] is None
    assert f["actions"]["top"] == [] and f["legalActions"]["mean"] is None
    assert f["files"]["bytesPerTransition"] is None
    json.dumps(f, allow_nan=False)
    assert "transitions    0" in format_figures(f)
    page = render_html(f)
    _check_page(page, charts=False)
    assert "no transitions" in page


def test_many_actions(tmp_path, rng):
    n_actions, T = 4100, 300
    legal = [sorted(rng.choice(n_actions, 50, replace=False).tolist()) for _ in range(T)]
    actions = [int(ids[0]) for ids in legal]
    with fastrl.BatchWriter(tmp_path, n_actions=n_actions) as w:
        w.add_episode(obs=rng.standard_normal((T, 3)), actions=actions, rewards=np.ones(T),
                      legal=legal)
    f = batch_figures(w.path, top=5)
    a = f["actions"]
    counts = np.bincount(actions, minlength=n_actions)
    assert len(a["top"]) == 5 and a["otherActions"] == np.count_nonzero(counts) - 5
    assert a["strip"]["binWidth"] == math.ceil(n_actions / 256)
    assert len(a["strip"]["chosen"]) <= 256 and sum(a["strip"]["chosen"]) == T
    assert f["legalActions"]["min"] == f["legalActions"]["max"] == 50
    assert f["episodeReturn"]["hist"]["integer"] and f["episodeReturn"]["max"] == T
    _check_page(render_html(f))


def test_write_report(batch, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = write_report(batch)
    assert out == default_report_path(batch) == tmp_path / f"{batch.name}-report.html"
    _check_page(out.read_text(encoding="utf-8"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [out.name]  # no temp
    folder = tmp_path / "reports"
    folder.mkdir()
    assert write_report(batch, folder) == folder / f"{batch.name}-report.html"
    assert write_report(batch, tmp_path / "r.html").is_file()
    before = sorted(os.listdir(batch))
    for inside in (batch / "report.html", batch, batch / "sub" / ".." / "x.html"):
        with pytest.raises(FastrlError, match="inside the batch folder"):
            write_report(batch, inside)
    monkeypatch.chdir(batch)
    with pytest.raises(FastrlError, match="inside the batch folder"):
        write_report(batch)
    assert sorted(os.listdir(batch)) == before
    beside = [n for n in os.listdir(batch.parent) if not n.startswith(".")]  # .fastrl.lock
    assert beside == [batch.name]  # nothing written beside the batch in its root


def test_root_of_batches(tmp_path, eps):
    a = _write(tmp_path / "root", eps[:10])
    b = _write(tmp_path / "root", eps[10:])
    f = batch_figures(tmp_path / "root")
    assert f["kind"] == "batches" and f["parts"] == 2 and f["name"] == "root"
    assert f["transitions"] == batch_figures(a)["transitions"] + batch_figures(b)["transitions"]
    _check_against_numpy(f, _columns(eps))


def _browser():
    """(chromium binary, chromedriver) when both and selenium are installed, else a skip."""
    pytest.importorskip("selenium", reason="selenium is not installed")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                   if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("no headless browser: chromium and chromedriver are not installed")
    return binary, driver


def test_page_renders_in_a_headless_browser(batch, tmp_path):
    binary, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    page = write_report(batch, tmp_path / "report.html")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    except Exception as exc:  # noqa: BLE001 -- a browser that cannot start here is a skip
        pytest.skip(f"headless chromium did not start: {exc}")
    try:
        t0 = time.monotonic()
        drv.get(page.resolve().as_uri())
        assert drv.title.startswith(batch.name)
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        svgs = drv.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert len(svgs) >= 6
        for s in svgs:
            assert s.size["width"] > 50 and s.size["height"] > 50, s.get_attribute("aria-label")
        bars = drv.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
        assert bars and any(b.size["height"] > 5 for b in bars)
        drv.set_window_size(1200, drv.execute_script("return document.body.scrollHeight"))
        shot = tmp_path / "report.png"
        assert drv.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        assert time.monotonic() - t0 < 30
    finally:
        drv.quit()
