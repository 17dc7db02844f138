"""Training images/s and seconds to sample 128 images for resflow / glow / nsf (and normflows' Glow).

Small configurations on 1x16x16 by default; the seed configurations on 1x32x32 (seed 000's CRF,
Glow L=3 K=32, seed 001's 48-flow NSF) with GENBENCH_BENCH_FULL=1. fp32 and bf16 autocast.
Figures measured on the project's CPU are in docs/flows.md.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from bench.registry import Batch, DataSpec, get

FULL = os.environ.get("GENBENCH_BENCH_FULL") == "1"
SPEC = DataSpec(1, 32, 32) if FULL else DataSpec(1, 16, 16)
BATCH = 64
# The seed-000 residual flow does not fit a batch of 64 in 24 GiB of CPU memory (activations of 48 blocks
# of 512 channels at up to 32x32, plus the power-series graph; Chen et al.'s "gradient in forward" trick,
# which frees it, is not implemented): its full-size training step is timed on 16 images.
TRAIN_BATCH = {"resflow": 16} if FULL else {}
SMALL = {
    "resflow": {"blocks_per_scale": [1, 1, 1], "hidden_channels": 16, "sn_iterations": 1},
    "glow": {"levels": 2, "steps_per_level": 2, "hidden_channels": 16},
    "nsf": {"levels": 2, "steps_per_level": 2, "hidden_channels": 16, "num_blocks": 1, "num_bins": 4},
}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def build(name):
    torch.manual_seed(0)
    return get(name)({} if FULL else SMALL[name], SPEC)


def batch(n=BATCH):
    x = torch.randint(0, 256, (n, *SPEC.shape), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return Batch(x, None, torch.Generator().manual_seed(1))


def autocast(dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)


@pytest.mark.benchmark(group="flows-train-step")
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", ["resflow", "glow", "nsf"])
def test_train_images_per_second(benchmark, name, precision):
    m = build(name).train()
    n = TRAIN_BATCH.get(name, BATCH)
    b = batch(n)

    def step():
        with autocast(PRECISIONS[precision]):
            return m.training_step(b, 0)

    step()  # ActNorm init, spectral-norm warm-up
    out = benchmark.pedantic(step, rounds=3 if not FULL else 2, iterations=1)
    benchmark.extra_info["images_per_step"] = n
    benchmark.extra_info["config"] = "seed" if FULL else "small"
    assert out is None or torch.isfinite(torch.tensor(out["loss"]))


@pytest.mark.benchmark(group="flows-sampling")
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", ["resflow", "glow", "nsf"])
def test_sample_128_seconds(benchmark, name, precision):
    m = build(name)
    m.train()
    m.loss(batch(16))  # initialise ActNorm
    m.eval()

    def run():
        with autocast(PRECISIONS[precision]):
            return m.sample(128, generator=torch.Generator().manual_seed(0))

    s = benchmark.pedantic(run, rounds=2 if not FULL else 1, iterations=1)
    benchmark.extra_info["nfe"] = s.nfe
    assert s.images.shape[0] == 128


@pytest.mark.benchmark(group="flows-train-step")  # times normflows' training step (its sampling goes to extra_info)
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_normflows_glow_train_and_sample(benchmark, precision):
    """normflows' own Glow (GlowBlock + Squeeze + MultiscaleFlow) at the same size as ours, for comparison."""
    nf = pytest.importorskip("normflows")
    torch.manual_seed(0)
    levels, k, hidden = (3, 32, 512) if FULL else (2, 2, 16)
    c, size = SPEC.channels, SPEC.height
    q0, flows, merges = [], [], []
    for i in range(levels):
        fl_ = [nf.flows.GlowBlock(c * 2 ** (levels + 1 - i), hidden, split_mode="channel", scale=True)
               for _ in range(k)]
        fl_ += [nf.flows.Squeeze()]
        flows.append(fl_)
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (c * 2 ** (levels - i), size // 2 ** (levels - i), size // 2 ** (levels - i))
        else:
            latent = (c * 2 ** (levels + 1), size // 2 ** levels, size // 2 ** levels)
        q0.append(nf.distributions.DiagGaussian(latent))
    model = nf.MultiscaleFlow(q0, flows, merges)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # at 1e-3 its full-size loss turned non-finite by the 3rd step on random pixels
    x = (batch().x.float() + torch.rand(BATCH, *SPEC.shape)) / 256 - 0.5

    def step():
        with autocast(PRECISIONS[precision]):
            loss = model.forward_kld(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    step()
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(PRECISIONS[precision]):
        model.sample(128)
    benchmark.extra_info["sample_128_s"] = time.perf_counter() - t0
    loss = benchmark.pedantic(step, rounds=3 if not FULL else 2, iterations=1)
    assert torch.isfinite(loss)
