"""Self-describing episode folders (contract §5): a sidecar file ``fastrl-episodes.json`` in the
episode folder records what an export needs besides the episodes themselves: the observation spec
(inline ObsSpec JSON) or the encoder ``module:function``, the action count, and optionally the
mask padding. ``fastrl bot`` writes it; :func:`write_sidecar` lets users' harnesses write it;
``fastrl export`` with no flags uses it, and flags (or arguments) override it key by key.

The file (docs/FORMAT.md, "Episode folder sidecar")::

    {"format": "fastrl-episodes", "formatVersion": 1, "numActions": 208,
     "maskPad": 256,                      # optional
     "obsSpec": {...ObsSpec JSON...}}     # or "encoder": "package.module:function", or neither

It is never read as an episode file (:func:`fastrl.export.find_episode_files` skips it by name).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from .. import _format as F
from ..errors import FastrlError

__all__ = ["SIDECAR_NAME", "SIDECAR_FORMAT", "SIDECAR_VERSION", "write_sidecar", "read_sidecar",
           "resolve_options"]

SIDECAR_NAME = "fastrl-episodes.json"
SIDECAR_FORMAT = "fastrl-episodes"
SIDECAR_VERSION = 1
_MAX_BYTES = 64 << 20
_ENCODER_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _spec_object(spec):
    """An ObsSpec from an ObsSpec, its JSON text, or its parsed dict."""
    from ..spec import ObsSpec
    if isinstance(spec, ObsSpec):
        return spec
    if isinstance(spec, (str, bytes, dict)):
        return ObsSpec.from_json(spec)
    raise TypeError(f"spec must be an ObsSpec, its JSON text or dict, not {type(spec).__name__}")


def _check_count(value, name, where):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= F.MAX_DIM:
        raise FastrlError(f"{where}: {name} must be an integer in [1, {F.MAX_DIM}], "
                          f"got {json.dumps(value) if _jsonable(value) else repr(value)}")
    return value


def _jsonable(v):
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def sidecar_dict(*, spec=None, encoder: str | None = None, n_actions: int,
                 mask_pad: int | None = None) -> dict:
    """The sidecar's JSON object (checked)."""
    where = "sidecar"
    if spec is not None and encoder is not None:
        raise ValueError("give a spec or an encoder, not both")
    _check_count(n_actions, "numActions", where)
    doc = {"format": SIDECAR_FORMAT, "formatVersion": SIDECAR_VERSION, "numActions": n_actions}
    if mask_pad is not None:
        _check_count(mask_pad, "maskPad", where)
        if mask_pad < n_actions:
            raise FastrlError(f"{where}: maskPad {mask_pad} is smaller than numActions "
                              f"{n_actions}")
        doc["maskPad"] = mask_pad
    if spec is not None:
        doc["obsSpec"] = json.loads(_spec_object(spec).to_json())
    if encoder is not None:
        if not isinstance(encoder, str) or not _ENCODER_RE.fullmatch(encoder):
            raise FastrlError(f"{where}: encoder must look like package.module:function, "
                              f"got {encoder!r}")
        doc["encoder"] = encoder
    return doc


