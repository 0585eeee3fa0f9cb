"""The export's fast path: episode JSON scanned straight into columns by the Cython kernel
:mod:`fastrl._kernels.jscan` (no Python object per number), with the orjson path
(:func:`.parse.loads` + :func:`.parse.episode_fields`) as the fallback for every episode the
scanner does not take, and for every episode whose scanned columns a check refuses: errors
always come from the orjson path, so they are the same whichever path ran.

What the scanner takes: episodes whose strings are strict UTF-8 (escapes allowed except in
the keys it reads), whose keys appear once per object, whose integers have at most 18 digits and numbers are finite, whose
steps all carry the same keys, with ``obs`` lists (no spec) or ``state`` values holding every
field of the ObsSpec at its ``path`` (object keys and array indices, e.g. the nested Dict and
Tuple spaces of ``ObsSpec.from_gymnasium``), with the spec's exact shapes (integers for onehot,
onehot_array and binary fields, numbers for box fields, id lists for multihot). Not taken (the
orjson path runs): an ``--encoder`` function, anything else.
``FASTRL_EXPORT_SCANNER=0`` turns the scanner off, and so does the NumPy backend
(``FASTRL_PURE_NUMPY=1``: no compiled code runs).
"""

from __future__ import annotations

import os

try:
    from .._kernels.jscan import ScanPlan, scan_episode
except ImportError:  # not built: the orjson path does everything
    ScanPlan = scan_episode = None

__all__ = ["scanner_plan", "scan_episode", "AVAILABLE"]

AVAILABLE = scan_episode is not None
_KINDS = {"onehot": 0, "onehot_array": 0, "binary": 0, "box": 1, "multihot": 2}
NO_SCAN = object()  # scanner_plan's answer when the scanner cannot serve this export


def scanner_plan(spec, encoder):
    """The scanner's plan for an export (``None``: read ``obs``; a ScanPlan: read the spec's
    fields from ``state``), or NO_SCAN when the scanner is not built, turned off (or the NumPy
    backend runs), or cannot read this export's input (an encoder function, only multihot
    fields, paths that cross)."""
    from .. import _kernels
    if not AVAILABLE or _kernels.BACKEND != "cython" or os.environ.get(
            "FASTRL_EXPORT_SCANNER", "1").strip().lower() in ("0", "false", "no", "off"):
        return NO_SCAN
    if encoder is not None:
        return NO_SCAN
    if spec is None:
        return None
    entries = []
    for f in spec.fields:
        if f.kind not in _KINDS:
            return NO_SCAN
        kind = _KINDS[f.kind]
        entries.append((f.name, kind, () if kind == 2 else tuple(int(d) for d in f.shape),
                        tuple(f.path)))
    if all(k == 2 for _, k, _, _ in entries):
        return NO_SCAN  # Stager.prepare counts the rows of a field that is not an id list
    try:
        return ScanPlan(entries)
    except ValueError:  # paths the scanner cannot follow (a field inside another, ...)
        return NO_SCAN
