"""The seeds' claims, checked against the measured records.

``results/reference/claims.toml`` holds the qualitative findings of the mirrored documents as data. Each claim
has a ``kind``:

- ``ratio`` (the default): a metric of one run divided by another's (``numerator`` / ``denominator``, each
  optionally read under one of its ``samplers`` sweep entries: ``numerator_sampler``), with ``relation`` "<" (the
  ratio is below 1) or "~" (within a factor ``tolerance`` of ``value``);
- ``trend``: a metric of one ``run`` along an ordered ``sweep`` of its sampler entries (e.g. guidance weights)
  moves in ``direction`` "increasing" or "decreasing";
- ``nfe_at_quality``: the ``numerator`` run reaches a quality level with fewer network evaluations than the
  ``denominator`` run, both read along the same ``sweep`` of step counts (each entry's NFE from its record); the
  level is the best ``metric`` value (lower is better) that both reach.

Each is judged on a report's records as one of

- ✓ reproduced: the claimed effect is larger than 2 standard errors (for "~": the ratio's ±2 SE interval lies
  inside the factor; for a trend: the end-to-end change, with no step reversed by more than 2 SE; for NFE: even
  the pessimistic reading of the numerator needs fewer evaluations than the optimistic one of the denominator);
- ✗ not reproduced: the same tests fail the other way;
- ~ inconclusive: the effect is within 2 standard errors;
- — not measurable here: the suite lacks a run the claim needs (or its metric, a sweep entry, the sampler's NFE).

A measured verdict carries a caveat (⚠) where one of its runs has not learned what the claim's metric measures
(``run_caveats``): a likelihood worse than the `reference` floor, or samples out of the regime.

Standard errors come from the seed spread (standard error of the mean over seeds) where a run has several seeds,
else from the metric's own standard error; relative errors of a ratio add in quadrature.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from bench.records import RunRecord, metric_error
from bench.report import tables as T

CLAIMS_FILE = "claims.toml"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_MEASURABLE = "✓ reproduced", "✗ not reproduced", "~ inconclusive", \
    "— not measurable here"


CAVEAT_TEXT = ("⚠ marks a verdict between runs of which one has not learned what the metric measures (bits/dim worse "
               "than the independent-pixel floor, or samples out of the regime: class-coverage KL > 0.1 or FID > 10x "
               "the real-data row's): it is no finding until a larger budget confirms it.")


@dataclasses.dataclass
class Verdict:
    claim: dict[str, Any]
    pair: str  # "ddpm / glow", or "" when not measurable
    verdict: str
    ratio: float | None = None
    stderr: float | None = None
    why: str = ""
    measured: str = ""  # what the table shows where a ratio does not say it (a trend's values, NFE counts)
    caveat: str = ""  # a run of the verdict has not learned what the metric measures (see ``run_caveats``)

    def shown_verdict(self) -> str:
        return self.verdict + (" ⚠" if self.caveat else "")

    def shown_why(self) -> str:
        return "; ".join(x for x in (f"⚠ {self.caveat}" if self.caveat else "", self.why) if x)

    def shown(self) -> str:
        if self.measured:
            return self.measured
        return "—" if self.ratio is None else T.fmt(self.ratio) + (f" ± {T.fmt(self.stderr)}" if self.stderr is not None else "")


def load_claims(ref_dir: Path | None) -> list[dict[str, Any]]:
    if ref_dir is None or not (Path(ref_dir) / CLAIMS_FILE).is_file():
        return []
    from bench.suite import read_toml

    return list(read_toml(Path(ref_dir) / CLAIMS_FILE).get("claim") or [])


def select(groups: dict[str, list[RunRecord]], spec: str) -> list[str]:
    """Runs named by ``spec``, in report order: ``|`` alternatives, each a run name or registered wrapper (every run
    of it), ``family:X``, or ``run:NAME`` for that one run only (where other runs share its wrapper)."""
    out: list[str] = []
    for alt in (a.strip() for a in spec.split("|") if a.strip()):
        if alt.startswith("family:"):
            fam = alt.split(":", 1)[1]
            hits = [k for k, recs in groups.items() if recs[0].family == fam]
        elif alt.startswith("run:"):
            hits = [k for k in groups if k == alt[4:]]
        else:
            hits = [k for k, recs in groups.items() if k == alt or recs[0].registered == alt]
        out += [k for k in hits if k not in out]
    return out


def _entry(record: RunRecord, metric: str, nfe: int | None, sampler: str = "") -> tuple[float | None, float | None]:
    """(value, its own standard error) of ``metric`` in one record; with ``nfe``, the main sampler's or the
    sweep entry's value whose NFE equals it; with ``sampler``, that sweep entry's value (``metric@sampler``)."""
    if metric == "train_images_per_second":
        return T.first_of(T.timing(metric), T.metric(metric))(record), None
    metrics = record.metrics
    keys = [metric + (f"@{sampler}" if sampler else "")]
    if nfe is not None:  # the main sampler ("") or a sweep entry ("@label") that used exactly `nfe` evaluations
        suffixes = [""] + ["@" + k.split("@", 1)[1] for k in metrics if k.startswith("nfe@")]
        keys = [metric + sfx for sfx in suffixes if T.metric("nfe" + sfx)(record) == nfe]
    for k in keys:
        m = metrics.get(k)
        if isinstance(m, dict) and T.finite(m.get("value")) is not None:
            return T.finite(m["value"]), T.finite(metric_error(m))
    return None, None


def run_value(recs: list[RunRecord], metric: str, nfe: int | None, sampler: str = ""
              ) -> tuple[float | None, float | None, str]:
    """Mean over a run's ok seeds, its standard error, and how that error was obtained."""
    got = [_entry(r, metric, nfe, sampler) for r in T.ok(recs)]
    vals = [v for v, _ in got if v is not None]
    if not vals:
        return None, None, ""
    mean = sum(vals) / len(vals)
    if len(vals) > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        return mean, sd / math.sqrt(len(vals)), f"{len(vals)} seeds"
    own = [e for v, e in got if v is not None and e is not None]
    return mean, (own[0] if own else None), ("1 seed, the metric's own standard error" if own else "1 seed, no error estimate")


