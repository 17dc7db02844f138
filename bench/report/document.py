"""A suite's report as a document (tables, plots, findings, published-vs-measured, sample grids), rendered to
Markdown and HTML from its records (:func:`render`); see :mod:`bench.report` for the command."""

from __future__ import annotations

import re
from pathlib import Path

from bench.errors import BenchError
from bench.records import RunRecord
from bench.report import FORMATS, findings, grids, plots, published, regime, search
from bench.report import tables as T
from bench.report.doc import Document, Image, Note, Para, Section, Table

__all__ = ["render", "build_document", "write_formats", "safe_name"]


def safe_name(name: str) -> str:
    """A name as a file or folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-") or "x"


def _guard(section: Section, what: str, fn, *args):
    """Run one part of the report; on an unexpected error add a note instead of failing the report."""
    try:
        return fn(*args)
    except Exception as e:  # a report over odd records must still render
        section.add(Note(f"{what} could not be rendered: {type(e).__name__}: {T.short(e, 200)}"))
        return None


def _add_image(section: Section, out_dir: Path, result, caption: str) -> None:
    path, note = result if result else (None, "")
    if path is not None:
        section.add(Image(path, caption, path.relative_to(out_dir).as_posix()))
        if note:  # the plot rendered, but not everything: say what it leaves out
            section.add(Note(note))
    elif note:
        section.add(Note(f"skipped — {note}"))


def build_document(records: list[RunRecord], out_dir: Path, results_dir: Path, suite_name: str, profile: str,
                   mirrors: list[str] | None = None, data_root: str | None = None,
                   reference_dir: Path | None = None) -> Document:
    """The report of one suite/profile (the newest record per model × seed). Writes PNGs under out_dir/img."""
    img = out_dir / "img"
    groups = T.group_by_model(records)
    first = (T.ok(records) or records)[0]
    doc = Document(f"genbench report: {suite_name} [{profile}]")
    n_bad = sum(r.status != "ok" for r in records)
    doc.intro.append(Para(
        f"{len(groups)} model(s), {len(records)} run(s) ({n_bad} diverged/failed). Budget {T.describe_budgets(records)}, data `{first.data.get('train', first.data.get('dataset', '?'))}` → "
        f"evaluated on `{first.data.get('eval', '?')}`, hardware: {T.describe_hardware_of(records)}, "
        f"precision {first.train_settings.get('precision', '?')}, git `{str(first.git_commit or '?')[:12]}`."))
    doc.intro.append(Para("Rendered from the result records alone by `bench report`; mean ± std (sample std, n−1) "
                          "over seeds where there are several. \"not defined\": the model has no likelihood; "
                          "\"n/a\": not measured in this suite."))

    # -- the seeds' claims, checked --
    s = Section("Findings")
    doc.sections.append(s)
    if search.searched_runs(groups):
        s.add(Note("a search: its points rank configurations of one family (the Search section), one seed each; "
                   "the seeds' claims are judged between the points a profile adopts, in that profile's report, "
                   "not across every pair of grid points."))
    else:
        _guard(s, "the findings", _findings_section, s, groups, records, reference_dir or published.reference_dir())

    # -- models table --
    s = Section("Models")
    doc.sections.append(s)
    for note in _guard(s, "the fences", findings.fence_notes, groups) or []:
        s.add(Note(note))
    for note in _guard(s, "the sampler warnings", T.sampler_warnings, groups) or []:
        s.add(Note(note))
    fes = _guard(s, "the models table", _models_section, s, groups, records, n_bad) or []

    # -- the points of a [search] grid, ranked --
    tables = _guard(s, "the search tables", search.search_tables, groups) or []
    if tables:
        s = Section("Search")
        doc.sections.append(s)
        for caption, headers, rows in tables:
            s.add(Table(headers, rows, caption))

    # -- where along training each model entered the regime, or where its trend would --
    s = Section("Regime")
    table = _guard(s, "the regime table", regime.regime_table, records)
    if table or s.blocks:
        doc.sections.append(s)
    if table:
        s.add(Table(table[1], table[2], table[0]))

    # -- published vs measured --
    s = Section("Published vs measured")
    doc.sections.append(s)
    _guard(s, "the published-vs-measured tables", _published_section, s, groups, records, suite_name, mirrors,
           reference_dir, fes, first)

    # -- plots --
    s = Section("Plots")
    doc.sections.append(s)
    _add_image(s, out_dir, _guard(s, "quality vs compute", plots.quality_vs_compute, records, img / "quality_vs_compute.png"),
               "quality vs training compute (evaluations at budget fractions; mean ± sd over seeds)")
    _add_image(s, out_dir, _guard(s, "speed–quality", plots.speed_quality, groups, img / "speed_quality.png"),
               "sampling seconds per image (log scale) vs quality")
    _add_image(s, out_dir, _guard(s, "NFE vs quality", plots.nfe_vs_quality, records, img / "nfe_vs_quality.png"),
               "function evaluations vs quality, per model across samplers")
    _add_image(s, out_dir, _guard(s, "loss curves", plots.loss_curves, records, img / "loss_curves.png"),
               "training loss curves")
    _add_image(s, out_dir, _guard(s, "bits/dim bars", plots.bpd_bars, groups, img / "bits_per_dim.png"),
               "test bits/dim per model; dashed line: the `reference` model (a floor any real model must beat)")
    no_lik = [m for m, recs in groups.items() if not T.has_likelihood(recs)]
    if no_lik:
        s.add(Para(f"bits/dim not defined for: {', '.join(no_lik)} (no likelihood)."))
    _add_image(s, out_dir, _guard(s, "class-coverage histograms", plots.class_histograms, groups, img / "class_coverage.png"),
               "class histograms of generated samples (domain classifier)")

    # -- sample grids --
    s = Section("Samples")
    doc.sections.append(s)
    _guard(s, "the sample grids", _sample_section, s, groups, out_dir, img, results_dir, data_root)

    # -- runs --
    s = Section("Runs")
    doc.sections.append(s)
    runs = _guard(s, "the runs table", T.runs_table, records)
    if runs:
        s.add(Table(runs[0], runs[1], "every run (newest record per model × seed)"))
    return doc


def _findings_section(s: Section, groups, records: list[RunRecord], ref_dir) -> None:
    groups, read_at = findings.at_common_compute(groups)
    headers, rows = findings.findings_table(groups, ref_dir)
    if not rows:
        s.add(Note(f"no claims to check: {findings.CLAIMS_FILE} not found in the reference folder."))
        return
    s.add(Table(headers, rows, "the seeds' claims (results/reference/claims.toml) judged on these records"))
    if read_at:
        s.add(Note(read_at))
    first = (T.ok(records) or records)[0]
    budget = "the budget in the note above" if read_at else f"this report's budget ({T.describe_budget(first)})"
    s.add(Para(f"Judged at {budget}, model sizes and data "
               f"(`{first.data.get('dataset', '?')}`), on {T.describe_hardware_of(records)}: a claim not "
               "reproduced here does not hold at this budget and scale, which is a finding about the claim's reach, "
               "not a verdict on the paper. ✓/✗ need the ratio on one side of 1 by more than 2 standard errors "
               "(seed spread where there are several seeds, else the metric's own error); ~ marks a ratio within them. "
               f"{findings.CAVEAT_TEXT}"))


def _models_section(s: Section, groups, records: list[RunRecord], n_bad: int) -> list[str]:
    headers, rows, dropped = T.model_table(groups)
    s.add(Table(headers, rows, "one row per model"))
    if T.SAMPLE_BATCH_HEADER in headers:
        scaling, scaled = T.describe_batch_scaling(groups, T.SAMPLE_BATCH, T.SAMPLE_BATCH_HEADER)
        if scaling:
            s.add(Note(scaling) if scaled else Para(scaling))
    if dropped:
        s.add(Note(f"not measured by this suite (add to `eval.metrics`): {', '.join(dropped)}."))
    kinds = {T.protocol(r, "bits_per_dim").get("kind") for r in T.ok(records)} - {None}
    if "upper-bound" in kinds or "estimate" in kinds:
        s.add(Para("bits/dim marked ≤ is an upper bound (a variational bound, or the uniform-dequantization bound of a flow), ≈ a stochastic estimate; unmarked values are exact."))
    if any(T.bpd_stderr_suffix(recs) for recs in groups.values()):
        s.add(Para("bits/dim: ± is the standard deviation over seeds (as in every column); (SE …) is the standard "
                   "error of the test-set mean over the evaluated images, with a stochastic log-det's own error "
                   "added in quadrature; \"estimator\" is that estimator's standard error alone."))
    fes = sorted({fe for r in T.ok(records) if (fe := T.feature_extractor(r))})
    if fes:
        s.add(Para(f"FID/IS/KID feature space: {', '.join(fes)}."))
    if n_bad:
        s.add(Note(f"{n_bad} run(s) did not finish normally; their rows show the status and the metrics of the "
                   "seeds that did. Details below."))
    return fes


def _published_section(s: Section, groups, records: list[RunRecord], suite_name: str, mirrors: list[str] | None,
                       reference_dir: Path | None, fes: list[str], first: RunRecord) -> None:
    if mirrors is None:
        mirrors = published.suite_mirrors(suite_name, records)
    if mirrors is None:
        s.add(Note(f"suite `{suite_name}` is not a shipped suite and its records do not say which published tables "
                   f"it mirrors; pass `--mirrors ID[,ID]` (ids: {', '.join(published.table_ids()) or 'none found'})."))
        mirrors = []
    elif not mirrors:
        s.add(Para(f"Suite `{suite_name}` mirrors no published table (its `mirrors` list is empty). Mirrored suites "
                   "show each published number beside the measured one here; the tables are in `results/reference/`."))
    for tid in mirrors:
        try:
            th, tr, info = published.compare_table(tid, groups, reference_dir)
        except (FileNotFoundError, KeyError, ValueError) as e:
            s.add(Note(f"reference table {tid}: {e}"))
            continue
        fe = ", ".join(fes) or "none (no sample-quality metric)"
        s.add(Para(f"**{tid}** — {info['source']}. Measured: profile `{first.profile}`, budget "
                   f"{T.describe_budget(first)}, hardware {T.describe_hardware(first)}, feature extractor {fe}."))
        s.add(Table(th, tr, f"{tid}: published vs measured"))
        if first.profile != "paper":
            s.add(Note(f"measured at the `{first.profile}` budget ({T.describe_budget(first)}), not the "
                       "published training length: the measured numbers check the pipeline, they do not "
                       f"reproduce the table. {_paper_profile_text(suite_name, tid, reference_dir)}"))


def _paper_profile_text(suite_name: str, tid: str, reference_dir: Path | None) -> str:
    """What running the suite's `paper` profile would and would not change, read from the suite file."""
    gaps = published.profile_gaps(suite_name, tid, "paper", reference_dir)
    if gaps is None:
        return (f"No `paper` profile of suite `{suite_name}` was found to run instead; the `comparable?` column "
                "lists what differs from the published setting.")
    diffs = []
    if gaps["missing"]:
        diffs.append(f"its `eval.metrics` does not compute {', '.join(gaps['missing'])}, which the table reports")
    for measured, pub in gaps["feature_spaces"]:
        diffs.append(f"its sample metrics use the {measured} feature space, the table's {pub}")
    if diffs:
        return (f"The suite's `paper` profile ({gaps['budget']}) still differs from the table: {'; '.join(diffs)}; "
                "the `comparable?` column lists any further differences (hardware, data, units).")
    return (f"The suite's `paper` profile ({gaps['budget']}) computes every evaluation metric this table "
            "reports; the `comparable?` column says what would still differ (hardware, data, units).")


