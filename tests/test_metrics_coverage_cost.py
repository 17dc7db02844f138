"""Class coverage (histogram, KL from uniform, confidence, label agreement) and the cost metric (FLOPs, MFU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from bench.metrics import coverage, cost, extractors
from bench.registry import Batch, DataSpec, GenerativeModel, Likelihood, Samples
from tests.metrics_helpers import FAST_RECIPE, Replay, digits_data, make_ctx


def test_kl_from_uniform_closed_forms():
    assert coverage.kl_from_uniform(torch.full((10,), 0.1, dtype=torch.float64)) == pytest.approx(0.0, abs=1e-12)
    one = torch.zeros(10, dtype=torch.float64)
    one[3] = 1.0
    assert coverage.kl_from_uniform(one) == pytest.approx(math.log(10))
    h = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    assert coverage.kl_from_uniform(h) == pytest.approx(sum(p * math.log(4 * p) for p in (0.5, 0.25, 0.25)))


def test_coverage_stats_on_crafted_logits():
    n, k = 100, 10
    logits = torch.zeros(n, k)
    logits[torch.arange(n), torch.arange(n) % 5] = 10.0  # 5 classes, confident
    logits[:20] = 0.0  # 20 ambiguous samples (argmax -> class 0)
    s = coverage.coverage_stats(logits, k, labels=torch.arange(n) % 5)
    assert s["confident"] == pytest.approx(0.8)
    hist = coverage.class_histogram(logits, k)
    assert hist[0] == pytest.approx((20 + 16) / 100) and hist[5:].sum() == 0
    assert s["classes"] == 5 and s["kl"] == pytest.approx(coverage.kl_from_uniform(hist))
    assert s["label_accuracy"] == pytest.approx(0.84)  # 80 confident + 4 ambiguous ones whose label is 0


def test_class_coverage_metric_on_real_images(tmp_path, monkeypatch):
    monkeypatch.setattr(extractors, "CLASSIFIER_RECIPE", {**extractors.CLASSIFIER_RECIPE, **FAST_RECIPE})
    train, real = digits_data(16)
    ctx = make_ctx(Replay(real.x), train, real, tmp_path)
    out = coverage.class_coverage(ctx)
    p = out["coverage_kl"]["protocol"]
    assert p["extractor"] == "digits-classifier" and p["classifier_test_accuracy"] is not None
    # replaying the real split: the generated histogram is the real one
    assert out["coverage_kl"]["value"] == pytest.approx(p["real_kl"])
    assert len(out["coverage_kl"]["histogram"]) == 10 and sum(out["coverage_kl"]["histogram"]) == pytest.approx(1, abs=1e-5)
    assert 0 <= out["coverage_confident"]["value"] <= 1 and out["coverage_classes"]["value"] >= 8
    # a model that only draws zeros covers one class
    zeros = real.x[real.y == 0]
    one = coverage.class_coverage(make_ctx(Replay(zeros), train, real, tmp_path, num_samples=len(zeros)))
    assert one["coverage_classes"]["value"] <= 2 and one["coverage_kl"]["value"] > 1.5


class LinearModel(GenerativeModel):
    """x -> W x: closed-form FLOPs (forward 2BD^2; backward only dW: 2BD^2; sampling 2D^2 per image)."""

    name = "linear-cost-test"
    family = "test"

    def __init__(self, data: DataSpec):
        super().__init__({}, data)
        self.lin = nn.Linear(data.dims, data.dims, bias=False)

    def loss(self, batch: Batch) -> torch.Tensor:
        x = batch.x.float().flatten(1) / 255
        return ((self.lin(x) - x) ** 2).mean()

    def sample(self, n, *, labels=None, generator=None, **sampler):
        z = torch.randn(n, self.data.dims, generator=generator)
        return Samples(torch.sigmoid(self.lin(z)).view(n, *self.data.shape), nfe=1)


def test_cost_flops_match_closed_form_and_model_untouched(tmp_path):
    train, real = digits_data(8)
    model = LinearModel(train.spec)
    model.optimizers = model.configure_optimizers()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = make_ctx(model, train, real, tmp_path, speed_batch=16)
    out = cost.cost(ctx)
    d = 64
    assert out["train_flops_per_image"]["value"] == pytest.approx(4 * d * d)
    assert out["sample_flops_per_image"]["value"] == pytest.approx(2 * d * d)
    assert out["sample_flops_per_nfe"]["value"] == pytest.approx(2 * d * d)
    assert out["peak_flops"]["value"] > 1e8 and 0 < out["train_mfu"]["value"] < 1.5
    assert out["peak_flops"]["protocol"]["peak_cache"] == "miss"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # steps ran on a copy
    again = cost.cost(ctx)
    assert again["peak_flops"]["protocol"]["peak_cache"] == "hit"
    assert again["peak_flops"]["value"] == out["peak_flops"]["value"]


def test_class_coverage_ignores_a_wrappers_own_label_notes(tmp_path, monkeypatch):
    """Wrappers may describe their labels in Samples.info (e.g. a GAN's "none"); only the harness's tensor of
    requested labels feeds the label accuracy, so such notes must not break the metric."""
    monkeypatch.setattr(extractors, "CLASSIFIER_RECIPE", {**extractors.CLASSIFIER_RECIPE, **FAST_RECIPE})
    train, real = digits_data(16)

    class Noted(Replay):
        def sample(self, n, **kw):
            s = super().sample(n, **kw)
            s.info["labels"] = "none"
            return s

    out = coverage.class_coverage(make_ctx(Noted(real.x), train, real, tmp_path))
    assert out["coverage_kl"]["value"] == pytest.approx(out["coverage_kl"]["protocol"]["real_kl"])
    assert "coverage_label_accuracy" not in out


class SharedDrawEstimate(GenerativeModel):
    """Likelihood whose estimator error is one draw shared by the batch (like a Russian-roulette truncation)."""

    name = "shared-draw-test"
    family = "test"
    has_likelihood = True

    def __init__(self, spec, batch_stderr=None, per_image_stderr=None):
        super().__init__({}, spec)
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.batch_se, self.image_se = batch_stderr, per_image_stderr

    def nll_bits_per_dim(self, batch):
        n = len(batch)
        stderr = None if self.image_se is None else torch.full((n,), self.image_se)
        return Likelihood(torch.full((n,), 3.0), kind="estimate", stderr=stderr, batch_stderr=self.batch_se)


def test_bits_per_dim_stderr_does_not_average_out_an_error_shared_by_the_batch(tmp_path):
    from bench.metrics import builtin

    train, real = digits_data(8)
    n_batches, bs, s = 4, 32, 0.2
    n = min(len(real), n_batches * bs)  # bpd_batches caps the evaluated images
    shared = builtin.bits_per_dim(make_ctx(SharedDrawEstimate(real.spec, batch_stderr=s), train, real, tmp_path,
                                           eval_batch_size=bs, bpd_batches=n_batches))["bits_per_dim"]
    independent = builtin.bits_per_dim(make_ctx(SharedDrawEstimate(real.spec, per_image_stderr=s), train, real,
                                                tmp_path, eval_batch_size=bs, bpd_batches=n_batches))["bits_per_dim"]
    batches = math.ceil(n / bs)
    # the mean of B batch means, each off by an independent error of std s: s / sqrt(B)
    assert shared["protocol"]["estimator_stderr"] == pytest.approx(s / math.sqrt(batches), rel=1e-6)
    # independent per-image errors: s / sqrt(N), much smaller
    assert independent["protocol"]["estimator_stderr"] == pytest.approx(s / math.sqrt(n), rel=1e-6)


class ConstantLikelihood(GenerativeModel):
    name, family, has_likelihood = "constant-lik-test", "test", True

    def __init__(self, spec, bpd, kind="exact", stderr=None):
        super().__init__({}, spec)
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.bpd, self.kind, self.se = bpd, kind, stderr

    def nll_bits_per_dim(self, batch):
        n = len(batch)
        return Likelihood(torch.full((n,), self.bpd), kind=self.kind,
                          stderr=None if self.se is None else torch.full((n,), self.se))


def test_a_negative_likelihood_is_an_error_not_a_number(tmp_path):
    """No distribution over 8-bit images gives -log2 P(x)/D < 0: the fence turns such a value into an error
    (the symptom of a coarse fixed-step ODE solve); a stochastic estimate within its own error of 0 stays."""
    from bench.metrics import builtin

    train, real = digits_data(8)
    bad = builtin.bits_per_dim(make_ctx(ConstantLikelihood(real.spec, -0.455, "upper-bound"), train, real, tmp_path,
                                        bpd_batches=1))["bits_per_dim"]
    assert bad["value"] is None and bad["note"].startswith("error: invalid likelihood") and "-0.455" in bad["note"]
    noisy = builtin.bits_per_dim(make_ctx(ConstantLikelihood(real.spec, -0.01, "estimate", stderr=1.0), train, real,
                                          tmp_path, bpd_batches=1))["bits_per_dim"]
    assert noisy["value"] == pytest.approx(-0.01)  # 3 estimator standard errors (1/sqrt(256) each) cover it
    nan = builtin.bits_per_dim(make_ctx(ConstantLikelihood(real.spec, float("nan")), train, real, tmp_path,
                                        bpd_batches=1))["bits_per_dim"]
    assert nan["value"] is None


def test_bits_per_dim_records_its_standard_error_as_stderr_not_std(tmp_path):
    """The record says what the error is: ``stderr`` (of the mean), never ``std`` (a spread). Constant bits/dim
    with a per-image estimator error of 1 has standard error 1/sqrt(n) and nothing from the data."""
    from bench.metrics import builtin

    train, real = digits_data(8)
    out = builtin.bits_per_dim(make_ctx(ConstantLikelihood(real.spec, 3.0, "estimate", stderr=1.0), train, real,
                                        tmp_path, bpd_batches=1))["bits_per_dim"]
    assert "std" not in out
    assert out["stderr"] == pytest.approx(1 / math.sqrt(out["n"]), rel=1e-9)
