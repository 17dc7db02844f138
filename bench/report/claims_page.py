"""One page of every claim of ``claims.toml`` judged on every suite of a profile (``<reports>/claims/<profile>/``).

A suite's own report judges the claims on that suite's records only, so a claim whose models live in another suite
reads "not measurable" there. This page gathers them: one row per (claim, suite) that measures it, and one row for a
claim no suite measures, with the reason. It is what the README's claims table is copied from. Rendered by
`bench report` when it renders every suite of a results folder (no ``--suite``).
"""

from __future__ import annotations

from pathlib import Path

from bench.records import RunRecord
from bench.report import findings
from bench.report import tables as T
from bench.report.doc import Document, Para, Section, Table

HEADERS = ["claim", "source", "suite", "runs (ratio = first / second)", "measured", "verdict", "how"]


def claim_rows(suites: dict[str, list[RunRecord]], ref_dir: Path | None) -> list[list[str]]:
    """The page's rows: each claim's measurable verdicts in every suite (suite order), else one 'not measurable'
    row naming what every suite lacked."""
    grouped = {name: T.group_by_model(recs) for name, recs in suites.items()}
    rows = []
    for claim in findings.load_claims(ref_dir):
        head = [claim["statement"], claim["source"]]
        missing: list[str] = []
        measured = 0
        for name, groups in grouped.items():
            for v in findings.judge(claim, groups):
                if v.verdict == findings.NOT_MEASURABLE:
                    missing += [v.why] if v.why and v.why not in missing else []
                    continue
                rows.append(head + [name, v.pair, v.shown(), v.shown_verdict(), v.shown_why()])
                measured += 1
        if not measured:
            rows.append(head + ["—", "—", "—", findings.NOT_MEASURABLE, "; ".join(missing) or "no suite has its runs"])
    return rows


def build(suites: dict[str, list[RunRecord]], profile: str, ref_dir: Path | None) -> Document:
    """The page for one profile: ``suites`` maps a suite name to its records (newest per model x seed)."""
    doc = Document(f"genbench claims: every suite [{profile}]")
    rows = claim_rows(suites, ref_dir)
    judged = {r[0] for r in rows if r[5] != findings.NOT_MEASURABLE}
    doc.intro.append(Para(
        f"{len({r[0] for r in rows})} claims of the seeds (`results/reference/claims.toml`), {len(judged)} judged "
        f"(✓, ✗ or ~) on the records of {len(suites)} suite(s) of profile `{profile}`; the others are not measurable "
        "here, for the reason given. A verdict is about the budget and scale below, not about the paper: a claim not "
        "reproduced here does not hold at this scale, which is a finding about its reach. ✓/✗ need the effect beyond "
        "2 standard errors (seed spread where there are several seeds, else the metric's own error). "
        f"{findings.CAVEAT_TEXT}"))
    s = Section("Claims")
    doc.sections.append(s)
    s.add(Table(HEADERS, rows, "one row per claim and suite that measures it"))
    s = Section("Where they were judged")
    doc.sections.append(s)
    scale = []
    for name, recs in suites.items():
        ok = T.ok(recs) or recs
        seeds = sorted({r.seed for r in ok})
        scale.append([name, T.describe_budget(ok[0]), str(ok[0].data.get("dataset", "?")), str(len({r.model for r in ok})),
                      ", ".join(map(str, seeds)), T.describe_hardware_of(recs)])
    s.add(Table(["suite", "budget", "data", "runs", "seeds", "hardware"], scale, "each suite's scale"))
    return doc


def render(results_dir: Path, reports_dir: Path, profile: str, suite_names: list[str],
           formats: tuple[str, ...] | list[str], ref_dir: Path | None = None) -> list[Path]:
    """Write ``<reports>/claims/<profile>/README.md`` (and ``report.html``) from the suites' records of ``profile``;
    nothing when no suite has records of it."""
    from bench.records import latest_per_run, load_records
    from bench.report import document, published

    suites = {}
    for name in suite_names:
        recs = latest_per_run(load_records(Path(results_dir), name, profile))
        if recs:
            suites[name] = recs
    if not suites:
        return []
    doc = build(suites, profile, ref_dir or published.reference_dir())
    out_dir = Path(reports_dir) / "claims" / document.safe_name(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    return document.write_formats(doc, out_dir, formats)
