"""Aggregation of result records into the report's tables (one row per model, mean ± std over seeds).

Every cell is text that is never blank or zero by accident: a metric a model cannot have is
"not defined" (no likelihood), a metric the suite did not compute is "n/a", and runs that
diverged or failed appear with their status and error.
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict
from typing import Any, Callable, Iterable

from bench.records import RunRecord, metric_error

Getter = Callable[[RunRecord], "float | None"]

NA = "n/a"
NOT_DEFINED = "not defined"
UNIFORM_BITS = 8.0  # bits/dim of uniform noise over 8-bit values: a model above it has not learned the data


# ---- reading one value out of a record ----------------------------------------------------------

def finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def metric_entry(record: RunRecord, *names: str) -> dict | None:
    """The entry of the first of ``names`` the record has (aliases tolerated)."""
    return next((m for m in map(record.metric, names) if m is not None), None)


def value_in(metrics: dict, *names: str) -> float | None:
    """The finite value of the first of ``names`` in a metrics mapping (a record's, or a curve point's)."""
    for n in names:
        m = metrics.get(n)
        if isinstance(m, dict) and finite(m.get("value")) is not None:
            return finite(m["value"])
        if finite(m) is not None:
            return finite(m)
    return None


def metric(*names: str) -> Getter:
    """Getter for the first of ``names`` present in ``record.metrics`` (aliases tolerated)."""
    return lambda record: value_in(record.metrics, *names)


def timing(*names: str) -> Getter:
    def get(record: RunRecord) -> float | None:
        t = record.timings
        for n in names:
            if finite(t.get(n)) is not None:
                return finite(t[n])
        return None

    return get


def first_of(*getters: Getter) -> Getter:
    def get(record: RunRecord) -> float | None:
        for g in getters:
            v = g(record)
            if v is not None:
                return v
        return None

    return get


def protocol(record: RunRecord, name: str) -> dict:
    m = metric_entry(record, name)
    return (m or {}).get("protocol") or {}


def sampler_warnings(groups: dict[str, list[RunRecord]]) -> list[str]:
    """One line per run and warning that a model put in its samples' ``info["warning"]`` (kept in the record's
    ``sampler_resolved`` and in each sampler-dependent metric's protocol), with the seeds it concerns: a number
    measured on such samples (NFE, FID) is not what the sampler promised."""
    seeds_of: dict[tuple[str, str], set] = {}
    for run, recs in groups.items():
        for r in recs:
            found = [r.sampler_resolved] + [(m.get("protocol") or {}).get("sampler_resolved")
                                           for m in (r.metrics or {}).values() if isinstance(m, dict)]
            for sr in found:
                if isinstance(sr, dict) and sr.get("warning"):
                    seeds_of.setdefault((run, str(sr["warning"])), set()).add(r.seed)
    return [f"`{run}` (seed {', '.join(str(s) for s in sorted(seeds))}): {warning}."
            for (run, warning), seeds in seeds_of.items()]


def seconds_per_batch(batch: int) -> Getter:
    """Sampling seconds for ``batch`` images: measured directly if the protocol's batch matches, else per image × batch
    (extrapolated from the timed batch; :func:`describe_batch_scaling` says which it was)."""

    def get(record: RunRecord) -> float | None:
        m = metric_entry(record, "sample_seconds_per_batch")
        if m and finite(m.get("value")) is not None and int((m.get("protocol") or {}).get("batch") or -1) == batch:
            return finite(m["value"])
        per = metric("sample_seconds_per_image")(record)
        return per * batch if per is not None else None

    return get


def timed_batch(record: RunRecord) -> int | None:
    """How many images the sampling-speed metric timed in one batch: its protocol's ``batch``, else the
    suite's ``eval.speed_batch`` from the record's ``eval_settings``; None when neither is recorded."""
    for v in (protocol(record, "sample_seconds_per_batch").get("batch"),
              record.eval_settings.get("speed_batch")):
        try:
            if v is not None and int(v) > 0:
                return int(v)
        except (TypeError, ValueError):
            pass
    return None


def batch_scaling(groups: "OrderedDict[str, list[RunRecord]]", batch: int) -> tuple[list[str], dict[str, list[str]]]:
    """Which models' ``seconds_per_batch(batch)`` was timed on exactly ``batch`` images, and which were scaled
    (seconds per image × ``batch``), keyed by the timed batch size (``"unknown"`` when not recorded)."""
    direct: list[str] = []
    scaled: dict[str, list[str]] = {}
    for name, recs in groups.items():
        timed = [r for r in ok(recs) if seconds_per_batch(batch)(r) is not None]
        if not timed:
            continue
        sizes = {timed_batch(r) for r in timed}
        if sizes == {batch}:
            direct.append(name)
        for size in sorted(sizes - {batch}, key=lambda x: (x is None, x or 0)):
            scaled.setdefault(str(size) if size is not None else "unknown", []).append(name)
    return direct, scaled


def describe_batch_scaling(groups: "OrderedDict[str, list[RunRecord]]", batch: int, header: str
                           ) -> tuple[str | None, bool]:
    """How the ``header`` column (seconds for ``batch`` images) was obtained, and whether any value in it was
    extrapolated from a different timed batch size."""
    direct, scaled = batch_scaling(groups, batch)
    if not scaled:
        return (f"`{header}`: timed directly on one batch of {batch} images." if direct else None), False
    parts = [f"{size} for {', '.join(models)}" if size != "unknown" else f"an unrecorded number for {', '.join(models)}"
             for size, models in scaled.items()]
    text = (f"`{header}` is extrapolated, not measured at {batch}: each run timed one batch of `eval.speed_batch` "
            f"images ({'; '.join(parts)}) and the column shows seconds per image × {batch}, which ignores how the "
            f"per-image cost changes with batch size.")
    if direct:
        text += f" Timed directly on {batch} images: {', '.join(direct)}."
    return text, True


def peak_memory(record: RunRecord) -> float | None:
    return first_of(timing("cuda_max_allocated_mb"), timing("peak_rss_mb"))(record)


def parameters(record: RunRecord) -> float | None:
    return finite(record.parameters)


# ---- number formatting --------------------------------------------------------------------------

def fmt(v: float | None) -> str:
    if v is None:
        return NA
    if v == 0:
        return "0"
    return f"{v:.4g}"


def fmt_std(v: float) -> str:
    return f"{v:.2g}"


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n-1); std None for a single value."""
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)


