"""The reference operation: a fixed fp32 matmul timed in the same session as every other
benchmark. ``scripts/perf_check.py`` expresses each benchmark as a multiple of this time, so a
slower or faster machine does not look like a regression. Keep this file and its size fixed."""

from __future__ import annotations

import pytest
import torch

from tests.benchmarks.conftest import REFERENCE_N, REFERENCE_REPEATS, reference_matmul


@pytest.mark.benchmark(group="reference")
def test_reference_matmul(benchmark):
    out = benchmark(reference_matmul)
    assert out.shape == (REFERENCE_N, REFERENCE_N) and torch.isfinite(out).all()
    benchmark.extra_info["flops"] = 2 * REFERENCE_N ** 3 * REFERENCE_REPEATS