def needs_run(claim: dict[str, Any], spec: str) -> Verdict:
    """The verdict of a claim whose suite has no run named by ``spec``."""
    return Verdict(claim, "", NOT_MEASURABLE, why=f"needs a run of {spec.replace('|', ' or ')}")


def judge(claim: dict[str, Any], groups: dict[str, list[RunRecord]]) -> list[Verdict]:
    """The claim's verdicts on these records, by its kind (see the module docstring), each with a caveat where
    one of its runs has not learned what the claim's metric measures: a ✓ between untrained models is no finding."""
    kind = claim.get("kind", "ratio")
    if kind == "trend":
        verdicts = judge_trend(claim, groups)
    elif kind == "nfe_at_quality":
        verdicts = judge_nfe_at_quality(claim, groups)
    elif kind == "ratio":
        verdicts = judge_ratio(claim, groups)
    else:
        raise ValueError(f"claim {claim.get('id')}: unknown kind {kind!r} (use ratio, trend or nfe_at_quality)")
    caveats = run_caveats(groups, claim["metric"])
    for v in verdicts:
        if v.verdict != NOT_MEASURABLE:
            runs = [part.split("@")[0].strip() for part in v.pair.split(" / ")]
            v.caveat = "; ".join(f"{run}: {caveats[run]}" for run in dict.fromkeys(runs) if run in caveats)
    return verdicts


