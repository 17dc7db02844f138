"""``bench submit`` / ``status`` / ``collect``: a suite as one array job, one task per (model, seed).

Submission goes through submitit (``--executor slurm`` on a cluster, ``--executor local`` for the
same tasks as subprocesses on a workstation). Cluster specifics live in a *cluster profile*
(TOML, see ``slurm/*.toml``). A submission is a folder::

    <results>/submissions/<suite>/<profile>/<id>/
        submission.json   job ids, the resolved suite, the cluster profile, one spec per task
        submitit/<job>/   submitit's pickles and logs, one folder per array task
        checkpoints/      one folder per (model, seed); resumed after preemption/requeue

Records land in ``<results>/runs/...`` like a local run (each task its own new file) and carry
``record.submission = {"id", "index", ...}`` so ``bench collect`` finds exactly this
submission's records.

Preemption: SLURM sends SIGUSR2 ``signal_delay_s`` before the time limit (or on
``scancel --signal=USR2``). The task asks the runner to stop at the next step boundary (or,
during an evaluation, the next sample batch), the runner writes a checkpoint, and then submitit's handler calls :meth:`BenchTask.checkpoint` and
requeues the task; the requeued task resumes from that checkpoint. ``scontrol requeue`` sends
SIGTERM and restarts the job itself: the runner checkpoints the same way and the task exits
without a result, so the restarted job resumes too.

A little over 400 lines, kept together: submit, status and collect all read and write the one submission folder
format above, and the cluster-profile parsing serves only them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import submitit

from bench.errors import BenchError, did_you_mean
from bench.launch.local import TaskSpec, run_task
from bench.records import RunRecord, atomic_write_text, load_records, utc_now

PROFILES_DIR = Path(__file__).resolve().parents[2] / "slurm"
SUBMISSIONS_SUBDIR = "submissions"

# cluster profile keys -> meaning (all optional)
PROFILE_KEYS = {
    "description": "free text",
    "executor": "slurm or local (the default for bench submit without --executor)",
    "partition": "sbatch --partition",
    "account": "sbatch --account",
    "qos": "sbatch --qos",
    "constraint": "sbatch --constraint (node features, e.g. a100)",
    "gpus": "GPUs per array task, all on one node (a task with N GPUs runs DDP with N processes)",
    "tasks_per_node": "processes per array task (default: gpus, or 1 on CPU)",
    "cpus_per_task": "CPUs per process",
    "mem_gb": "memory per array task in GB",
    "time_min": "time limit per array task in minutes",
    "array_parallelism": "at most this many array tasks run at once (--array=0-N%K)",
    "signal_delay_s": "SIGUSR2 this many seconds before the time limit (checkpoint + requeue)",
    "max_requeues": "give up after this many time-outs",
    "setup": "shell lines run before the task (module load ..., source venv/bin/activate)",
    "sbatch": "table of extra sbatch flags, e.g. { exclusive = true, reservation = \"x\" }",
    "python": "python interpreter on the compute nodes (default: `python3` of the setup lines' environment where there "
              "are setup lines, e.g. an activated venv; else this machine's interpreter)",
    "device": "device for the runs (default: the suite's, usually auto)",
}
PROFILE_DEFAULTS = {"executor": "slurm", "gpus": 0, "cpus_per_task": 2, "mem_gb": 8, "time_min": 60,
                    "array_parallelism": 32, "signal_delay_s": 120, "max_requeues": 3, "setup": [], "sbatch": {}}


# ---- cluster profiles ------------------------------------------------------------------------

def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str | None) -> dict[str, Any]:
    """A cluster profile (shipped name like ``localhost`` or a path), validated, with defaults."""
    if not name_or_path:
        return {**PROFILE_DEFAULTS, "name": "default"}
    p = Path(name_or_path)
    if not p.is_file():
        cand = PROFILES_DIR / f"{name_or_path}.toml"
        if not cand.is_file():
            raise BenchError(f"cluster profile {name_or_path!r} not found{did_you_mean(name_or_path, profile_names())}; "
                             f"pass a .toml path or one of: {', '.join(profile_names())}")
        p = cand
    try:
        raw = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BenchError(f"cluster profile {p}: {e}") from None
    for k in raw:
        if k not in PROFILE_KEYS:
            raise BenchError(f"cluster profile {p}: unknown key {k!r}{did_you_mean(k, PROFILE_KEYS)}; "
                             f"known keys: {', '.join(PROFILE_KEYS)}")
    prof = {**PROFILE_DEFAULTS, **raw, "name": p.stem, "path": str(p.resolve())}
    if prof["executor"] not in ("slurm", "local"):
        raise BenchError(f"cluster profile {p}: executor must be 'slurm' or 'local', got {prof['executor']!r}")
    for k in ("gpus", "cpus_per_task", "mem_gb", "time_min", "array_parallelism", "signal_delay_s", "max_requeues",
              "tasks_per_node"):
        v = prof.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise BenchError(f"cluster profile {p}: {k} must be a non-negative number, got {v!r}")
    if isinstance(prof["setup"], str):
        prof["setup"] = [prof["setup"]]
    if not isinstance(prof["sbatch"], dict):
        raise BenchError(f"cluster profile {p}: sbatch must be a table of flags, e.g. [sbatch] exclusive = true")
    return prof


def executor_parameters(prof: dict[str, Any], name: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters for a profile."""
    gpus = int(prof.get("gpus") or 0)
    ntasks = int(prof.get("tasks_per_node") or max(1, gpus))
    params: dict[str, Any] = {"name": name, "timeout_min": int(prof["time_min"]), "tasks_per_node": ntasks,
                              "nodes": 1}
    if gpus:
        params["gpus_per_node"] = gpus  # needs GRES on the cluster; left out on GPU-less nodes
    setup = list(prof.get("setup") or [])
    if not _bench_installed():  # running from a checkout: make `bench` importable on the nodes
        setup.insert(0, f"export PYTHONPATH={_repo_root()}${{PYTHONPATH:+:$PYTHONPATH}}")
    params.update({
        "cpus_per_task": int(prof["cpus_per_task"]), "mem_gb": float(prof["mem_gb"]),
        "slurm_array_parallelism": int(prof["array_parallelism"]), "slurm_signal_delay_s": int(prof["signal_delay_s"]),
        "slurm_setup": setup,
        "slurm_additional_parameters": dict(prof.get("sbatch") or {}), "local_setup": setup,
    })
    for key in ("partition", "account", "qos", "constraint"):
        if prof.get(key):
            params[f"slurm_{key}"] = prof[key]
    if prof.get("python"):
        params["slurm_python"] = prof["python"]
    return params


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _bench_installed() -> bool:
    return "site-packages" in str(Path(__file__).resolve()) or "dist-packages" in str(Path(__file__).resolve())


