"""How many intra-op threads torch uses, chosen on purpose from what this process may use.

torch's default is the machine's core count, whatever the process is allowed: under a CPU affinity
mask, a cgroup quota (containers, SLURM with cgroups) or a SLURM allocation of fewer CPUs, its
threads oversubscribe the cores they get and each step waits for the slowest one. genbench picks the
count from, in order: ``--threads`` / ``train.threads``, ``SLURM_CPUS_PER_TASK``, the cgroup CPU
quota, the affinity mask; it divides by the processes of a DDP job on one node and records the
choice (and why) in every record's hardware block.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def affinity_cpus() -> int:
    """CPUs this process may run on (its affinity mask), or the machine's count where unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cgroup_cpus(cpu_max: Path = CGROUP_V2_CPU_MAX, quota: Path = CGROUP_V1_QUOTA,
                period: Path = CGROUP_V1_PERIOD) -> int | None:
    """The cgroup CPU quota rounded up to whole CPUs (v2 ``cpu.max``, else v1 CFS), None when unlimited."""
    try:
        q, p = cpu_max.read_text().split()[:2]
        return None if q == "max" else max(1, math.ceil(int(q) / int(p)))
    except (OSError, ValueError):
        pass
    try:
        q, p = int(quota.read_text()), int(period.read_text())
        return None if q <= 0 or p <= 0 else max(1, math.ceil(q / p))
    except (OSError, ValueError):
        return None


def _positive_int(text: str | None) -> int | None:
    try:
        v = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def choose(requested: int | None = None, env: dict[str, str] | None = None,
           cgroup: int | None | bool = False) -> tuple[int, str]:
    """(threads, why): the thread count for this process and where it came from.

    ``requested`` (``--threads`` / ``train.threads``) wins; otherwise the smallest of SLURM's
    ``SLURM_CPUS_PER_TASK``, the cgroup quota and the affinity mask, divided by the processes of a
    DDP job on this node (``LOCAL_WORLD_SIZE``). ``cgroup=False`` reads the real quota (tests pass one)."""
    env = os.environ if env is None else env
    if requested:
        return int(requested), "requested (--threads / train.threads)"
    limits = {"affinity mask": affinity_cpus()}
    quota = cgroup_cpus() if cgroup is False else cgroup
    if quota:
        limits["cgroup CPU quota"] = int(quota)
    slurm = _positive_int(env.get("SLURM_CPUS_PER_TASK"))
    if slurm:
        limits["SLURM_CPUS_PER_TASK"] = slurm
    why, n = min(limits.items(), key=lambda kv: kv[1])
    local = _positive_int(env.get("LOCAL_WORLD_SIZE")) or 1
    if local > 1:
        return max(1, n // local), f"{why} ({n}) / {local} DDP processes on this node"
    return n, why


_CHOSEN: dict[str, str] = {"why": "torch default (not chosen by genbench)"}


def apply(requested: int | None = None) -> dict[str, object]:
    """Set torch's intra-op threads on purpose; returns what the record's hardware block keeps."""
    n, why = choose(requested)
    torch.set_num_threads(n)
    _CHOSEN["why"] = why
    return describe()


def describe() -> dict[str, object]:
    """The thread settings in force, for a record's hardware block."""
    return {"torch_threads": torch.get_num_threads(), "threads_chosen_by": _CHOSEN["why"],
            "cpus_allowed": affinity_cpus(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}