def judge_ratio(claim: dict[str, Any], groups: dict[str, list[RunRecord]]) -> list[Verdict]:
    """One verdict per (numerator run, denominator run) pair the records hold, or one 'not measurable'."""
    nums, dens = select(groups, claim["numerator"]), select(groups, claim["denominator"])
    ns, ds = claim.get("numerator_sampler", ""), claim.get("denominator_sampler", "")
    if not nums or not dens:
        return [needs_run(claim, claim["numerator"] if not nums else claim["denominator"])]
    nfe = int(claim["nfe"]) if claim.get("nfe") is not None else None
    out = []
    for a in nums:
        for b in dens:
            if a == b and ns == ds:
                continue
            va, ea, how_a = run_value(groups[a], claim["metric"], nfe, ns)
            vb, eb, how_b = run_value(groups[b], claim["metric"], None, ds)
            pair = f"{a}{'@' + ns if ns else ''} / {b}{'@' + ds if ds else ''}"
            if va is None or vb is None or vb == 0:
                missing = (a, ns) if va is None else (b, ds)
                why = (f"{missing[0]} has no {claim['metric']}" + (f" under sampler {missing[1]!r}" if missing[1] else "") +
                       (f" at NFE {nfe} (add a `samplers` entry with that many steps)" if nfe and missing[0] == a else ""))
                out.append(Verdict(claim, pair, NOT_MEASURABLE, why=why))
                continue
            ratio = va / vb
            se = None
            if ea is not None and eb is not None and va != 0:
                se = abs(ratio) * math.sqrt((ea / va) ** 2 + (eb / vb) ** 2)
            out.append(_verdict(claim, pair, ratio, se, f"{a}: {how_a}; {b}: {how_b}"))
    return out or [Verdict(claim, "", NOT_MEASURABLE, why="numerator and denominator are the same run")]


def _verdict(claim: dict[str, Any], pair: str, ratio: float, se: float | None, how: str) -> Verdict:
    if claim["relation"] == "<":
        if se is None:
            v = REPRODUCED if ratio < 1 else NOT_REPRODUCED
            return Verdict(claim, pair, v, ratio, None, f"no error estimate ({how})")
        if ratio + 2 * se < 1:
            return Verdict(claim, pair, REPRODUCED, ratio, se, how)
        if ratio - 2 * se > 1:
            return Verdict(claim, pair, NOT_REPRODUCED, ratio, se, how)
        return Verdict(claim, pair, INCONCLUSIVE, ratio, se, f"within 2 standard errors of 1 ({how})")
    if claim["relation"] == "~":
        target, factor = float(claim["value"]), float(claim.get("tolerance", 2.0))
        lo, hi = target / factor, target * factor
        spread = 2 * se if se is not None else 0.0
        text = f"claimed ≈ {T.fmt(target)} (within a factor {T.fmt(factor)}); {how}"
        if lo <= ratio - spread and ratio + spread <= hi:
            return Verdict(claim, pair, REPRODUCED, ratio, se, text)
        if ratio + spread < lo or ratio - spread > hi:
            return Verdict(claim, pair, NOT_REPRODUCED, ratio, se, text)
        return Verdict(claim, pair, INCONCLUSIVE, ratio, se, f"within 2 standard errors of the factor's edge; {text}")
    raise ValueError(f"claim {claim.get('id')}: unknown relation {claim['relation']!r} (use '<' or '~')")


def _diff_se(*errors: float | None) -> float:
    return math.sqrt(sum((e or 0.0) ** 2 for e in errors))


