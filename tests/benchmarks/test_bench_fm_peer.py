"""Flow matching against torchcfm (issue 18): genbench's ``cfm`` / ``ot-cfm`` training step beside the loop torchcfm
teaches (``ConditionalFlowMatcher`` / ``ExactOptimalTransportConditionalFlowMatcher`` draw t, x_t and u_t; the
network regresses u_t), both training genbench's own U-Net with the same Adam settings, and the Euler ODE sampling
each would run (torchcfm's examples integrate the learned field with an off-the-shelf solver; so does genbench,
through torchdiffeq). torchcfm is the test-only copy in ``tests/peers/torchcfm_peer`` (MIT; see its README).

genbench's path with ``sigma_min = 0`` is torchcfm's I-CFM path with ``sigma = 0``: x_t = t x1 + (1 - t) x0,
u_t = x1 - x0. The test checks that, and that genbench's exact OT pairing (scipy's assignment) is the plan POT's
``emd`` gives torchcfm. torchcfm then *samples* pairs from that plan with replacement, genbench uses the
permutation itself, so an OT step's pairs differ in which duplicates it draws, not in cost. Print the table with

    python -m tests.benchmarks.test_bench_fm_peer [STEPS]     # GENBENCH_BENCH_FULL=1: seed 000's U-Net at 32x32
"""

from __future__ import annotations

import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import conventions
from bench.registry import Batch, DataSpec, get
from tests.benchmarks.conftest import FULL, markdown_table, one_thread

PEER = Path(__file__).resolve().parents[1] / "peers" / "torchcfm_peer"
SPEC = DataSpec(1, 32, 32, 0) if FULL else DataSpec(1, 16, 16, 0)
UNET = "ddpm-thesis" if FULL else "tiny"
BATCH = 32 if FULL else 64


@contextmanager
def torchcfm():
    sys.path.insert(0, str(PEER))
    try:
        import torchcfm as module

        yield module
    finally:
        sys.path.remove(str(PEER))


def build(name: str):
    torch.manual_seed(0)
    model = get(name)({"unet": UNET, "ema_decay": 0.0, "sigma_min": 0.0}, SPEC)
    model.optimizers = model.configure_optimizers()
    return model


def test_genbench_and_torchcfm_compute_the_same_path_target_and_ot_pairing():
    from baselines.flow_matching import ot_pairing, ot_path, ot_target

    g = torch.Generator().manual_seed(0)
    x0, x1, t = torch.randn(16, 1, 8, 8, generator=g), torch.randn(16, 1, 8, 8, generator=g), torch.rand(16, generator=g)
    with torchcfm() as cfm:
        fm = cfm.ConditionalFlowMatcher(sigma=0.0)
        _, xt, ut = fm.sample_location_and_conditional_flow(x0, x1, t)
        plan = cfm.ExactOptimalTransportConditionalFlowMatcher(sigma=0.0).ot_sampler.get_map(x0, x1)
    torch.testing.assert_close(ot_path(x0, x1, t, 0.0), xt)
    torch.testing.assert_close(ot_target(x0, x1, 0.0), ut)
    perm = ot_pairing(x0, x1)  # (x0[perm[i]], x1[i]) is genbench's pair i
    paired_with = torch.as_tensor(plan).argmax(dim=1)  # x0[j] is paired with x1[paired_with[j]] in POT's plan
    assert torch.equal(paired_with[perm], torch.arange(16))


def peer_step(model, fm, x: torch.Tensor, gen: torch.Generator) -> float:
    """torchcfm's training loop around genbench's U-Net: the same data scaling and noise source."""
    x1 = conventions.dequantize(x, gen) * 2.0 - 1.0
    x0 = torch.randn(x1.shape, generator=gen)
    t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
    loss = F.mse_loss(model.net(xt, t, None).float(), ut)
    opt = model.optimizers["model"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def measure(steps: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median CPU seconds per training step, genbench and torchcfm alternating on their own models, one thread."""
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, 256, (BATCH, *SPEC.shape), generator=g, dtype=torch.uint8) for _ in range(steps + warmup)]
    out: dict[str, list[float]] = {}
    with one_thread(), torchcfm() as cfm:
        for name, matcher in (("cfm", cfm.ConditionalFlowMatcher(sigma=0.0)),
                              ("ot-cfm", cfm.ExactOptimalTransportConditionalFlowMatcher(sigma=0.0))):
            ours, peer = build(name), build(name)
            gen_ours, gen_peer = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
            for i, x in enumerate(data):
                t0 = time.process_time()
                ours.training_step(Batch(x, None, gen_ours), i)
                t1 = time.process_time()
                peer_step(peer, matcher, x, gen_peer)
                t2 = time.process_time()
                if i >= warmup:
                    out.setdefault(f"{name}: genbench", []).append(t1 - t0)
                    out.setdefault(f"{name}: torchcfm", []).append(t2 - t1)
    return {k: statistics.median(v) for k, v in out.items()}


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    res = measure(steps)
    print(f"flow matching, `{UNET}` U-Net at {SPEC.height}x{SPEC.width}, batch {BATCH}, fp32, one thread, "
          f"median of {steps} alternating steps")
    print(markdown_table(["training step", "ms / step", "images/s", "vs torchcfm"],
                         [[k, f"{1e3 * s:.1f}", f"{BATCH / s:.0f}", f"{s / res[k.split(':')[0] + ': torchcfm']:.2f}x"]
                          for k, s in res.items()]))
