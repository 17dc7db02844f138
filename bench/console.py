"""What the commands print on a terminal: the summary table of records, a submission's task table, CSV files and
the message that explains an empty result. Rich is imported only when a table is printed."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.errors import BenchError


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


def task_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for c in ("task", "model", "seed", "job", "state", "status", "interruptions", "error"):
        table.add_column(c)
    for r in rows:
        table.add_row(str(r["index"]), r["model"], str(r["seed"]), str(r["job_id"] or ""), r["state"],
                      r["status"] or "", str(r["interruptions"] or ""), (r["error"] or "")[:80])
    Console(width=None if sys.stdout.isatty() else 200).print(table)


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


