"""Shared pieces of the pytest-benchmark files (``tests/benchmarks/test_bench_*.py``).

Benchmarks run once each (as plain tests, untimed) in the normal ``pytest`` run: tests/conftest.py
disables timing unless ``--benchmark-only`` or ``--benchmark-enable`` is given, so
``pytest tests/benchmarks --benchmark-only`` times them. ``GENBENCH_BENCH_FULL=1`` switches to the large configurations.
``scripts/perf_check.py`` divides every benchmark's time by ``test_reference_matmul``'s (measured
in the same session) so a slowdown is judged independently of the machine.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from bench.registry import Batch, GenerativeModel, Samples

FULL = os.environ.get("GENBENCH_BENCH_FULL") == "1"

# The reference operations benchmarks are normalised by: a fixed matmul in fp32, and the same in bf16 for the
# bf16 benchmarks (a CPU without bf16 units runs both several times slower, so their ratio holds).
REFERENCE_N = 256
REFERENCE_REPEATS = 4


def reference_matmul(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(REFERENCE_N, REFERENCE_N, generator=g).to(dtype)
    b = torch.randn(REFERENCE_N, REFERENCE_N, generator=g).to(dtype)
    out = a
    for _ in range(REFERENCE_REPEATS):
        out = torch.mm(b, a)
    return out


class ConvDenoiser(GenerativeModel):
    """A small conv net with a denoising loss: enough work per step (a few ms on a CPU core) that
    the harness's per-step bookkeeping is measured against a realistic step, as in the families.
    Deliberately not registered (it would show up in `bench list`); benchmarks swap it into the
    Trainer directly."""

    name = "bench-conv-denoiser"
    family = "reference"
    defaults = {"lr": 1e-3}
    width = 32

    def __init__(self, config, data):
        super().__init__(config, data)
        c, width = data.channels, self.width
        self.net = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
                                 nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, c, 3, padding=1))

    def loss(self, batch: Batch) -> torch.Tensor:
        x = batch.x.float() / 127.5 - 1.0
        noise = torch.randn(x.shape, generator=batch.generator, device=x.device)
        return (self.net(x + 0.5 * noise) - x).pow(2).mean()

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None, **sampler):
        z = torch.randn(n, *self.data.shape, generator=generator)
        return Samples(((self.net(z) + 1) / 2).clamp(0, 1), nfe=1)


@pytest.fixture(scope="session")
def overhead_config():
    """Steps per timed run, batch size and image size of the harness-overhead benchmark."""
    if FULL:
        return {"steps": 100, "batch_size": 64, "image_size": 16, "width": 32, "rounds": 7}
    return {"steps": 8, "batch_size": 32, "image_size": 16, "width": 16, "rounds": 3}


@contextmanager
def one_thread():
    """One intra-op thread while timing or replaying: steps are timed alone, and the reduction order (hence the
    last bits of a loss) depends on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, as the benchmark scripts print them for the README."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