def fmt_mean_std(values: list[float], prefix: str = "") -> str:
    if not values:
        return NA
    m, s = mean_std(values)
    return prefix + (fmt(m) if s is None else f"{fmt(m)} ± {fmt_std(s)}")


def fmt_int(v: float | None) -> str:
    return NA if v is None else f"{int(round(v)):,}"


# ---- grouping ------------------------------------------------------------------------------------

def group_by_model(records: Iterable[RunRecord]) -> "OrderedDict[str, list[RunRecord]]":
    """Run name -> its records sorted by seed; models in order of first appearance, `reference` last."""
    groups: OrderedDict[str, list[RunRecord]] = OrderedDict()
    for r in records:
        groups.setdefault(r.model, []).append(r)
    for k in groups:
        groups[k].sort(key=lambda r: (r.seed is None, r.seed))
    ref = [k for k in groups if groups[k][0].family == "reference"]
    for k in ref:
        groups.move_to_end(k)
    return groups


def ok(recs: list[RunRecord]) -> list[dict]:
    return [r for r in recs if r.status == "ok"]


def values(recs: list[RunRecord], getter: Getter) -> list[float]:
    return [v for v in (getter(r) for r in ok(recs)) if v is not None]


def short(text: Any, n: int = 90) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


def status_cell(recs: list[RunRecord]) -> str:
    n_ok = len(ok(recs))
    if n_ok == len(recs):
        return "ok" if len(recs) == 1 else f"ok ({n_ok}/{len(recs)})"
    bad = [f"seed {r.seed} {r.status}: {short(r.error, 70)}" for r in recs if r.status != "ok"]
    head = f"ok {n_ok}/{len(recs)}; " if n_ok else ""
    return head + "; ".join(bad)


def has_likelihood(recs: list[RunRecord]) -> bool:
    r = recs[0]
    if r.has_likelihood is not None:
        return bool(r.has_likelihood)
    return r.family != "gan"


def bpd_cell(recs: list[RunRecord]) -> str:
    if not has_likelihood(recs):
        return NOT_DEFINED
    vals = values(recs, metric("bits_per_dim"))
    if not vals:
        return missing_cell(recs, "bits_per_dim")
    kinds = {protocol(r, "bits_per_dim").get("kind") for r in ok(recs)}
    prefix = "≤ " if "upper-bound" in kinds else ("≈ " if "estimate" in kinds else "")
    return fmt_mean_std(vals, prefix) + bpd_stderr_suffix(recs)


