"""The report's Search section: the points of each ``[search.<run>]`` grid side by side, ranked, the pick named.

A search is only worth its records if the pick can be read off them: each grid's points are ranked by FID (the
metric every mirrored comparison ranks by), mean over seeds, so the configuration a profile adopts afterwards is
the table's first row and not a hand-picked one. Points without an FID (a failed run) rank last.
"""

from __future__ import annotations

from bench.records import RunRecord
from bench.report import tables as T
from bench.report.findings import run_mean as _mean

RANK_BY = "fid"
COLUMNS = (("FID", "fid"), ("class-coverage KL", "coverage_kl"), ("bits/dim", "bits_per_dim"))


def searched_runs(groups: dict[str, list[RunRecord]]) -> list[str]:
    """The runs that are points of a ``[search]`` grid."""
    return [run for run, recs in groups.items() if (recs[0].search or {}).get("of")]


def search_tables(groups: dict[str, list[RunRecord]]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, headers, rows) per searched run, its points ranked by mean FID (best first)."""
    grids: dict[str, list[str]] = {}
    for run in searched_runs(groups):
        grids.setdefault(groups[run][0].search["of"], []).append(run)
    out = []
    for of, runs in grids.items():
        keys = list(dict.fromkeys(k for run in runs for k in groups[run][0].search.get("point", {})))
        shown = [(label, name) for label, name in COLUMNS if any(_mean(groups[r], name) is not None for r in runs)]
        ranked = sorted(runs, key=lambda r: (_mean(groups[r], RANK_BY) is None, _mean(groups[r], RANK_BY) or 0.0))
        rows = []
        for i, run in enumerate(ranked):
            recs, point = groups[run], groups[run][0].search.get("point", {})
            seeds = ", ".join(str(r.seed) for r in T.ok(recs)) or "none ok"
            rows.append([("**" + run + "**") if i == 0 and _mean(recs, RANK_BY) is not None else run]
                        + [str(point.get(k, "")) for k in keys]
                        + [T.fmt(_mean(recs, name)) for _, name in shown] + [seeds])
        best = ranked[0] if _mean(groups[ranked[0]], RANK_BY) is not None else None
        caption = (f"search over {of}: {len(runs)} points ranked by FID (mean over seeds); "
                   + (f"lowest: {best}" if best else "no point has an FID"))
        out.append((caption, ["run", *keys, *(label for label, _ in shown), "seeds"], rows))
    return out
