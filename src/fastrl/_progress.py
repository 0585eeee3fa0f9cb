"""Progress bars for the long commands (export, bot, to-npz, decompress, upload, fetch): one
helper over tqdm, so every command looks and behaves the same.

A bar shows the percentage, the rate and the time left when the total is known. It is drawn on
stderr only when stderr is a terminal, and never with ``--quiet`` (``enabled=False``), so
scripts, pipes and CI logs stay clean; ``FASTRL_PROGRESS=1`` forces it on, ``0`` off.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

__all__ = ["progress_bar", "progress_enabled"]


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether to draw a bar: ``enabled`` when given, else ``FASTRL_PROGRESS``, else whether
    stderr is a terminal."""
    if enabled is not None:
        return bool(enabled)
    env = os.environ.get("FASTRL_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return sys.stderr.isatty()


def progress_bar(total: int | None, desc: str, unit: str = "B", enabled: bool | None = None):
    """A tqdm bar on stderr (a context manager with ``update(n)``; a silent one when disabled).

    total: units to do (None: unknown, shows counts and rate only); desc: a short label such as
    ``"export"``; unit: ``"B"`` for bytes (shown as kB/MB/GB, binary-free SI scaling), or a
    word such as ``"episode"``.
    """
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B",
                unit_divisor=1024 if unit == "B" else 1000, file=sys.stderr, leave=True,
                dynamic_ncols=True, disable=not progress_enabled(enabled), mininterval=0.2)
