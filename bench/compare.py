"""Regression checks: ``bench compare`` (baselines are written by :mod:`bench.baseline`, tolerances read by
:mod:`bench.tolerances`).

``bench baseline --suite S [--profile smoke]`` condenses the newest result record of every
(model, seed) of a suite into ``results/baseline/<suite>.json``: per model and metric the mean
over seeds, the seed-to-seed spread, the metric's own standard error, and the hardware each run
was measured on. ``bench compare --baseline FILE`` reads fresh records and compares them with the
baseline metric by metric:

- each metric has a *direction* (lower FID/KID/bits-per-dim/seconds are better; higher IS,
  images/s, precision/recall are better) and a *kind* (quality, timing, memory), both from the
  metric's declaration (``@metric(outputs=...)`` in ``bench/metrics``), which a tolerance file may
  override; the tolerances themselves come from ``bench/tolerances.toml`` (see its header for the rules);
- quality metrics get the additive tolerance ``max(abs, rel*|baseline|, sigmas*noise)`` where
  ``noise`` is the standard error of the difference of means, from the baseline's spread over
  seeds (or, with one seed, the recorded standard error of the metric);
- timing and memory metrics are compared multiplicatively, and only where the hardware key of
  the fresh run equals the baseline's; across machines they are compared as ratios to a
  reference operation (matmul peak) measured in the same run when both records carry one, and
  skipped with a note otherwise -- never raw seconds across machines;
- a metric measured in a feature space (FID, KID, IS, ...) is compared only when both sides used the same
  extractor weights (``extractor_weights_sha256`` in its protocol); otherwise it is skipped with a note;
- training throughput (images/s) of a run that trained for under MIN_TRAIN_SECONDS_FOR_THROUGHPUT
  (in the baseline or the fresh records) is skipped with a note: a few steps timed on a shared
  machine say nothing about the code.

Fresh records of some of the baseline's seeds (a rerun of seed 0) are held to those seeds' own values, with the
full baseline's seed spread as noise: deterministic runs then reproduce them exactly.

Across CPU models, seeds whose sampler warned (a fixed-point inverse at its cap) are set apart from a metric with a
``warned_seed_rate`` (NFE) and judged by their count (:func:`set_warned_seeds_apart`).

Every row is one of: improved, held, regressed, missing (a model or metric of the baseline
absent from the fresh records), skipped (not comparable; the note says why) or new. The exit code
is 1 when anything regressed or is missing (``--allow-missing`` relaxes the latter).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

from bench.baseline import (
    baseline_sources,
    cmd_baseline,
    condense,
    fresh_records,
    load_baseline,
)
from bench.errors import BenchError
from bench.paths import RESULTS
from bench.tolerances import Tolerances

# Throughput measured over the training loop: from a run that trained for less than
# MIN_TRAIN_SECONDS_FOR_THROUGHPUT it is a handful of steps timed on a shared machine (the digits
# `reference` model trains ~0.05 s and read 22x slower on a busy CI machine), so it is shown, not gated.
TRAIN_THROUGHPUT_KEYS = ("train_images_per_second", "train_images_per_second_per_device")
MIN_TRAIN_SECONDS_FOR_THROUGHPUT = 2.0
STATUSES = ("regressed", "missing", "improved", "held", "skipped", "new")


# ---- comparison -----------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    suite: str
    model: str
    metric: str
    status: str
    baseline: float | None = None
    fresh: float | None = None
    delta: float | None = None  # signed: positive = better
    tolerance: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.4g}"


def compare_metric(suite: str, model: str, metric: str, base: dict[str, Any], fresh: dict[str, Any],
                   base_run: dict[str, Any], fresh_run: dict[str, Any], rule: dict[str, Any]) -> Row:
    """One metric of one model, judged by the first rule that applies: absent values, values that cannot be
    compared (:func:`not_comparable`), then the timing/memory rule (by a factor) or the quality rule (additive)."""
    b, f = base.get("mean"), fresh.get("mean")
    row = Row(suite, model, metric, "held", b, f)
    skip = absent(b, f) or not_comparable(metric, rule, base, fresh, base_run, fresh_run)
    if skip:
        row.status, row.note = skip
        return row
    if rule["kind"] in ("timing", "memory"):
        return judge_by_factor(row, rule, base_run, fresh_run)
    return judge_additively(row, rule, base, fresh, base_run, fresh_run)


def absent(b: float | None, f: float | None) -> tuple[str, str] | None:
    """(status, note) when either side has no value."""
    if b is None and f is None:
        return "skipped", "not defined in either"
    if f is None:
        return "missing", "no value in the fresh record (baseline had one)"
    if b is None:
        return "new", "baseline had no value"
    return None


def not_comparable(metric: str, rule: dict[str, Any], base: dict[str, Any], fresh: dict[str, Any],
                   base_run: dict[str, Any], fresh_run: dict[str, Any]) -> tuple[str, str] | None:
    """(status, note) for values that exist but say nothing against each other: no direction, two feature spaces,
    a throughput timed over a few steps."""
    if rule["direction"] == "none":
        return "skipped", "direction unknown (informational; set it in a tolerance file)"
    bs, fs = base.get("feature_space"), fresh.get("feature_space")
    if bs and fs and bs != fs:
        return "skipped", (f"measured in another feature space (extractor weights {bs} vs {fs}): FID/KID/IS of two "
                           "feature extractors are not comparable; regenerate the baseline with the same weights")
    if metric in TRAIN_THROUGHPUT_KEYS:
        short = [s for s in (base_run.get("train_seconds"), fresh_run.get("train_seconds"))
                 if s is not None and s < MIN_TRAIN_SECONDS_FOR_THROUGHPUT]
        if short:
            return "skipped", (f"training lasted {min(short):.2g} s (< {MIN_TRAIN_SECONDS_FOR_THROUGHPUT:g} s): its "
                               "throughput is a few steps timed on a shared machine; shown, not gated")
    return None


def judge_by_factor(row: Row, rule: dict[str, Any], base_run: dict[str, Any], fresh_run: dict[str, Any]) -> Row:
    """Timing and memory: worse or better by more than a factor (1 + rel); on other hardware, timings only as
    ratios to the matmul peak each run measured, memory not at all."""
    direction, kind = rule["direction"], rule["kind"]
    b, f = row.baseline, row.fresh
    bk, fk = base_run.get("hardware_key"), fresh_run.get("hardware_key")
    rel = float(rule["rel"])
    if bk != fk:
        br, fr = base_run.get("reference_flops"), fresh_run.get("reference_flops")
        if kind == "timing" and br and fr:
            # normalise by the device's measured matmul peak: images/s per FLOP/s, seconds * FLOP/s
            b, f = (b / br, f / fr) if direction == "higher" else (b * br, f * fr)
            rel = float(rule["cross_hardware_rel"])
            row.note = f"ratio to matmul peak measured in the same run ({bk} vs {fk})"
        else:
            row.status = "skipped"
            row.note = f"{kind} measured on different hardware (baseline: {bk}; fresh: {fk}); not comparable"
            return row
    if b <= 0 or f <= 0:
        row.status, row.note = "skipped", "non-positive timing"
        return row
    sign = 1.0 if direction == "higher" else -1.0
    worse_by = (b / f) if direction == "higher" else (f / b)  # > 1: fresh is worse
    row.delta = sign * (f - b) if not row.note else None
    row.tolerance = f"x{1 + rel:.3g}"
    floor = float(rule["abs"]) if not row.note else 0.0
    if floor and abs(f - b) <= floor:
        row.tolerance += f" (changes below {floor:g} ignored)"
        return row
    if worse_by > 1 + rel:
        row.status = "regressed"
        row.note = (row.note + "; " if row.note else "") + f"{worse_by:.2f}x worse"
    elif 1 / worse_by > 1 + rel:
        row.status = "improved"
        row.note = (row.note + "; " if row.note else "") + f"{1 / worse_by:.2f}x better"
    return row


def judge_additively(row: Row, rule: dict[str, Any], base: dict[str, Any], fresh: dict[str, Any],
                     base_run: dict[str, Any], fresh_run: dict[str, Any]) -> Row:
    """Quality: worse or better by more than the largest of the absolute floor, the relative share and the noise
    (the seed spread, else the recorded standard errors) times the rule's sigmas."""
    b, f = row.baseline, row.fresh
    nb, nf = max(1, base.get("n_seeds") or 1), max(1, fresh.get("n_seeds") or 1)
    spread = base.get("seed_std")
    if spread is None and (fresh.get("n_seeds") or 0) > 1:
        spread = fresh.get("seed_std")
    if spread is not None:
        noise = spread * math.sqrt(1.0 / nb + 1.0 / nf)
        noise_src = f"seed spread {spread:.3g}"
    else:
        sb, sf = base.get("stderr") or 0.0, fresh.get("stderr") or 0.0
        noise = math.sqrt(sb * sb + sf * sf)
        noise_src = "recorded stderr"
    sigmas = float(rule["sigmas"])
    other_cpu = base_run.get("hardware_key") != fresh_run.get("hardware_key")
    if other_cpu and float(rule["cross_hardware_sigmas"]) > sigmas:  # exact only where the same seed retraces its run
        sigmas = float(rule["cross_hardware_sigmas"])
        row.note = CROSS_HARDWARE_NOTE
    parts = {"abs": float(rule["abs"]), "rel": float(rule["rel"]) * abs(b), "noise": sigmas * noise}
    t = max(parts.values())
    widest = max(parts, key=parts.get)
    row.tolerance = f"±{t:.3g}" + (f" ({widest}{', ' + noise_src if widest == 'noise' else ''})" if t > 0 else "")
    row.delta = (1.0 if rule["direction"] == "higher" else -1.0) * (f - b)
    if row.delta < -t:
        row.status = "regressed"
    elif row.delta > t:
        row.status = "improved"
    bt, ft = (r.get("hardware", {}).get("torch_threads") for r in (base_run, fresh_run))
    if bt and ft and bt != ft:  # judged all the same: the tolerance is the seed spread, which this sits inside
        row.note = THREADS_NOTE.format(fresh=ft, base=bt)
    return row


