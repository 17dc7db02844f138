"""Plots (seaborn on matplotlib's Agg backend, saved as PNG). Each function returns the PNG path,
or None and a note saying why the plot was skipped (its data is absent from the records)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.records import RunRecord  # noqa: E402
from bench.report import tables as T  # noqa: E402

DPI = 110


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def quality_metric(records: list[RunRecord]) -> tuple[str, str] | None:
    """The quality metric to plot: FID where measured, else bits/dim."""
    for name, label in (("fid", "FID"), ("bits_per_dim", "bits/dim")):
        if any(T.metric(name)(r) is not None for r in T.ok(records)):
            return name, label
        if any(T.value_in(p.get("metrics") or {}, name) is not None
               for r in records for p in r.curve):
            return name, label
    return None


def training_flops(record: RunRecord, point: dict, images: float | None) -> float | None:
    """Training FLOPs spent up to an evaluation: counted under a flops budget, else images x the cost metric's
    FLOPs per training image (None where neither was measured)."""
    if point.get("flops"):
        return float(point["flops"])
    per_image = T.metric("train_flops_per_image")(record)
    return per_image * images if per_image and images else None


def compute_curve(records: list[RunRecord], name: str) -> pd.DataFrame:
    """One row per (model, seed, budget fraction): the compute spent (FLOPs, images, seconds) and the quality there.
    The final evaluation is fraction 1; diverged/failed runs keep their intermediate evaluations."""
    rows = []
    for r in records:
        points = [(p.get("fraction"), p, T.value_in(p.get("metrics") or {}, name)) for p in r.curve]
        if r.status == "ok":
            points.append((1.0, {**r.train, "train_seconds": r.timings.get("train_seconds")}, T.metric(name)(r)))
        for fraction, p, v in points:
            if v is not None and fraction is not None:
                rows.append({"model": r.model, "family": r.family, "seed": r.seed, "fraction": float(fraction),
                             "images": p.get("images"), "flops": training_flops(r, p, p.get("images")),
                             "seconds": p.get("train_seconds"), "quality": v})
    return pd.DataFrame(rows)


def quality_vs_compute(records: list[RunRecord], path: Path) -> tuple[Path | None, str]:
    """Quality against training compute (FLOPs where every trained model has them, else images) and against wall
    time, both on log axes: per model the mean over seeds at each budget fraction, with a ±sd band (seeds at one
    fraction spent nearly the same compute, so they are averaged there instead of drawn as a zigzag). The real-data
    row is a horizontal floor; the `reference` model, whose cheap steps would stretch the x-axis, is a horizontal
    line at its final value instead of a curve."""
    q = quality_metric(records)
    if q is None:
        return None, "quality vs training compute: no FID or bits/dim in the records"
    name, label = q
    df = compute_curve(records, name)
    if df.empty:
        return None, "quality vs training compute: no evaluations in the records"
    flat = df[df["family"].isin(["real-data", "reference"])]
    curves = df[~df["family"].isin(["real-data", "reference"])]
    if curves.empty or curves.groupby("model")["fraction"].nunique().max() < 2:
        return None, ("quality vs training compute: fewer than two evaluations per model "
                      "(set train.eval_fractions, e.g. [0.25, 0.5, 1.0], to evaluate during training)")
    xcol, xlabel = (("flops", "training FLOPs (counted matmul/conv/attention)") if curves["flops"].notna().all()
                    else ("images", "training images seen"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    n_models = curves["model"].nunique()
    colours = sns.color_palette("tab10" if n_models <= 10 else "husl", n_models)
    palette = dict(zip(sorted(curves["model"].unique()), colours))
    for ax, x, xl in zip(axes, (xcol, "seconds"), (xlabel, "training seconds (wall clock, this machine)")):
        for model, g in curves.groupby("model"):
            agg = g.groupby("fraction").agg(x=(x, "mean"), mean=("quality", "mean"), sd=("quality", "std"),
                                            n=("seed", "nunique")).dropna(subset=["x"]).sort_index()
            if agg.empty:
                continue
            n = int(agg["n"].max())
            ax.plot(agg["x"], agg["mean"], marker="o", color=palette[model], label=f"{model} (n={n})")
            sd = agg["sd"].fillna(0.0)
            ax.fill_between(agg["x"], agg["mean"] - sd, agg["mean"] + sd, color=palette[model], alpha=0.2, lw=0)
        for model, g in flat.groupby("model"):
            real = g["family"].iloc[0] == "real-data"
            ax.axhline(g["quality"].mean(), color="black" if real else "grey", ls="--" if real else ":", lw=1.2,
                       label=f"{model} ({'floor' if real else 'final value'})")
        ax.set_xscale("log")
        # labels at 1, 2 and 5 of every decade: a range within one decade keeps labels, minor ones never overlap
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.LogFormatterSciNotation(labelOnlyBase=False))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if label == "FID" and (df["quality"] > 0).all() and df["quality"].max() / df["quality"].min() > 20:
            ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel(label)
        ax.set_title(f"{label} vs {xl.split(' (')[0]} (mean ± sd over seeds)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path), ""


def speed_quality(groups: dict[str, list[RunRecord]], path: Path) -> tuple[Path | None, str]:
    q = quality_metric([r for recs in groups.values() for r in recs])
    if q is None:
        return None, "speed–quality trade-off: no FID or bits/dim in the records"
    name, label = q
    rows = []
    for model, recs in groups.items():
        for r in T.ok(recs):
            s, v = T.metric("sample_seconds_per_image")(r), T.metric(name)(r)
            if s is not None and v is not None and s > 0:
                rows.append({"model": model, "family": r.family or "?", "sampling seconds per image": s, label: v})
    df = pd.DataFrame(rows)
    if df.empty:
        return None, f"speed–quality trade-off: no run has both sampling latency and {label}"
    agg = df.groupby(["model", "family"], as_index=False).mean(numeric_only=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sns.scatterplot(data=agg, x="sampling seconds per image", y=label, hue="family", s=80, ax=ax)
    for _, row in agg.iterrows():
        ax.annotate(row["model"], (row["sampling seconds per image"], row[label]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_title("speed–quality trade-off (lower-left is better)")
    return _save(fig, path), ""


def nfe_points(record: RunRecord, name: str) -> list[tuple[str, float, float]]:
    """(sampler, NFE, quality) points of one record: its main evaluation and any per-sampler metrics
    named ``<metric>@<sampler>`` with ``nfe@<sampler>`` (as the metrics module records sampler sweeps). Entries with
    a guidance weight other than 1 are left out: their NFE changes with guidance, not with the sampler's steps."""
    def guided(settings: Any) -> bool:  # a guidance sweep trades fidelity for diversity, not steps for quality
        return isinstance(settings, dict) and float(settings.get("guidance", 1.0) or 0.0) != 1.0

    out = []
    nfe, v = T.metric("nfe")(record), T.metric(name)(record)
    if nfe is not None and v is not None and not guided(record.sampler):
        sampler = record.sampler
        out.append((str(sampler.get("name") or "default"), nfe, v))
    for key in record.metrics:
        if key.startswith(f"{name}@"):
            tag = key.split("@", 1)[1]
            if guided((record.samplers or {}).get(tag)):
                continue
            n2, v2 = T.metric(f"nfe@{tag}")(record), T.metric(key)(record)
            if n2 is not None and v2 is not None:
                out.append((tag, n2, v2))
    return out


