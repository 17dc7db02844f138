"""IS, KID and precision/recall checked against direct computations written here from their papers'
definitions, on sets that differ (issue 21): a swap of precision and recall, a kernel or normalisation
change, or a wrong IS formula fails these, where tests on identical sets pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from bench.metrics import fidelity


def knn_precision_recall(gen: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    """Kynkaanniemi et al. 2019: a sample is inside a set's manifold when it lies within the k-th nearest
    neighbour distance (the point itself not counted) of some member of that set."""
    def radii(x):
        d, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)  # column 0 is the point itself
        return d[:, k]

    def inside(points, members):
        r = radii(members)
        dist = np.linalg.norm(points[:, None, :] - members[None, :, :], axis=-1)
        return float((dist <= r[None, :]).any(axis=1).mean())

    return inside(gen, real), inside(real, gen)


def features(n, d, shift=0.0, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(shift, 1.0, (n, d))).float()


def test_precision_and_recall_match_a_direct_knn_computation_on_different_sets():
    real, gen = features(300, 8), features(200, 8, shift=0.6, seed=1)
    p, r = fidelity.precision_recall(gen, real)
    p_ref, r_ref = knn_precision_recall(gen.double().numpy(), real.double().numpy(), fidelity.PRC_NEIGHBORHOOD)
    assert (p, r) == pytest.approx((p_ref, r_ref), abs=1e-6)
    assert p_ref != pytest.approx(r_ref, abs=0.02)  # the sets differ enough that a swap would be caught


def test_a_generated_strict_subset_of_the_real_set_has_precision_1_and_recall_below_1():
    real = features(300, 8)
    gen = real[:60].clone()  # every sample is a real image; only a fifth of the real set is covered
    p, r = fidelity.precision_recall(gen, real)
    p_ref, r_ref = knn_precision_recall(gen.double().numpy(), real.double().numpy(), fidelity.PRC_NEIGHBORHOOD)
    assert p == 1.0 and p_ref == 1.0
    assert r == pytest.approx(r_ref, abs=1e-6) and r < 0.9


def unbiased_mmd2_cubic(x: np.ndarray, y: np.ndarray) -> float:
    """Binkowski et al. 2018: unbiased MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3."""
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def test_kid_matches_a_direct_unbiased_mmd_with_the_cubic_kernel():
    # subsets as large as the sets: every subset is the whole set (permuted), so each subset's MMD^2 is the
    # direct value and their mean must equal it
    real, gen = features(120, 16), features(120, 16, shift=0.3, seed=2)
    kid, kid_std, size = fidelity.kernel_inception_distance(gen, real)
    direct = unbiased_mmd2_cubic(gen.double().numpy(), real.double().numpy())
    assert size == 120 and direct > 0.01
    assert kid == pytest.approx(direct, rel=1e-4)
    assert kid_std == pytest.approx(0.0, abs=1e-5 * direct)


def test_inception_score_matches_the_direct_formula_on_non_trivial_logits():
    """IS = exp(E_x KL(p(y|x) || p(y))), on one split (torch-fidelity's std over splits is then 0)."""
    logits = torch.from_numpy(np.random.default_rng(3).normal(0.0, 2.0, (500, 10))).float()
    p_yx = torch.softmax(logits.double(), dim=1)
    p_y = p_yx.mean(0, keepdim=True)
    direct = math.exp(float((p_yx * (p_yx.log() - p_y.log())).sum(1).mean()))
    is_mean, _ = fidelity.inception_score(logits, splits=1)
    assert 1.5 < direct < 10  # between a constant prediction (1) and ten sure classes (10)
    assert is_mean == pytest.approx(direct, rel=1e-4)