def restrict_to_seeds(m: dict[str, Any], keep: set, run_seeds: list[int] | None = None,
                      keep_spread: bool = False) -> dict[str, Any] | None:
    """The condensed metric over the seeds in ``keep``; None when its values do not say which seed each is (its
    ``value_seeds``, or else ``run_seeds`` when every seed has a value). ``keep_spread`` keeps the seed spread of
    all seeds as the noise, instead of the spread of those kept."""
    values = m.get("values") or []
    seeds = m.get("value_seeds")
    seeds = run_seeds if seeds is None else seeds
    if seeds is None or len(seeds) != len(values):
        return None
    kept = [(int(s), v) for s, v in zip(seeds, values) if int(s) in keep]
    vals = [v for _, v in kept]
    out = dict(m, values=vals, value_seeds=[s for s, _ in kept], n_seeds=len(vals),
               mean=sum(vals) / len(vals) if vals else None)
    if not keep_spread:
        out["seed_std"] = statistics.stdev(vals) if len(vals) > 1 else m.get("seed_std")
    return out


def same_seeds(bm: dict[str, Any], base_seeds: list[int], fresh_seeds: list[int]) -> dict[str, Any]:
    """The baseline metric over the seeds the fresh records hold, when they are a subset: a rerun of seed 0 is
    then held to seed 0's value (the runs are deterministic), not to the mean of three seeds. The noise stays the
    full baseline's seed spread. Unchanged where no per-seed value lines up with a fresh seed."""
    out = restrict_to_seeds(bm, {int(x) for x in fresh_seeds}, [int(x) for x in base_seeds], keep_spread=True)
    return out if out is not None and out["values"] else bm