def write_sidecar(episodes_dir, *, spec=None, encoder: str | None = None, n_actions: int,
                  mask_pad: int | None = None) -> Path:
    """Write ``<episodes_dir>/fastrl-episodes.json`` so that ``fastrl export <episodes_dir>``
    needs no flags. spec: the ObsSpec (or its JSON) that encodes each step's ``state``; or
    encoder: ``"package.module:function"`` mapping one state to a list of floats (importable
    where the export runs; not a standard-library function); neither when the steps hold
    ``obs``. n_actions: the game's action count; mask_pad: stored mask width (>= n_actions).
    The file is replaced atomically. Returns its path."""
    doc = sidecar_dict(spec=spec, encoder=encoder, n_actions=n_actions, mask_pad=mask_pad)
    d = Path(episodes_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / SIDECAR_NAME
    tmp = d / f".{SIDECAR_NAME}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def read_sidecar(episodes_dir) -> dict | None:
    """The sidecar of ``episodes_dir`` as ``{"path", "spec" (ObsSpec or None), "encoder" (str or
    None), "n_actions", "mask_pad" (int or None)}``; None when the folder has none. A malformed
    sidecar raises a one-line :class:`~fastrl.errors.FastrlError` naming the file."""
    path = Path(episodes_dir) / SIDECAR_NAME
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise FastrlError(f"cannot read episode-folder sidecar {path}: {exc}") from None
    where = f"episode-folder sidecar {path}"
    if len(raw) > _MAX_BYTES:
        raise FastrlError(f"{where}: larger than {_MAX_BYTES >> 20} MiB")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise FastrlError(f"{where}: not valid JSON ({msg})") from None
    if not isinstance(doc, dict):
        raise FastrlError(f"{where}: must hold a JSON object, not {type(doc).__name__}")
    if doc.get("format") != SIDECAR_FORMAT:
        raise FastrlError(f"{where}: 'format' must be {SIDECAR_FORMAT!r}")
    if doc.get("formatVersion") != SIDECAR_VERSION:
        raise FastrlError(f"{where}: unsupported 'formatVersion' "
                          f"{json.dumps(doc.get('formatVersion'))} (this fastrl reads "
                          f"{SIDECAR_VERSION}; upgrade fastrl)")
    if "numActions" not in doc:
        raise FastrlError(f"{where}: 'numActions' is missing")
    n_actions = _check_count(doc["numActions"], "'numActions'", where)
    mask_pad = doc.get("maskPad")
    if mask_pad is not None:
        _check_count(mask_pad, "'maskPad'", where)
        if mask_pad < n_actions:
            raise FastrlError(f"{where}: 'maskPad' {mask_pad} is smaller than 'numActions' "
                              f"{n_actions}")
    if "obsSpec" in doc and "encoder" in doc:
        raise FastrlError(f"{where}: give 'obsSpec' or 'encoder', not both")
    spec = encoder = None
    if doc.get("obsSpec") is not None:
        if not isinstance(doc["obsSpec"], dict):
            raise FastrlError(f"{where}: 'obsSpec' must be a JSON object (an ObsSpec's JSON)")
        try:
            spec = _spec_object(doc["obsSpec"])
        except Exception as exc:  # SpecError and friends: one line naming the file
            msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise FastrlError(f"{where}: 'obsSpec' is not a valid ObsSpec ({msg})") from None
    if doc.get("encoder") is not None:
        encoder = doc["encoder"]
        if not isinstance(encoder, str) or not _ENCODER_RE.fullmatch(encoder):
            raise FastrlError(f"{where}: 'encoder' must look like package.module:function, "
                              f"got {json.dumps(encoder)[:80]}")
        top = encoder.split(".", 1)[0].split(":", 1)[0]
        if top in getattr(sys, "stdlib_module_names", ()) or top == "builtins":
            # a data folder must not make the exporter call e.g. os:system on its states
            raise FastrlError(f"{where}: 'encoder' {encoder!r} names a standard-library "
                              "function; a sidecar may only name the user's own encoder "
                              "(pass --encoder to use it anyway)")
    return {"path": path, "spec": spec, "encoder": encoder, "n_actions": n_actions,
            "mask_pad": mask_pad}


def resolve_options(episodes_dir, *, spec=None, encoder=None, n_actions=None, mask_pad=None,
                    use_sidecar: bool = True):
    """Merge the given options with the folder's sidecar, the given ones winning key by key
    (a given spec or encoder overrides the sidecar's spec or encoder). Returns (spec, encoder,
    n_actions, mask_pad, sources) where sources maps "observations", "numActions", "maskPad"
    to "given" or the sidecar's path (only for the values that are set)."""
    sources = {}
    side = read_sidecar(episodes_dir) if use_sidecar else None
    if spec is not None or encoder is not None:
        sources["observations"] = "given"
    elif side is not None and (side["spec"] is not None or side["encoder"] is not None):
        spec, encoder = side["spec"], side["encoder"]
        sources["observations"] = str(side["path"])
    if n_actions is not None:
        sources["numActions"] = "given"
    elif side is not None:
        n_actions = side["n_actions"]
        sources["numActions"] = str(side["path"])
    if mask_pad is not None:
        sources["maskPad"] = "given"
    elif side is not None and side["mask_pad"] is not None:
        mask_pad = side["mask_pad"]
        sources["maskPad"] = str(side["path"])
    return spec, encoder, n_actions, mask_pad, sources
