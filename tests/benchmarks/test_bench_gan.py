"""DCGAN / conditional DCGAN: one training step (D then G) and seconds to sample 128 images.

Small networks on 1x16x16 by default; the wrapper's defaults (DCGAN at 32x32, the MNIST suites'
size) with GENBENCH_BENCH_FULL=1. fp32 and bf16 autocast.
"""

from __future__ import annotations

import os

import pytest
import torch

from bench.registry import Batch, DataSpec, get

FULL = os.environ.get("GENBENCH_BENCH_FULL") == "1"
SPEC = DataSpec(1, 32, 32, 10) if FULL else DataSpec(1, 16, 16, 10)
BATCH = 64
SMALL = {"g_channels": 16, "d_channels": 16, "latent_dim": 32, "embed_dim": 8}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def build(name):
    torch.manual_seed(0)
    return get(name)({} if FULL else SMALL, SPEC)


def autocast(dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)


@pytest.mark.benchmark(group="gan-train-step")
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", ["dcgan", "cdcgan"])
def test_train_step(benchmark, name, precision):
    m = build(name).train()
    g = torch.Generator().manual_seed(0)
    b = Batch(torch.randint(0, 256, (BATCH, *SPEC.shape), generator=g, dtype=torch.uint8),
              torch.randint(0, 10, (BATCH,), generator=g), torch.Generator().manual_seed(1))

    def step():
        with autocast(PRECISIONS[precision]):
            return m.training_step(b, 0)

    step()
    out = benchmark.pedantic(step, rounds=3, iterations=1)
    benchmark.extra_info["images_per_step"] = BATCH
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())


@pytest.mark.benchmark(group="gan-sampling")
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", ["dcgan", "cdcgan"])
def test_sample_128_seconds(benchmark, name, precision):
    m = build(name).eval()
    labels = torch.arange(128) % 10 if m.conditional else None

    def run():
        with autocast(PRECISIONS[precision]):
            return m.sample(128, labels=labels, generator=torch.Generator().manual_seed(0))

    s = benchmark.pedantic(run, rounds=3, iterations=1)
    assert s.images.shape == (128, *SPEC.shape) and s.nfe == 1
