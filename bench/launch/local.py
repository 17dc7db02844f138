"""One array task: train and evaluate one (model, seed) of a suite, resuming if a checkpoint exists.

This is the body every executor runs (submitit's SLURM and local executors, or a plain
``sbatch`` array via ``python -m bench.launch.local``). It always resumes (``--resume``
semantics): a requeued or restarted task continues from its newest good checkpoint, and a fresh
task simply starts at step 0. Every task writes its own record file (``write_record`` never
overwrites) and its own checkpoint folder, so array tasks never write the same file. Any
failure becomes a record with ``status = "failed"`` and the reason, so one failing task leaves
the others' records intact.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class TaskSpec:
    """Everything one task needs, as plain data (pickled by submitit, stored in submission.json)."""

    suite: str  # shipped suite name or absolute path of a .toml
    profile: str
    model: str
    seed: int
    results_dir: str
    checkpoint_dir: str
    overrides: list[str] = dataclasses.field(default_factory=list)
    budget: str | None = None
    cache_dir: str | None = None
    data_root: str | None = None
    download: bool = False
    device: str | None = None
    inception_weights: str | None = None  # staged Inception-v3 weights (absolute path), set for the task
    submission: dict[str, Any] = dataclasses.field(default_factory=dict)  # {"id", "index", "folder"}

    def label(self) -> str:
        return f"{self.model}__seed{self.seed}"


def run_task(spec: TaskSpec, resume: bool = True) -> dict[str, Any]:
    """Run one task to completion; returns {status, error, record, model, seed}.

    :class:`bench.stopping.Interrupted` (a stop signal; a checkpoint was written) propagates so the
    caller can requeue; everything else ends as this task's record.
    """
    from bench.records import utc_now
    from bench.device import world
    from bench.run_record import failed_record, write
    from bench.runner import RunOptions, prepare_run, run_one
    from bench.stopping import Interrupted
    from bench.suite import load_suite

    started = utc_now()
    suite = None
    try:
        suite = load_suite(spec.suite, spec.profile, spec.overrides, spec.budget)
        opts = RunOptions(results_dir=Path(spec.results_dir), checkpoint_dir=Path(spec.checkpoint_dir),
                          data_root=spec.data_root, download=spec.download, resume=resume, device=spec.device,
                          models=[spec.model], seeds=[spec.seed], progress=False)
        if spec.cache_dir:
            opts.cache_dir = Path(spec.cache_dir)
        if spec.inception_weights:  # checked before training, as `bench run` does
            if not Path(spec.inception_weights).is_file():
                from bench.errors import BenchError

                raise BenchError(f"--inception-weights {spec.inception_weights} (given at submit time) does not exist "
                                 "on this node; stage it on a filesystem the compute nodes share")
            os.environ["GENBENCH_INCEPTION_WEIGHTS"] = spec.inception_weights
        prep = prepare_run(suite, opts)  # the same selection, data, preflight, process group and threads as `bench run`
        record = run_one(suite, spec.model, spec.seed, opts, prep.train_data, prep.eval_data)
    except (Interrupted, KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # bad data path, unknown model, crash outside the model: this task's record says why
        record = failed_record(suite.name if suite is not None else Path(spec.suite).stem, spec.profile, spec.model,
                               spec.seed, e, {"kind": suite.budget.kind, "value": suite.budget.value} if suite else {},
                               spec.overrides, started)
    record.submission = dict(spec.submission)
    rank, _ = world()
    path = write(record, Path(spec.results_dir)) if rank == 0 else None
    return {"status": record.status, "error": record.error, "record": str(path) if path else None,
            "model": spec.model, "seed": spec.seed}


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.launch.local SUBMISSION_JSON INDEX``: run task INDEX of a submission.

    Used by ``slurm/array.sbatch`` (``INDEX=$SLURM_ARRAY_TASK_ID``). Exit code 0 when the record
    says ok, 1 when the run failed or diverged, 3 when interrupted (checkpoint written).
    """
    import json

    from bench.stopping import Interrupted, install_signal_handlers

    p = argparse.ArgumentParser(prog="python -m bench.launch.local")
    p.add_argument("submission", help="submission.json written by `bench submit --dry-run` (or any submission)")
    p.add_argument("index", type=int, help="task index (SLURM_ARRAY_TASK_ID)")
    args = p.parse_args(argv)
    data = json.loads(Path(args.submission).read_text())
    tasks = data["tasks"]
    if not 0 <= args.index < len(tasks):
        print(f"error: task index {args.index} out of range (0..{len(tasks) - 1})", file=sys.stderr)
        return 2
    spec = TaskSpec(**tasks[args.index]["spec"])
    install_signal_handlers()
    try:
        out = run_task(spec)
    except Interrupted as e:
        print(f"interrupted: {e}; the task resumes when rerun", file=sys.stderr)
        return 3
    print(json.dumps(out))
    return 0 if out["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