def judge_trend(claim: dict[str, Any], groups: dict[str, list[RunRecord]]) -> list[Verdict]:
    """One verdict per run named by ``run``: does ``metric`` move in ``direction`` along the ``sweep``?"""
    runs = select(groups, claim["run"])
    if not runs:
        return [needs_run(claim, claim["run"])]
    sign = 1.0 if claim["direction"] == "increasing" else -1.0
    out = []
    for run in runs:
        points = [run_value(groups[run], claim["metric"], None, label) for label in claim["sweep"]]
        missing = [label or "the main sampler" for label, (v, _, _) in zip(claim["sweep"], points) if v is None]
        if missing:
            out.append(Verdict(claim, run, NOT_MEASURABLE,
                               why=f"{run} has no {claim['metric']} under {', '.join(missing)} (add them to its `samplers`)"))
            continue
        vals, errs = [v for v, _, _ in points], [e for _, e, _ in points]
        shown = " → ".join(T.fmt(v) for v in vals) + f" ({', '.join(label or 'main' for label in claim['sweep'])})"
        total, total_se = sign * (vals[-1] - vals[0]), _diff_se(errs[0], errs[-1])
        reversed_steps = [i for i in range(len(vals) - 1)
                          if sign * (vals[i + 1] - vals[i]) < -2 * _diff_se(errs[i], errs[i + 1])
                          or (sign * (vals[i + 1] - vals[i]) < 0 and errs[i] is None and errs[i + 1] is None)]
        how = f"{claim['direction']} along {claim.get('parameter', 'the sweep')}; {points[0][2]}"
        if reversed_steps:
            i = reversed_steps[0]
            verdict = NOT_REPRODUCED
            how = f"step {claim['sweep'][i] or 'main'} → {claim['sweep'][i + 1] or 'main'} goes the other way; {how}"
        elif total > 2 * total_se:
            verdict = REPRODUCED
        elif total < -2 * total_se:
            verdict = NOT_REPRODUCED
        else:
            verdict = INCONCLUSIVE
            how = f"end-to-end change within 2 standard errors; {how}"
        out.append(Verdict(claim, run, verdict, vals[-1] / vals[0] if vals[0] else None, None, how, measured=shown))
    return out


def _nfe_needed(points: list[tuple[float, float, float | None]], level: float, shift: float) -> float:
    """The fewest NFE whose value (moved by ``shift`` standard errors) reaches ``level``; inf when none does."""
    hits = [nfe for nfe, v, e in points if v + shift * (e or 0.0) <= level]
    return min(hits) if hits else math.inf


def judge_nfe_at_quality(claim: dict[str, Any], groups: dict[str, list[RunRecord]]) -> list[Verdict]:
    """Does the numerator reach the quality level both runs reach with fewer network evaluations?"""
    nums, dens = select(groups, claim["numerator"]), select(groups, claim["denominator"])
    if not nums or not dens:
        return [needs_run(claim, claim["numerator"] if not nums else claim["denominator"])]

    def curve(run: str) -> list[tuple[float, float, float | None]] | None:
        pts = []
        for label in claim["sweep"]:
            v, e, _ = run_value(groups[run], claim["metric"], None, label)
            n, _, _ = run_value(groups[run], "nfe", None, label)
            if v is None or n is None:
                return None
            pts.append((n, v, e))
        return sorted(pts)

    out = []
    for a in nums:
        for b in dens:
            if a == b:
                continue
            ca, cb = curve(a), curve(b)
            if ca is None or cb is None:
                out.append(Verdict(claim, f"{a} / {b}", NOT_MEASURABLE,
                                   why=f"{a if ca is None else b} lacks {claim['metric']} or NFE under the sweep "
                                       f"{', '.join(claim['sweep'])}"))
                continue
            level = max(min(v for _, v, _ in ca), min(v for _, v, _ in cb))  # the best quality both reach
            na, nb = _nfe_needed(ca, level, 0), _nfe_needed(cb, level, 0)
            shown = f"{T.fmt(na)} vs {T.fmt(nb)} NFE to {claim['metric']} ≤ {T.fmt(level)}"
            how = f"NFE to the best {claim['metric']} both reach; ±2 standard errors of each point decide"
            if _nfe_needed(ca, level, +2) < _nfe_needed(cb, level, -2):
                verdict = REPRODUCED
            elif _nfe_needed(ca, level, -2) > _nfe_needed(cb, level, +2):
                verdict = NOT_REPRODUCED
            else:
                verdict = INCONCLUSIVE
            out.append(Verdict(claim, f"{a} / {b}", verdict, na / nb if math.isfinite(na) and nb else None, None,
                               how, measured=shown))
    return out or [Verdict(claim, "", NOT_MEASURABLE, why="numerator and denominator are the same run")]


