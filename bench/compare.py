"""Regression checks: committed baselines and ``bench compare``.

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

Every row is one of: improved, held, regressed, missing (a model or metric of the baseline
absent from the fresh records), skipped (not comparable; the note says why) or new. The exit code
is 1 when anything regressed or is missing (``--allow-missing`` relaxes the latter).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import fnmatch
import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

from bench.paths import RESULTS
from bench.errors import BenchError
from bench.records import metric_error

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

BASELINE_KIND = "genbench-baseline"
BASELINE_SCHEMA = 1
DEFAULT_TOLERANCES = Path(__file__).with_name("tolerances.toml")
# Where a record may carry a reference measurement of the device (FLOP/s of a fixed matmul),
# searched in metrics then timings; the first found is used to normalise timings across machines.
REFERENCE_KEYS = ("matmul_peak_flops", "matmul_peak_tflops", "matmul_peak_gflops", "device_peak_flops",
                  "peak_flops", "matmul_flops")
# Throughput measured over the training loop: from a run that trained for less than
# MIN_TRAIN_SECONDS_FOR_THROUGHPUT it is a handful of steps timed on a shared machine (the digits
# `reference` model trains ~0.05 s and read 22x slower on a busy CI machine), so it is shown, not gated.
TRAIN_THROUGHPUT_KEYS = ("train_images_per_second", "train_images_per_second_per_device")
MIN_TRAIN_SECONDS_FOR_THROUGHPUT = 2.0
# Metrics that are descriptions of the run, not results (never compared).
IGNORED = {"parameters", *REFERENCE_KEYS}
STATUSES = ("regressed", "missing", "improved", "held", "skipped", "new")
FALLBACK_DEFAULTS = {"direction": "none", "kind": "quality", "abs": 0.0, "rel": 0.05, "sigmas": 3.0,
                     "cross_hardware_rel": 3.0}
FIELDS = set(FALLBACK_DEFAULTS)


# ---- tolerances -----------------------------------------------------------------------------

def _exact_and_globs(section: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    out = [section[metric]] if metric in section else []
    out += [v for k, v in section.items() if k != metric and any(c in k for c in "*?[") and fnmatch.fnmatchcase(metric, k)]
    return out


class Tolerances:
    """Direction, kind and tolerance of each metric, per suite; see ``bench/tolerances.toml``."""

    def __init__(self, tables: list[dict[str, Any]], sources: list[str]):
        self.tables = tables  # later tables override earlier ones
        self.sources = sources

    @classmethod
    def load(cls, extra: str | Path | None = None, baseline_dir: Path | None = None) -> "Tolerances":
        paths: list[Path] = []
        if DEFAULT_TOLERANCES.is_file():
            paths.append(DEFAULT_TOLERANCES)
        if baseline_dir is not None and (Path(baseline_dir) / "tolerances.toml").is_file():
            paths.append(Path(baseline_dir) / "tolerances.toml")
        if extra is not None:
            if not Path(extra).is_file():
                raise BenchError(f"tolerance file {extra} not found; pass an existing TOML file (see bench/tolerances.toml)")
            paths.append(Path(extra))
        tables = []
        for p in dict.fromkeys(paths):
            try:
                with open(p, "rb") as f:
                    t = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise BenchError(f"malformed tolerance file {p}: {e}") from None
            except UnicodeDecodeError:
                raise BenchError(f"malformed tolerance file {p}: not UTF-8 text (a binary file?)") from None
            _validate(t, p)
            tables.append(t)
        return cls(tables, [str(p) for p in dict.fromkeys(paths)])

    @staticmethod
    def _match(section: dict[str, Any], metric: str) -> list[dict[str, Any]]:
        """Entries of a [metrics] table that apply to ``metric``: exact name first, then globs in order.
        A per-sampler metric (``fid@ddim-10``) also takes its base metric's entries (``fid``), after its own."""
        out = _exact_and_globs(section, metric)
        if "@" in metric:
            out += _exact_and_globs(section, metric.split("@", 1)[0])
        return out

    def rule(self, suite: str, metric: str) -> dict[str, Any]:
        """The resolved fields for (suite, metric): most specific wins, field by field: defaults, then the
        metric's declared direction and kind, then the tolerance tables' entries for it."""
        layers: list[dict[str, Any]] = [FALLBACK_DEFAULTS]
        for t in self.tables:
            layers.append(t.get("defaults", {}))
        layers.append(declared(metric))
        for t in self.tables:  # generic metric entries (least specific glob first)
            layers += list(reversed(self._match(t.get("metrics", {}), metric)))
        for t in self.tables:
            layers += list(reversed(self._match(t.get("suites", {}).get(suite, {}).get("metrics", {}), metric)))
        rule: dict[str, Any] = {}
        for layer in layers:
            rule.update(layer)
        return rule


