"""The report's Regime section: how far along its training each model's samples entered the regime where comparing
them says something, and, for a model that never did, at what compute the trend of its evaluations would.

The criteria are the Findings' (:func:`bench.report.findings.regime_reasons`, :func:`~.likelihood_reasons`):
class-coverage KL <= 0.1, FID within 10x the real-data row's, and for a model with a likelihood bits/dim below the
independent-pixel `reference` floor. They are read off the evaluations along training (``train.eval_fractions``,
mean over seeds at each fraction), so one run of a budget ladder (the main job's ``ladder`` profile) shows where
each model crossed. Where it did not, each unmet criterion's trend is a straight line through the last
``FIT_POINTS`` evaluations against log compute (log FID and log KL, the power laws such curves follow; bits/dim
itself), solved for its limit: an extrapolation that says "about how much more compute", not a measurement. A
criterion that did not improve over those evaluations has no crossing, and the table says so.
"""

from __future__ import annotations

import math

import numpy as np

from bench.records import RunRecord
from bench.report import findings
from bench.report import tables as T
from bench.report.plots import compute_curve

FIT_POINTS = 3
LOG_FIT = {"fid": True, "coverage_kl": True, "bits_per_dim": False}
LABELS = {"fid": "FID", "coverage_kl": "class-coverage KL", "bits_per_dim": "bits/dim"}


def limits(groups: dict[str, list[RunRecord]], reference_run: str = "reference") -> dict[str, float]:
    """Each criterion's limit where the records let it be set: FID needs the real-data row, bits/dim the floor."""
    real = [r for recs in groups.values() for r in recs if r.family == "real-data"]
    real_fid = findings.run_mean(real, "fid")
    floor = findings.run_mean(groups.get(reference_run, []), "bits_per_dim")
    out = {"coverage_kl": findings.REGIME_MAX_KL}
    if real_fid:
        out["fid"] = findings.REGIME_MAX_FID_FACTOR * real_fid
    if floor is not None:
        out["bits_per_dim"] = floor
    return out


def evaluations(recs: list[RunRecord], names: list[str]) -> tuple[list[dict[str, float]], str]:
    """The run's evaluations along training, mean over seeds per budget fraction: [{"x": compute, name: value}],
    in order of compute, and the compute's unit (counted FLOPs where every evaluation has them, else images)."""
    frames = {name: compute_curve(recs, name) for name in names}
    frames = {name: df for name, df in frames.items() if not df.empty}
    if not frames:
        return [], ""
    unit = "flops" if all(df["flops"].notna().all() for df in frames.values()) else "images"
    points: dict[float, dict[str, float]] = {}
    for name, df in frames.items():
        for fraction, g in df.dropna(subset=[unit]).groupby("fraction"):
            p = points.setdefault(float(fraction), {"x": float(g[unit].mean())})
            p[name] = float(g["quality"].mean())
    return [points[f] for f in sorted(points)], unit


def crossing(points: list[dict[str, float]], name: str, limit: float) -> float | None:
    """The compute at which the straight-line trend of ``name`` over the last FIT_POINTS evaluations reaches
    ``limit``; None where there are too few of them or the trend is not improving."""
    pts = [p for p in points if name in p and p["x"] > 0][-FIT_POINTS:]
    if len(pts) < FIT_POINTS or (LOG_FIT[name] and min(p[name] for p in pts) <= 0):
        return None
    x = np.log10([p["x"] for p in pts])
    y = np.log10([p[name] for p in pts]) if LOG_FIT[name] else np.array([p[name] for p in pts])
    slope, intercept = np.polyfit(x, y, 1)
    if slope >= 0:
        return None
    target = math.log10(limit) if LOG_FIT[name] else limit
    return float(10 ** ((target - intercept) / slope))


def _met(p: dict[str, float], lim: dict[str, float]) -> bool:
    return all(name in p and p[name] <= limit for name, limit in lim.items())


def regime_table(records: list[RunRecord], reference_run: str = "reference"
                 ) -> tuple[str, list[str], list[list[str]]] | None:
    """(caption, headers, rows): one row per trained model with at least two evaluations along training (none for
    smoke profiles, where nothing is expected to have learned)."""
    if any(r.profile == "smoke" for r in records):  # nothing is expected to have learned in a smoke run
        return None
    groups = T.group_by_model(records)
    lim = limits(groups, reference_run)
    rows, units = [], set()
    for run, recs in groups.items():
        if not T.ok(recs) or findings.is_floor_run(run, recs, reference_run):
            continue
        own = {n: v for n, v in lim.items() if n != "bits_per_dim" or T.has_likelihood(recs)}
        points, unit = evaluations(recs, list(own))
        own = {n: v for n, v in own.items() if any(n in p for p in points)}
        if len(points) < 2 or not own:
            continue
        units.add(unit)
        last = points[-1]
        entered = next((p for p in points if _met(p, own)), None)
        if entered is not None:
            verdict = f"yes, from {T.fmt(entered['x'])}"
        else:
            unmet = [n for n, v in own.items() if not (n in last and last[n] <= v)]
            at = {n: crossing(points, n, own[n]) for n in unmet}
            stuck = [LABELS[n] for n, x in at.items() if x is None]
            few = min(sum(n in p for p in points) for n in unmet)
            if few < FIT_POINTS:
                verdict = f"no; {few} evaluations are too few to extrapolate (a trend needs {FIT_POINTS})"
            elif stuck:
                verdict = f"no; no crossing in sight: {', '.join(stuck)} not improving over the last {FIT_POINTS}"
            else:
                name, x = max(at.items(), key=lambda kv: kv[1])
                verdict = f"no; trend crosses at ≈ {x:.2g} ({x / last['x']:.2g}× the last; {LABELS[name]} last)"
        cells = [f"{T.fmt(last[n])} (≤ {T.fmt(v)})" if n in last else "n/a" for n, v in own.items()]
        by_name = dict(zip(own, cells))
        rows.append([run, str(len(points)), T.fmt(last["x"])]
                    + [by_name.get(n, "not defined" if n == "bits_per_dim" else "n/a") for n in LABELS if n in lim] + [verdict])
    if not rows:
        return None
    unit = "counted training FLOPs" if units == {"flops"} else "training images (FLOPs where counted)"
    headers = ["model", "evaluations", f"compute ({unit})"] + [f"{LABELS[n]} (limit)" for n in LABELS if n in lim] \
        + ["in the regime"]
    caption = (f"the regime along training: FID ≤ {findings.REGIME_MAX_FID_FACTOR:g}× the real-data row's, "
               f"class-coverage KL ≤ {findings.REGIME_MAX_KL:g}"
               + (f", bits/dim below the `{reference_run}` floor (models with a likelihood)" if "bits_per_dim" in lim
                  else "")
               + "; values at the last evaluation, mean over seeds. \"trend crosses at\": a straight line through "
               f"the last {FIT_POINTS} evaluations against log compute (log FID, log KL, bits/dim), an extrapolation, "
               "not a measurement")
    return caption, headers, rows