def at_common_compute(groups: dict[str, list[RunRecord]]) -> tuple[dict[str, list[RunRecord]], str]:
    """The records to judge claims on where runs trained to different budgets of one kind (a ladder whose rungs
    differ per model): every longer run is read at its evaluation at the smallest budget (the curve point at the
    matching budget fraction), so a claim compares equal compute, not one model's extra training. The floors (real
    data trains nothing) and runs of another budget kind (the `reference` floor's steps) are left as they are.
    Returns the groups and a sentence saying what was read where ('' when every run shares its budget)."""
    budgets = {run: (recs[0].budget.get("kind"), T.finite(recs[0].budget.get("value"))) for run, recs in groups.items()
               if not is_floor_run(run, recs, "reference")}
    kinds = [k for k, v in budgets.values() if v is not None]
    if not kinds:
        return groups, ""
    kind = max(set(kinds), key=kinds.count)
    values = {run: v for run, (k, v) in budgets.items() if k == kind and v is not None}
    common = min(values.values())
    longer = [run for run, v in values.items() if v > common]
    if not longer:
        return groups, ""
    out, read, missing = dict(groups), [], []
    for run in longer:
        at = []
        for r in groups[run]:
            point = next((p for p in r.curve if math.isclose(p.get("fraction", 0) * values[run], common, rel_tol=1e-6)),
                         None)
            if point is not None:
                at.append(dataclasses.replace(r, metrics=point.get("metrics") or {}))
        if at:
            out[run] = at
            read.append(f"{run} at its evaluation at {T.fmt(common / values[run])} of its {T.fmt(values[run])} {kind}")
        else:
            del out[run]
            missing.append(run)
    text = f"claims judged at {T.fmt(common)} {kind}, the budget every {kind}-budget run reached"
    if read:
        text += f": {'; '.join(read)}"
    if missing:
        text += f"; left out (no evaluation at that compute): {', '.join(missing)}"
    return out, text + "."


def findings_table(groups: dict[str, list[RunRecord]], ref_dir: Path | None) -> tuple[list[str], list[list[str]]]:
    headers = ["claim", "source", "published", "runs (ratio = first / second)", "measured", "verdict", "how"]
    rows = []
    for claim in load_claims(ref_dir):
        for v in judge(claim, groups):
            rows.append([claim["statement"], claim["source"], claim.get("published", ""), v.pair or "—", v.shown(),
                         v.shown_verdict(), v.shown_why()])
    return headers, rows


LIKELIHOOD_METRICS = {"bits_per_dim"}
SAMPLE_METRICS = {"fid", "kid", "inception_score", "precision", "recall", "density", "coverage", "coverage_kl"}
UNIFORM_BITS = T.UNIFORM_BITS


def run_mean(recs: list[RunRecord], name: str) -> float | None:
    v = T.values(T.ok(recs), T.metric(name))
    return T.mean_std(v)[0] if v else None


def is_floor_run(run: str, recs: list[RunRecord], reference_run: str) -> bool:
    return run == reference_run or recs[0].family == "real-data"


def likelihood_reasons(groups: dict[str, list[RunRecord]], reference_run: str = "reference") -> dict[str, str]:
    """Runs whose bits/dim say they have not learned the data: worse than uniform noise (any profile), or worse than
    the independent-pixel `reference` floor (outside smoke profiles, where nothing is expected to have learned)."""
    profile = next((r.profile for recs in groups.values() for r in recs), None)
    floor = run_mean(groups.get(reference_run, []), "bits_per_dim") if profile != "smoke" else None
    out = {}
    for run, recs in groups.items():
        v = run_mean(recs, "bits_per_dim")
        if v is None or is_floor_run(run, recs, reference_run):
            continue
        if v > UNIFORM_BITS:
            out[run] = f"{T.fmt(v)} bits/dim is worse than uniform noise over 8-bit values ({UNIFORM_BITS:g} bits/dim)"
        elif floor is not None and v > floor:
            out[run] = f"bits/dim {T.fmt(v)} is worse than the independent-pixel `{reference_run}` floor ({T.fmt(floor)})"
    return out