def declared(metric: str) -> dict[str, str]:
    """Direction and kind from the metric's ``@metric`` declaration (empty when nothing declares the key).

    Imported here, not at the top: reading the declarations imports the metric modules (torch), which
    `bench compare` needs only once it compares."""
    from bench import metrics

    out = metrics.describe(metric)
    return {"direction": out.direction, "kind": out.kind} if out is not None else {}


def _validate(t: dict[str, Any], path: Path) -> None:
    def check(entry: Any, where: str) -> None:
        if not isinstance(entry, dict):
            raise BenchError(f"{path}: {where} must be a table")
        for k, v in entry.items():
            if k not in FIELDS:
                from bench.errors import did_you_mean
                raise BenchError(f"{path}: unknown key {where}.{k}{did_you_mean(k, FIELDS)}")
            if k == "direction" and v not in ("lower", "higher", "none"):
                raise BenchError(f"{path}: {where}.direction must be \"lower\", \"higher\" or \"none\", got {v!r}")
            if k == "kind" and v not in ("quality", "timing", "memory"):
                raise BenchError(f"{path}: {where}.kind must be \"quality\", \"timing\" or \"memory\", got {v!r}")
            if k not in ("direction", "kind") and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise BenchError(f"{path}: {where}.{k} must be a non-negative number, got {v!r}")

    for k in t:
        if k not in ("defaults", "metrics", "suites"):
            raise BenchError(f"{path}: unknown top-level key {k!r} (use [defaults], [metrics.NAME], [suites.SUITE.metrics.NAME])")
    check(t.get("defaults", {}), "defaults")
    for name, entry in t.get("metrics", {}).items():
        check(entry, f"metrics.{name}")
    for suite, body in t.get("suites", {}).items():
        for name, entry in (body.get("metrics", {}) if isinstance(body, dict) else {}).items():
            check(entry, f"suites.{suite}.metrics.{name}")


# ---- condensing records ---------------------------------------------------------------------

def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def record_values(record: dict[str, Any]) -> dict[str, tuple[float | None, float | None]]:
    """{metric: (value, recorded standard error)} of one record, timings included."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for name, m in (record.get("metrics") or {}).items():
        if name in IGNORED or not isinstance(m, dict):
            continue
        out[name] = (_num(m.get("value")), _num(metric_error(m)))
    from bench.metrics import TIMINGS  # the harness's own timings that are compared (see declared())

    timings = record.get("timings") or {}
    for name in TIMINGS:
        if name in timings:
            out[name] = (_num(timings[name]), None)
    return out


def feature_space(record: dict[str, Any], metric: str) -> str | None:
    """The feature extractor's weights (sha256 prefix) a metric was measured with, if it says."""
    m = (record.get("metrics") or {}).get(metric)
    return ((m.get("protocol") or {}).get("extractor_weights_sha256") if isinstance(m, dict) else None) or None


def reference_flops(record: dict[str, Any]) -> float | None:
    """The reference measurement (matmul FLOP/s) a record carries, if any."""
    for section in ("metrics", "timings"):
        for key in REFERENCE_KEYS:
            v = (record.get(section) or {}).get(key)
            if isinstance(v, dict):
                v = v.get("value")
            v = _num(v)
            if v:
                return v
    return None


