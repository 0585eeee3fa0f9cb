"""Build script for fastrl's Cython kernels.

One list of extensions, Cython directives set once. Switches (environment variables):

- ``FASTRL_DEBUG_BUILD=1``: bounds, wraparound and initialization checks back on (for hunting
  out-of-bounds writes; the kernels run slower).
- ``FASTRL_ASAN=1``: compile with AddressSanitizer (run with ``LD_PRELOAD`` of libasan).
- ``FASTRL_NO_OPENMP=1``: do not probe for or link OpenMP.
- ``FASTRL_REQUIRE_EXTENSION=1`` (or ``CI=true``): a failed compile is fatal instead of falling back
  to the pure-NumPy path.

A user install with no working compiler warns loudly and installs the NumPy path only.
"""

import os
import sys
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

EXTENSIONS = ["fastrl._kernels.pack", "fastrl._kernels.encode", "fastrl._kernels.jscan"]


def _truthy(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


DEBUG = _truthy("FASTRL_DEBUG_BUILD")
ASAN = _truthy("FASTRL_ASAN")
REQUIRE = _truthy("FASTRL_REQUIRE_EXTENSION") or _truthy("CI")


def _log(msg):
    print(f"fastrl setup: {msg}", file=sys.stderr)


def _probe_openmp(compiler):
    """Return the compile/link flag list for OpenMP, or [] when the compiler cannot use it."""
    if _truthy("FASTRL_NO_OPENMP") or sys.platform == "win32":
        return []
    flag = "-fopenmp"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write(textwrap.dedent("""
                #include <omp.h>
                int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
            """))
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
            compiler.link_executable(objs, "omp_probe", output_dir=tmp, extra_postargs=[flag])
        except Exception:  # any compiler or linker failure means: no OpenMP
            return []
    return [flag]


class OptionalBuildExt(build_ext):
    """build_ext that probes OpenMP once and, outside CI, survives a missing compiler."""

    def build_extensions(self):
        omp = _probe_openmp(self.compiler)
        _log(f"OpenMP {'enabled (' + omp[0] + ')' if omp else 'not available: kernels run single-threaded'}")
        for ext in self.extensions:
            ext.extra_compile_args += omp
            ext.extra_link_args += omp
            ext.define_macros.append(("FASTRL_HAVE_OPENMP", "1" if omp else "0"))
        super().build_extensions()

    def run(self):
        try:
            super().run()
        except Exception as exc:  # compiler missing or broken
            self._fail(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc):
        if REQUIRE:
            raise
        _log("=" * 70)
        _log(f"WARNING: the Cython extension could not be built ({exc!r}).")
        _log("fastrl will run on its pure-NumPy path (fastrl.BACKEND == 'numpy').")
        _log("=" * 70)


def _extensions():
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:
        if REQUIRE:
            raise
        _log(f"WARNING: Cython or NumPy missing at build time ({exc}); installing the NumPy path only")
        return []
    # -ffp-contract=off: no fused multiply-add, so compiled and NumPy outputs stay bit-identical
    # -g0 (release builds): no debug information in the shipped extension (3.3 MB -> 0.6 MB)
    compile_args = ((["-O3"] + ([] if ASAN else ["-g0"])) if not DEBUG else ["-O0", "-g"]) \
        + ["-ffp-contract=off"]
    link_args = []
    if ASAN:
        compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer"]
        link_args += ["-fsanitize=address"]
    exts = [
        Extension(
            name,
            [os.path.join("src", *name.split(".")) + ".pyx"],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=list(compile_args),
            extra_link_args=list(link_args),
        )
        for name in EXTENSIONS
    ]
    checks = DEBUG
    if DEBUG:
        _log("debug build: bounds/wraparound/initialized checks ON")
    return cythonize(
        exts,
        compiler_directives={
            "language_level": 3,
            "boundscheck": checks,
            "wraparound": checks,
            "initializedcheck": checks,
            "cdivision": not checks,
            "embedsignature": True,
        },
        quiet=True,
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