# ---- the task --------------------------------------------------------------------------------

class BenchTask(submitit.helpers.Checkpointable):
    """One (model, seed); submitit requeues it after preemption and it resumes from its checkpoint."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec

    def __call__(self) -> dict[str, Any]:
        from bench import stopping

        submitit_usr2 = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue handler
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, stopping.request_stop)  # stop at the next step boundary, after a checkpoint
        try:
            return run_task(self.spec, resume=True)
        except stopping.Interrupted as e:
            sig = stopping.STOP["signal"]
            print(f"genbench: {e}", file=sys.stderr, flush=True)
            if sig == signal.SIGUSR2 and callable(submitit_usr2):
                _checkpoint_and_requeue(submitit_usr2)  # exits when the requeue went through
            # SIGTERM (scontrol requeue, scancel, time limit): SLURM decides what happens next; leave
            # no result file so a requeued job is not reported finished.
            raise SystemExit(3)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # The runner's checkpoint is on disk already (written at the step boundary where it stopped,
        # or the last periodic one when this is called directly); the requeued task resumes from it.
        return submitit.helpers.DelayedSubmission(BenchTask(self.spec))


REQUEUE_TRIES = 6


def _job_state() -> str:
    """This task's SLURM state as squeue reports it ("" when squeue cannot say)."""
    try:
        job_id = submitit.JobEnvironment().job_id
        r = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
        return r.stdout.strip().upper()
    except Exception:  # noqa: BLE001 - diagnostics only; the caller retries
        return ""


