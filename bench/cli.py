"""The `bench` command. Sub-commands beyond list/run/results live in their own modules and
register themselves through ``register_cli(subparsers)`` (see COMMAND_MODULES), so features
such as reports or SLURM submission add a command without editing this file's logic.

Every user error is printed as one line (``error: ...``) with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from bench import __version__, console, paths
from bench.errors import BenchError

# Modules that add sub-commands; each defines register_cli(subparsers).
COMMAND_MODULES = ("bench.report", "bench.compare", "bench.prefetch")

REPORTS_HELP = "report directory (default: <results>/reports, beside the records it renders)"

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 3
EXIT_RUN_FAILED = 4  # every record was written, but some run diverged or failed


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `bench run` and `bench submit`."""
    p.add_argument("--suite", default=None, help="suite name (see `bench list`) or path to a .toml file; default: digits")
    p.add_argument("--profile", default="smoke", help="budget profile of the suite (default: smoke)")
    p.add_argument("--budget", default=None, help="override the profile's budget, e.g. steps=500, epochs=2, images=10000, seconds=60")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any suite value, e.g. --set models.ddpm.lr=1e-4 (repeatable; recorded)")
    p.add_argument("--model", dest="models", action="append", default=None, help="run only this model (repeatable)")
    p.add_argument("--seed", dest="seeds", action="append", type=int, default=None, help="run only this seed (repeatable)")
    p.add_argument("--results", default=paths.RESULTS, help="results directory (default: ./results)")
    p.add_argument("--checkpoints", default=paths.CHECKPOINTS, help="checkpoint directory (default: ./checkpoints)")
    p.add_argument("--data-root", default=None, help="folder with pre-staged datasets (offline use), e.g. ../shared/data")
    p.add_argument("--download", action="store_true", default=None,
                   help="download missing datasets (default: only when no --data-root is given)")
    p.add_argument("--offline", dest="download", action="store_false", help="never download; fail naming the missing file")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the suite's, usually auto)")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted runs from their last checkpoint; skip runs that already have an ok record "
                        "of the same resolved config")
    p.add_argument("--rerun", action="store_true", help="with --resume: run finished runs again (a new record each)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op threads (default: train.threads, else the CPUs this process may use: "
                        "SLURM_CPUS_PER_TASK, cgroup quota, affinity mask)")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="staged weights-inception-2015-12-05-6726825d.pth for offline FID/IS; same as $GENBENCH_INCEPTION_WEIGHTS")
    p.add_argument("--cache-dir", default=None, help="cache for reference statistics and classifiers (default: ~/.cache/genbench or $GENBENCH_CACHE)")


def run_options(args: argparse.Namespace):
    from bench.runner import RunOptions

    opts = RunOptions(results_dir=Path(args.results), checkpoint_dir=Path(args.checkpoints), data_root=args.data_root,
                      download=args.download, resume=args.resume, device=args.device, models=args.models,
                      seeds=args.seeds, progress=not getattr(args, "quiet", False),
                      rerun=bool(getattr(args, "rerun", False)))
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise BenchError(f"--threads must be a positive integer, got {args.threads}")
        opts.threads = args.threads
    if args.cache_dir:
        opts.cache_dir = Path(args.cache_dir)
    if getattr(args, "inception_weights", None):
        weights = Path(args.inception_weights).resolve()
        if not weights.is_file():
            raise BenchError(f"--inception-weights {weights} does not exist; stage torch-fidelity's "
                             "weights-inception-2015-12-05-6726825d.pth there (or run `bench prefetch` on a machine with internet)")
        os.environ["GENBENCH_INCEPTION_WEIGHTS"] = str(weights)
    elif os.environ.get("GENBENCH_INCEPTION_WEIGHTS"):  # checked before training, not after it
        weights = Path(os.environ["GENBENCH_INCEPTION_WEIGHTS"])
        if not weights.is_file():
            raise BenchError(f"$GENBENCH_INCEPTION_WEIGHTS={weights} does not exist; stage torch-fidelity's "
                             "weights-inception-2015-12-05-6726825d.pth there, unset the variable, or run "
                             "`bench prefetch` on a machine with internet")
    return opts


def list_entries() -> dict[str, list[dict]]:
    """Registered models and shipped suites as plain data (what `bench list` shows; the models from
    :mod:`bench.catalog`, so listing needs no torch)."""
    from bench import catalog, suite

    suites = []
    for name in suite.suite_names():
        raw = suite.read_toml(suite.suite_path(name))
        suites.append({"name": name, "profiles": list(raw.get("profiles", {})), "models": list(raw.get("models", {})),
                       "description": raw.get("description", "")})
    return {"models": catalog.load()["models"], "suites": suites}


