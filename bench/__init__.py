"""fastrl benchmarks (pytest-benchmark suites, ratios table, thread scaling); see bench/README.md.

A package so that ``bench/conftest.py`` is imported as ``bench.conftest`` and never shadows the
``conftest`` module that the tests under ``tests/`` import by name.
"""
