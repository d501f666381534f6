"""Fixtures for the pytest-benchmark suite in this directory.

Environment:
  HEAPA_BENCH_1M=1        also run the 1,000,000-prompt cases (slow: minutes)
  HEAPA_BENCH_SECONDS=2   target time per benchmark (rounds are calibrated to it)
  HEAPA_BENCH_ENFORCE=1   fail heapa's 1M cases that miss their budget (heapa.bench.registry)
"""

from __future__ import annotations

import gc
import os

import pytest
from heapa.bench.scenarios import Context, make_impl


def pytest_configure(config):
    config.addinivalue_line("markers", "size_1m: a 1,000,000-prompt case (needs HEAPA_BENCH_1M=1)")
    config.addinivalue_line("markers", "baseline: a pure-Python baseline implementation")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HEAPA_BENCH_1M") == "1":
        return
    skip = pytest.mark.skip(reason="1M-prompt case: set HEAPA_BENCH_1M=1")
    for item in items:
        if "size_1m" in item.keywords:
            item.add_marker(skip)


class _Contexts:
    """Keeps one (implementation, size) context alive at a time: the cases are
    ordered so that all operations of one pair run back to back, sharing pools
    the way a ``heapa bench`` worker does."""

    def __init__(self):
        self.key = None
        self.ctx = None
        self.impls = {}

    def get(self, impl: str, size: int) -> Context:
        if self.key != (impl, size):
            if self.ctx is not None:
                self.ctx.close()  # its snapshot directory
            self.ctx = None
            gc.collect()
            if impl not in self.impls:
                self.impls[impl] = make_impl(impl)
            self.ctx = Context(self.impls[impl], size)
            self.key = (impl, size)
        return self.ctx


@pytest.fixture(scope="session")
def contexts():
    return _Contexts()
