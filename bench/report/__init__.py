"""Comparison reports: Markdown (README-renderable) and one self-contained HTML file per suite.

``bench report`` (and ``bench run`` at its end) reads result records only: no model is
retrained or re-evaluated, so a report is reproducible from the records alone. Partial results
render with their status; a section whose data is absent is replaced by a note.

Layout: ``<reports>/<suite>/<profile>/README.md``, ``report.html`` and ``img/*.png``; rendering every suite also
writes ``<reports>/claims/<profile>/``, the seeds' claims judged across those suites (:mod:`bench.report.claims_page`). The document is built in
:mod:`bench.report.document`; this module holds only the command and imports it (pandas, matplotlib, seaborn)
when a report is rendered, so `bench --help` and `bench list` start without them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import paths
from bench.errors import BenchError

FORMATS = ("md", "html")


def render(suite_name: str, results_dir: Path, reports_dir: Path, profile: str | None = None,
           formats: tuple[str, ...] | list[str] = FORMATS, data_root: str | None = None,
           mirrors: list[str] | None = None, reference_dir: Path | None = None,
           all_records: bool = False) -> list[Path]:
    """Render the report(s) of one suite (each profile found, or ``profile``); returns the written files
    (:func:`bench.report.document.render`)."""
    from bench.report import document

    return document.render(suite_name, results_dir, reports_dir, profile, formats, data_root, mirrors, reference_dir,
                           all_records)


def cmd_report(args: argparse.Namespace) -> int:
    from bench.records import RUNS_SUBDIR

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    suites = [args.suite] if args.suite else sorted(
        p.name for p in (Path(args.results) / RUNS_SUBDIR).glob("*") if p.is_dir())
    if not suites:
        raise BenchError(f"no result records under {args.results}; run `bench run` first (or pass --results DIR)")
    reports = paths.reports_dir(args.results, args.reports)
    written = []
    if not args.suite and args.profile:  # every suite that has records of this profile
        from bench.records import load_records

        suites = [name for name in suites if load_records(Path(args.results), name, args.profile)]
    for name in suites:
        mirrors = [m.strip() for m in args.mirrors.split(",") if m.strip()] if args.mirrors is not None else None
        written += render(name, Path(args.results), reports, args.profile, formats, args.data_root, mirrors=mirrors,
                          all_records=args.all)
    if not args.suite:  # every suite: also the claims of all of them, one page per profile
        from bench.report import claims_page

        for profile in sorted({p.parent.name for p in written}):
            written += claims_page.render(Path(args.results), reports, profile, suites, formats)
    for p in written:
        print(f"report: {p}")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("report", help="render Markdown + HTML comparison reports from result records",
                       description="Render reports/<suite>/<profile>/README.md and report.html (self-contained) "
                                   "from result records; nothing is retrained.")
    p.add_argument("--suite", default=None, help="suite name (default: every suite with records)")
    p.add_argument("--profile", default=None, help="only this budget profile (default: every profile with records)")
    p.add_argument("--results", default="results", help="results directory (default: ./results)")
    p.add_argument("--reports", default=None,
                   help="report directory (default: <results>/reports; --reports reports re-renders the committed ones)")
    p.add_argument("--format", default="md,html", help="comma-separated: md, html (default: md,html)")
    p.add_argument("--data-root", default=None, help="dataset folder for the real-data grid (offline use)")
    p.add_argument("--mirrors", default=None, metavar="ID[,ID]",
                   help="published tables to compare with (ids = CSV names in results/reference/); "
                        "default: the suite file's `mirrors`")
    p.add_argument("--all", action="store_true", help="use every record, not only the newest per (model, seed)")
    p.set_defaults(func=cmd_report)