def model_options(name: str) -> list[dict]:
    """A wrapper's config schema as plain data (what `bench list --model NAME` shows), from :mod:`bench.catalog`."""
    from bench import catalog
    from bench.errors import did_you_mean

    tables = [(prefix, catalog.schema(name, table)) for prefix, table in (("", "options"), ("sampler.", "sampler_options"))]
    if tables[0][1] is None:
        names = [m["name"] for m in catalog.load()["models"]]
        raise BenchError(f"unknown model {name!r}{did_you_mean(name, names)}; `bench list` shows the registered models")
    return [{"key": prefix + key, "type": opt.kind.__name__ + (f"[{opt.items.__name__}]" if opt.items else ""),
             "default": opt.default, "allowed": opt.describe(), "meaning": opt.help}
            for prefix, table in tables for key, opt in table.items()]


def cmd_list(args: argparse.Namespace) -> int:
    """A table on a terminal; full, tab-separated lines when piped (names never cut); JSON with --json.
    With --model NAME: that wrapper's config keys, types, defaults, allowed values and meanings."""
    import json

    if args.model:
        options = model_options(args.model)
        if args.json:
            print(json.dumps(options, indent=1))
            return 0
        cols = ("key", "type", "default", "allowed", "meaning")
        tables = [(f"{args.model}: config keys (models.<run>.<key> in a suite) and sampler options (sampler = {{...}})", cols,
                   [tuple(json.dumps(o[c]) if c == "default" else str(o[c]) for c in cols) for o in options])]
    else:
        entries = list_entries()
        if args.json:
            print(json.dumps(entries, indent=1))
            return 0
        model_rows = [(m["name"], m["family"], "yes" if m["likelihood"] else "not defined",
                       "yes" if m["conditional"] else "", m["summary"]) for m in entries["models"]]
        suite_rows = [(s["name"], ", ".join(s["profiles"]), ", ".join(s["models"]), s["description"])
                      for s in entries["suites"]]
        tables = [("models", ("name", "family", "likelihood", "conditional", "summary"), model_rows),
                  ("suites", ("suite", "profiles", "models", "description"), suite_rows)]
    if not sys.stdout.isatty():
        for title, cols, rows in tables:
            print(f"# {title}: " + "\t".join(cols))
            for row in rows:
                print("\t".join(row))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, cols, rows in tables:
        table = Table(title=title)
        for i, col in enumerate(cols):
            table.add_column(col, no_wrap=i == 0)  # a name is never folded or cut
        for row in rows:
            table.add_row(*row)
        console.print(table)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.suite import DEFAULT_SUITE, load_suite

    if args.like:
        from bench import repeat

        if args.models or args.seeds or args.budget:
            raise BenchError("--like takes the model, seed and training length from the record; "
                             "drop --model, --seed and --budget")
        suite = repeat.suite_like(repeat.read_record(args.like), args.suite, args.overrides)
    else:
        suite = load_suite(args.suite or DEFAULT_SUITE, args.profile, args.overrides, args.budget)
    opts = run_options(args)
    if args.like:
        opts.models = list(suite.models)  # the record's run alone, not the real-data row
    if not args.no_report:
        opts.reports_dir = paths.reports_dir(args.results, args.reports)  # checked before training, not after
    from bench import records  # after the suite loaded: a mistake in it is reported without importing torch
    from bench.runner import run_suite

    print(f"suite {suite.name} [{suite.profile}], budget {suite.budget}, "
          f"models: {', '.join(opts.models or suite.models)}, seeds: {opts.seeds or suite.train['seeds']}")
    written_paths = run_suite(suite, opts)
    from bench.device import world

    if world()[0] != 0:  # under torchrun only rank 0 writes records, prints and renders
        return 0
    recs = [records.load_records(Path(args.results), suite.name, suite.profile)]
    written = {str(p) for p in written_paths}
    fresh = [r for r in recs[0] if r.path in written]
    console.print_table(fresh)
    print(f"{len(written_paths)} record(s) written under {Path(args.results) / records.RUNS_SUBDIR / suite.name / suite.profile}")
    if not args.no_report:
        try:
            report = importlib.import_module("bench.report")
        except ModuleNotFoundError:
            report = None
        if report is not None and hasattr(report, "render"):
            out = report.render(suite.name, Path(args.results), paths.reports_dir(args.results, args.reports),
                                profile=suite.profile,
                                data_root=args.data_root)
            for p in out:
                print(f"report: {p}")
    bad = [r for r in fresh if r.status != "ok"]
    if bad:
        print(f"{len(bad)} of {len(fresh)} run(s) not ok: "
              + ", ".join(f"{r.model} seed {r.seed} {r.status}" for r in bad), file=sys.stderr)
    return EXIT_RUN_FAILED if bad else 0