def bpd_stderr_suffix(recs: list[RunRecord]) -> str:
    """" (SE s)" or " (SE s, estimator e)": the standard error of the (seed-averaged) test-set mean that the
    records carry (the metric's ``stderr``: test images and a stochastic log-det's own error in quadrature),
    and the estimator's part alone (``estimator_stderr``) where it is not zero. Per-seed errors combine as
    the error of the mean of the seeds' means, sqrt(sum se_i^2) / k. "" when no record carries one."""
    entries = [e for e in (metric_entry(r, "bits_per_dim") for r in ok(recs))
               if e and finite(e.get("value")) is not None]
    ses = [finite(metric_error(e)) for e in entries]
    if not entries or any(v is None for v in ses):
        return ""
    k = len(entries)
    out = f" (SE {fmt_std(math.sqrt(sum(v * v for v in ses)) / k)}"
    est = [finite((e.get("protocol") or {}).get("estimator_stderr")) or 0.0 for e in entries]
    if any(est):
        out += f", estimator {fmt_std(math.sqrt(sum(v * v for v in est)) / k)}"
    return out + ")"


def missing_cell(recs: list[RunRecord], name: str | None = None) -> str:
    """Why a cell has no number: the runs' status, or the metric's own note (e.g. an error)."""
    if not ok(recs):
        return f"{NA} ({'/'.join(sorted({r.status for r in recs}))})"
    if name:
        for r in ok(recs):
            m = metric_entry(r, name)
            if m and m.get("note"):
                note = str(m["note"])
                return NOT_DEFINED if note.startswith("not defined") else f"{NA} ({short(note, 40)})"
    return NA


# The main table's sampling-time column: seconds for SAMPLE_BATCH images (seed 000's unit), scaled from the timed
# batch (eval.speed_batch) when that differs; the report says so under the table (describe_batch_scaling).
SAMPLE_BATCH = 128
SAMPLE_BATCH_HEADER = f"sample s / {SAMPLE_BATCH} img"

# The main table's columns after bits/dim, in this order first: a record key (its header from the metric's
# declaration, see bench.metrics.describe) or (header, key, getter) for a cell computed from several values. Every
# other declared output with a `column` follows (bench.metrics.columns), so a new metric needs no edit here.
MAIN_COLUMNS: list[str | tuple[str, str, Getter]] = [
    "fid", "is", "kid", "precision", "recall", "coverage_kl",
    ("train img/s", "train_images_per_second", timing("train_images_per_second")),
    (SAMPLE_BATCH_HEADER, "sample_seconds_per_batch", seconds_per_batch(SAMPLE_BATCH)),
    "sample_seconds_per_image", "nfe",
    ("peak mem (MB)", "peak_memory", peak_memory),
    "train_mfu", "sample_mfu",
]


def metric_columns() -> list[tuple[str, str, Getter]]:
    """(header, record key for notes, getter) of each main-table column after bits/dim.

    The declarations are read here, not at import: they import the metric modules (torch), which the
    `bench` command does not need for anything but running and reporting."""
    from bench import metrics

    ordered = [c if isinstance(c, tuple) else (metrics.describe(c).column, c, metric(c)) for c in MAIN_COLUMNS]
    listed = {key for _, key, _ in ordered} | {"bits_per_dim"}
    return ordered + [(header, key, metric(key)) for key, header in metrics.columns() if key not in listed]


def in_feature_space(name: str) -> bool:
    """Whether record key ``name`` is measured in eval.feature_extractor's space (its declaration says)."""
    from bench import metrics

    out = metrics.describe(name)
    return out is not None and out.feature_space


def space_header(header: str, name: str, groups: "OrderedDict[str, list[RunRecord]]") -> str:
    """A feature-space column's header with its space, e.g. ``FID (inception)``, ``FD (dinov2-vit-l-14)``: FID's
    formula outside Inception's space is an FD, and numbers of two spaces are never comparable."""
    if not in_feature_space(name):
        return header
    spaces = sorted({fe for recs in groups.values() for r in ok(recs)
                     if metric_entry(r, name) is not None and (fe := feature_extractor(r, name))})
    if not spaces:
        return header
    if header == "FID" and not all(fe.startswith("inception") for fe in spaces):
        header = "FD"
    return f"{header} ({', '.join(spaces)})"


