"""The reference operations: a fixed matmul in fp32 and in bf16, timed in the same session as every other
benchmark. ``scripts/perf_check.py`` expresses each benchmark as a multiple of the reference of its precision,
so a slower or faster machine does not look like a regression. Keep this file and its sizes fixed."""

from __future__ import annotations

import pytest
import torch

from bench.environment import cpu_isa
from tests.benchmarks.conftest import REFERENCE_N, REFERENCE_REPEATS, reference_matmul


@pytest.mark.benchmark(group="reference")
def test_reference_matmul(benchmark):
    out = benchmark(reference_matmul)
    assert out.shape == (REFERENCE_N, REFERENCE_N) and torch.isfinite(out).all()
    benchmark.extra_info["flops"] = 2 * REFERENCE_N ** 3 * REFERENCE_REPEATS
    benchmark.extra_info["cpu_isa"] = cpu_isa()  # whether bf16 ratios of two machines are comparable


@pytest.mark.benchmark(group="reference")
def test_reference_matmul_bf16(benchmark):
    out = benchmark(reference_matmul, torch.bfloat16)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    benchmark.extra_info["flops"] = 2 * REFERENCE_N ** 3 * REFERENCE_REPEATS
