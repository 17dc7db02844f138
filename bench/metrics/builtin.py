"""Metrics every family shares: bits/dim on the test split and sampling latency."""

from __future__ import annotations

import math

import torch

from bench.metrics import EvalContext, Output, estimator_sum_variance, make_batch, metric, resolved_sampler, value


@metric("bits_per_dim", outputs={"bits_per_dim": Output("lower")})
def bits_per_dim(ctx: EvalContext) -> dict:
    """Mean bits/dim of the 8-bit evaluation images; ``stderr`` is the standard error of that mean.

    For stochastic estimators (residual flows, Hutchinson) the estimator's own standard error
    is added in quadrature and also reported separately; so is the measured discretisation error
    of a fixed-step ODE solve (``solver_error``: the mean over images, being systematic).
    """
    model = ctx.model
    if not model.has_likelihood:
        return {"bits_per_dim": value(None, note="not defined (implicit model, no likelihood)")}
    bs = int(ctx.eval_cfg.get("eval_batch_size") or 256)
    max_batches = int(ctx.eval_cfg.get("bpd_batches") or 0)
    n_total = len(ctx.real) if not max_batches else min(len(ctx.real), max_batches * bs)
    gen = ctx.generator(offset=1)
    per_image, est_var, kinds, info = [], 0.0, set(), {}
    solver_error_sum, has_solver_error = 0.0, False
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n_total, bs):
            batch = make_batch(ctx.real, start, min(start + bs, n_total), ctx.device, gen)
            with ctx.autocast():
                lik = model.nll_bits_per_dim(batch)
            per_image.append(lik.bits_per_dim.detach().double().cpu())
            est_var += estimator_sum_variance(lik)
            if lik.solver_error is not None:
                solver_error_sum += float(lik.solver_error.detach().double().sum())
                has_solver_error = True
            kinds.add(lik.kind)
            info.update(lik.info)
    finally:
        model.train(was_training)
    bpd = torch.cat(per_image)
    n = bpd.numel()
    data_se = float(bpd.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
    est_se = math.sqrt(est_var) / n
    kind = "upper-bound" if "upper-bound" in kinds else ("estimate" if "estimate" in kinds else "exact")
    protocol = {"dequantization": "uniform (x+u)/256", "split": ctx.real.name, "precision": ctx.precision}
    protocol.update({k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))})  # the model knows best
    protocol.update(kind=kind, estimator_stderr=est_se)
    solver_error = solver_error_sum / n if has_solver_error else 0.0
    if has_solver_error:
        protocol["solver_error"] = solver_error
    mean = float(bpd.mean())
    # a solver error does not widen the fence: it is a bias, so a negative mean is wrong, whatever its size
    if not math.isfinite(mean) or mean < -3 * est_se:
        # the validity fence: -log2 P(x)/D of an 8-bit image is >= 0 for any distribution over the 256 values a
        # pixel takes; a mean below 0 (beyond a stochastic estimator's own error) is a wrong computation
        # (e.g. a coarse fixed-step ODE solve of a sharp field), so it is an error, not a number
        return {"bits_per_dim": value(None, note=f"error: invalid likelihood: mean {mean:.4g} bits/dim is below 0, "
                                      f"which no distribution over 8-bit images can give; the {kind} computation is "
                                      "wrong for this model (for ODE likelihoods: use an adaptive solver)", **protocol)}
    return {"bits_per_dim": value(mean, stderr=math.sqrt(data_se ** 2 + est_se ** 2 + solver_error ** 2), n=n,
                                  **protocol)}


# Sampling latency is the minimum over repeated timed batches (noise on a shared machine only ever adds
# time): batches are timed until SPEED_BUDGET_S seconds are spent or SPEED_MAX_BATCHES are timed, so a
# 0.1 s smoke batch is timed 5 times and a minutes-long paper batch once.
SPEED_BUDGET_S = 1.0
SPEED_MAX_BATCHES = 5


@metric("sampling_speed", sampler_dependent=True, final_only=True, outputs={
    "sample_seconds_per_batch": Output("lower", "timing"),
    "sample_seconds_per_image": Output("lower", "timing", column="sample s / img"),
    "nfe": Output("lower", column="NFE"),
    "sample_*": Output(),  # what the sampler reports (steps, eta, guidance, ...): descriptions, not results
})
def sampling_speed(ctx: EvalContext) -> dict:
    """Seconds to sample one batch of ``eval.speed_batch`` images (warm-up excluded, device synced;
    the minimum over up to SPEED_MAX_BATCHES timed batches, see above).

    The protocol's ``sampler`` is what the suite wrote; ``sampler_resolved`` is what the model
    reports having used (its ``Samples.info`` scalars: solver, steps, timestep spacing, eta, ...),
    defaults included, so e.g. DDIM's default 'linspace' spacing is visible in the record."""
    n = int(ctx.eval_cfg.get("speed_batch") or 128)
    times = []
    with ctx.sampling():
        ctx.timed_sample(min(n, 4), offset=2)  # warm-up: allocations, lazy init
        while not times or (sum(times) < SPEED_BUDGET_S and len(times) < SPEED_MAX_BATCHES):
            ctx.check_stop()
            out, t = ctx.timed_sample(n, offset=3)  # the same batch each time
            times.append(t)
    seconds = min(times)
    proto = dict(batch=n, sampler=dict(ctx.sampler), sampler_resolved=resolved_sampler(out), precision=ctx.precision,
                 device=str(ctx.device), warmup=1, timed_batches=len(times), statistic="min")
    res = {"sample_seconds_per_batch": value(seconds, **proto),
           "sample_seconds_per_image": value(seconds / n, **proto),
           "nfe": value(out.nfe, **proto) if out.nfe is not None else value(None, note="not reported", **proto)}
    for k, v in out.info.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            res[f"sample_{k}"] = value(v, **proto)
    return res
