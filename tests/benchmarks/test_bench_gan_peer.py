"""DCGAN against a bare training loop (issue 18): no maintained DCGAN package reproduces seed 004's networks, so the
peer is the loop PyTorch's own DCGAN example teaches (discriminator on a real and a fake batch with two backward
passes, then the generator on the non-saturating loss, ``zero_grad`` on each network first), written here around
the *same* Generator and Discriminator modules, initialisation and Adam settings as ``baselines/gan.py``.

The wrapper differs in two ways that cost or save time: it freezes the discriminator's parameters during the
generator's backward (no weight gradients for D there) and it computes a diversity statistic and the divergence
rule each step. Same work is asserted, not assumed: from the same seeds, the two loops give the same losses, step
for step (the test below). Print the README's table with

    python -m tests.benchmarks.test_bench_gan_peer [STEPS]        # GENBENCH_BENCH_FULL=1: the 32x32 defaults
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from baselines import gan
from bench import conventions
from bench.registry import Batch, DataSpec, get
from tests.benchmarks.conftest import FULL, markdown_table, one_thread

SPEC = DataSpec(1, 32, 32, 0) if FULL else DataSpec(1, 16, 16, 0)
SMALL = {"g_channels": 16, "d_channels": 16, "latent_dim": 32}
BATCH = 64


def build() -> gan.DCGAN:
    torch.manual_seed(0)
    model = get("dcgan")({} if FULL else SMALL, SPEC)
    model.optimizers = model.configure_optimizers()
    return model


def batches(steps: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (BATCH, *SPEC.shape), generator=g, dtype=torch.uint8) for _ in range(steps)]


def bare_step(netG, netD, optG, optD, x: torch.Tensor, gen: torch.Generator, latent: int) -> float:
    """One iteration of the textbook DCGAN loop (logits + softplus is BCE-with-logits, as the wrapper's loss)."""
    real = conventions.dequantize(x, gen) * 2.0 - 1.0  # the wrapper's data scaling and draw order
    z = torch.randn(x.shape[0], latent, generator=gen)
    netD.zero_grad()
    err_real = F.softplus(-netD(real)).mean()
    err_real.backward()
    fake = netG(z)
    err_fake = F.softplus(netD(fake.detach())).mean()
    err_fake.backward()
    optD.step()
    netG.zero_grad()
    err_g = F.softplus(-netD(fake)).mean()
    err_g.backward()
    optG.step()
    return (err_real + err_fake).item() + err_g.item()


def bare(model: gan.DCGAN):
    opts = model.optimizers
    latent = int(model.config["latent_dim"])
    return lambda x, gen: bare_step(model.generator, model.discriminator, opts["generator"], opts["discriminator"],
                                    x, gen, latent)


def test_the_bare_loop_does_the_wrappers_work():
    data = batches(4)
    wrapper, peer = build(), build()
    gw, gp = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    step = bare(peer)
    for i, x in enumerate(data):
        lw = wrapper.training_step(Batch(x, None, gw), i)["loss"]
        lp = step(x, gp)
        assert abs(lw - lp) <= 1e-5 * max(1.0, abs(lw)), (i, lw, lp)
    for a, b in zip(wrapper.parameters(), peer.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def measure(steps: int = 60, warmup: int = 5) -> dict[str, float]:
    """Median seconds per step of each loop, the two alternating step by step on their own models (one thread)."""
    with one_thread():
        data = batches(steps + warmup)
        wrapper, peer = build(), build()
        gw, gp = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        step = bare(peer)
        tw, tp = [], []
        for i, x in enumerate(data):
            t0 = time.process_time()
            wrapper.training_step(Batch(x, None, gw), i)
            t1 = time.process_time()
            step(x, gp)
            t2 = time.process_time()
            if i >= warmup:
                tw.append(t1 - t0)
                tp.append(t2 - t1)
    return {"genbench": statistics.median(tw), "bare loop": statistics.median(tp)}


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    res = measure(steps)
    size = "defaults, 1x32x32" if FULL else "16 channels, 1x16x16"
    print(f"DCGAN ({size}), batch {BATCH}, fp32, one thread, median of {steps} alternating steps")
    print(markdown_table(["loop", "ms / step", "images/s", "vs bare"],
                         [[name, f"{1e3 * s:.2f}", f"{BATCH / s:.0f}", f"{s / res['bare loop']:.2f}x"]
                          for name, s in res.items()]))
