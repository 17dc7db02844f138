"""FID / IS / KID / precision-recall: formulas against independent computations, the pipeline, the reference cache."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch

from bench.metrics import extractors, fidelity
from tests.metrics_helpers import FAST_RECIPE, Replay, digits_data, make_ctx


@pytest.fixture(autouse=True)
def fast_classifier(monkeypatch):
    """A few-step domain classifier: these tests need a fixed feature map, not a good one."""
    monkeypatch.setattr(extractors, "CLASSIFIER_RECIPE", {**extractors.CLASSIFIER_RECIPE, **FAST_RECIPE})


@pytest.fixture(scope="module")
def digits():
    return digits_data(16)


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory, digits):
    """A cache folder holding the (fast) domain classifier, trained once for this module."""
    root = tmp_path_factory.mktemp("classifier-cache")
    train, real = digits
    extractors.domain_classifier(train, real, root, "digits", recipe=FAST_RECIPE)
    return root


@pytest.fixture
def cache(tmp_path, trained_cache):
    """A fresh cache folder (no reference statistics) with the module's classifier copied in."""
    shutil.copytree(trained_cache / "classifiers", tmp_path / "classifiers")
    return tmp_path


def scipy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """Independent Fréchet distance: ||mu1-mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)) with scipy's sqrtm."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_matches_scipy_frechet_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(600, 24, generator=g, dtype=torch.float64)
    b = 0.7 * torch.randn(500, 24, generator=g, dtype=torch.float64) @ torch.randn(24, 24, generator=g,
                                                                                   dtype=torch.float64) * 0.3 + 0.5
    ref = {"mu": torch.from_numpy(fidelity.fid_statistics(b)["mu"]),
           "sigma": torch.from_numpy(fidelity.fid_statistics(b)["sigma"])}
    ours = fidelity.frechet_distance(a, ref)
    theirs = scipy_fid(a.numpy(), b.numpy())
    assert theirs > 1.0
    assert ours == pytest.approx(theirs, rel=1e-6)


def confident_logits(n: int, k: int, used: int) -> torch.Tensor:
    logits = torch.full((n, k), -20.0)
    logits[torch.arange(n), torch.arange(n) % used] = 20.0  # classes 0..used-1 equally often, confidently
    return logits


def test_inception_score_approaches_number_of_classes():
    k = 10
    # one split: exactly uniform marginal, p(y|x) one-hot -> IS = exp(log K) = K
    assert fidelity.inception_score(confident_logits(2000, k, k), splits=1)[0] == pytest.approx(k, rel=1e-6)
    # torch-fidelity's 10 shuffled splits: the split marginals fluctuate, IS -> K as the splits grow
    scores = [fidelity.inception_score(confident_logits(n, k, k))[0] for n in (500, 5000, 50000)]
    assert scores[0] < scores[1] < scores[2] < k and scores[2] == pytest.approx(k, rel=2e-3)
    assert fidelity.inception_score(confident_logits(2000, k, 5), splits=1)[0] == pytest.approx(5, rel=1e-6)
    assert fidelity.inception_score(torch.zeros(2000, k))[0] == pytest.approx(1.0, abs=1e-6)  # no confidence


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(digits, cache):
    train, real = digits
    values = []
    for noise in (0.0, 0.1, 0.3):
        ctx = make_ctx(Replay(real.x, noise=noise), train, real, cache)
        values.append(fidelity.fid(ctx)["fid"]["value"])
    assert abs(values[0]) < 1e-6 * max(1.0, values[1])
    assert 0 < values[1] < values[2]


def test_pipeline_protocol_and_other_metrics(digits, cache):
    train, real = digits
    ctx = make_ctx(Replay(real.x, noise=0.2), train, real, cache, repeats=2)
    out = {}
    for name in ("fid", "is", "kid", "precision_recall"):
        out.update(fidelity.__dict__[{"fid": "fid", "is": "inception_score_metric", "kid": "kid",
                                      "precision_recall": "precision_recall_metric"}[name]](ctx))
    p = out["fid"]["protocol"]
    assert p["extractor"] == "digits-classifier" and p["feature_layer"] == "192"
    assert p["extractor_weights_sha256"] and p["grey_to_rgb"] and p["repeats"] == 2
    assert p["real_split"] == real.name and p["real_count"] == len(real) and p["generated"] == len(real)
    assert p["nfe"] == 1 and p["precision"] == "fp32" and p["device"] == "cpu" and "uint8" in p
    assert out["fid"]["n"] == 2 and "std" in out["fid"] and len(p["per_repeat"]) == 2
    assert p["per_repeat"][0] != p["per_repeat"][1]  # repeat 1 draws a fresh sample set
    assert 1.0 <= out["is"]["value"] <= 10.0
    assert out["kid"]["value"] > 0
    assert 0.0 <= out["precision"]["value"] <= 1.0 and 0.0 <= out["recall"]["value"] <= 1.0
    # features of the generated images are computed once per repeat and shared by all metrics
    assert sum(1 for k in ctx._fidelity_state if k[0] == "features") == 2


def independent_kid_identical(f: torch.Tensor) -> float:
    """Unbiased MMD^2 (poly kernel (x.y/d + 1)^3) of a set against itself, as KID with subset = whole set."""
    x = f.double()
    k = (x @ x.T / x.shape[1] + 1) ** 3
    n = len(x)
    s, tr = float(k.sum()), float(k.diagonal().sum())
    return 2 * (s - tr) / (n * (n - 1)) - 2 * s / n ** 2


def test_kid_and_precision_recall_of_identical_sets(digits, cache):
    train, real = digits
    ctx = make_ctx(Replay(real.x), train, real, cache)
    kid = fidelity.kid(ctx)["kid"]
    assert kid["protocol"]["kid_subset_size"] == len(real)  # every subset is the whole set
    feats = fidelity.generated_features(ctx, extractors.get_extractor(ctx), 0)["192"]
    assert kid["value"] == pytest.approx(independent_kid_identical(feats), rel=1e-4)
    noisy = fidelity.kid(make_ctx(Replay(real.x, noise=0.3), train, real, cache))["kid"]["value"]
    assert noisy > 10 * abs(kid["value"])
    pr = fidelity.precision_recall_metric(ctx)
    assert pr["precision"]["value"] == 1.0 and pr["recall"]["value"] == 1.0


def test_reference_statistics_cached_and_invalidated(digits, cache, monkeypatch):
    train, real = digits
    calls = []
    original = fidelity._extract_real

    def counting(ext, x, device):
        calls.append(len(x))
        return original(ext, x, device)

    monkeypatch.setattr(fidelity, "_extract_real", counting)
    first = fidelity.fid(make_ctx(Replay(real.x, noise=0.1), train, real, cache))["fid"]
    assert len(calls) == 1 and first["protocol"]["reference_cache"] == "miss"
    second = fidelity.fid(make_ctx(Replay(real.x, noise=0.1), train, real, cache))["fid"]
    assert len(calls) == 1, "the second evaluation must read the cached reference statistics"
    assert second["protocol"]["reference_cache"] == "hit" and second["value"] == pytest.approx(first["value"])
    # a different preprocessing -> a different key -> recomputed
    monkeypatch.setattr(fidelity, "PREPROCESSING", {**fidelity.PREPROCESSING, "generated": "float, no rounding"})
    fidelity.fid(make_ctx(Replay(real.x, noise=0.1), train, real, cache))
    assert len(calls) == 2
    # a different real count (eval.num_real) -> recomputed
    fidelity.fid(make_ctx(Replay(real.x, noise=0.1), train, real, cache, num_real=100))
    assert calls[-1] == 100 and len(calls) == 3


def test_samples_are_converted_to_uint8_before_features(digits, cache):
    train, real = digits
    ext = extractors.get_extractor(make_ctx(Replay(real.x), train, real, cache))
    x = real.x[:32]
    # images a hair off the 8-bit grid give exactly the features of the 8-bit images after to_uint8
    jitter = (x.float() / 255.0 + 0.3 / 255.0 * (torch.rand(x.shape) - 0.5)).clamp(0, 1)
    from bench.conventions import to_uint8

    a = ext.features(to_uint8(jitter), torch.device("cpu"))["192"]
    b = ext.features(x, torch.device("cpu"))["192"]
    assert torch.equal(a, b)
    with pytest.raises(TypeError):
        ext.features(jitter, torch.device("cpu"))


def test_auto_extractor_and_unknown_name():
    from bench.errors import BenchError

    assert extractors.resolve_name("auto", "mnist") == "digits-classifier"
    assert extractors.resolve_name("auto", "digits") == "digits-classifier"
    assert extractors.resolve_name("auto", "cifar10") == "inception"
    with pytest.raises(BenchError, match="did you mean"):
        extractors.resolve_name("inceptoin", "cifar10")


def test_metrics_registered():
    from bench.metrics import known_metrics

    assert {"fid", "is", "kid", "precision_recall", "prc", "class_coverage", "cost"} <= set(known_metrics())
    assert not math.isnan(0.0)