# Seeds whose sampler warned (a residual flow's fixed-point inverse stopped at its cap) are judged by how rare that
# many of them would be at the measured rate (`warned_seed_rate` in bench/tolerances.toml): a one-sided binomial tail
# below this is a regression. At rate 0.05, one warned seed of three (P = 0.14) is within what was measured, two
# (P = 0.007) are not.
WARNED_SEEDS_ALPHA = 0.01


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1))


def set_warned_seeds_apart(suite: str, model: str, metric: str, bm: dict[str, Any], fm: dict[str, Any],
                           brun: dict[str, Any], frun: dict[str, Any], rule: dict[str, Any]):
    """(baseline metric, fresh metric, warned-seeds row or None). Across CPU models a seed does not retrace its run,
    and a metric with a ``warned_seed_rate`` (NFE: a seed whose inverse hit its cap counts the cap, not the solver;
    measured on 1 of 22 residual-flow records) is then judged over the seeds whose sampler did not warn, while the
    warned seeds get a row of their own, regressed only when that many of n would be rarer than WARNED_SEEDS_ALPHA
    at the measured rate. On the same CPU model, or for baselines without ``warned_seeds``, nothing changes."""
    rate = float(rule.get("warned_seed_rate") or 0.0)
    bw, fw = brun.get("warned_seeds"), frun.get("warned_seeds")
    if rate <= 0 or bw is None or fw is None or brun.get("hardware_key") == frun.get("hardware_key"):
        return bm, fm, None
    fresh_seeds = fm.get("value_seeds") or []
    fw = [s for s in fw if s in fresh_seeds]
    bw = [s for s in bw if s in (bm.get("value_seeds") or [])]
    if not (bw or fw):
        return bm, fm, None
    b2 = restrict_to_seeds(bm, set(bm.get("value_seeds") or []) - set(bw))
    f2 = restrict_to_seeds(fm, set(fresh_seeds) - set(fw))
    if b2 is None or f2 is None or b2.get("mean") is None:
        return bm, fm, None
    n, k = len(fresh_seeds), len(fw)
    tail = binomial_tail(k, n, rate)
    row = Row(suite, model, f"{metric}: seeds whose sampler warned", "regressed" if tail < WARNED_SEEDS_ALPHA else "held",
              float(len(bw)), float(k), tolerance=f"P(>= {k} of {n}) >= {WARNED_SEEDS_ALPHA:g} at rate {rate:g}",
              note=(f"fresh seeds {fw} of {n} warned (baseline seeds {bw}): P = {tail:.2g} at the measured rate "
                    f"{rate:g} (warned_seed_rate)"))
    return b2, f2, row


