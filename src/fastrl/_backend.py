"""Picks the kernel implementation once, at import: the compiled Cython modules, or their
pure-NumPy twins. Public modules get kernels only through :func:`kernel`.

- ``FASTRL_PURE_NUMPY=1`` forces the NumPy path.
- ``FASTRL_BACKEND=cython`` demands the compiled path: importing fastrl fails if it is missing.
- Otherwise the compiled path is used when it imports, and the NumPy path (with a warning) when not.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings

# kernel family -> (compiled module, NumPy module)
_MODULES = {
    "pack": ("fastrl._pack", "fastrl._pack_numpy"),
    "encode": ("fastrl._encode", "fastrl._encode_numpy"),
}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _load(backend: str) -> dict:
    idx = 0 if backend == "cython" else 1
    return {family: importlib.import_module(mods[idx]) for family, mods in _MODULES.items()}


def _choose():
    forced = os.environ.get("FASTRL_BACKEND", "").strip().lower()
    if _truthy(os.environ.get("FASTRL_PURE_NUMPY")):
        if forced == "cython":
            raise ImportError("FASTRL_PURE_NUMPY=1 and FASTRL_BACKEND=cython contradict each other")
        return "numpy", _load("numpy"), "forced by FASTRL_PURE_NUMPY=1"
    if forced not in ("", "cython", "numpy"):
        raise ImportError(f"FASTRL_BACKEND must be 'cython' or 'numpy', not {forced!r}")
    if forced == "numpy":
        return "numpy", _load("numpy"), "forced by FASTRL_BACKEND=numpy"
    try:
        return "cython", _load("cython"), "compiled extension"
    except ImportError as exc:
        if forced == "cython":
            raise ImportError(f"FASTRL_BACKEND=cython but the compiled extension is missing: {exc}") \
                from exc
        warnings.warn(f"fastrl: compiled kernels unavailable ({exc}); using the pure-NumPy path, "
                      "which is several times slower. Reinstall with a C compiler to fix.",
                      RuntimeWarning, stacklevel=3)
        return "numpy", _load("numpy"), f"fallback: {exc}"


BACKEND, _ACTIVE, REASON = _choose()


def kernel(family: str):
    """The active module of a kernel family (``"pack"`` or ``"encode"``)."""
    return _ACTIVE[family]


def available() -> list[str]:
    """Backends that can be loaded in this process (``"numpy"`` always)."""
    names = []
    try:
        _load("cython")
        names.append("cython")
    except ImportError:
        pass
    names.append("numpy")
    return names


@contextlib.contextmanager
def use(backend: str):
    """Temporarily switch every kernel family to ``backend`` (tests and benchmarks only)."""
    global BACKEND, _ACTIVE
    saved = BACKEND, _ACTIVE
    BACKEND, _ACTIVE = backend, _load(backend)
    try:
        yield
    finally:
        BACKEND, _ACTIVE = saved