def nfe_quality_points(records: list[RunRecord], name: str) -> pd.DataFrame:
    """The NFE-vs-quality points: columns trained model, point, NFE, mean, sd, seeds. One line per trained model:
    runs of one wrapper with the same training config (differing only in their sampler tables) share a line; runs
    trained differently (cfm vs cfm-cfg, ddpm vs ddpm-mu) never do. A point is one sampler of one run, its seeds
    averaged (an adaptive solver's NFE varies by seed, and seeds are not a sampler sweep). Only lines with two or
    more points are kept."""
    def line_key(r: RunRecord) -> tuple[str, str]:
        return r.registered or r.model, json.dumps(r.config, sort_keys=True, default=str)

    trained: dict[tuple[str, str], list[str]] = {}
    for r in T.ok(records):
        trained.setdefault(line_key(r), []).append(r.model)
    names = {key: " / ".join(dict.fromkeys(runs)) for key, runs in trained.items()}
    rows = [{"trained model": names[line_key(r)], "point": f"{r.model}@{sampler}", "NFE": nfe, "value": v}
            for r in T.ok(records) for sampler, nfe, v in nfe_points(r, name)]
    columns = ["trained model", "point", "NFE", "mean", "sd", "seeds"]
    if not rows:
        return pd.DataFrame(columns=columns)
    points = pd.DataFrame(rows).groupby(["trained model", "point"]).agg(
        NFE=("NFE", "mean"), mean=("value", "mean"), sd=("value", "std"), seeds=("value", "size")).reset_index()
    points["sd"] = points["sd"].fillna(0.0)
    return points[points.groupby("trained model")["point"].transform("size") >= 2][columns]


