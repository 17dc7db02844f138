"""Published reference numbers (``results/reference/*.csv``) beside measured ones.

Each CSV file is one published table; its file name is the table id a suite names in
``mirrors = ["seed000-table4.4"]``. Rows map to genbench runs through ``genbench_model``
(registered wrapper or run name; ``|`` separates alternatives). Every comparison row says what
the measured number was measured under and why the two may not be comparable.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from bench.records import RunRecord
from bench.report import tables as T

REFERENCE_ENV = "GENBENCH_REFERENCE_DIR"
TIMING_METRICS = {"sample_seconds_per_batch", "sample_seconds_per_image", "train_seconds_per_batch",
                  "train_iterations_per_second", "epoch_seconds", "training_hours",
                  "sampling_speedup_vs_ddpm", "training_speedup_vs_flow"}


def reference_dir() -> Path | None:
    """$GENBENCH_REFERENCE_DIR, ./results/reference, or the checkout's results/reference."""
    candidates = [os.environ.get(REFERENCE_ENV), Path.cwd() / "results" / "reference",
                  Path(__file__).resolve().parents[2] / "results" / "reference"]
    for c in candidates:
        if c and Path(c).is_dir() and any(Path(c).glob("*.csv")):
            return Path(c)
    return None


def table_ids(ref_dir: Path | None = None) -> list[str]:
    ref_dir = ref_dir or reference_dir()
    return sorted(p.stem for p in ref_dir.glob("*.csv")) if ref_dir else []


def load_table(table_id: str, ref_dir: Path | None = None) -> list[dict[str, str]]:
    ref_dir = ref_dir or reference_dir()
    if ref_dir is None:
        raise FileNotFoundError(f"no reference tables found (set ${REFERENCE_ENV} to the results/reference folder)")
    path = ref_dir / f"{table_id}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"unknown reference table {table_id!r} (known: {', '.join(table_ids(ref_dir))})")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def suite_mirrors(suite_name: str, records: list[RunRecord]) -> list[str] | None:
    """The table ids a suite mirrors: a record's own ``mirrors`` field, else the suite file's ``mirrors``;
    None when neither is available (e.g. a suite run from a user's file that is not a shipped suite)."""
    for r in records:
        if isinstance(r.mirrors, list):
            return [str(m) for m in r.mirrors]
    try:
        from bench.suite import read_toml, suite_path

        raw = read_toml(suite_path(suite_name))
        return [str(m) for m in raw.get("mirrors", [])]
    except Exception:
        return None


# Published metric keys that are not record keys, and the record key they are measured from.
MEASURED_AS = {"nll": "bits_per_dim", "sampling_speedup_vs_ddpm": "sample_seconds_per_image"}


def eval_metric_of(published_key: str) -> str | None:
    """The `eval.metrics` entry whose declaration writes what a published metric is compared with (None: a
    training-side number, always recorded)."""
    from bench import metrics

    return metrics.producer(MEASURED_AS.get(published_key, published_key))


def profile_gaps(suite_name: str, table_id: str, profile: str = "paper", ref_dir: Path | None = None
                 ) -> dict[str, Any] | None:
    """What a suite's ``profile`` (default ``paper``) would still not measure like the published table, read from
    the suite file: ``missing`` (published metrics of the suite's models its ``eval.metrics`` does not compute),
    ``feature_spaces`` ((measured, published) extractor pairs that differ) and ``budget``. None when the suite file
    cannot be read or has no such profile."""
    try:
        from bench.suite import load_suite, read_toml, suite_path

        if profile not in (read_toml(suite_path(suite_name)).get("profiles") or {}):
            return None
        suite = load_suite(suite_name, profile, check_models=False)
        rows = load_table(table_id, ref_dir)
    except Exception:
        return None
    names = set(suite.models) | {str(cfg.get("model")) for cfg in suite.models.values()}
    computed = set(suite.eval.get("metrics") or [])
    fe = str(suite.eval.get("feature_extractor") or "auto")
    if fe == "auto":  # as bench.metrics.extractors.resolve_name (not imported: it loads torch)
        fe = "digits-classifier" if suite.data.get("dataset") in ("digits", "mnist") else "inception"
    missing: list[str] = []
    spaces: set[tuple[str, str]] = set()
    for row in rows:
        if not names & {n.strip() for n in row.get("genbench_model", "").split("|")}:
            continue
        need = eval_metric_of(row["metric"])
        if need is not None and need not in computed:
            if row["metric"] not in missing:
                missing.append(row["metric"])
        elif T.in_feature_space(row["metric"]) and row.get("feature_extractor") \
                and row["feature_extractor"].lower() != fe.lower():
            spaces.add((fe, row["feature_extractor"]))
    return {"missing": missing, "feature_spaces": sorted(spaces), "budget": suite.budget}