WARNED_NOTE = "judged over the seeds whose sampler did not warn (the others: the warned-seeds row)"
CROSS_HARDWARE_NOTE = ("another CPU model: a seed need not retrace its run there, so this exact-on-one-machine metric "
                       "is held to the seed spread (cross_hardware_sigmas)")
THREADS_NOTE = ("trained with {fresh} torch threads, baseline {base}: the reduction order, hence the last bits of every "
                "step, differs (fix it with --threads for bit-identical runs)")


def compare(baseline: dict[str, Any], fresh_recs: list[dict[str, Any]], tol: Tolerances,
            models: list[str] | None = None) -> list[Row]:
    suite = baseline["suite"]
    fresh = condense(fresh_recs)
    rows: list[Row] = []
    base_runs = baseline.get("runs", {})
    names = [m for m in base_runs if not models or m in models]
    for model in names:
        brun = base_runs[model]
        if model not in fresh:
            rows.append(Row(suite, model, "(run)", "missing", note="model absent from the fresh records"))
            continue
        frun = fresh[model]
        notes = []
        if brun.get("config_hash") and frun.get("config_hash") != brun.get("config_hash"):
            extra = f" (overrides: {', '.join(frun['overrides'])})" if frun.get("overrides") else ""
            notes.append(f"config changed: {brun.get('config_hash')} -> {frun.get('config_hash')}{extra}")
        bad = {s: st for s, st in frun["status"].items() if st != "ok"}
        base_bad = {s: st for s, st in (brun.get("status") or {}).items() if st != "ok"}
        if bad and not base_bad:
            errs = "; ".join(f"seed {s}: {st}: {frun['errors'].get(s)}" for s, st in bad.items())
            rows.append(Row(suite, model, "(status)", "regressed", note=errs))
        elif base_bad and not bad:
            rows.append(Row(suite, model, "(status)", "improved", note="baseline runs were " + ", ".join(sorted(set(base_bad.values())))))
        missing_seeds = sorted(set(map(int, brun.get("seeds", []))) - set(map(int, frun["seeds"])))
        if missing_seeds:
            notes.append(f"seeds {missing_seeds} of the baseline not in the fresh records")
        for metric, bm in brun.get("metrics", {}).items():
            bm = same_seeds(bm, brun.get("seeds", []), frun["seeds"]) if missing_seeds else bm
            fm = frun["metrics"].get(metric)
            if fm is None:
                if frun["status"] and all(st != "ok" for st in frun["status"].values()):
                    rows.append(Row(suite, model, metric, "missing", bm.get("mean"), note="run did not finish"))
                else:
                    rows.append(Row(suite, model, metric, "missing", bm.get("mean"), note="metric absent from the fresh records"))
                continue
            rule = tol.rule(suite, metric)
            bm, fm, warned_row = set_warned_seeds_apart(suite, model, metric, bm, fm, brun, frun, rule)
            if fm.get("mean") is None and warned_row is not None:
                row = Row(suite, model, metric, "skipped", bm.get("mean"),
                          note="every fresh seed's sampler warned: judged by the warned-seeds row only")
            else:
                row = compare_metric(suite, model, metric, bm, fm, brun, frun, rule)
                if warned_row is not None:
                    row.note = "; ".join(x for x in (row.note, WARNED_NOTE) if x)
            if notes and row.status in ("regressed", "improved"):
                row.note = "; ".join([row.note] + notes if row.note else notes)
            rows.append(row)
            if warned_row is not None:
                rows.append(warned_row)
        for metric, fm in frun["metrics"].items():
            if metric not in brun.get("metrics", {}):
                rows.append(Row(suite, model, metric, "new", None, fm.get("mean"), note="not in the baseline"))
    for model in fresh:
        if model not in base_runs and (not models or model in models):
            rows.append(Row(suite, model, "(run)", "new", note="model not in the baseline"))
    return rows


