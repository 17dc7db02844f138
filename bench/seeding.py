"""Seeds and random-number states: how a run is seeded, and the states a checkpoint stores and restores, so a
resumed run draws exactly what an uninterrupted one would."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The ``batch.generator`` of process ``rank`` at ``step`` of a multi-process run.

    Seeded from (seed, step, rank), so each process draws its own timesteps / noise / dequantization
    for its slice of the global batch (one shared stream would give every slice the same draws), and
    a resumed run needs no generator state: every rank re-derives it from the step. A stochastic
    model therefore matches a 1-process run statistically, not bit for bit (its draws differ); the
    deterministic parts (data order, slicing, gradient averaging, optimizer, EMA) match exactly.
    """
    key = np.random.SeedSequence([int(seed), int(step), int(rank), 7919]).generate_state(1, np.uint64)[0]
    return torch.Generator(device).manual_seed(int(key))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(step_gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every RNG state a run draws from: its step generator, torch's (and CUDA's), NumPy's and Python's."""
    return {"step_gen": step_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}


def restore_rng(payload: dict[str, Any], step_gen: torch.Generator, device: torch.device) -> None:
    """Put back the states :func:`capture_rng` stored (a checkpoint's)."""
    step_gen.set_state(payload["step_gen"].cpu() if device.type == "cpu" else payload["step_gen"])
    torch.set_rng_state(payload["torch_rng"].cpu())
    if payload.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all([s.cpu() for s in payload["cuda_rng"]])
    np.random.set_state(payload["numpy_rng"])
    random.setstate(payload["python_rng"])
