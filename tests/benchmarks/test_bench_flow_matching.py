"""Seconds to sample a batch from a flow-matching model per ODE solver (and its NFE), beside DDIM at the same NFE.

Full size (``GENBENCH_BENCH_FULL=1``): the ``ddpm-thesis`` U-Net (seed 000's, 18.1M parameters at
1 channel) at 1x32x32, 128 images, NFE 20 per solver (euler 20 steps, midpoint 10, rk4 5, dopri5 at
rtol=atol=1e-3 -- its NFE is whatever the controller needs). DDIM (baselines/nn/schedule.py,
eta = 0) runs the same U-Net as an eps-network over a 1000-step linear schedule respaced to 20
steps. Default (CI) size: the ``tiny`` U-Net at 16x16, 8 images, NFE 4. Networks are untrained:
per-evaluation cost does not depend on the weights, dopri5's NFE does (trained fields are smoother).
"""

from __future__ import annotations

import pytest
import torch

from bench.registry import DataSpec
from tests.benchmarks.conftest import FULL

if FULL:
    CFG = {"unet": "ddpm-thesis", "size": 32, "n": 128, "nfe": 20}
else:
    CFG = {"unet": "tiny", "size": 16, "n": 8, "nfe": 4}

SOLVERS = {"euler": 1, "midpoint": 2, "rk4": 4}


@pytest.fixture(scope="module")
def fm_model():
    from baselines.flow_matching import ConditionalFlowMatching

    torch.manual_seed(0)
    model = ConditionalFlowMatching({"unet": CFG["unet"], "ema_decay": 0.0},
                                    DataSpec(1, CFG["size"], CFG["size"], 0))
    return model.eval()


@pytest.mark.benchmark(group="flow-matching-sampling")
@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4", "dopri5"])
def test_flow_matching_sampling(benchmark, fm_model, solver):
    opts = {"name": solver}
    if solver in SOLVERS:
        opts["steps"] = CFG["nfe"] // SOLVERS[solver]
    else:
        opts.update(rtol=1e-3, atol=1e-3)
    g = torch.Generator().manual_seed(0)
    out = benchmark.pedantic(lambda: fm_model.sample(CFG["n"], generator=g, **opts), rounds=1, iterations=1)
    assert out.images.shape == (CFG["n"], 1, CFG["size"], CFG["size"])
    if solver in SOLVERS:
        assert out.nfe == CFG["nfe"]
    benchmark.extra_info.update(nfe=out.nfe, images=CFG["n"], unet=CFG["unet"], size=CFG["size"],
                                parameters=fm_model.num_parameters())


@pytest.mark.benchmark(group="flow-matching-sampling")
def test_ddim_same_nfe(benchmark, fm_model):
    from baselines.nn import schedule as sch

    base = sch.Schedule(sch.make_betas("linear", 1000))
    spaced = base.respace(sch.spacing("uniform", 1000, CFG["nfe"]))
    net = fm_model.net  # the same U-Net, used as an eps-network

    def model_fn(x, t):
        return net(x, t.float() / 1000.0)  # time_scale 1000 maps back to the DDPM timestep

    def run():
        with torch.no_grad():
            return sch.ddim_sample(model_fn, spaced, (CFG["n"], 1, CFG["size"], CFG["size"]),
                                   generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))

    x, nfe = benchmark.pedantic(run, rounds=1, iterations=1)
    assert nfe == CFG["nfe"] and x.shape[0] == CFG["n"]
    benchmark.extra_info.update(nfe=nfe, images=CFG["n"], unet=CFG["unet"], size=CFG["size"])
