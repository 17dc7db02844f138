"""Baselines for ``bench compare``: ``bench baseline --suite S`` condenses the newest record of every (model, seed)
of a suite into ``results/baseline/<suite>.json`` (per model and metric the mean over seeds, the seed-to-seed
spread, the metric's own standard error and the hardware it was measured on); :func:`load_baseline` reads one back
with a one-line error for anything that is not a baseline of this schema."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

from bench.errors import BenchError
from bench.paths import RESULTS
from bench.records import RunRecord, metric_error

BASELINE_KIND = "genbench-baseline"
BASELINE_SCHEMA = 1
# Where a record may carry a reference measurement of the device (FLOP/s of a fixed matmul),
# searched in metrics then timings; the first found is used to normalise timings across machines.
REFERENCE_KEYS = ("matmul_peak_flops", "matmul_peak_tflops", "matmul_peak_gflops", "device_peak_flops",
                  "peak_flops", "matmul_flops")
# Metrics that are descriptions of the run, not results (never compared).
IGNORED = {"parameters", *REFERENCE_KEYS}


# ---- condensing records ---------------------------------------------------------------------

def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def record_values(record: RunRecord) -> dict[str, tuple[float | None, float | None]]:
    """{metric: (value, recorded standard error)} of one record, timings included."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for name, m in record.metrics.items():
        if name in IGNORED or not isinstance(m, dict):
            continue
        out[name] = (_num(m.get("value")), _num(metric_error(m)))
    from bench.metrics import (
        TIMINGS,  # the harness's own timings that are compared (see declared())
    )

    timings = record.timings
    for name in TIMINGS:
        if name in timings:
            out[name] = (_num(timings[name]), None)
    return out


def feature_space(record: RunRecord, metric: str) -> str | None:
    """The feature extractor's weights (sha256 prefix) a metric was measured with, if it says."""
    m = record.metric(metric)
    return ((m.get("protocol") or {}).get("extractor_weights_sha256") if m is not None else None) or None


def reference_flops(record: RunRecord) -> float | None:
    """The reference measurement (matmul FLOP/s) a record carries, if any."""
    for section in ("metrics", "timings"):
        for key in REFERENCE_KEYS:
            v = getattr(record, section).get(key)
            if isinstance(v, dict):
                v = v.get("value")
            v = _num(v)
            if v:
                return v
    return None


def sampler_warned(record: RunRecord) -> bool:
    """Whether the run's sampler said its samples are not what it promised (``Samples.info["warning"]``: a residual
    flow's fixed-point inverse stopped at its iteration cap). Records from before that field carry only the count
    of unconverged blocks."""
    sr = record.sampler_resolved if isinstance(record.sampler_resolved, dict) else {}
    return bool(sr.get("warning")) or any("unconverged" in k and (_num(v) or 0) > 0 for k, v in sr.items())


def condense(records: list[RunRecord]) -> dict[str, dict[str, Any]]:
    """Per run name: seeds, status, hardware and per-metric mean / seed spread / stderr."""
    by_model: dict[str, list[dict]] = {}
    for r in records:
        by_model.setdefault(r.model, []).append(r)
    runs = {}
    for model, recs in by_model.items():
        recs = sorted(recs, key=lambda r: r.seed)
        ok = [r for r in recs if r.status == "ok"]
        metrics: dict[str, Any] = {}
        names = dict.fromkeys(n for r in ok for n in record_values(r))
        for name in names:
            vals, ses, seeds = [], [], []
            for r in ok:
                v, se = record_values(r).get(name, (None, None))
                if v is not None:
                    vals.append(v)
                    seeds.append(r.seed)
                    if se is not None:
                        ses.append(se)
            if not vals:
                metrics[name] = {"mean": None, "values": [], "n_seeds": 0}
                continue
            metrics[name] = {
                "mean": statistics.fmean(vals), "values": vals, "value_seeds": seeds, "n_seeds": len(vals),
                "feature_space": next((f for f in (feature_space(r, name) for r in ok) if f), None),
                "seed_std": statistics.stdev(vals) if len(vals) > 1 else None,
                # standard error of the mean over seeds from each run's own recorded stderr
                "stderr": (math.sqrt(sum(s * s for s in ses)) / len(ses)) if ses else None,
            }
        hw = [r.hardware for r in recs]
        refs = [x for x in (reference_flops(r) for r in ok) if x]
        train_s = [x for x in (_num(r.timings.get("train_seconds")) for r in ok) if x is not None]
        runs[model] = {
            "family": recs[0].family, "registered": recs[0].registered,
            "config_hash": recs[0].config_hash, "seeds": [r.seed for r in recs],
            "status": {str(r.seed): r.status for r in recs},
            "errors": {str(r.seed): r.error for r in recs if r.status != "ok"},
            "hardware": hw[0], "hardware_key": hw[0].get("key"),
            "reference_flops": statistics.fmean(refs) if refs else None,
            "train_seconds": min(train_s) if train_s else None,  # the shortest seed decides (see TRAIN_THROUGHPUT_KEYS)
            "budget": recs[0].budget, "overrides": recs[0].overrides,
            "warned_seeds": [r.seed for r in ok if sampler_warned(r)],  # see compare.set_warned_seeds_apart
            "metrics": metrics,
        }
    return runs


def fresh_records(results_dir: Path, suite: str, profile: str) -> list[RunRecord]:
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
        recs = [r for r in recs if r.model in models]
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
        "source_git_commits": sorted({str(r.git_commit) for r in recs}),
        "hardware_keys": hardware, "versions": recs[-1].versions,
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
