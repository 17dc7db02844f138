"""Evaluating a model: the suite's metrics under its main sampler, then (final evaluation only) the sample metrics
again under each sampler of its sweep, and the sample grid the report shows."""

from __future__ import annotations

from typing import Any, Callable

from bench import metrics

SAMPLE_GRID = 64  # images kept per run for the report's sample grid


def evaluate(make_context: Callable[[dict[str, Any], bool], metrics.EvalContext], names: list[str],
             main_sampler: dict[str, Any], samplers: dict[str, dict[str, Any]], final: bool
             ) -> tuple[dict[str, Any], metrics.Samples | None]:
    """(metrics, sample grid). Intermediate evaluations skip ``final_only`` metrics; the final one repeats the
    ``sampler_dependent`` metrics under each sweep entry (its options over the main sampler's), recorded as
    ``<key>@<label>``. :class:`bench.metrics.EvaluationStopped` propagates (a stop request)."""
    if not final:
        names = [n for n in names if not metrics.get(n).final_only]
    ctx = make_context(main_sampler, final)
    result = metrics.compute(names, ctx)
    if not final:
        return result, None
    sweep = [n for n in names if metrics.get(n).sampler_dependent]
    for label, options in samplers.items():
        for key, v in metrics.compute(sweep, make_context({**main_sampler, **options}, final)).items():
            result[f"{key}@{label}"] = v
    grid = ctx.samples() if ctx.drawn else ctx.draw(SAMPLE_GRID, offset=5)
    return result, grid
