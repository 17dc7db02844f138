"""How many intra-op threads torch uses, chosen on purpose from what this process may use.

torch's default is the machine's core count, whatever the process is allowed: under a CPU affinity
mask, a cgroup quota (containers, SLURM with cgroups) or a SLURM allocation of fewer CPUs, its
threads oversubscribe the cores they get and each step waits for the slowest one. genbench picks the
count from, in order: ``--threads`` / ``train.threads``, ``OMP_NUM_THREADS`` (set by the user or by
torchrun), else the smallest of ``SLURM_CPUS_PER_TASK``, the cgroup CPU quota and the affinity mask; it
divides by the processes of a DDP job on one node.

A busy neighbour collapses OpenMP: with one other busy process on a 2-core machine, 2 threads trained the
digits glow 3.9x slower than on the idle machine (GNU OpenMP's threads spin at each barrier while one of them
waits for a core), while 1 thread trained as fast as 2 threads on the idle machine. So where nothing asked for
a count, genbench also measures, when the run starts, how many of its CPUs other work keeps busy
(/proc/stat over 0.3 s) and leaves those out. The choice (and why) is in every record's hardware block; the
count changes the order of floating-point reductions and hence the numbers, which `bench compare` notes.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
PROC_STAT = Path("/proc/stat")
BUSY_WINDOW_S = 0.3  # how long the neighbours' load is sampled when a run starts


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


def _cpu_times(stat: Path) -> dict[int, tuple[int, int]]:
    """{cpu: (idle + iowait jiffies, total jiffies)} from the per-CPU lines of /proc/stat."""
    out = {}
    for line in stat.read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            v = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal (guest is in user)
            out[int(name[3:])] = (v[3] + v[4], sum(v))
    return out


def busy_cpus(window: float = BUSY_WINDOW_S, stat: Path = PROC_STAT, cpus: set[int] | None = None) -> float | None:
    """How many of this process's CPUs (its affinity mask, or ``cpus``) other work keeps busy: the non-idle share
    of each over ``window`` seconds, summed. This process sleeps meanwhile, so its own work is not counted.
    None where /proc/stat cannot be read (not Linux)."""
    try:
        cpus = set(os.sched_getaffinity(0)) if cpus is None else cpus
        before = _cpu_times(stat)
        time.sleep(window)
        after = _cpu_times(stat)
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    busy = 0.0
    for cpu in cpus & before.keys() & after.keys():
        idle, total = after[cpu][0] - before[cpu][0], after[cpu][1] - before[cpu][1]
        busy += 1.0 - idle / total if total > 0 else 0.0
    return busy


def _positive_int(text: str | None) -> int | None:
    try:
        v = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def choose(requested: int | None = None, env: dict[str, str] | None = None,
           cgroup: int | None | bool = False, busy: float | None | bool = False) -> tuple[int, str]:
    """(threads, why): the thread count for this process and where it came from.

    ``requested`` (``--threads`` / ``train.threads``) wins, then ``OMP_NUM_THREADS``; otherwise the smallest
    of SLURM's ``SLURM_CPUS_PER_TASK``, the cgroup quota and the affinity mask, divided by the processes of a
    DDP job on this node (``LOCAL_WORLD_SIZE``), less the CPUs other work keeps busy (one process only: a DDP
    job's own processes are not a neighbour). ``cgroup=False`` / ``busy=False`` measure (tests pass values)."""
    env = os.environ if env is None else env
    if requested:
        return int(requested), "requested (--threads / train.threads)"
    omp = _positive_int(env.get("OMP_NUM_THREADS"))
    if omp:
        return omp, "OMP_NUM_THREADS"
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
    others = busy_cpus() if busy is False else busy
    allowed = affinity_cpus()
    free = max(1, math.floor(allowed - others + 0.5)) if others is not None else n
    if free < n:
        return free, f"{why} ({n}), less {others:.1f} of {allowed} CPUs busy with other work when the run started"
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
