"""Scale-out: ``bench submit`` (SLURM array / local executor via submitit), ``bench status``,
``bench collect``; multi-process runs (:mod:`bench.launch.ddp`); the per-task body
(:mod:`bench.launch.local`). See docs/cluster.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import paths


def cmd_submit(args: argparse.Namespace) -> int:
    from bench.launch import slurm
    from bench.suite import DEFAULT_SUITE, load_suite

    suite = load_suite(args.suite or DEFAULT_SUITE, args.profile, args.overrides, args.budget)
    prof = slurm.load_profile(args.cluster_profile)
    kind = args.executor or prof["executor"]
    data = slurm.submit(suite, args, prof, kind, Path(args.results))
    n = len(data["tasks"])
    folder = Path(data["folder"])
    if args.dry_run:
        print(f"wrote {folder / 'submission.json'} ({n} task(s)) and the sbatch script {data['sbatch_script']} "
              f"from cluster profile {prof['name']}; submit it without submitit with:\n  sbatch {data['sbatch_script']}")
        return 0
    if kind == "slurm":
        print(f"submitted array job {data['array_job_id']} ({n} task(s): "
              f"{', '.join(t['model'] + ' s' + str(t['seed']) for t in data['tasks'])})")
    else:
        print(f"started {n} local task(s) (pids {', '.join(t['job_id'] for t in data['tasks'])})")
    print(f"submission {data['id']}: {folder}")
    print(f"follow with `bench status --results {args.results}`, gather with `bench collect --results {args.results}`")
    return 0


def _rows_table(rows: list[dict]) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table()
    for c in ("task", "model", "seed", "job", "state", "status", "interruptions", "error"):
        table.add_column(c)
    for r in rows:
        table.add_row(str(r["index"]), r["model"], str(r["seed"]), str(r["job_id"] or ""), r["state"],
                      r["status"] or "", str(r["interruptions"] or ""), (r["error"] or "")[:80])
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def cmd_status(args: argparse.Namespace) -> int:
    from bench.launch import slurm

    folder = slurm.find_submission(Path(args.results), args.submission)
    data, rows = slurm.task_states(folder)
    print(f"submission {data['id']} ({data['executor']}, array job {data.get('array_job_id')}): {folder}")
    _rows_table(rows)
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    import importlib

    from bench.cli import print_table
    from bench.launch import slurm

    folder = slurm.find_submission(Path(args.results), args.submission)
    rows = slurm.wait(folder, args.wait) if args.wait else slurm.task_states(folder)[1]
    data = slurm.read_submission(folder)
    recs = [r for r in slurm.submission_records(data).values()]
    missing = [r for r in rows if not r["record"]]
    print_table(recs)
    print(f"{len(recs)}/{len(rows)} task record(s) of submission {data['id']}")
    for r in missing:
        print(f"  no record yet: task {r['index']} {r['model']} seed {r['seed']} (job {r['job_id']}, {r['state']})")
    from bench.records import atomic_write_text
    import json

    atomic_write_text(folder / "collected.json", json.dumps({"records": [r.path for r in recs], "missing":
                                                             [r["index"] for r in missing]}, indent=1))
    if recs and not args.no_report:
        try:
            report = importlib.import_module("bench.report")
        except ModuleNotFoundError:
            report = None
        if report is not None and hasattr(report, "render"):
            suite = data["suite"]
            for p in report.render(suite["name"], Path(args.results), Path(args.reports), profile=suite["profile"]):
                print(f"report: {p}")
    return 0 if not missing else 1


def register_cli(sub) -> None:
    from bench.cli import add_run_arguments

    p = sub.add_parser("submit", help="submit a suite as a SLURM array job (one task per model x seed) via submitit")
    add_run_arguments(p)
    p.add_argument("--executor", choices=("slurm", "local"), default=None,
                   help="slurm (sbatch through submitit) or local (subprocesses); default: the profile's, else slurm")
    p.add_argument("--cluster-profile", default=None, metavar="FILE",
                   help="cluster profile TOML (partition, account, GPUs, time, setup lines); see slurm/*.toml")
    p.add_argument("--dry-run", action="store_true",
                   help="only write submission.json (for slurm/array.sbatch without submitit)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="per-task state of a submission (default: the newest)")
    p.add_argument("--results", default="results")
    p.add_argument("--submission", default=None, help="submission id or folder (default: the newest)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("collect", help="gather the finished records of a submission and render the report")
    p.add_argument("--results", default="results")
    p.add_argument("--submission", default=None, help="submission id or folder (default: the newest)")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to this long for tasks to finish")
    p.add_argument("--reports", default=paths.REPORTS, help="report directory (default: ./reports)")
    p.add_argument("--no-report", action="store_true")
    p.set_defaults(func=cmd_collect)