def nfe_vs_quality(records: list[RunRecord], path: Path) -> tuple[Path | None, str]:
    q = quality_metric(records)
    if q is None:
        return None, "NFE vs quality: no FID or bits/dim in the records"
    name, label = q
    points = nfe_quality_points(records, name)
    if points.empty:
        return None, ("NFE vs quality: no model was evaluated with two or more samplers/step counts "
                      "(add a sweep to a model, e.g. samplers = { ddim-5 = { steps = 5 } } in its [models.X] table, "
                      "or several runs of one wrapper with different sampler tables)")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for line, g in points.groupby("trained model"):
        g = g.sort_values("NFE")
        ax.errorbar(g["NFE"], g["mean"], yerr=g["sd"], marker="o", capsize=3, label=line)
    ax.set_xscale("log")
    ax.set_xlabel("NFE (mean over seeds)")
    ax.set_ylabel(label)
    ax.legend(title="trained model")
    ax.set_title(f"NFE vs {label} per model (mean ± sd over seeds)")
    return _save(fig, path), ""


def loss_curves(records: list[RunRecord], path: Path) -> tuple[Path | None, str]:
    rows = []
    for r in records:
        for point in r.train.get("loss_curve") or []:
            if len(point) >= 2 and T.finite(point[1]) is not None:
                rows.append({"model": r.model, "seed": str(r.seed), "step": point[0], "loss": point[1]})
    df = pd.DataFrame(rows)
    if df.empty:
        return None, "training loss curves: no loss curve in the records"
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = df["seed"].nunique() > 1
    sns.lineplot(data=df, x="step", y="loss", hue="model", hue_order=sorted(df["model"].unique()),
                 style="seed" if styles else None, ax=ax, errorbar=None)
    if (df["loss"] > 0).all() and df["loss"].max() / max(df["loss"].min(), 1e-12) > 20:
        ax.set_yscale("log")
    ax.set_title("training loss (each model's own objective: not comparable across families)")
    return _save(fig, path), ""


def bpd_bars(groups: dict[str, list[RunRecord]], path: Path) -> tuple[Path | None, str]:
    """Bars of test bits/dim (mean, ± sd over seeds) beside the reference floor. Models whose mean is worse than
    uniform noise are left off the bars and named in the note: such a bar says only "not learned", and its height
    would squeeze every model that did learn against zero."""
    rows, floor, off = [], None, []
    for model, recs in groups.items():
        vals = T.values(recs, T.metric("bits_per_dim"))
        if vals and sum(vals) / len(vals) > T.UNIFORM_BITS:
            off.append(f"{model} ({T.fmt(sum(vals) / len(vals))})")
            continue
        for v in vals:
            rows.append({"model": model, "bits/dim": v})
        if vals and recs[0].family == "reference":
            floor = sum(vals) / len(vals)
    df = pd.DataFrame(rows)
    note = (f"left off the bits/dim bars, worse than uniform noise ({T.UNIFORM_BITS:g} bits/dim): {', '.join(off)}"
            if off else "")
    if df.empty:
        return None, note or "bits/dim bars: no run measured bits/dim"
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * df["model"].nunique() + 2), 4))
    sns.barplot(data=df, x="model", y="bits/dim", ax=ax, errorbar="sd", color="#4c72b0")
    if floor is not None and math.isfinite(floor):
        ax.axhline(floor, color="#c44e52", linestyle="--", label=f"reference floor {floor:.3g}")
        ax.legend()
    ax.set_title("test bits/dim (lower is better)")
    ax.tick_params(axis="x", rotation=20)
    return _save(fig, path), note


def class_histograms(groups: dict[str, list[RunRecord]], path: Path) -> tuple[Path | None, str]:
    rows = []
    for model, recs in groups.items():
        for r in T.ok(recs)[:1]:
            hist = class_histogram(r)
            if hist:
                total = sum(hist) or 1
                rows += [{"model": model, "class": str(k), "fraction": c / total} for k, c in enumerate(hist)]
    df = pd.DataFrame(rows)
    if df.empty:
        return None, "class-coverage histograms: no class histogram in the records (add the class-coverage metric)"
    n = df["model"].nunique()
    g = sns.catplot(data=df, x="class", y="fraction", col="model", kind="bar", col_wrap=min(n, 3),
                    height=2.6, aspect=1.3, color="#55a868")
    for ax in g.axes.flat:
        k = df["class"].nunique()
        ax.axhline(1 / k, color="black", linestyle=":", linewidth=1)
    g.figure.suptitle("class histogram of generated samples (dotted: uniform)", y=1.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    g.figure.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(g.figure)
    return path, ""


def class_histogram(record: RunRecord) -> list[float] | None:
    """A class histogram stored by the class-coverage metric (tolerant of where it keeps it)."""
    for name, m in record.metrics.items():
        if not isinstance(m, dict):
            continue
        for holder in (m, m.get("protocol") or {}):
            for key in ("histogram", "class_histogram", "counts", "class_counts"):
                h = holder.get(key)
                if isinstance(h, list) and h and all(T.finite(x) is not None for x in h):
                    return [float(x) for x in h]
                if isinstance(h, dict) and h:
                    try:
                        return [float(h[k]) for k in sorted(h, key=lambda s: int(s))]
                    except (TypeError, ValueError):
                        continue
    return None
