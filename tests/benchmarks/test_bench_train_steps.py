"""One training step (loss, backward, optimizer step, EMA update) of the families whose sampling is
benchmarked elsewhere but whose training was not: flow matching (``cfm``) and the hybrid (``daf``).

Default (CI) size: small networks at 1x16x16, batch 32. ``GENBENCH_BENCH_FULL=1``: the wrappers' defaults
(the seeds' configurations: cfm's ``ddpm-thesis`` U-Net, DAF's Table 5.1 MNIST flow + U-Net) at 1x32x32,
batch 64. fp32; the step runs through the wrapper's own ``training_step`` as the harness calls it.
"""

from __future__ import annotations

import pytest
import torch

from bench.registry import Batch, DataSpec, get
from tests.benchmarks.conftest import FULL

SPEC = DataSpec(1, 32, 32) if FULL else DataSpec(1, 16, 16)
BATCH = 64 if FULL else 32
SMALL = {
    "cfm": {"unet": "tiny", "ema_decay": 0.999},
    "daf": {"levels": 2, "steps_per_level": 2, "hidden_channels": 16, "num_blocks": 1, "unet_channels": 16,
            "unet_channel_mults": [1, 2], "unet_res_blocks": 1, "unet_attn_resolutions": [], "timesteps": 500},
}


@pytest.mark.benchmark(group="train-step")
@pytest.mark.parametrize("name", ["cfm", "daf"])
def test_train_step(benchmark, name):
    torch.manual_seed(0)
    m = get(name)({} if FULL else dict(SMALL[name]), SPEC).train()
    m.optimizers = m.configure_optimizers()
    g = torch.Generator().manual_seed(0)
    b = Batch(torch.randint(0, 256, (BATCH, *SPEC.shape), generator=g, dtype=torch.uint8), None,
              torch.Generator().manual_seed(1))
    m.training_step(b, 0)  # first-call work (data-dependent init, allocator warm-up) is not the hot path
    out = benchmark.pedantic(lambda: m.training_step(b, 1), rounds=2 if FULL else 3, iterations=1)
    benchmark.extra_info.update(images_per_step=BATCH, config="seed" if FULL else "small",
                                parameters=sum(p.numel() for p in m.parameters()))
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values() if isinstance(v, float))
