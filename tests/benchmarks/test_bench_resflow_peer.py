"""The residual flow against the official code (issue 18): genbench's ``resflow`` and Chen et al.'s
``rtqichen/residual-flows`` (test-only copy in ``tests/peers/resflows_peer``, MIT) at seed 000's MNIST configuration
(1x32x32, 16-16-16 blocks, 512 hidden channels, LipSwish, ActNorm, coefficient 0.98, no fc end: 15.73M parameters
in both), each trained with its own defaults: the official `train_img.py` step (memory-efficient gradient in the
forward pass, Neumann-series gradient, spectral norms updated to tolerance 1e-3 after each step, gradient clipping
at 1, an EMA of the weights) and genbench's wrapper step (``memory_efficient = true``).

Each measurement is a fresh process (its peak RSS is its own) that takes one warm-up step and then times
``STEPS`` steps on random uint8 batches; the implementations alternate. One step of batch 8 takes minutes on this
2-core CPU, so nothing here runs in the test suite; print the README's table with

    python -m tests.benchmarks.test_bench_resflow_peer [BATCH ...] [--steps N] [--blocks 16,16,16]

(``--blocks`` shrinks both models alike, for profiling).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PEER = ROOT / "tests" / "peers" / "resflows_peer"
SHAPE = (1, 32, 32)


def official_step(batch: int, blocks: list[int]):
    """The official model and its train_img.py training step (density task, MNIST, defaults)."""
    sys.path.insert(0, str(PEER))
    import numpy as np
    import resflows.layers as layers
    import resflows.layers.base as base_layers
    from resflows.resflow import ResidualFlow

    model = ResidualFlow(
        (batch, *SHAPE), n_blocks=blocks, intermediate_dim=512, factor_out=False, quadratic=False,
        init_layer=layers.LogitTransform(1e-6), actnorm=True, fc_actnorm=False, batchnorm=False, dropout=0, fc=False,
        coeff=0.98, vnorms="2222", n_lipschitz_iters=None, sn_atol=1e-3, sn_rtol=1e-3, n_power_series=None,
        n_dist="poisson", n_samples=1, kernels="3-1-3", activation_fn="swish", fc_end=False, fc_idim=128,
        n_exact_terms=2, preact=True, neumann_grad=True, grad_in_forward=True, first_resblock=True, learn_p=False,
        classification=False, classification_hdim=256, n_classes=10, block_type="resblock")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ema = [p.detach().clone() for p in model.parameters()]
    sn_types = (base_layers.SpectralNormConv2d, base_layers.SpectralNormLinear, base_layers.InducedNormConv2d,
                base_layers.InducedNormLinear)
    dims = int(np.prod(SHAPE))

    def step(x: torch.Tensor) -> float:
        x = (x.float() + torch.rand(x.shape)) / 256.0
        z, delta_logp = model(x, 0)
        logpz = (-0.5 * (z.pow(2) + np.log(2 * np.pi))).view(z.size(0), -1).sum(1, keepdim=True)
        logpx = logpz - delta_logp - np.log(256) * dims
        bpd = -torch.mean(logpx) / dims / np.log(2)
        bpd.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, sn_types):
                    m.compute_weight(update=True)
            for e, p in zip(ema, model.parameters()):
                e.mul_(0.999).add_(p.detach(), alpha=0.001)
        return float(bpd)

    return step, sum(p.numel() for p in model.parameters())


def genbench_step(batch: int, blocks: list[int]):
    from bench.registry import Batch, DataSpec, get

    model = get("resflow")({"blocks_per_scale": blocks}, DataSpec(*SHAPE, 10))
    model.optimizers = model.configure_optimizers()
    gen = torch.Generator().manual_seed(1)
    counter = {"i": 0}

    def step(x: torch.Tensor) -> float:
        out = model.training_step(Batch(x, None, gen), counter["i"])
        counter["i"] += 1
        return out["loss"]

    return step, sum(p.numel() for p in model.parameters())


def child(impl: str, batch: int, steps: int, blocks: list[int]) -> dict:
    torch.manual_seed(0)
    step, params = (official_step if impl == "official" else genbench_step)(batch, blocks)
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, 256, (batch, *SHAPE), generator=g, dtype=torch.uint8) for _ in range(steps + 1)]
    step(data[0])  # warm-up
    t0 = time.perf_counter()
    losses = [step(x) for x in data[1:]]
    seconds = time.perf_counter() - t0
    return {"impl": impl, "batch": batch, "parameters": params, "steps": steps, "images_per_s": batch * steps / seconds,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "losses": losses,
            "threads": torch.get_num_threads()}


def measure(batches: list[int], steps: int, blocks: list[int]) -> list[dict]:
    out = []
    for batch in batches:
        for impl in ("genbench", "official"):
            res = subprocess.run([sys.executable, "-m", "tests.benchmarks.test_bench_resflow_peer", "--child", impl,
                                  str(batch), str(steps), ",".join(map(str, blocks))], cwd=ROOT, capture_output=True, text=True, check=True)
            out.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                               [int(b) for b in sys.argv[5].split(",")])))
        sys.exit(0)
    args = sys.argv[1:]
    steps = 2
    if "--steps" in args:
        i = args.index("--steps")
        steps = int(args[i + 1])
        del args[i:i + 2]
    blocks = [16, 16, 16]
    if "--blocks" in args:
        i = args.index("--blocks")
        blocks = [int(b) for b in args[i + 1].split(",")]
        del args[i:i + 2]
    rows = measure([int(b) for b in args] or [8], steps, blocks)
    print(f"residual flow, seed 000 MNIST configuration, fp32, {rows[0]['threads']} threads, {steps} timed steps "
          "after one warm-up, one process each")
    print("| batch | implementation | parameters | images/s | peak RSS (GB) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} | {r['impl']} | {r['parameters'] / 1e6:.2f}M | {r['images_per_s']:.3f} | "
              f"{r['peak_rss_gb']:.2f} |")