def matching_runs(groups: dict[str, list[RunRecord]], genbench_model: str) -> list[str]:
    """The runs a published row stands for, by ``genbench_model``'s alternatives: a run name, then a registered
    wrapper (every run of it); ``run:NAME`` names one run only (a suite's `ddpm-ho` run is a `ddpm` wrapper too)."""
    names = [n.strip() for n in genbench_model.split("|") if n.strip()]
    out = [k for n in names for k in groups if k == n.removeprefix("run:")]
    out += [k for n in names if not n.startswith("run:") for k, recs in groups.items() if recs[0].registered == n]
    return list(dict.fromkeys(out))


def _batch(row: dict) -> int | None:
    try:
        return int(float(row.get("batch") or ""))
    except ValueError:
        return None


def measured_getter(row: dict, groups: dict[str, list[RunRecord]]) -> tuple[T.Getter | None, str]:
    """How to measure the published quantity on one record, and a note on what was measured."""
    m, b = row["metric"], _batch(row)
    if m in ("fid", "kid", "precision", "recall"):
        return T.metric(m), ""
    if m == "is":
        return T.metric("is", "inception_score", "isc"), ""
    if m in ("bits_per_dim", "nll"):
        return T.metric("bits_per_dim"), "measured: bits/dim of the test split"
    if m == "loss_mse":
        return (lambda r: T.finite(r.train.get("loss_last"))), "measured: final training loss of this wrapper"
    if m == "sample_seconds_per_batch":
        return T.seconds_per_batch(b or 128), f"measured: seconds for {b or 128} images"
    if m == "sample_seconds_per_image":
        return T.metric("sample_seconds_per_image"), ""
    if m == "parameters":
        return T.parameters, ""
    ips = T.first_of(T.timing("train_images_per_second"), T.metric("train_images_per_second"))
    if m == "train_seconds_per_batch":
        return (lambda r: (b or 64) / ips(r) if ips(r) else None), f"measured: {b or 64} / training images per second"
    if m == "train_iterations_per_second":
        return (lambda r: ips(r) / (b or 128) if ips(r) else None), f"measured: training images per second / {b or 128}"
    if m == "epoch_seconds":
        return (lambda r: r.data.get("train_size", 0) / ips(r) if ips(r) else None), \
            "measured: training split size / training images per second"
    if m == "training_hours":
        return (lambda r: T.timing("train_seconds")(r) / 3600 if T.timing("train_seconds")(r) else None), \
            "measured: training seconds of this run / 3600"
    return None, ""


def _ratio(groups: dict[str, list[RunRecord]], num: str, den: str, getter: T.Getter) -> float | None:
    a = T.values(sum((groups[k] for k in matching_runs(groups, num)), []), getter)
    b = T.values(sum((groups[k] for k in matching_runs(groups, den)), []), getter)
    if not a or not b:
        return None
    return T.mean_std(a)[0] / T.mean_std(b)[0]


def comparability(row: dict, recs: list[RunRecord], metric_name: str) -> list[str]:
    """Reasons the measured value is not comparable to the published one (empty: comparable)."""
    reasons = []
    r = T.ok(recs)[0] if T.ok(recs) else recs[0]
    if metric_name == "parameters":  # a count of the built model: no budget, hardware or feature space
        return reasons
    if r.profile != "paper" and r.family != "real-data":  # real images have no training budget
        reasons.append(f"{r.profile} budget ({T.describe_budget(r)}) vs published {row.get('budget') or 'full training'}")
    ds = r.data.get("dataset")
    if row.get("dataset") not in (None, "", "any") and ds and ds != row["dataset"]:
        reasons.append(f"dataset {ds} vs published {row['dataset']}")
    if T.in_feature_space(metric_name):
        fe = T.feature_extractor(r, metric_name)
        pub = row.get("feature_extractor") or "not stated"
        if fe is None or fe.lower() != pub.lower():
            reasons.append(f"feature space: measured {fe or 'unknown'} vs published {pub}")
    if metric_name == "nll":
        reasons.append("published NLL has no stated unit; measured is bits/dim")
    if metric_name == "loss_mse":
        reasons.append("a training loss, not a likelihood; comparable only for the same objective and schedule")
    if metric_name in TIMING_METRICS:
        hw = T.describe_hardware(r)
        reasons.append(f"hardware: measured {hw} vs published {row.get('hardware') or 'not stated'}")
    return reasons


