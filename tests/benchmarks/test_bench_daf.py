"""Seed 001 Table 5.4 on this CPU: seconds to sample 25 and 128 MNIST images (1x32x32) with NSF (48 flows),
DAF (T = 500, 24 flows) and DDPM (T = 1000).

``GENBENCH_BENCH_FULL=1``: the MNIST paper configuration (Table 5.1: 3 levels x 8 steps, 64 hidden channels,
2 resnet blocks in flow and U-Net, T = 500; NSF 3 x 16 steps; DDPM with the same U-Net as DAF, T = 1000).
Default: tiny networks with the same T and the same flow-count ratio, so the ordering is checked cheaply.

Full reverse chains of 500 / 1000 U-Net passes are too slow to run completely on a CPU here, so the
diffusion models are timed for ``K`` reverse steps (``sample(n, steps=K)``: the respaced chain, whose
per-step cost is that of the full chain: one U-Net pass plus elementwise work) and the full time is
EXTRAPOLATED as T * (per-step time) (+ DAF's one flow-inverse pass, timed separately). The benchmark
fixture times what actually runs (NSF: the whole sample; DDPM / DAF: the K-step chain);
``extra_info["seconds_extrapolated"]`` holds the full-chain estimate. Figures are in docs/daf.md.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from bench.registry import DataSpec, get
from tests.benchmarks.conftest import FULL

SPEC = DataSpec(1, 32, 32)
K = 4 if FULL else 3  # reverse steps actually run per timing

if FULL:
    DAF = {}  # the wrapper's defaults are Table 5.1's MNIST configuration
    UNET = {"unet": "ddpm-thesis", "base_channels": 64, "channel_mults": [1, 2, 2, 2], "num_res_blocks": 2,
            "attn_resolutions": [16], "num_heads": 1}
    NSF = {"levels": 3, "steps_per_level": 16, "hidden_channels": 64, "num_blocks": 2}
else:
    DAF = {"levels": 2, "steps_per_level": 2, "hidden_channels": 16, "num_blocks": 1, "unet_channels": 16,
           "unet_channel_mults": [1, 2], "unet_res_blocks": 1, "unet_attn_resolutions": []}
    UNET = {"unet": "tiny", "base_channels": 16, "channel_mults": [1, 2], "num_res_blocks": 1,
            "attn_resolutions": []}
    NSF = {"levels": 2, "steps_per_level": 4, "hidden_channels": 16, "num_blocks": 1}
DAF = {**DAF, "timesteps": 500}
DDPM = {**UNET, "timesteps": 1000}


def build(name: str):
    torch.manual_seed(0)
    cfg = {"daf": DAF, "ddpm": DDPM, "nsf": NSF}[name]
    return get(name)(dict(cfg), SPEC).eval()


def run_once(model, name: str, n: int) -> tuple[float, float]:
    """(seconds of what ran, extrapolated seconds of the full sampling chain) for n images."""
    g = torch.Generator().manual_seed(0)
    if name == "nsf":
        t0 = time.perf_counter()
        model.sample(n, generator=g)
        dt = time.perf_counter() - t0
        return dt, dt
    t0 = time.perf_counter()
    model.sample(n, generator=g, steps=K)
    dt = time.perf_counter() - t0
    flow = 0.0
    if name == "daf":
        z = torch.randn(n, *SPEC.shape, generator=g)
        with torch.no_grad():
            t1 = time.perf_counter()
            model.flow.inverse(z)
            flow = time.perf_counter() - t1
    T = model.schedule.T
    return dt, flow + T * max(dt - flow, 0.0) / K


@pytest.mark.benchmark(group="daf-table5.4-sampling")
@pytest.mark.parametrize("n", [25, 128])
@pytest.mark.parametrize("name", ["nsf", "daf", "ddpm"])
def test_sampling_time(benchmark, name, n):
    model = build(name)
    run_once(model, name, min(n, 4))  # warm-up
    extrapolated = []

    def body():
        extrapolated.append(run_once(model, name, n)[1])

    benchmark.pedantic(body, rounds=1 if not FULL else 2, iterations=1)
    benchmark.extra_info.update({"images": n, "seconds_extrapolated": min(extrapolated),
                                 "extrapolated_from_steps": None if name == "nsf" else K,
                                 "config": "paper (Table 5.1)" if FULL else "small",
                                 "timesteps": getattr(getattr(model, "schedule", None), "T", None)})
    assert min(extrapolated) > 0


def test_table_5_4_ordering_nsf_fastest_daf_between():
    """Seed 001 Table 5.4's ordering of 25-sample sampling times: NSF < DAF < DDPM-1000 (medians of 3)."""
    times = {}
    for name in ("nsf", "daf", "ddpm"):
        model = build(name)
        run_once(model, name, 4)
        times[name] = statistics.median(run_once(model, name, 25)[1] for _ in range(3))
    assert times["nsf"] < times["daf"] < times["ddpm"], times
