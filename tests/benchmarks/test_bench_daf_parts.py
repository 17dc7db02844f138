"""DAF's training step against its two parts timed on their own (issue 18): the flow (the step DAF takes in its
flow-first phase: flow log-det + a standard-normal prior, as a plain normalizing flow trains) and the diffusion
(the U-Net's hybrid loss on a fixed latent, as a DDPM on z0 trains). Joint training also sends the diffusion's
gradient back through the flow, so the step should cost about the sum of the parts plus one more pass through the
flow; a larger gap would be overhead of the wrapper. The test checks that the parts timed are the ones the step
runs: the joint loss equals the parts' losses added up, from the same random draws. Print the table with

    python -m tests.benchmarks.test_bench_daf_parts [STEPS]      # GENBENCH_BENCH_FULL=1: seed 001's MNIST size
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from bench.registry import Batch, DataSpec, get
from tests.benchmarks.conftest import FULL, markdown_table, one_thread

SPEC = DataSpec(1, 32, 32) if FULL else DataSpec(1, 16, 16)
CONFIG = {} if FULL else {"levels": 2, "steps_per_level": 2, "hidden_channels": 16, "num_blocks": 1,
                          "unet_channels": 16, "unet_channel_mults": [1, 2], "unet_res_blocks": 1,
                          "unet_attn_resolutions": []}
BATCH = 32 if FULL else 16


def build():
    torch.manual_seed(0)
    model = get("daf")({**CONFIG, "training": "joint"}, SPEC)
    model.optimizers = model.configure_optimizers()
    return model


def data(steps: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (BATCH, *SPEC.shape), generator=g, dtype=torch.uint8) for _ in range(steps)]


def flow_part(model, x, gen) -> torch.Tensor:
    z0, ld, ld_pre = model._flow_forward(x, gen)
    return (model._gaussian_prior_bits(z0) + model._flow_bits(ld, ld_pre)).mean()


def diffusion_part(model, z0, gen) -> torch.Tensor:
    l_diff, _, _, latent_bound = model._diffusion_loss(z0, gen)
    return (l_diff + latent_bound).mean()


def test_the_joint_loss_is_the_sum_of_the_parts_from_the_same_draws():
    model = build()
    x = data(1)[0]
    joint = model._losses(Batch(x, None, torch.Generator().manual_seed(3)), step=10)["loss"]
    gen = torch.Generator().manual_seed(3)
    z0, ld, ld_pre = model._flow_forward(x, gen)  # the same draws in the same order as the joint step
    l_diff, _, _, latent_bound = model._diffusion_loss(z0, gen)
    parts = (l_diff + latent_bound + model._flow_bits(ld, ld_pre)).mean()
    torch.testing.assert_close(joint, parts, rtol=1e-6, atol=1e-6)


def step(model, loss: torch.Tensor) -> None:
    opt = model.optimizers["model"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def measure(steps: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median CPU seconds per step of the joint step and of each part, alternating on one model, one thread."""
    model, times = build(), {"DAF step (joint)": [], "flow part": [], "diffusion part": []}
    with one_thread():
        for i, x in enumerate(data(steps + warmup)):
            gen = torch.Generator().manual_seed(i)
            t0 = time.process_time()
            model.training_step(Batch(x, None, gen), 10 + i)
            t1 = time.process_time()
            step(model, flow_part(model, x, gen))
            t2 = time.process_time()
            with torch.no_grad():
                z0 = model._flow_forward(x, gen)[0]
            t3 = time.process_time()
            step(model, diffusion_part(model, z0, gen))
            t4 = time.process_time()
            if i >= warmup:
                times["DAF step (joint)"].append(t1 - t0)
                times["flow part"].append(t2 - t1)
                times["diffusion part"].append(t4 - t3)
    return {k: statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    res = measure(steps)
    parts = res["flow part"] + res["diffusion part"]
    size = "seed 001 MNIST 1x32x32" if FULL else "small, 1x16x16"
    print(f"DAF ({size}), batch {BATCH}, fp32, one thread, median of {steps} alternating steps")
    print(markdown_table(["step", "ms", "/ (flow + diffusion)"],
                         [[name, f"{1e3 * s:.1f}", f"{s / parts:.2f}x"] for name, s in res.items()]))
