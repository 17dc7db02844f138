"""Compute cost, measured the same way for every family (metric ``cost``).

Record keys:

- ``train_flops_per_image``: FLOPs of one training step (forward + backward, every optimizer of the
  family) divided by the batch size, counted by ``torch.utils.flop_counter.FlopCounterMode`` on a
  copy of the model (the trained model is never touched).
- ``sample_flops_per_image`` and ``sample_flops_per_nfe``: FLOPs to draw one image with the suite's
  sampler, and that divided by the sampler's NFE (one network evaluation per image).
- ``peak_flops``: the device's measured dense-matmul peak in the run's precision (best of a few
  square matmuls), cached per hardware key under ``<cache_dir>/hardware/``.
- ``train_mfu`` / ``sample_mfu``: achieved FLOP/s divided by that peak (model FLOPs utilisation),
  from timed training steps on the copy (``eval.speed_batch`` capped at the train batch) and one timed
  sampling batch, warm-up excluded and the device synchronised. A low MFU with few FLOPs means a slow
  implementation; many FLOPs means an expensive model.

FlopCounterMode counts matmuls, convolutions and attention (the FLOPs that dominate these
networks), not element-wise ops; that is the convention MFU figures use (:mod:`bench.flops` says what it leaves
out per family).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.environment import cpu_identity
from bench.flops import count as count_flops, model_copy
from bench.metrics import EvalContext, Output, make_batch, metric, synchronize, value
from bench.records import atomic_write_text

PEAK_SIZES = {"cpu": 1024, "cuda": 8192}
PEAK_REPEATS = 5
NO_FLOPS = "not defined: no matmul/conv/attention FLOPs counted (FlopCounterMode counts only those)"


def hardware_key(device: torch.device, precision: str) -> tuple[str, dict[str, Any]]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_identity()  # a generic model name hides CPU generations of different peaks
    desc = {"device": device.type, "name": name, "threads": torch.get_num_threads(), "precision": precision,
            "torch": torch.__version__}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16], desc


def measure_peak(device: torch.device, precision: str) -> float:
    """Best achieved FLOP/s of square matmuls in the run's dtype (the 'peak' MFU divides by)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = PEAK_SIZES.get(device.type, 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    synchronize(device)
    best = float("inf")
    for _ in range(PEAK_REPEATS):
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def peak_flops(ctx: EvalContext) -> tuple[float, dict[str, Any]]:
    key, desc = hardware_key(ctx.device, ctx.precision)
    path = Path(ctx.cache_dir) / "hardware" / f"peak-{key}.json"
    if path.is_file():
        try:
            return float(json.loads(path.read_text())["peak_flops"]), {**desc, "peak_cache": "hit"}
        except (ValueError, KeyError):
            pass
    peak = measure_peak(ctx.device, ctx.precision)
    atomic_write_text(path, json.dumps({"peak_flops": peak, **desc}))  # unique temp name: nodes share the cache
    return peak, {**desc, "peak_cache": "miss"}


@metric("cost", final_only=True, outputs={
    "peak_flops": Output(), "train_flops_per_image": Output(), "train_flops_per_second": Output(),
    "sample_flops_per_image": Output(), "sample_flops_per_nfe": Output(),
    # reported, not gated: one timed step over a matmul peak measured once moves a lot on shared CPUs
    "train_mfu": Output("none", "timing", column="train MFU"),
    "sample_mfu": Output("none", "timing", column="sample MFU"),
})
def cost(ctx: EvalContext) -> dict:
    if not ctx.final:  # intermediate (budget-fraction) evaluations: cost does not change with training
        return {}
    model = ctx.model
    peak, hw = peak_flops(ctx)
    proto = {"precision": ctx.precision, "device": str(ctx.device), "counter": "torch.utils.flop_counter",
             "peak": f"best of {PEAK_REPEATS} {PEAK_SIZES.get(ctx.device.type, 2048)}^2 matmuls", **hw}
    out: dict[str, Any] = {"peak_flops": value(peak, **proto)}

    # -- one training step on a copy --
    bs = max(1, min(int(ctx.eval_cfg.get("speed_batch") or 128), 64, len(ctx.train)))
    clone = model_copy(model)
    gen = torch.Generator(ctx.device).manual_seed(12345)

    def step(i: int):
        batch = make_batch(ctx.train, i * bs % max(1, len(ctx.train) - bs + 1),
                           i * bs % max(1, len(ctx.train) - bs + 1) + bs, ctx.device, gen)
        with ctx.autocast():
            return clone.training_step(batch, i)

    flops, _ = count_flops(lambda: step(0))  # also the warm-up
    synchronize(ctx.device)
    t0 = time.perf_counter()
    k = 3
    for i in range(1, k + 1):
        step(i)
    synchronize(ctx.device)
    seconds = (time.perf_counter() - t0) / k
    tproto = {**proto, "batch": bs, "timed_steps": k, "measured_on": "a copy of the final model"}
    out["train_flops_per_image"] = value(flops / bs, **tproto)
    out["train_flops_per_second"] = value(flops / seconds, **tproto)
    out["train_mfu"] = (value(flops / seconds / peak, **tproto) if flops else
                        value(None, note=NO_FLOPS, **tproto))
    del clone

    # -- sampling --
    n = max(1, min(int(ctx.eval_cfg.get("speed_batch") or 128), 128))
    with ctx.sampling():
        sflops, (s1, _) = count_flops(lambda: ctx.timed_sample(1, offset=7))
        s, sseconds = ctx.timed_sample(n, offset=8)
    nfe = s1.nfe or s.nfe
    sproto = {**proto, "batch": n, "sampler": dict(ctx.sampler), "nfe": nfe}
    out["sample_flops_per_image"] = value(sflops, **sproto)
    out["sample_flops_per_nfe"] = (value(sflops / nfe, **sproto) if nfe else
                                   value(None, note="the sampler reports no NFE", **sproto))
    out["sample_mfu"] = (value(sflops * n / sseconds / peak, **sproto) if sflops else
                         value(None, note=NO_FLOPS, **sproto))
    return out