def model_table(groups: "OrderedDict[str, list[RunRecord]]") -> tuple[list[str], list[list[str]], list[str]]:
    """The main table. Returns headers, rows and the headers of columns dropped because no run has them."""
    headers = ["model", "family", "status", "seeds", "parameters", "bits/dim"]
    rows = []
    for name, recs in groups.items():
        params = [v for v in (parameters(r) for r in recs) if v is not None]
        rows.append([name, str(recs[0].family or "?"), status_cell(recs),
                     ", ".join(str(r.seed) for r in recs),
                     fmt_int(params[0]) if params else NA, bpd_cell(recs)])
    dropped = []
    if rows and all(r[5] == NA for r in rows):
        dropped.append("bits/dim")
    for header, name, getter in metric_columns():
        cells = []
        for recs in groups.values():
            vals = values(recs, getter)
            cells.append(fmt_mean_std(vals) if vals else missing_cell(recs, name))
        if any(not c.startswith(NA) for c in cells):
            headers.append(space_header(header, name, groups))
            for row, c in zip(rows, cells):
                row.append(c)
        else:
            dropped.append(header)
    if "bits/dim" in dropped:
        i = headers.index("bits/dim")
        headers.pop(i)
        for row in rows:
            row.pop(i)
    return headers, rows, dropped


def runs_table(records: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """One row per run (model × seed): status, its budget, the compute it spent (steps, images, counted training
    FLOPs) and the wall time that took, final loss, error."""
    headers = ["model", "seed", "status", "budget", "steps", "images seen", "training FLOPs", "train s", "final loss",
               "error"]
    rows = []
    for r in sorted(records, key=lambda r: (r.model, r.seed or 0)):
        tr = r.train
        flops = finite(tr.get("flops"))
        rows.append([r.model, str(r.seed), str(r.status), describe_budget(r), fmt_int(finite(tr.get("steps"))),
                     fmt_int(finite(tr.get("images"))), f"{flops:.3g}" if flops else NA,
                     fmt(timing("train_seconds")(r)), fmt(finite(tr.get("loss_last"))),
                     short(r.error, 120) if r.error else "—"])
    return headers, rows


def describe_budget(record: RunRecord) -> str:
    b = record.budget
    v = finite(b.get("value"))
    if v is None:
        return "unknown budget"
    if b.get("kind") == "flops":
        return f"{v:.3g} flops"
    return f"{int(v) if v.is_integer() else v} {b.get('kind')}"


def describe_budgets(records: list[RunRecord]) -> str:
    """The budget most runs share, and the runs that had their own (a floor's steps, a ladder's shorter rung)."""
    described = {r.model: describe_budget(r) for r in records}
    texts = list(described.values())
    common = max(texts, key=texts.count) if texts else "unknown budget"
    own = [f"{model}: {text}" for model, text in described.items() if text != common]
    return f"{common} per run" + (f" ({'; '.join(own)})" if own else "")


def describe_hardware(record: RunRecord) -> str:
    hw = record.hardware
    if hw.get("gpu"):
        return f"{hw['gpu']} ×{hw.get('gpu_count', 1)}"
    if hw.get("cpu"):
        return f"{hw['cpu']} ({hw.get('cpu_count', '?')} cores, {hw.get('torch_threads', '?')} torch threads), {hw.get('device', 'cpu')}"
    return "unknown hardware"


def describe_hardware_of(records: list[RunRecord]) -> str:
    """The hardware of a set of runs: one description, or each distinct one with the runs it holds, so a
    wall-clock budget spent on two CPUs never reads as one machine's result."""
    runs: dict[str, list[str]] = {}
    for r in records:
        runs.setdefault(describe_hardware(r), []).append(f"{r.model} seed {r.seed}")
    if len(runs) <= 1:
        return next(iter(runs), "unknown hardware")
    return "; ".join(f"{hw} [{', '.join(names)}]" for hw, names in runs.items())


def feature_extractor(record: RunRecord, name: str = "fid") -> str | None:
    """The feature extractor a sample metric used (its protocol), else the suite's setting."""
    p = protocol(record, name)
    for key in ("feature_extractor", "extractor", "features"):
        if p.get(key):
            return str(p[key])
    fe = record.eval_settings.get("feature_extractor")
    if fe and metric_entry(record, name) is not None:
        return str(fe)
    return None
