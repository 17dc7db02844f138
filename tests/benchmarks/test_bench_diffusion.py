"""Diffusion speed: our U-Net + schedule vs the same configuration built from diffusers.

For the ``ddpm-thesis`` U-Net at 32x32 (GENBENCH_BENCH_FULL=1; the default is the ``tiny`` preset on a
small batch so CI stays short): training images/s (forward + backward + Adam step), and seconds to
sample 128 images with DDPM-1000, DDIM-100, DDIM-50 and DDIM-10, fp32 and bf16 autocast, beside
diffusers' ``UNet2DModel`` + ``DDPMScheduler`` / ``DDIMScheduler`` measured in the same run.

Sampling time is the measured time of a few full sampler steps (network + update) on the whole batch,
divided by the steps taken and multiplied by the sampler's step count: every DDPM/DDIM step costs the
same one network evaluation, so the extrapolation only leaves out the constant set-up.

The table of docs/diffusion.md comes from ``python -m tests.benchmarks.test_bench_diffusion``
(with GENBENCH_BENCH_FULL=1).
"""

from __future__ import annotations

import contextlib
import time

import pytest
import torch

from baselines.nn import schedule as S
from baselines.nn.unet import UNet
from tests.benchmarks.conftest import FULL

SAMPLERS = (("DDPM-1000", "ddpm", 1000), ("DDIM-100", "ddim", 100), ("DDIM-50", "ddim", 50), ("DDIM-10", "ddim", 10))


def sizes(full: bool = FULL) -> dict:
    if full:
        return {"preset": "ddpm-thesis", "image": 32, "sample_batch": 128, "train_batch": 32, "steps": 2, "reps": 1}
    return {"preset": "tiny", "image": 32, "sample_batch": 8, "train_batch": 8, "steps": 2, "reps": 1}


def build_ours(cfg: dict) -> UNet:
    torch.manual_seed(0)
    return UNet.from_preset(cfg["preset"], 1, image_size=cfg["image"])


