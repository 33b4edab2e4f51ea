"""pytest-benchmark suite: fused vs reference for C1–C4, map and training step.

Run: ``.venv/bin/pytest benchmarks -q`` (not part of the test suite; nothing
here asserts a speed). Compare groups with ``--benchmark-group-by=group``.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import CASES, DEFAULT_CASES, make_workload  # noqa: E402

_WORKLOADS: dict[str, object] = {}


def _workload(name):
    if name not in _WORKLOADS:
        _WORKLOADS[name] = make_workload(CASES[name])
    return _WORKLOADS[name]


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("mode", ["map", "train"])
@pytest.mark.parametrize("case", DEFAULT_CASES["cpu"])
def test_case(benchmark, case, mode, backend):
    benchmark.group = f"{case}-{mode}"
    fn = _workload(case).fn(backend, mode)
    result = benchmark.pedantic(fn, rounds=10, warmup_rounds=2, iterations=1)
    assert result is not None
