"""Peak resident memory of the writer stays bounded (issue target: < 300 MB for 200k
transitions with fsync), whatever the batch size: measured in a fresh process by
bench/writer_rss.py, which generates its input episode by episode."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import _benchlib as B

pytestmark = pytest.mark.bench
SCRIPT = Path(__file__).with_name("writer_rss.py")


@pytest.mark.parametrize("mode", [["--fsync"], ["--vector"]], ids=["add_episode", "add_steps"])
def test_writer_peak_rss(mode):
    n = "200000" if B.full_mode() else "20000"
    out = subprocess.run([sys.executable, str(SCRIPT), n, *mode], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["peak_rss_mib"] < 300, rec
