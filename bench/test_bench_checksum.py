"""Group ``checksum``: zlib.crc32 throughput over the packed obs column beside np.copyto of the
same bytes, and BatchWriter end to end with checksum=True vs checksum=False."""

import shutil

import numpy as np
import pytest

from . import _benchlib as B

pytestmark = pytest.mark.bench


def test_crc32(bench, wl):
    src = wl.packed["obs"]
    mv = memoryview(src).cast("B")
    bench(lambda: B.crc32_of(mv), group="checksum", key="checksum:crc32", items=src.nbytes,
          unit="bytes", nbytes=src.nbytes)


def test_crc32_fastrl(bench, wl):
    """The CRC-32 the writer uses (same values as zlib's; isal or zlib-ng when installed)."""
    from fastrl._batch.checksum import crc32
    src = wl.packed["obs"]
    mv = memoryview(src).cast("B")
    bench(lambda: crc32(mv), group="checksum", key="checksum:fastrl", items=src.nbytes,
          unit="bytes", nbytes=src.nbytes)


def test_crc32_copyto(bench, wl):
    src = wl.packed["obs"]
    dst = wl.out_cols["obs"]
    bench(lambda: np.copyto(dst, src), group="checksum", key="checksum:copyto", items=src.nbytes,
          unit="bytes", nbytes=src.nbytes)


@pytest.mark.parametrize("checksum", (True, False), ids=("crc-on", "crc-off"))
def test_writer_checksum(bench, wl, checksum):
    out = B.output_root(wl, "checksum-out")
    eps = wl.raw_episodes
    bench(lambda: B.write_batch(out, eps, checksum=checksum), group="checksum",
          key=f"checksum:writer_{'on' if checksum else 'off'}", items=wl.n, unit="transitions",
          nbytes=wl.n * B.ROW_BYTES, teardown=lambda: shutil.rmtree(out, ignore_errors=True),
          slow=True)
