"""The device a run uses, this process's place in a multi-process run, and its peak memory."""

from __future__ import annotations

import os
import resource
from typing import Any

import torch

from bench.errors import BenchError


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


DEVICE_HELP = "use cpu, cuda, cuda:N, mps or auto"


def resolve_device(name: str) -> torch.device:
    """The torch device for ``train.device``/``--device``; a BenchError for a name torch cannot use here."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BenchError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if name == "cuda":
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BenchError(f"unknown device {name!r}; {DEVICE_HELP}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise BenchError(f"device {name!r} is not supported by genbench; {DEVICE_HELP}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BenchError(f"device {name!r} requested but MPS is not available; use --device cpu")
    return device


def reset_peak_memory(device: torch.device) -> None:
    """Start a run's peak-memory window, so one suite's runs do not inherit each other's peaks.

    On Linux writing "5" to /proc/self/clear_refs resets VmHWM (the resident high-water mark);
    elsewhere ``peak_rss_mb`` stays the process-wide peak (``peak_rss_scope`` in the record says which)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def peak_memory_mb(device: torch.device) -> dict[str, Any]:
    hwm = _vm_hwm_mb()
    if hwm is not None:
        out: dict[str, Any] = {"peak_rss_mb": hwm, "peak_rss_scope": "run"}
    else:
        out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "peak_rss_scope": "process"}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
