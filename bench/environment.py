"""What a result was measured on: hardware, package versions, git commit."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "torch-fidelity", "torchdiffeq", "numpy", "genbench")


# Instruction sets that change CPU speed by integer factors, best first: a CPU without bf16 units runs
# bf16 autocast several times slower than one with them, while its fp32 speed barely differs.
ISA_TIERS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            k, _, v = line.partition(":")
            fields.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo_fields().get("model name") or platform.processor() or platform.machine()


def cpu_isa(flags: str | None = None) -> str:
    """The best speed-relevant instruction set of ISA_TIERS the CPU has ('other' for none, e.g. on ARM)."""
    have = set((_cpuinfo_fields().get("flags", "") if flags is None else flags).split())
    return next((t for t in ISA_TIERS if t in have), "other")


def cpu_identity() -> str:
    """Model name plus family/model numbers and ISA tier: virtual machines often report one generic name
    ('AMD EPYC') for CPU generations that differ 2x in fp32 and far more in bf16."""
    f = _cpuinfo_fields()
    gen = "/".join(f[k] for k in ("cpu family", "model") if k in f)
    return f"{cpu_model()} ({', '.join(x for x in (gen, cpu_isa()) if x)})"


@functools.lru_cache(maxsize=None)
def hardware(device: str = "cpu") -> dict:
    """A description stable enough to decide whether two timings are comparable."""
    import os

    info = {"cpu": cpu_model(), "cpu_isa": cpu_isa(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": device, "gpu": None, "gpu_count": 0}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_count"] = torch.cuda.device_count()
    info["key"] = f"{info['gpu'] or cpu_identity()} x{info['gpu_count'] or info['cpu_count']}"
    return info


@functools.lru_cache(maxsize=None)
def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
    """Commit of the genbench checkout (None when installed from a wheel); '+dirty' if modified."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
