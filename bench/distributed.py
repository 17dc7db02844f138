"""Process-group setup for multi-process (multi-GPU) runs of one (model, seed).

One run may use several processes of one node: ``torchrun --nproc_per_node N -m bench.cli run ...``
locally, or ``tasks_per_node = N`` in a cluster profile (submitit starts N tasks; their SLURM
variables are exported as torch's env:// variables here). The runner then gives each process
``1/N`` of the *global* batch (``train.batch_size`` keeps its meaning whatever N is), averages
the gradients across processes weighted by shard size (the same update as one process on the
whole batch), logs the global loss, and writes checkpoints and records on rank 0 only.

Backend: ``nccl`` when the run's device is CUDA, ``gloo`` otherwise (the CPU path is tested).
"""

from __future__ import annotations

import datetime as _dt
import os

import torch

from bench.errors import BenchError

_TIMEOUT = _dt.timedelta(minutes=float(os.environ.get("GENBENCH_DDP_TIMEOUT_MIN", "30")))


def env_world_size() -> int:
    """The number of processes this run was launched with (torchrun or SLURM tasks), 1 if none."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if _submitit_tasks() > 1:
        return _submitit_tasks()
    return 1


def _submitit_tasks() -> int:
    """Tasks of the current submitit job (0 outside a submitit job)."""
    if "SUBMITIT_EXECUTOR" not in os.environ and "SUBMITIT_FOLDER" not in os.environ:
        return 0
    try:
        import submitit

        return submitit.JobEnvironment().num_tasks
    except Exception:
        return 0


def backend_for(device: str) -> str:
    dev = device or "auto"
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    return "nccl" if dev.startswith("cuda") else "gloo"


def init_from_env(device: str | None = "auto") -> tuple[int, int]:
    """Join the process group described by the environment; (rank, world size).

    A no-op returning (0, 1) for a plain single-process run, and when the group already exists.
    """
    dist = torch.distributed
    if not dist.is_available():
        if env_world_size() > 1:
            raise BenchError("this torch build has no torch.distributed; run with one process")
        return 0, 1
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "WORLD_SIZE" not in os.environ and _submitit_tasks() > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    for var in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        if var not in os.environ:
            raise BenchError(f"WORLD_SIZE is set but {var} is not; launch multi-process runs with torchrun "
                             "(torchrun --nproc_per_node N -m bench.cli run ...) or a cluster profile's tasks_per_node")
    backend = backend_for(device or "auto")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    return dist.get_rank(), dist.get_world_size()


def shutdown() -> None:
    """Leave the process group (if any)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: list[torch.nn.Parameter], shard_weight: float) -> None:
    """Make every process's gradients the gradient of the mean loss over the *global* batch: each process weights
    its shard's gradient by its share of the batch (``shard_weight``) and the weighted gradients are summed.
    One all-reduce of one flat buffer; a parameter without a gradient counts as zero."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]) * shard_weight
    torch.distributed.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