def _sample_section(s: Section, groups, out_dir: Path, img: Path, results_dir: Path, data_root: str | None) -> None:
    any_grid = False
    for model, recs in groups.items():
        rec = next((r for r in T.ok(recs) if r.artifacts.get("samples")), None)
        if rec is None:
            s.add(Note(f"{model}: no samples saved ({T.status_cell(recs)})."))
            continue
        try:
            images, labels = grids.load_samples(rec, results_dir)
        except Exception as e:
            s.add(Note(f"{model}: samples unreadable ({type(e).__name__}: {T.short(e, 120)})."))
            continue
        p = grids.sample_grid(images, img / f"grid_{safe_name(model)}.png")
        sampler = rec.sampler
        extra = f", sampler {sampler}" if sampler else ""
        s.add(Image(p, f"{model} (seed {rec.seed}{extra})", p.relative_to(out_dir).as_posix()))
        any_grid = True
        if labels is not None and (rec.conditional or len(set(labels.tolist())) > 1):
            p = grids.class_grid(images, labels, img / f"grid_{safe_name(model)}_by_class.png")
            s.add(Image(p, f"{model}: one row per class label", p.relative_to(out_dir).as_posix()))
    if not any_grid:
        return
    first = next(r for recs in groups.values() for r in recs)
    try:
        real, _, name = grids.load_real(first, 64, data_root)
        p = grids.sample_grid(real, img / "grid_real.png")
        s.add(Image(p, f"real data ({name})", p.relative_to(out_dir).as_posix()))
    except Exception as e:  # data not available here: the report still renders
        s.add(Note(f"real-data grid skipped: the evaluation data is not available here "
                   f"({T.short(e, 160)}); pass --data-root to show it."))