def _checkpoint_and_requeue(submitit_handler: Any, tries: int = REQUEUE_TRIES, wait_s: float = 2.0,
                            job_state=_job_state) -> None:
    """Run submitit's checkpoint-and-requeue handler until SLURM has the task requeued, then exit.

    submitit gives up at the first failed ``scontrol requeue`` and the task ends FAILED with its
    checkpoint unused. Seen on a loaded node: scancel repeats a preemption signal while the job is
    in transition, the repeat kills the ``scontrol`` child although the requeue went through, and
    later tries answer "Job is pending execution". So after a failure, a task that is no longer
    RUNNING counts as requeued; otherwise the handler (which re-dumps the same checkpoint) runs again.
    """
    for attempt in range(1, tries + 1):
        try:
            submitit_handler(signal.SIGUSR2, None)
            return  # a handler that returns (not rank 0) leaves the exit to the caller
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            state = job_state()
            print(f"genbench: scontrol requeue failed (try {attempt}/{tries}; job state {state or 'unknown'}): {e}",
                  file=sys.stderr, flush=True)
            if state and state != "RUNNING":
                raise SystemExit(-1) from None  # requeued already: exit like submitit after a requeue
            if attempt < tries:
                time.sleep(wait_s * attempt)


# ---- submit ------------------------------------------------------------------------------------

SBATCH_TEMPLATE = PROFILES_DIR / "array.sbatch"


def sbatch_directives(prof: dict[str, Any], n_tasks: int, name: str, log_dir: Path) -> list[str]:
    """The ``#SBATCH`` lines of a cluster profile for an array of ``n_tasks`` tasks (what submitit would ask for)."""
    gpus = int(prof.get("gpus") or 0)
    ntasks = int(prof.get("tasks_per_node") or max(1, gpus))
    minutes = int(prof["time_min"])
    flags: list[tuple[str, Any]] = [("job-name", name), ("array", f"0-{n_tasks - 1}%{int(prof['array_parallelism'])}")]
    flags += [(key, prof[key]) for key in ("partition", "account", "qos", "constraint") if prof.get(key)]
    flags += [("nodes", 1), ("ntasks-per-node", ntasks), ("cpus-per-task", int(prof["cpus_per_task"]))]
    if gpus:
        flags.append(("gres", f"gpu:{gpus}"))
    flags += [("mem", f"{float(prof['mem_gb']):g}G"), ("time", f"{minutes // 60:02d}:{minutes % 60:02d}:00"),
              ("signal", f"B:USR2@{int(prof['signal_delay_s'])}"), ("requeue", True),
              ("output", str(log_dir / "slurm-%A_%a.out"))]
    merged = dict(flags)
    merged.update({k.replace("_", "-"): v for k, v in (prof.get("sbatch") or {}).items()})  # [sbatch] adds or overrides
    lines = []
    for key, value in merged.items():
        if value is True:
            lines.append(f"#SBATCH --{key}")
        elif value not in (False, None, ""):
            lines.append(f"#SBATCH --{key}={value}")
    return lines


def node_python(prof: dict[str, Any]) -> str:
    """The interpreter an array task runs: the profile's ``python``; else, where setup lines prepare an environment
    (``source venv/bin/activate``, ``module load``), the ``python3`` that environment puts first on PATH, not this
    machine's path, which the setup would otherwise be bypassed by; else this interpreter."""
    if prof.get("python"):
        return str(prof["python"])
    return "python3" if prof.get("setup") else sys.executable


def sbatch_script(prof: dict[str, Any], data: dict[str, Any], submission: Path) -> str:
    """``slurm/array.sbatch`` filled from the cluster profile for this submission's tasks."""
    folder = Path(data["folder"])
    gpus = int(prof.get("gpus") or 0)
    ntasks = int(prof.get("tasks_per_node") or max(1, gpus))
    setup = list(prof.get("setup") or [])
    if not _bench_installed():
        setup.insert(0, f"export PYTHONPATH={_repo_root()}${{PYTHONPATH:+:$PYTHONPATH}}")
    fill = {
        "SBATCH": "\n".join(sbatch_directives(prof, len(data["tasks"]), f"genbench-{data['suite']['name']}", folder)),
        "SETUP": "\n".join(setup) if setup else "# (no setup lines in the cluster profile)",
        "SUBMISSION": shlex.quote(str(submission)),
        "PYTHON": shlex.quote(node_python(prof)),
        "MAX_REQUEUES": str(int(prof["max_requeues"])),
        "LAUNCH": f"srun --ntasks-per-node={ntasks} " if ntasks > 1 else "",  # DDP: one process per GPU
    }
    text = SBATCH_TEMPLATE.read_text()
    for key, value in fill.items():
        text = text.replace(f"@@{key}@@", value)
    return text


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str))


