"""Time to evaluate N generated samples (features + FID/IS/KID/precision-recall/coverage), with and without
cached reference statistics. N = 1,000 by default, 10,000 with GENBENCH_BENCH_FULL=1 (real set of the same size)."""

from __future__ import annotations

import itertools
import os
import shutil

import pytest
import torch

from bench.data import ImageData
from bench.metrics import coverage, extractors, fidelity
from tests.metrics_helpers import FAST_RECIPE, Replay, digits_data, make_ctx

N = 10_000 if os.environ.get("GENBENCH_BENCH_FULL") == "1" else 1_000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(extractors, "CLASSIFIER_RECIPE", {**extractors.CLASSIFIER_RECIPE, **FAST_RECIPE})
    train, test = digits_data(16)
    g = torch.Generator().manual_seed(0)
    reps = -(-N // len(test))
    x = test.x.repeat(reps, 1, 1, 1)[:N]
    x = (x.float() + 8 * torch.randn(x.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)
    real = ImageData(x, test.y.repeat(reps)[:N], 10, f"digits-bench/test@16x{N}")
    root = tmp_path_factory.mktemp("bench-cache")
    extractors.domain_classifier(train, real, root, "digits", recipe=FAST_RECIPE)
    yield train, real, root
    mp.undo()


def evaluate(train, real, cache):
    ctx = make_ctx(Replay(real.x, noise=0.1), train, real, cache, num_samples=N)
    out = {}
    for fn in (fidelity.fid, fidelity.inception_score_metric, fidelity.kid, fidelity.precision_recall_metric,
               coverage.class_coverage):
        out.update(fn(ctx))
    return out


@pytest.mark.benchmark(group="metrics")
def test_bench_evaluate_cached_reference(benchmark, setup):
    train, real, root = setup
    evaluate(train, real, root)  # fills the reference cache
    out = benchmark.pedantic(evaluate, args=(train, real, root), rounds=1, iterations=1)
    assert out["fid"]["protocol"]["reference_cache"] == "hit" and out["fid"]["protocol"]["generated"] == N


@pytest.mark.benchmark(group="metrics")
def test_bench_evaluate_without_cache(benchmark, setup, tmp_path):
    train, real, root = setup
    counter = itertools.count()

    def fresh():
        d = tmp_path / f"c{next(counter)}"
        shutil.copytree(root / "classifiers", d / "classifiers")
        return (train, real, d), {}

    out = benchmark.pedantic(evaluate, setup=fresh, rounds=1, iterations=1)
    assert out["fid"]["protocol"]["reference_cache"] == "miss"
