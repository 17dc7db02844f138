
import numpy as np
import torch

from bench.registry import Batch, DataSpec
from baselines.reference import IndependentPixels


def test_bits_per_dim_equals_independent_cross_entropy():
    """With logits set to smoothed empirical frequencies, bits/dim equals the per-pixel cross-entropy computed with numpy."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 1, 3, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = rng.integers(0, 4, size=50)  # a low-entropy pixel
    counts = np.stack([np.bincount(x.reshape(50, -1)[:, d], minlength=256) for d in range(9)]) + 0.5
    probs = counts / counts.sum(1, keepdims=True)
    model = IndependentPixels({}, DataSpec(1, 3, 3))
    with torch.no_grad():
        model.logits.copy_(torch.from_numpy(np.log(probs)))
    bpd = model.nll_bits_per_dim(Batch(torch.from_numpy(x))).bits_per_dim
    flat = x.reshape(50, -1)
    expected = -np.log2(probs[np.arange(9)[None, :], flat]).sum(1) / 9
    np.testing.assert_allclose(bpd.numpy(), expected, rtol=1e-6)


def test_samples_follow_the_model_and_are_in_unit_range():
    model = IndependentPixels({}, DataSpec(1, 2, 2))
    with torch.no_grad():
        model.logits.fill_(-1e4)
        model.logits[:, 255] = 0.0  # every pixel is 255 with certainty
    s = model.sample(10, generator=torch.Generator().manual_seed(0))
    assert s.images.shape == (10, 1, 2, 2)
    assert torch.all(s.images == 1.0)