def compare_table(table_id: str, groups: dict[str, list[RunRecord]], ref_dir: Path | None = None
                  ) -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """Rows: published model, genbench run, metric, published, measured, comparability notes."""
    rows_in = load_table(table_id, ref_dir)
    headers = ["dataset", "published model", "genbench run", "metric [unit]", "published", "measured",
               "comparable?", "notes"]
    rows = []
    info = {"source": rows_in[0]["source"] if rows_in else "", "matched": 0}
    for row in rows_in:
        bound = {"<=": "≤ ", "~": "≈ ", "=": ""}.get(row.get("bound", "="), "")
        value = T.finite(float(row["value"])) if row.get("value") else None
        published = bound + (T.fmt_int(value) if row["metric"] == "parameters" else T.fmt(value))
        unit = row.get("unit") or ""
        if row.get("batch"):
            unit += f", batch {row['batch']}"
        metric_label = f"{row['metric']} [{unit}]" if unit else row["metric"]
        gm = row.get("genbench_model", "")
        notes = [row["notes"]] if row.get("notes") else []
        if gm == "real-data" and not matching_runs(groups, gm):
            rows.append([row["dataset"], row["model"], "real data", metric_label, published,
                         "not measured (no real-data record: `bench run` writes one)", "—", "; ".join(notes)])
            continue
        runs = matching_runs(groups, gm)
        if not runs:
            rows.append([row["dataset"], row["model"], "not in this suite", metric_label, published,
                         "not run", "—", "; ".join(notes)])
            continue
        for run in runs:
            recs = groups[run]
            getter, how = measured_getter(row, groups)
            if row["metric"] == "sample_seconds_per_batch":
                b = _batch(row) or 128
                sizes = {T.timed_batch(r) for r in T.ok(recs)} - {b}
                if sizes:
                    timed = ", ".join(sorted(str(x) if x else "an unrecorded number of" for x in sizes))
                    how = (f"measured: extrapolated to {b} images (seconds per image × {b}) from one timed batch "
                           f"of {timed} images")
            if row["metric"] == "sampling_speedup_vs_ddpm":
                v = _ratio(groups, "ddpm|ddpm-thesis", gm, T.metric("sample_seconds_per_image"))
                measured = T.fmt(v) if v is not None else "not measured (needs a ddpm run)"
            elif row["metric"] == "training_speedup_vs_flow":
                ips = T.first_of(T.timing("train_images_per_second"), T.metric("train_images_per_second"))
                v = _ratio(groups, gm, "resflow", ips)
                measured = T.fmt(v) if v is not None else "not measured (needs a resflow run)"
            elif getter is None:
                measured = "not measured"
            else:
                vals = T.values(recs, getter)
                if vals:
                    prefix = ""
                    if row["metric"] in ("bits_per_dim", "nll"):
                        kinds = {T.protocol(r, "bits_per_dim").get("kind") for r in T.ok(recs)}
                        prefix = "≤ " if "upper-bound" in kinds else ("≈ " if "estimate" in kinds else "")
                    measured = (T.fmt_int(vals[0]) if row["metric"] == "parameters" and len(set(vals)) == 1
                                else T.fmt_mean_std(vals, prefix))
                    info["matched"] += 1
                elif row["metric"] in ("bits_per_dim", "nll") and not T.has_likelihood(recs):
                    measured = T.NOT_DEFINED
                else:
                    measured = T.missing_cell(recs, {"nll": "bits_per_dim"}.get(row["metric"], row["metric"]))
            run_notes = ([how] if how else []) + notes
            reasons = comparability(row, recs, row["metric"])
            comparable = "yes" if not reasons else "no: " + "; ".join(reasons)
            rows.append([row["dataset"], row["model"], run, metric_label, published, measured, comparable,
                         "; ".join(dict.fromkeys(run_notes))])
    return headers, rows, info