def cmd_results(args: argparse.Namespace) -> int:
    from bench.records import latest_per_run, load_records, records_table

    recs = [r for r in load_records(Path(args.results), args.suite, args.profile)
            if not args.profile or r.profile == args.profile]  # --profile also without --suite
    if not args.all:
        recs = latest_per_run(recs)
    if not recs:
        raise BenchError(console.no_records_message(Path(args.results), args.suite, args.profile))
    df = records_table(recs)
    if args.csv:
        console.write_csv(df, Path(args.csv))
        print(f"wrote {len(df)} rows to {args.csv}")
    else:
        console.print_table(recs, with_suite=True)
    return 0


# ---- scale-out: a suite as an array job (bench.launch) -----------------------------------------------

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


def cmd_status(args: argparse.Namespace) -> int:
    from bench.console import task_table
    from bench.launch import slurm

    folder = slurm.find_submission(Path(args.results), args.submission)
    data, rows = slurm.task_states(folder)
    print(f"submission {data['id']} ({data['executor']}, array job {data.get('array_job_id')}): {folder}")
    task_table(rows)
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    import importlib

    from bench.console import print_table
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
            for p in report.render(suite["name"], Path(args.results), paths.reports_dir(args.results, args.reports), profile=suite["profile"]):
                print(f"report: {p}")
    return 0 if not missing else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="genbench: train generative model families to the same "
                                     "budget and compare them. `bench run` runs the embedded default suite.")
    parser.add_argument("--version", action="version", version=f"genbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="registered models and shipped suites; --model NAME: its config keys")
    p.add_argument("--model", default=None, help="print this model's config keys, types, defaults and meanings")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="train and evaluate every model of a suite; write records and a report")
    add_run_arguments(p)
    p.add_argument("--reports", default=None, help=REPORTS_HELP)
    p.add_argument("--like", default=None, metavar="RECORD",
                   help="repeat a recorded run exactly: its suite, profile, model, seed, config and step count "
                        "(a record JSON under <results>/runs/; --suite FILE where it came from a user's suite file)")
    p.add_argument("--no-report", action="store_true", help="skip rendering the report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("results", help="load result records into a table (every suite and profile found)")
    p.add_argument("--results", default=paths.RESULTS, help="results directory (default: ./results)")
    p.add_argument("--suite", default=None, help="only this suite (default: all)")
    p.add_argument("--profile", default=None, help="only this profile, e.g. smoke or paper (default: all)")
    p.add_argument("--all", action="store_true", help="every record, not only the newest per (model, seed)")
    p.add_argument("--csv", default=None, help="write the table as CSV to this file")
    p.set_defaults(func=cmd_results)

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
    p.add_argument("--results", default=paths.RESULTS)
    p.add_argument("--submission", default=None, help="submission id or folder (default: the newest)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("collect", help="gather the finished records of a submission and render the report")
    p.add_argument("--results", default=paths.RESULTS)
    p.add_argument("--submission", default=None, help="submission id or folder (default: the newest)")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to this long for tasks to finish")
    p.add_argument("--reports", default=None, help=REPORTS_HELP)
    p.add_argument("--no-report", action="store_true")
    p.set_defaults(func=cmd_collect)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # feature module not installed/written yet
            raise
        if hasattr(module, "register_cli"):
            module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        args = parser.parse_args(["run", *(argv or [])])
    try:
        return int(args.func(args) or 0)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; results already written are kept. Resume with `bench run --resume ...`", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`bench list | head`): stop quietly, as a writer killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 128 + 13
    except Exception as e:  # Interrupted (preemption) and anything unexpected: one line, no traceback
        from bench.stopping import Interrupted

        if isinstance(e, Interrupted):
            print(f"interrupted: {e}. Resume with the same command plus --resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"error: unexpected {type(e).__name__}: {e} (please report this; records already written are kept)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