def plan(suite, args, prof: dict[str, Any], results: Path) -> tuple[Path, dict[str, Any]]:
    """The submission folder and its submission.json content (task specs, no job ids yet)."""
    runs, seeds = suite.select(args.models, args.seeds)  # as `bench run` and each task pick them
    weights = _inception_weights(args)
    sub_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    folder = (results / SUBMISSIONS_SUBDIR / suite.name / suite.profile / sub_id).resolve()
    suite_ref = args.suite or "digits"
    if Path(suite_ref).suffix == ".toml" or Path(suite_ref).exists():
        suite_ref = str(Path(suite_ref).resolve())
    tasks = []
    for run_name in runs:
        for seed in seeds:
            i = len(tasks)
            spec = TaskSpec(suite=suite_ref, profile=suite.profile, model=run_name, seed=int(seed),
                            results_dir=str(results.resolve()), checkpoint_dir=str(folder / "checkpoints"),
                            overrides=list(args.overrides or []), budget=args.budget,
                            cache_dir=str(Path(args.cache_dir).resolve()) if args.cache_dir else None,
                            data_root=str(Path(args.data_root).resolve()) if args.data_root else None,
                            download=bool(args.download), device=args.device or prof.get("device"),
                            inception_weights=weights,
                            submission={"id": sub_id, "index": i, "folder": str(folder)})
            tasks.append({"index": i, "model": run_name, "seed": int(seed), "job_id": None,
                          "config_hash": suite.config_hash(run_name), "spec": dataclasses.asdict(spec)})
    data = {"id": sub_id, "created": utc_now(), "executor": None, "suite": suite.to_dict(),
            "cluster_profile": prof, "array_job_id": None, "folder": str(folder),
            "results_dir": str(results.resolve()), "tasks": tasks}
    return folder, data


def _inception_weights(args) -> str | None:
    """``--inception-weights`` (else $GENBENCH_INCEPTION_WEIGHTS) as an absolute path, checked now:
    a missing file would otherwise fail every task after its training."""
    given = getattr(args, "inception_weights", None)
    raw = given or os.environ.get("GENBENCH_INCEPTION_WEIGHTS")
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        what = f"--inception-weights {path}" if given else f"$GENBENCH_INCEPTION_WEIGHTS={path}"
        raise BenchError(f"{what} does not exist; stage torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
                         "there (on a filesystem the compute nodes share), or run `bench prefetch` with internet")
    return str(path)


def submit(suite, args, prof: dict[str, Any], executor_kind: str, results: Path) -> dict[str, Any]:
    folder, data = plan(suite, args, prof, results)
    folder.mkdir(parents=True, exist_ok=True)
    data["executor"] = executor_kind
    if executor_kind == "slurm" and not getattr(args, "dry_run", False) and not shutil.which("sbatch"):
        raise BenchError("sbatch not found: this machine is not a SLURM login node; use --executor local, "
                         "or --dry-run and slurm/array.sbatch on the cluster")
    _write_json(folder / "submission.json", data)
    if getattr(args, "dry_run", False):
        data["executor"] = "sbatch"
        data["sbatch_script"] = str(folder / "array.sbatch")
        _write_json(folder / "submission.json", data)
        atomic_write_text(folder / "array.sbatch", sbatch_script(prof, data, folder / "submission.json"))
        return data
    ex = submitit.AutoExecutor(folder=folder / "submitit" / "%j", cluster=executor_kind,
                               slurm_max_num_timeout=int(prof["max_requeues"]))
    ex.update_parameters(**executor_parameters(prof, f"genbench-{suite.name}"))
    specs = [TaskSpec(**t["spec"]) for t in data["tasks"]]
    try:
        with ex.batch():
            jobs = [ex.submit(BenchTask(s)) for s in specs]
    except Exception as e:  # sbatch rejected the request (bad partition, impossible resources, ...)
        msg = str(e).strip().splitlines()
        raise BenchError(f"submission failed: {msg[-1] if msg else type(e).__name__}; check the cluster profile") from None
    for t, job in zip(data["tasks"], jobs):
        t["job_id"] = str(job.job_id)
    data["array_job_id"] = str(jobs[0].job_id).split("_")[0] if jobs else None
    _write_json(folder / "submission.json", data)
    return data


