"""Exact bits/dim on a few evaluation images, for models whose ``bits_per_dim`` is a stochastic estimate.

The residual flow's log-det is a Russian-roulette power-series estimate; on small images its exact
value is affordable by brute force (log|det(I + J_g)| of every block from the full Jacobian). A wrapper
offers that path by declaring ``exact_bpd_max_dims`` (the largest C*H*W it affords) and accepting
``nll_bits_per_dim(batch, exact=True)``. This metric evaluates the first ``eval.exact_bpd_images``
test images both ways with equally seeded generators (the same dequantization noise), so the record
shows the exact value beside the estimate of the same images and the estimator's standard error.
"""

from __future__ import annotations

import math


from bench.metrics import EvalContext, Output, estimator_sum_variance, make_batch, mean_and_stderr, metric, value

DEFAULT_IMAGES = 8


@metric("bits_per_dim_exact", outputs={"bits_per_dim_exact": Output("lower")})
def bits_per_dim_exact(ctx: EvalContext) -> dict:
    """Mean exact bits/dim of the first K test images (``stderr``: their standard error over images);
    the protocol carries the estimate of the same images and its estimator standard error."""
    model = ctx.model
    if not model.has_likelihood:
        return {"bits_per_dim_exact": value(None, note="not defined (implicit model, no likelihood)")}
    max_dims = int(getattr(model, "exact_bpd_max_dims", 0) or 0)
    if not max_dims:
        return {"bits_per_dim_exact": value(None, note=f"not defined: {model.name} has no brute-force path "
                                            "(its bits_per_dim is exact already or has no exact counterpart)")}
    dims = model.data.dims
    if dims > max_dims:
        return {"bits_per_dim_exact": value(None, note=f"skipped: {dims} dimensions per image is above the "
                                            f"{max_dims} where {model.name}'s brute-force Jacobian is affordable")}
    k = min(int(ctx.eval_cfg.get("exact_bpd_images") or DEFAULT_IMAGES), len(ctx.real))
    was_training = model.training
    model.eval()
    try:
        with ctx.autocast():
            exact = model.nll_bits_per_dim(make_batch(ctx.real, 0, k, ctx.device, ctx.generator(offset=4)), exact=True)
            est = model.nll_bits_per_dim(make_batch(ctx.real, 0, k, ctx.device, ctx.generator(offset=4)), exact=False)
    finally:
        model.train(was_training)
    mean, se = mean_and_stderr(exact.bits_per_dim.detach().cpu())
    est_mean = float(est.bits_per_dim.double().mean())
    est_se = math.sqrt(estimator_sum_variance(est)) / k
    protocol = {"images": k, "split": ctx.real.name, "dequantization": "uniform (x+u)/256, one draw shared by both",
                "kind": exact.kind, "logdet": str(exact.info.get("logdet", "exact")), "precision": ctx.precision,
                "estimate": est_mean, "estimate_stderr": est_se,
                "estimate_z": (est_mean - mean) / est_se if est_se > 0 else None}
    return {"bits_per_dim_exact": value(mean, stderr=se, n=k, **protocol)}