def build_diffusers(cfg: dict):
    """diffusers' UNet2DModel laid out like our preset (AdaGN = resnet_time_scale_shift="scale_shift")."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    if cfg["preset"] == "ddpm-thesis":
        kw = dict(block_out_channels=(64, 128, 128, 256), layers_per_block=2,
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=64)
    else:  # tiny: 16 channels, multipliers 1, 2, one block, attention at 8x8 (none at 32x32 here)
        kw = dict(block_out_channels=(16, 32), layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=16)
    return diffusers.UNet2DModel(sample_size=cfg["image"], in_channels=1, out_channels=1,
                                 resnet_time_scale_shift="scale_shift", **kw)


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def ours_sampler_run(net: UNet, name: str, total_steps: int, steps: int, n: int, precision: str):
    """Run ``steps`` steps of our sampler configured for ``total_steps`` (the first ``steps`` of them)."""
    sched = S.Schedule(S.make_betas("linear", 1000))
    if total_steps < 1000:
        sched = sched.respace(S.spacing("linspace", 1000, total_steps))
    sub = sched.respace(range(sched.T - steps, sched.T))  # its last (first sampled) `steps` indices
    model_fn = lambda x, t: net(x, t)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), _autocast(precision):
        if name == "ddpm":
            return S.ancestral_sample(model_fn, sub, (n, 1, 32, 32), generator=g, device="cpu")[0]
        return S.ddim_sample(model_fn, sub, (n, 1, 32, 32), eta=0.0, generator=g, device="cpu")[0]


def diffusers_sampler_run(unet, name: str, total_steps: int, steps: int, n: int, precision: str):
    import diffusers

    cls = diffusers.DDPMScheduler if name == "ddpm" else diffusers.DDIMScheduler
    sched = cls(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    sched.set_timesteps(total_steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((n, 1, 32, 32), generator=g)
    with torch.no_grad(), _autocast(precision):
        for t in sched.timesteps[:steps]:
            eps = unet(x, t).sample
            x = sched.step(eps, t, x, generator=g).prev_sample if name == "ddpm" else sched.step(eps, t, x).prev_sample
    return x


def train_step_fn(net, diffusers_model: bool, batch: int):
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    sched = S.Schedule(S.make_betas("linear", 1000))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((batch, 1, 32, 32), generator=g) * 2 - 1

    def step(precision: str = "fp32"):
        t = torch.randint(0, 1000, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        xt = sched.q_sample(x0, t, noise)
        with _autocast(precision):
            out = net(xt, t).sample if diffusers_model else net(xt, t)
        loss = (out.float() - noise).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def measure(full: bool = FULL) -> list[dict]:
    """Rows: implementation, precision, train images/s, seconds for 128 images per sampler (extrapolated).

    The two implementations are measured alternately (one warm-up round, then ``reps`` rounds; the minimum
    counts), so load from other processes on a shared machine hits both alike. Each update rule (DDPM
    ancestral, DDIM) is timed once for ``steps`` steps; DDIM-100/50/10 differ only in the step count."""
    cfg = sizes(full)
    reps = max(int(cfg["reps"]), 3) if full else int(cfg["reps"])
    nets = {"genbench": build_ours(cfg), "diffusers": build_diffusers(cfg)}
    runs = {"genbench": ours_sampler_run, "diffusers": diffusers_sampler_run}
    rows = []
    for precision in ("fp32", "bf16"):
        steps = {impl: train_step_fn(net, impl == "diffusers", cfg["train_batch"]) for impl, net in nets.items()}
        best: dict[tuple[str, str], float] = {}
        for round_ in range(reps + 1):
            for impl, net in nets.items():
                timed = {"train": lambda: steps[impl](precision)}
                for rule, total in (("ddpm", 1000), ("ddim", 100)):
                    timed[rule] = (lambda rule=rule, total=total:
                                   runs[impl](net, rule, total, cfg["steps"], cfg["sample_batch"], precision))
                for what, fn in timed.items():
                    net.train(what == "train")
                    t0 = time.perf_counter()
                    fn()
                    dt = time.perf_counter() - t0
                    if round_ > 0:  # round 0 is the warm-up
                        best[impl, what] = min(best.get((impl, what), float("inf")), dt)
        for impl, net in nets.items():
            row = {"impl": impl, "precision": precision, "params": sum(p.numel() for p in net.parameters()),
                   "train_img_s": cfg["train_batch"] / best[impl, "train"]}
            for label, name, total in SAMPLERS:
                row[label] = best[impl, name] / cfg["steps"] * total * (128 / cfg["sample_batch"])
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| implementation | precision | params | train images/s | " + " | ".join(s[0] for s in SAMPLERS) + " |"
    lines = [head, "|" + " --- |" * (4 + len(SAMPLERS))]
    for r in rows:
        lines.append(f"| {r['impl']} | {r['precision']} | {r['params'] / 1e6:.2f}M | {r['train_img_s']:.1f} | "
                     + " | ".join(f"{r[s[0]]:.1f} s" for s in SAMPLERS) + " |")
    return "\n".join(lines)


def ddim_loop(impl: str, model_fn, steps: int, n: int, image: int = 32):
    """A whole DDIM-``steps`` run (eta 0, x0 clipped as both default) with ``model_fn(x, t)`` as the eps-model."""
    g = torch.Generator().manual_seed(0)
    if impl == "genbench":
        sched = S.Schedule(S.make_betas("linear", 1000)).respace(S.spacing("leading", 1000, steps))
        return S.ddim_sample(model_fn, sched, (n, 1, image, image), eta=0.0, generator=g, device="cpu")[0]
    import diffusers

    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    sched.set_timesteps(steps)
    x = torch.randn((n, 1, image, image), generator=g)
    for t in sched.timesteps:
        x = sched.step(model_fn(x, t), t, x).prev_sample
    return x


def sampler_overhead(steps: int = 50, n: int = 8, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Per-step DDIM seconds of ours vs diffusers' DDIMScheduler at a small size, where the sampler's own update
    is not hidden behind the network: with a free eps-model (a constant tensor: the update alone) and with the
    ``tiny`` U-Net. Alternating implementations, one warm-up round, minimum over ``rounds``."""
    pytest.importorskip("diffusers")
    cfg = {"preset": "tiny", "image": 32}
    eps = torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.1
    nets = {"genbench": build_ours(cfg).eval(), "diffusers": build_diffusers(cfg).eval()}
    models = {"update only": {impl: (lambda x, t: eps) for impl in nets},
              "tiny U-Net": {"genbench": lambda x, t: nets["genbench"](x, t),
                             "diffusers": lambda x, t: nets["diffusers"](x, t).sample}}
    best: dict[str, dict[str, float]] = {what: {} for what in models}
    with torch.no_grad():
        for round_ in range(rounds + 1):
            for what, fns in models.items():
                for impl, fn in fns.items():
                    t0 = time.perf_counter()
                    ddim_loop(impl, fn, steps, n)
                    dt = (time.perf_counter() - t0) / steps
                    if round_ > 0:
                        best[what][impl] = min(best[what].get(impl, float("inf")), dt)
    return best


