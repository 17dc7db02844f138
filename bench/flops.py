"""Counting a training step's FLOPs, the unit of the hardware-independent ``flops`` budget and of the ``cost`` metric.

``torch.utils.flop_counter.FlopCounterMode`` counts matrix multiplications, convolutions and attention, not
element-wise operations (activations, normalisations, optimizer updates, the residual flow's log-det series
bookkeeping): the convention MFU figures use, and the FLOPs that dominate every network here. What that leaves out
per family: little for the U-Nets, Glow and the GANs (convolution-bound); more for the spline flows (the
rational-quadratic spline is element-wise) and the `reference` model, whose categorical pixel model has no matmul
at all, so it counts zero and needs a budget of its own (``models.<run>.budget``).

A count is made on a copy of the model (the trained one is never touched), on the training split's first images,
with a fixed generator, after one uncounted warm-up step (a residual flow's spectral norms converge on the first
step): the same shapes and the same random draws on every machine, so the same count, whatever the CPU or GPU.
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.registry import Batch, GenerativeModel

COUNT_SEED = 12345  # the generator of the counted steps' random draws (timesteps, noise, estimator terms)
MAX_COUNT_BATCH = 64  # a larger global batch is counted at this size and scaled (FLOPs are linear in the batch)


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: only the total is read here, and the tracker's backward
    hooks break an ``autograd.grad`` taken inside a forward (the residual flow's log-det estimator raises "A leaf node
    was passed to _will_engine_execute_node"), which left the residual flow uncounted."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def count(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(FLOPs counted while ``fn`` runs, its result)."""
    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _GlobalOnly()
    with counter:
        out = fn()
    return int(counter.get_total_flops()), out


def model_copy(model: GenerativeModel) -> GenerativeModel:
    """A deep copy with fresh optimizers and no harness hook (so training steps leave the original alone)."""
    hook, opts = model._optimize_hook, model.optimizers
    model._optimize_hook, model.optimizers = None, {}
    try:
        clone = copy.deepcopy(model)
    finally:
        model._optimize_hook, model.optimizers = hook, opts
    clone.optimizers = clone.configure_optimizers()
    clone.train()
    return clone


def training_step_flops(model: GenerativeModel, x: torch.Tensor, y: torch.Tensor | None, batch_size: int,
                        device: torch.device, autocast: Callable[[], AbstractContextManager]) -> float:
    """FLOPs of one training step of ``batch_size`` images: counted on a copy at up to MAX_COUNT_BATCH of the images
    ``x`` (labels ``y``), per image, times ``batch_size``."""
    n = max(1, min(batch_size, MAX_COUNT_BATCH, len(x)))
    clone = model_copy(model)
    gen = torch.Generator(device).manual_seed(COUNT_SEED)
    batch = Batch(x[:n].to(device), y[:n].to(device) if y is not None else None, gen)

    def step(i: int):
        with autocast():
            return clone.training_step(batch, i)

    step(0)  # warm-up, not counted
    flops, _ = count(lambda: step(1))
    return flops / n * batch_size