def render(suite_name: str, results_dir: Path, reports_dir: Path, profile: str | None = None,
           formats: tuple[str, ...] | list[str] = FORMATS, data_root: str | None = None,
           mirrors: list[str] | None = None, reference_dir: Path | None = None,
           all_records: bool = False) -> list[Path]:
    """Render the report(s) of one suite (each profile found, or ``profile``); returns the written files."""
    from bench.records import latest_per_run, load_records

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise BenchError(f"unknown report format {bad[0]!r}; use md, html or md,html")
    recs = load_records(Path(results_dir), suite_name, profile)
    if not recs:
        raise BenchError(f"no result records for suite {suite_name!r}"
                         f"{f' profile {profile!r}' if profile else ''} under {results_dir}; run `bench run` first "
                         "or pass --results DIR")
    if not all_records:
        recs = latest_per_run(recs)
    written = []
    for prof in sorted({r.profile for r in recs}):
        prof_recs = [r for r in recs if r.profile == prof]
        out_dir = Path(reports_dir) / safe_name(suite_name) / safe_name(prof)
        out_dir.mkdir(parents=True, exist_ok=True)
        doc = build_document(prof_recs, out_dir, Path(results_dir), suite_name, prof, mirrors, data_root, reference_dir)
        written += write_formats(doc, out_dir, formats)
        _remove_stale_images(out_dir / "img", doc)
    return written


def _remove_stale_images(img_dir: Path, doc: Document) -> None:
    """Delete the PNGs of an earlier render that this document no longer shows (a model dropped from the suite,
    a plot now skipped), so a committed report folder holds only what its README and HTML link to."""
    keep = {Path(i.path).resolve() for i in doc.images()}
    for png in img_dir.glob("*.png"):
        if png.resolve() not in keep:
            png.unlink()


def write_formats(doc: Document, out_dir: Path, formats: tuple[str, ...] | list[str]) -> list[Path]:
    """``out_dir/README.md`` and/or ``out_dir/report.html`` of one document."""
    written = []
    if "md" in formats:
        from bench.report import markdown

        written.append(_write(out_dir / "README.md", markdown.render(doc)))
    if "html" in formats:
        from bench.report import html

        written.append(_write(out_dir / "report.html", html.render(doc)))
    return written


def _write(path: Path, text: str) -> Path:
    from bench.records import atomic_write_text

    return atomic_write_text(path, text)
