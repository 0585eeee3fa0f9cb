"""The kernels, bound once at import: the compiled Cython modules, or their pure-NumPy twins.

- ``FASTRL_PURE_NUMPY=1`` forces the NumPy path.
- ``FASTRL_BACKEND=cython`` demands the compiled path: importing fastrl fails if it is missing.
- Otherwise the compiled path is used when it imports, and the NumPy path (with a warning) when not.

Callers use the module attributes below (``pack_episodes``, ``encode_batch``, ``gather_nested``,
``gather_ragged``, ``gather_states``) and never import a twin themselves. :func:`use` rebinds them
for the tests and benchmarks that run both paths in one process.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings

# kernel family -> (compiled module, NumPy module)
MODULES = {
    "pack": ("fastrl._kernels.pack", "fastrl._kernels.pack_numpy"),
    "encode": ("fastrl._kernels.encode", "fastrl._kernels.encode_numpy"),
}
# the functions each family provides (both twins, same signatures)
FUNCTIONS = {
    "pack": ("pack_episodes",),
    "encode": ("encode_batch", "gather_nested", "gather_ragged", "gather_states"),
}


def truthy(value: str | None) -> bool:
    """An environment switch's value read as a boolean ("1", "true", "yes", "on")."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def load(backend: str) -> dict:
    """family -> module of ``backend`` ("cython" or "numpy"); ImportError when not built."""
    idx = 0 if backend == "cython" else 1
    return {family: importlib.import_module(mods[idx]) for family, mods in MODULES.items()}


def _choose():
    forced = os.environ.get("FASTRL_BACKEND", "").strip().lower()
    if truthy(os.environ.get("FASTRL_PURE_NUMPY")):
        if forced == "cython":
            raise ImportError("FASTRL_PURE_NUMPY=1 and FASTRL_BACKEND=cython contradict each other")
        return "numpy", load("numpy"), "forced by FASTRL_PURE_NUMPY=1"
    if forced not in ("", "cython", "numpy"):
        raise ImportError(f"FASTRL_BACKEND must be 'cython' or 'numpy', not {forced!r}")
    if forced == "numpy":
        return "numpy", load("numpy"), "forced by FASTRL_BACKEND=numpy"
    try:
        return "cython", load("cython"), "compiled extension"
    except ImportError as exc:
        if forced == "cython":
            raise ImportError(f"FASTRL_BACKEND=cython but the compiled extension is missing: {exc}") \
                from exc
        warnings.warn(f"fastrl: compiled kernels unavailable ({exc}); using the pure-NumPy path, "
                      "which is several times slower. Reinstall with a C compiler to fix.",
                      RuntimeWarning, stacklevel=3)
        return "numpy", load("numpy"), f"fallback: {exc}"


def _bind(backend: str, modules: dict) -> None:
    global BACKEND
    BACKEND = backend
    for family, names in FUNCTIONS.items():
        for name in names:
            globals()[name] = getattr(modules[family], name)


BACKEND, _modules, REASON = _choose()
pack_episodes = encode_batch = gather_nested = gather_ragged = gather_states = None
_bind(BACKEND, _modules)
FORCED = REASON.startswith("forced")  # the NumPy path was asked for: test it alone


def available() -> list[str]:
    """Backends that can be loaded in this process (``"numpy"`` always)."""
    names = []
    try:
        load("cython")
        names.append("cython")
    except ImportError:
        pass
    names.append("numpy")
    return names


@contextlib.contextmanager
def use(backend: str):
    """Rebind every kernel to ``backend`` for the duration (tests and benchmarks only)."""
    saved = BACKEND
    _bind(backend, load(backend))
    try:
        yield
    finally:
        _bind(saved, load(saved))