# ---- pytest-benchmark entries (hot paths; run once each under --benchmark-disable) -------------------------

@pytest.mark.benchmark(group="diffusion")
@pytest.mark.parametrize("impl", ["genbench", "diffusers"])
def test_bench_diffusion_sampling_step(benchmark, impl):
    cfg = sizes()
    net = (build_ours if impl == "genbench" else build_diffusers)(cfg).eval()
    run = ours_sampler_run if impl == "genbench" else diffusers_sampler_run
    x = benchmark(lambda: run(net, "ddim", 50, 1, cfg["sample_batch"], "fp32"))
    assert x.shape == (cfg["sample_batch"], 1, 32, 32) and torch.isfinite(x).all()


@pytest.mark.benchmark(group="diffusion-ddim-update")
@pytest.mark.parametrize("impl", ["genbench", "diffusers"])
def test_bench_ddim_update_overhead(benchmark, impl):
    # DDIM-50 on 8 images with a free eps-model: the sampler's own per-step cost (pytest --benchmark-only compares
    # the two; python -m tests.benchmarks.test_bench_diffusion --overhead prints per-step figures).
    pytest.importorskip("diffusers")
    eps = torch.full((8, 1, 32, 32), 0.05)
    with torch.no_grad():
        x = benchmark(lambda: ddim_loop(impl, lambda x, t: eps, 50, 8))
    assert x.shape == (8, 1, 32, 32) and torch.isfinite(x).all()


def test_ddim_loops_agree_with_diffusers():
    # The two loops timed above compute the same thing: same timesteps ("leading" = diffusers' default spacing),
    # same clipped-x0 DDIM update, so the per-step comparison is like for like.
    pytest.importorskip("diffusers")
    eps = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.3
    seen = {"genbench": [], "diffusers": []}
    outs = {impl: ddim_loop(impl, lambda x, t, impl=impl: (seen[impl].append(int(t.flatten()[0])), eps)[1], 10, 4)
            for impl in seen}
    assert seen["genbench"] == seen["diffusers"]
    torch.testing.assert_close(outs["genbench"], outs["diffusers"], atol=1e-4, rtol=1e-4)


@pytest.mark.benchmark(group="diffusion")
@pytest.mark.parametrize("impl", ["genbench", "diffusers"])
def test_bench_diffusion_train_step(benchmark, impl):
    cfg = sizes()
    net = (build_ours if impl == "genbench" else build_diffusers)(cfg)
    loss = benchmark(train_step_fn(net, impl == "diffusers", cfg["train_batch"]))
    assert torch.isfinite(loss)
    benchmark.extra_info["images"] = cfg["train_batch"]


def test_same_parameter_count_as_diffusers_layout():
    cfg = sizes()
    ours, theirs = build_ours(cfg), build_diffusers(cfg)
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
    # diffusers omits the middle attention's GroupNorm with scale_shift (2 x channels); tiny has no mid
    # attention difference other than that either.
    assert 0 <= n_ours - n_theirs <= 2 * 256


if __name__ == "__main__":
    import sys

    if "--overhead" in sys.argv:
        for what, by_impl in sampler_overhead().items():
            print(f"DDIM-50, 8 images 32x32, {what}: " + ", ".join(f"{impl} {sec * 1e3:.3f} ms/step"
                                                                    for impl, sec in by_impl.items()))
    else:
        print(markdown(measure()))