def regime_reasons(groups: dict[str, list[RunRecord]], reference_run: str = "reference") -> dict[str, str]:
    """Sampling models not yet in the regime where a comparison of their samples says something: class-coverage
    KL above 0.1, or FID more than 10x the real-data row's (the floor that many samples can reach)."""
    real = [r for recs in groups.values() for r in T.ok(recs) if r.family == "real-data"]
    real_fid = T.values(real, T.metric("fid"))
    floor = T.mean_std(real_fid)[0] if real_fid else None
    out = {}
    for run, recs in groups.items():
        if is_floor_run(run, recs, reference_run):
            continue
        reasons = []
        kl_mean, fid_mean = run_mean(recs, "coverage_kl"), run_mean(recs, "fid")
        if kl_mean is not None and kl_mean > REGIME_MAX_KL:
            reasons.append(f"class-coverage KL {T.fmt(kl_mean)} > {REGIME_MAX_KL}")
        if fid_mean is not None and floor and fid_mean > REGIME_MAX_FID_FACTOR * floor:
            reasons.append(f"FID {T.fmt(fid_mean)} is {T.fmt(fid_mean / floor)}x the real-data "
                           f"row's {T.fmt(floor)} (more than {REGIME_MAX_FID_FACTOR:g}x)")
        if reasons:
            out[run] = "; ".join(reasons)
    return out


def run_caveats(groups: dict[str, list[RunRecord]], metric: str, reference_run: str = "reference") -> dict[str, str]:
    """Why a run's ``metric`` cannot carry a finding, by run (empty for metrics such as speed, which any run has)."""
    profile = next((r.profile for recs in groups.values() for r in recs), None)
    if metric in LIKELIHOOD_METRICS:
        return {run: f"{why}: not learned" for run, why in likelihood_reasons(groups, reference_run).items()}
    if metric in SAMPLE_METRICS and profile != "smoke":
        reasons = regime_reasons(groups, reference_run)
        if metric == "coverage_kl":  # the claim measures coverage itself: only the FID criterion says "not learned"
            reasons = {run: "; ".join(p for p in why.split("; ") if p.startswith("FID")) for run, why in reasons.items()}
        return {run: f"not in the regime ({why})" for run, why in reasons.items() if why}
    return {}


def fence_notes(groups: dict[str, list[RunRecord]], reference_run: str = "reference") -> list[str]:
    """Visible warnings for numbers that cannot be a finding: a likelihood worse than uniform noise over 8-bit
    values (> 8 bits/dim), and, outside smoke profiles, a model worse than the `reference` floor."""
    notes = []
    for run, why in likelihood_reasons(groups, reference_run).items():
        if "uniform noise" in why:
            notes.append(f"`{run}`: {why}: this model has not learned the data; its likelihood is no finding.")
        else:
            notes.append(f"`{run}`: {why}: at this budget it has not learned more than per-pixel statistics.")
    ref = groups.get(reference_run)
    profile = next((r.profile for recs in groups.values() for r in recs), None)
    if ref and profile != "smoke":
        f = run_mean(ref, "fid")
        for run, recs in groups.items():
            v = run_mean(recs, "fid")
            if f is not None and v is not None and not is_floor_run(run, recs, reference_run) and v > f:
                notes.append(f"`{run}`: FID {T.fmt(v)} is worse than the independent-pixel `{reference_run}` floor "
                             f"({T.fmt(f)}): at this budget it has not learned more than per-pixel statistics.")
    return notes + (regime_notes(groups, reference_run) if profile != "smoke" else [])


REGIME_MAX_KL = 0.1  # class coverage: the domain classifier recognises the samples' classes about evenly
REGIME_MAX_FID_FACTOR = 10.0  # FID within this factor of the real-data row's


def regime_notes(groups: dict[str, list[RunRecord]], reference_run: str = "reference") -> list[str]:
    """Named so that a ranking among runs out of the regime does not read as a finding; the quality-vs-compute
    curve shows whether each still improves."""
    return [f"`{run}`: its samples are not yet in the regime where they compare ({why}); the quality-vs-compute "
            "curve shows whether it was still improving at the end of the budget."
            for run, why in regime_reasons(groups, reference_run).items()]