# ---- status / collect --------------------------------------------------------------------------

def find_submission(results: Path, which: str | None) -> Path:
    """A submission folder: an explicit path/id, or the newest under ``results``."""
    if which:
        p = Path(which)
        if (p / "submission.json").is_file():
            return p
        if p.name == "submission.json" and p.is_file():
            return p.parent
        hits = list((results / SUBMISSIONS_SUBDIR).glob(f"*/*/{which}/submission.json"))
        if hits:
            return hits[0].parent
        raise BenchError(f"no submission {which!r} under {results / SUBMISSIONS_SUBDIR}; pass the folder "
                         "printed by `bench submit`")
    found = sorted((results / SUBMISSIONS_SUBDIR).glob("*/*/*/submission.json"), key=lambda p: p.parent.name)
    if not found:
        raise BenchError(f"no submissions under {results / SUBMISSIONS_SUBDIR}; run `bench submit` first (or pass --results)")
    return found[-1].parent


def read_submission(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "submission.json").read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read {folder / 'submission.json'}: {e}") from None


def submission_records(data: dict[str, Any]) -> dict[int, RunRecord]:
    """Task index -> newest record written by this submission."""
    out: dict[int, RunRecord] = {}
    for rec in load_records(Path(data["results_dir"])):
        sub = rec.submission
        if sub.get("id") == data["id"]:
            out[int(sub["index"])] = rec
    return out


def _slurm_states(array_id: str) -> dict[str, str]:
    """job id (``123_4``) -> SLURM state from squeue (live) and sacct (finished)."""
    states: dict[str, str] = {}
    try:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", array_id, "--format=JobID,State"],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            if "|" in line:
                jid, st = line.split("|", 1)
                states[jid.strip()] = st.split()[0] if st.strip() else "UNKNOWN"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", array_id, "-o", "%i|%T"],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            if "|" in line:
                jid, st = line.split("|", 1)
                states[jid.strip()] = st.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return states


def _local_state(folder: Path, job_id: str) -> str:
    try:
        os.kill(int(job_id), 0)
        return "RUNNING"
    except (ProcessLookupError, ValueError):
        return "DONE"
    except PermissionError:
        return "RUNNING"


def task_states(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(submission, [{index, model, seed, job_id, state, status, error, record}])."""
    data = read_submission(folder)
    recs = submission_records(data)
    live = _slurm_states(data["array_job_id"]) if data.get("executor") == "slurm" and data.get("array_job_id") else {}
    rows = []
    for t in data["tasks"]:
        rec = recs.get(t["index"])
        jid = t.get("job_id")
        if data.get("executor") == "slurm":
            state = live.get(str(jid), "UNKNOWN")
            if state == "UNKNOWN" and data.get("array_job_id") and str(data["array_job_id"]) in live:
                state = live[str(data["array_job_id"])]
        elif data.get("executor") == "local" and jid:
            state = _local_state(folder, jid)
        else:
            state = "NOT SUBMITTED"
        if rec is not None and state in ("UNKNOWN", "DONE"):
            state = "COMPLETED"
        rows.append({"index": t["index"], "model": t["model"], "seed": t["seed"], "job_id": jid, "state": state,
                     "status": rec.status if rec else None, "error": rec.error if rec else None,
                     "interruptions": len(rec.interruptions) if rec else 0, "record": rec.path if rec else None})
    return data, rows


FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                "BOOT_FAIL", "DEADLINE", "DONE"}


def wait(folder: Path, timeout_s: float, poll_s: float = 2.0) -> list[dict[str, Any]]:
    """Poll until every task has a record or a final state (or ``timeout_s`` passes)."""
    t_end = time.monotonic() + timeout_s
    while True:
        _, rows = task_states(folder)
        if all(r["record"] or r["state"].split()[0] in FINAL_STATES for r in rows) or time.monotonic() > t_end:
            return rows
        time.sleep(poll_s)
