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

from bench import __version__, paths
from bench.errors import BenchError

# Modules that add sub-commands; each defines register_cli(subparsers).
COMMAND_MODULES = ("bench.report", "bench.compare", "bench.launch", "bench.prefetch")

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
    """Registered models and shipped suites as plain data (what `bench list` shows)."""
    from bench import registry, suite

    models = [{"name": name, "family": cls.family, "likelihood": bool(cls.has_likelihood),
               "conditional": bool(cls.conditional), "summary": registry.summary(cls)}
              for name, cls in registry.available().items()]
    suites = []
    for name in suite.suite_names():
        raw = suite.read_toml(suite.suite_path(name))
        suites.append({"name": name, "profiles": list(raw.get("profiles", {})), "models": list(raw.get("models", {})),
                       "description": raw.get("description", "")})
    return {"models": models, "suites": suites}


def model_options(name: str) -> list[dict]:
    """A wrapper's config schema as plain data (what `bench list --model NAME` shows)."""
    from bench import registry

    cls = registry.get(name)
    tables = (("", cls.options), ("sampler.", cls.sampler_options))
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
    from bench import records
    from bench.runner import run_suite
    from bench.suite import DEFAULT_SUITE, load_suite

    suite = load_suite(args.suite or DEFAULT_SUITE, args.profile, args.overrides, args.budget)
    opts = run_options(args)
    print(f"suite {suite.name} [{suite.profile}], budget {suite.budget}, "
          f"models: {', '.join(opts.models or suite.models)}, seeds: {opts.seeds or suite.train['seeds']}")
    paths = run_suite(suite, opts)
    from bench.device import world

    if world()[0] != 0:  # under torchrun only rank 0 writes records, prints and renders
        return 0
    recs = [records.load_records(Path(args.results), suite.name, suite.profile)]
    written = {str(p) for p in paths}
    fresh = [r for r in recs[0] if r.path in written]
    print_table(fresh)
    print(f"{len(paths)} record(s) written under {Path(args.results) / records.RUNS_SUBDIR / suite.name / suite.profile}")
    if not args.no_report:
        try:
            report = importlib.import_module("bench.report")
        except ModuleNotFoundError:
            report = None
        if report is not None and hasattr(report, "render"):
            out = report.render(suite.name, Path(args.results), Path(args.reports), profile=suite.profile,
                                data_root=args.data_root)
            for p in out:
                print(f"report: {p}")
    bad = [r for r in fresh if r.status != "ok"]
    if bad:
        print(f"{len(bad)} of {len(fresh)} run(s) not ok: "
              + ", ".join(f"{r.model} seed {r.seed} {r.status}" for r in bad), file=sys.stderr)
    return EXIT_RUN_FAILED if bad else 0


SUMMARY_COLUMNS = ("model", "family", "seed", "status", "parameters", "bits_per_dim", "fid", "is", "kid",
                   "train_images_per_second", "sample_seconds_per_image", "nfe")


def print_table(recs: list, with_suite: bool = False) -> None:
    """The summary table; ``with_suite`` leads with suite and profile (records of several suites)."""
    from rich.console import Console
    from rich.table import Table

    from bench.records import records_table

    if not recs:
        return
    df = records_table(recs)
    cols = [c for c in (("suite", "profile") if with_suite else ()) + SUMMARY_COLUMNS if c in df.columns]
    no_likelihood = {(r.model, r.seed) for r in recs if r.has_likelihood is False}
    table = Table()
    for c in cols:
        table.add_column(c, justify="right" if c not in ("suite", "profile", "model", "family", "status") else "left")
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if c == "bits_per_dim" and (v is None or v != v) and row.get("status") == "ok":
                cells.append("not defined" if (row.get("model"), row.get("seed")) in no_likelihood else "n/a")
            elif isinstance(v, float):
                cells.append("" if v != v else f"{v:.4g}")
            else:
                cells.append("" if v is None else str(v))
        table.add_row(*cells)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def cmd_results(args: argparse.Namespace) -> int:
    from bench.records import latest_per_run, load_records, records_table

    recs = [r for r in load_records(Path(args.results), args.suite, args.profile)
            if not args.profile or r.profile == args.profile]  # --profile also without --suite
    if not args.all:
        recs = latest_per_run(recs)
    if not recs:
        raise BenchError(no_records_message(Path(args.results), args.suite, args.profile))
    df = records_table(recs)
    if args.csv:
        write_csv(df, Path(args.csv))
        print(f"wrote {len(df)} rows to {args.csv}")
    else:
        print_table(recs, with_suite=True)
    return 0


def write_csv(df, path: Path) -> None:
    """``df`` as CSV at ``path`` (atomically); a one-line BenchError when the path cannot take it."""
    from bench.records import atomic_write_text

    if path.is_dir():
        raise BenchError(f"--csv {path} is a folder; give a file name, e.g. {path / 'results.csv'}")
    if not path.parent.is_dir():
        raise BenchError(f"--csv {path}: folder {path.parent} does not exist; create it first")
    try:
        atomic_write_text(path, df.to_csv(index=False))
    except OSError as e:
        raise BenchError(f"cannot write --csv {path} ({e.strerror or e}); choose a writable path") from None


def no_records_message(results: Path, suite: str | None, profile: str | None) -> str:
    """Why `bench results` found nothing: no records at all, or none of the asked suite/profile
    (then naming the closest suite or the profiles that do have records)."""
    from bench.errors import did_you_mean
    from bench.records import load_records

    everything = load_records(results)
    if not everything:
        return f"no result records under {results}; run `bench run` first (or pass --results DIR)"
    suites = sorted({str(r.suite) for r in everything})
    if suite and suite not in suites:
        return (f"no records for suite {suite!r} under {results}{did_you_mean(suite, suites)}; "
                f"suites with records: {', '.join(suites)}")
    profiles = sorted({str(r.profile) for r in everything if not suite or r.suite == suite})
    where = f"suite {suite!r}" if suite else "any suite"
    return (f"no records for profile {profile!r} of {where} under {results}{did_you_mean(str(profile), profiles)}; "
            f"profiles with records: {', '.join(profiles)}")


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
    p.add_argument("--reports", default=paths.REPORTS, help="report directory (default: ./reports)")
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