def condense(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run name: seeds, status, hardware and per-metric mean / seed spread / stderr."""
    by_model: dict[str, list[dict]] = {}
    for r in records:
        by_model.setdefault(r["model"], []).append(r)
    runs = {}
    for model, recs in by_model.items():
        recs = sorted(recs, key=lambda r: r["seed"])
        ok = [r for r in recs if r.get("status") == "ok"]
        metrics: dict[str, Any] = {}
        names = dict.fromkeys(n for r in ok for n in record_values(r))
        for name in names:
            vals, ses = [], []
            for r in ok:
                v, se = record_values(r).get(name, (None, None))
                if v is not None:
                    vals.append(v)
                    if se is not None:
                        ses.append(se)
            if not vals:
                metrics[name] = {"mean": None, "values": [], "n_seeds": 0}
                continue
            metrics[name] = {
                "mean": statistics.fmean(vals), "values": vals, "n_seeds": len(vals),
                "feature_space": next((f for f in (feature_space(r, name) for r in ok) if f), None),
                "seed_std": statistics.stdev(vals) if len(vals) > 1 else None,
                # standard error of the mean over seeds from each run's own recorded stderr
                "stderr": (math.sqrt(sum(s * s for s in ses)) / len(ses)) if ses else None,
            }
        hw = [r.get("hardware") or {} for r in recs]
        refs = [x for x in (reference_flops(r) for r in ok) if x]
        train_s = [x for x in (_num((r.get("timings") or {}).get("train_seconds")) for r in ok) if x is not None]
        runs[model] = {
            "family": recs[0].get("family"), "registered": recs[0].get("registered"),
            "config_hash": recs[0].get("config_hash"), "seeds": [r["seed"] for r in recs],
            "status": {str(r["seed"]): r.get("status") for r in recs},
            "errors": {str(r["seed"]): r.get("error") for r in recs if r.get("status") != "ok"},
            "hardware": hw[0], "hardware_key": hw[0].get("key"),
            "reference_flops": statistics.fmean(refs) if refs else None,
            "train_seconds": min(train_s) if train_s else None,  # the shortest seed decides (see TRAIN_THROUGHPUT_KEYS)
            "budget": recs[0].get("budget"), "overrides": recs[0].get("overrides") or [],
            "metrics": metrics,
        }
    return runs


def fresh_records(results_dir: Path, suite: str, profile: str) -> list[dict[str, Any]]:
    from bench.records import latest_per_run, load_records

    return latest_per_run(load_records(Path(results_dir), suite, profile))


# ---- baseline files -------------------------------------------------------------------------

def make_baseline(suite: str, profile: str, results_dir: Path, models: list[str] | None = None,
                  previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """A baseline dict from the newest records of ``suite``/``profile``; ``previous`` runs are kept
    unless re-measured."""
    from bench import __version__
    from bench.environment import git_commit

    recs = fresh_records(results_dir, suite, profile)
    if models:
        recs = [r for r in recs if r["model"] in models]
    if not recs:
        raise BenchError(f"no records of suite {suite!r} profile {profile!r} under {Path(results_dir)}; "
                         f"run `bench run --suite {suite} --profile {profile} --results {results_dir}` first")
    runs = dict((previous or {}).get("runs", {}))
    runs.update(condense(recs))
    hardware = sorted({r.get("hardware_key") or "?" for r in runs.values()})
    return {
        "kind": BASELINE_KIND, "schema": BASELINE_SCHEMA, "suite": suite, "profile": profile,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "genbench": __version__, "git_commit": git_commit(),
        "source_git_commits": sorted({str(r.get("git_commit")) for r in recs}),
        "hardware_keys": hardware, "versions": recs[-1].get("versions"),
        "note": "produced by `bench baseline` from `bench run` records; do not edit by hand",
        "runs": dict(sorted(runs.items())),
    }


def load_baseline(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"baseline {path} not found; create it with `bench baseline --suite SUITE --out {path}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BenchError(f"baseline {path} is not valid JSON ({e}); regenerate it with `bench baseline`") from None
    except UnicodeDecodeError:
        raise BenchError(f"baseline {path} is not JSON text (a binary file?); pass a baseline written by "
                         "`bench baseline`, e.g. results/baseline/<suite>.json") from None
    except OSError as e:
        raise BenchError(f"baseline {path} cannot be read ({e.strerror or e})") from None
    if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND:
        raise BenchError(f"{path} is not a genbench baseline (no \"kind\": \"{BASELINE_KIND}\"); "
                         "create one with `bench baseline`")
    if data.get("schema") != BASELINE_SCHEMA:
        raise BenchError(f"baseline {path} has schema {data.get('schema')}, this genbench reads {BASELINE_SCHEMA}; "
                         "regenerate it with `bench baseline`")
    return data


def baseline_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, and every baseline JSON in a named folder."""
    return [p for p, _ in baseline_sources(paths)]


def baseline_sources(paths: Iterable[str | Path]) -> list[tuple[Path, bool]]:
    """(baseline file, whether it was found in a named folder rather than named itself)."""
    out: list[tuple[Path, bool]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = []
            for f in sorted(p.glob("*.json")):
                try:
                    if json.loads(f.read_text(encoding="utf-8")).get("kind") == BASELINE_KIND:
                        found.append(f)
                except (OSError, ValueError, AttributeError):  # ValueError: bad JSON or not UTF-8
                    continue
            if not found:
                raise BenchError(f"no baseline files in {p}; create them with `bench baseline --suite SUITE`")
            out += [(f, True) for f in found]
        else:
            out.append((p, False))
    return out


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
                   base_run: dict[str, Any], fresh_run: dict[str, Any], tol: Tolerances) -> Row:
    rule = tol.rule(suite, metric)
    direction, kind = rule["direction"], rule["kind"]
    b, f = base.get("mean"), fresh.get("mean")
    row = Row(suite, model, metric, "held", b, f)
    if b is None and f is None:
        row.status, row.note = "skipped", "not defined in either"
        return row
    if f is None:
        row.status, row.note = "missing", "no value in the fresh record (baseline had one)"
        return row
    if b is None:
        row.status, row.note = "new", "baseline had no value"
        return row
    if direction == "none":
        row.status, row.note = "skipped", "direction unknown (informational; set it in a tolerance file)"
        return row
    bs, fs = base.get("feature_space"), fresh.get("feature_space")
    if bs and fs and bs != fs:
        row.status = "skipped"
        row.note = (f"measured in another feature space (extractor weights {bs} vs {fs}): FID/KID/IS of two "
                    "feature extractors are not comparable; regenerate the baseline with the same weights")
        return row
    sign = 1.0 if direction == "higher" else -1.0
    if metric in TRAIN_THROUGHPUT_KEYS:
        short = [s for s in (base_run.get("train_seconds"), fresh_run.get("train_seconds"))
                 if s is not None and s < MIN_TRAIN_SECONDS_FOR_THROUGHPUT]
        if short:
            row.status = "skipped"
            row.note = (f"training lasted {min(short):.2g} s (< {MIN_TRAIN_SECONDS_FOR_THROUGHPUT:g} s): its throughput "
                        "is a few steps timed on a shared machine; shown, not gated")
            return row
    if kind in ("timing", "memory"):
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
    # quality: additive tolerance from abs, rel and the noise over seeds
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
    parts = {"abs": float(rule["abs"]), "rel": float(rule["rel"]) * abs(b), "noise": float(rule["sigmas"]) * noise}
    t = max(parts.values())
    row.tolerance = f"±{t:.3g}" + (f" ({max(parts, key=parts.get)}{', ' + noise_src if max(parts, key=parts.get) == 'noise' else ''})" if t > 0 else "")
    row.delta = sign * (f - b)
    if row.delta < -t:
        row.status = "regressed"
    elif row.delta > t:
        row.status = "improved"
    bt, ft = (r.get("hardware", {}).get("torch_threads") for r in (base_run, fresh_run))
    if bt and ft and bt != ft:  # judged all the same: the tolerance is the seed spread, which this sits inside
        row.note = (f"trained with {ft} torch threads, baseline {bt}: the reduction order, hence the last bits of "
                    "every step, differs (fix it with --threads for bit-identical runs)")
    return row


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
            fm = frun["metrics"].get(metric)
            if fm is None:
                if frun["status"] and all(st != "ok" for st in frun["status"].values()):
                    rows.append(Row(suite, model, metric, "missing", bm.get("mean"), note="run did not finish"))
                else:
                    rows.append(Row(suite, model, metric, "missing", bm.get("mean"), note="metric absent from the fresh records"))
                continue
            row = compare_metric(suite, model, metric, bm, fm, brun, frun, tol)
            if notes and row.status in ("regressed", "improved"):
                row.note = "; ".join([row.note] + notes if row.note else notes)
            rows.append(row)
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


def _signed(d: float | None) -> str:
    if d is not None and d == 0:
        return "0"
    return "" if d is None else (f"+{d:.3g}" if d > 0 else f"{d:.3g}") + (" better" if d > 0 else " worse" if d < 0 else "")


def markdown(rows: list[Row], title: str = "bench compare") -> str:
    counts = summary(rows)
    verdict = "FAIL" if failed(rows) else "PASS"
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
    else:
        print_rows(all_rows, title)
    counts = summary(all_rows)
    verdict = failed(all_rows, args.allow_missing)
    print(("REGRESSION: " if verdict else "OK: ") + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown(all_rows, "bench compare"))
        print(f"markdown summary: {args.markdown}")
    return 1 if verdict else 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from bench.records import atomic_write_text
    from bench.suite import load_suite

    suite = load_suite(args.suite, args.profile)  # validates the name and profile
    out = Path(args.out or Path(RESULTS) / "baseline" / f"{suite.name}.json")
    previous = load_baseline(out) if (out.exists() and not args.replace) else None
    if previous is not None and (previous["suite"], previous["profile"]) != (suite.name, suite.profile):
        raise BenchError(f"{out} is the baseline of {previous['suite']} [{previous['profile']}], not "
                         f"{suite.name} [{suite.profile}]; pass another --out or --replace")
    base = make_baseline(suite.name, suite.profile, Path(args.results), args.models, previous)
    atomic_write_text(out, json.dumps(base, indent=1) + "\n")
    bad = [f"{m} seed {s}: {st}" for m, run in base["runs"].items() for s, st in run["status"].items() if st != "ok"]
    print(f"baseline of {suite.name} [{suite.profile}] ({len(base['runs'])} model(s), hardware "
          f"{', '.join(base['hardware_keys'])}) written to {out}")
    if bad:
        print("warning: baseline includes runs that did not finish: " + "; ".join(bad))
    return 0


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
