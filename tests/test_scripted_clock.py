"""MFU and training throughput under a scripted clock: exact values, so an off-by-k or a warm-up step counted
as steady shows as a wrong number rather than hiding in the noise of a real clock."""

from __future__ import annotations

import itertools

import pytest

from bench import runner
from bench.metrics import cost
from tests.metrics_helpers import digits_data, make_ctx
from tests.test_budget import make_trainer
from tests.test_metrics_coverage_cost import LinearModel


def test_mfu_is_flops_over_seconds_per_step_over_peak(tmp_path, monkeypatch):
    """Every clock read advances 1 s: the k = 3 timed training steps take 1/3 s each, one timed sampling call
    1 s. LinearModel's FLOPs are closed-form: 4 D^2 per training image, 2 D^2 per sample (D = 64)."""
    ticks = itertools.count()
    monkeypatch.setattr(cost.time, "perf_counter", lambda: float(next(ticks)))
    monkeypatch.setattr(cost, "peak_flops", lambda ctx: (1e9, {"peak_cache": "scripted"}))
    train, real = digits_data(8)
    model = LinearModel(train.spec)
    model.optimizers = model.configure_optimizers()
    out = cost.cost(make_ctx(model, train, real, tmp_path, speed_batch=16))
    d, batch, k = 64, 16, 3
    train_flops_per_step = 4 * d * d * batch
    assert out["train_flops_per_second"]["value"] == pytest.approx(train_flops_per_step * k)
    assert out["train_mfu"]["value"] == pytest.approx(train_flops_per_step * k / 1e9)
    assert out["sample_mfu"]["value"] == pytest.approx(2 * d * d * batch / 1.0 / 1e9)


def test_throughput_counts_steady_steps_only(tmp_path, monkeypatch):
    """Warm-up steps (the first `train.warmup_steps`) take 10 s each on the scripted clock, steady ones 1 s:
    throughput is exactly batch / 1 s; counting a warm-up image or second would move it."""
    now = [0.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: now[0])
    tr = make_trainer(tmp_path, "{ steps = 7 }", batch_size=32)
    warmup = int(tr.suite.train["warmup_steps"])
    assert 0 < warmup < 7
    original = tr.model.training_step

    def scripted(batch, step):
        now[0] += 10.0 if step < warmup else 1.0
        return original(batch, step)

    tr.model.training_step = scripted
    tr.train()
    assert tr.state.steady_images == (7 - warmup) * 32 and tr.state.steady_seconds == pytest.approx(7 - warmup)
    assert tr.throughput() == pytest.approx(32.0)
    assert tr.state.train_seconds == pytest.approx(10.0 * warmup + (7 - warmup))  # the budget sees every step