def summary(rows: list[Row]) -> dict[str, int]:
    return {s: sum(r.status == s for r in rows) for s in STATUSES}


def failed(rows: list[Row], allow_missing: bool = False) -> bool:
    return any(r.status == "regressed" or (r.status == "missing" and not allow_missing) for r in rows)


STYLE = {"regressed": "bold red", "missing": "yellow", "improved": "green", "held": "", "skipped": "dim", "new": "cyan"}


def print_rows(rows: list[Row], title: str) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col, just in (("suite", "left"), ("model", "left"), ("metric", "left"), ("baseline", "right"),
                      ("fresh", "right"), ("change", "right"), ("tolerance", "right"), ("status", "left"), ("note", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for r in rows:
        table.add_row(r.suite, r.model, r.metric, _fmt(r.baseline), _fmt(r.fresh), _signed(r.delta), r.tolerance,
                      f"[{STYLE[r.status]}]{r.status}[/]" if STYLE[r.status] else r.status, r.note)
    Console(width=None if sys.stdout.isatty() else 220).print(table)


def print_condensed(rows: list[Row], allow_missing: bool = False) -> None:
    """The default output: per suite one summary line, the rows that changed (regressed, missing, improved, new),
    then each distinct note once with how many rows it applies to. ``--verbose`` prints every row."""
    for suite in dict.fromkeys(r.suite for r in rows):
        mine = [r for r in rows if r.suite == suite]
        counts = summary(mine)
        print(f"{suite}: {'REGRESSION' if failed(mine, allow_missing) else 'ok'}: "
              + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing compared"))
    changed = [r for r in rows if r.status not in ("held", "skipped")]
    if changed:
        print_rows(changed, "rows that changed (all rows: --verbose)")
    notes: dict[str, list[Row]] = {}
    for r in rows:
        if r.note and r.status in ("held", "skipped"):
            notes.setdefault(r.note, []).append(r)
    for note, which in notes.items():
        models = sorted({r.model for r in which})
        print(f"note ({len(which)} row(s) of {', '.join(models[:4])}{' ...' if len(models) > 4 else ''}; "
              f"{which[0].status}): {note}")


def _signed(d: float | None) -> str:
    if d is not None and d == 0:
        return "0"
    return "" if d is None else (f"+{d:.3g}" if d > 0 else f"{d:.3g}") + (" better" if d > 0 else " worse" if d < 0 else "")


def markdown(rows: list[Row], title: str = "bench compare", allow_missing: bool = False) -> str:
    counts = summary(rows)
    verdict = "FAIL" if failed(rows, allow_missing) else "PASS"
    lines = [f"### {title}: {verdict}", "",
             ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing compared", "",
             "| suite | model | metric | baseline | fresh | change | tolerance | status | note |",
             "|---|---|---|--:|--:|--:|--:|---|---|"]
    order = {s: i for i, s in enumerate(STATUSES)}
    for r in sorted(rows, key=lambda r: order[r.status]):
        icon = {"regressed": "❌ ", "missing": "⚠️ ", "improved": "✅ "}.get(r.status, "")
        cells = [r.suite, r.model, r.metric, _fmt(r.baseline), _fmt(r.fresh), _signed(r.delta), r.tolerance,
                 icon + r.status, r.note]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ---- CLI ------------------------------------------------------------------------------------

def cmd_compare(args: argparse.Namespace) -> int:
    sources = baseline_sources(args.baseline)
    all_rows: list[Row] = []
    files, skipped = [], []
    for path, from_folder in sources:
        base = load_baseline(path)
        tol = Tolerances.load(args.tolerance, path.parent)
        recs = fresh_records(Path(args.results), base["suite"], args.profile or base["profile"])
        if not recs and from_folder:  # a folder of baselines compares the suites that were run
            skipped.append(f"{base['suite']} [{args.profile or base['profile']}]")
            continue
        if not recs and not args.allow_missing:
            print(f"no fresh records of {base['suite']} [{args.profile or base['profile']}] under {args.results}")
        files.append(path)
        all_rows += compare(base, recs, tol, args.models)
    if skipped:
        print(f"skipped {len(skipped)} baseline(s) without fresh records under {args.results}: {', '.join(skipped)}")
    if not files:
        raise BenchError(f"no fresh records under {args.results} for any baseline in {', '.join(args.baseline)}; "
                         "run `bench run --suite SUITE` first (or pass --results DIR)")
    title = "bench compare: " + ", ".join(str(p) for p in files)
    if args.json:
        print(json.dumps([r.as_dict() for r in all_rows], indent=1))
    elif args.verbose:
        print_rows(all_rows, title)
    else:
        print(title)
        print_condensed(all_rows, args.allow_missing)
    counts = summary(all_rows)
    verdict = failed(all_rows, args.allow_missing)
    print(("REGRESSION: " if verdict else "OK: ") + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown(all_rows, "bench compare", args.allow_missing))
        print(f"markdown summary: {args.markdown}")
    return 1 if verdict else 0


def register_cli(sub) -> None:
    p = sub.add_parser("compare", help="compare fresh result records with a committed baseline; exit 1 on regression",
                       description="Compare the newest records of the baseline's suite/profile with the baseline, metric "
                       "by metric (direction and tolerance per metric, see bench/tolerances.toml). Timings are only "
                       "compared on the same hardware, or as ratios to a matmul reference measured in the same run.")
    p.add_argument("--baseline", action="append", required=True,
                   help="baseline JSON (results/baseline/<suite>.json) or a folder of them; repeatable")
    p.add_argument("--results", default=RESULTS, help="results directory with the fresh records (default: ./results)")
    p.add_argument("--profile", default=None, help="compare records of this profile (default: the baseline's)")
    p.add_argument("--tolerance", default=None, help="extra tolerance TOML (overrides bench/tolerances.toml and "
                   "a tolerances.toml beside the baseline)")
    p.add_argument("--markdown", default=None, help="also write the comparison as Markdown (e.g. for $GITHUB_STEP_SUMMARY)")
    p.add_argument("--model", dest="models", action="append", default=None, help="compare only this model (repeatable)")
    p.add_argument("--allow-missing", action="store_true", help="do not fail on models/metrics absent from the fresh records")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--verbose", action="store_true", help="print every row, not only the ones that changed")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("baseline", help="write or update results/baseline/<suite>.json from result records",
                       description="Condense the newest record of each (model, seed) into a baseline: mean over seeds, "
                       "seed spread, recorded standard errors and the hardware measured on. Existing models in the "
                       "file are kept unless re-measured (or --replace).")
    p.add_argument("--suite", required=True, help="suite name or .toml path")
    p.add_argument("--profile", default="smoke", help="profile of the records (default: smoke)")
    p.add_argument("--results", default=RESULTS, help="results directory (default: ./results)")
    p.add_argument("--out", default=None, help="baseline file (default: results/baseline/<suite>.json)")
    p.add_argument("--model", dest="models", action="append", default=None, help="only this model (repeatable)")
    p.add_argument("--replace", action="store_true", help="start from scratch instead of updating an existing file")
    p.set_defaults(func=cmd_baseline)
