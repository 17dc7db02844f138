"""Flow layers: invertibility and log-determinants against brute-force Jacobians (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.nn import flow_layers as fl
from baselines.nn import residual_layers as rl

torch.set_default_dtype(torch.float32)


# Many tiny ops: one thread avoids OpenMP contention on busy 2-core machines (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")



def brute_logdet(fn, x):
    """log|det J| of fn at each sample of x, from the full Jacobian (torch.autograd.functional.jacobian)."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda t: fn(t.view(1, *x.shape[1:])).flatten(), xi.flatten())
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def perturb(module, scale=0.1, seed=0):
    """Move every parameter off its (often identity) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def check_layer(layer, x, atol_inv=1e-4, rtol_ld=1e-6):
    layer = layer.double()
    x = x.double()
    layer(x)  # data-dependent initialisations happen here
    perturb(layer)
    layer.eval()
    y, logdet = layer(x)
    assert y.shape == x.shape or y.numel() == x.numel()
    x_rec = layer.inverse(y)
    assert (x_rec - x).abs().max().item() < atol_inv
    bf = brute_logdet(lambda t: layer(t)[0], x)
    torch.testing.assert_close(logdet, bf, rtol=rtol_ld, atol=1e-8)
    return y, logdet


def data(shape, seed=0, scale=1.0):
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_actnorm_data_dependent_init_and_logdet():
    x = data((16, 3, 4, 4)) * 3 + 1
    layer = fl.ActNorm(3)
    y, _ = layer(x)
    flat = y.transpose(0, 1).flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(1), torch.ones(3), atol=1e-4, rtol=0)
    check_layer(fl.ActNorm(3), data((2, 3, 3, 3)))


def test_invconv1x1_lu():
    y, logdet = check_layer(fl.InvConv1x1(4), data((2, 4, 3, 3)))
    assert logdet.abs().max() > 1e-3  # perturbed: not volume preserving any more


def test_squeeze_roundtrip_and_zero_logdet():
    x = data((2, 3, 4, 4))
    y, ld = fl.Squeeze()(x)
    assert y.shape == (2, 12, 2, 2)
    assert torch.equal(fl.unsqueeze2d(y), x)
    assert torch.equal(ld, torch.zeros(2))
    # squeeze is a permutation: every input value appears once
    assert torch.equal(torch.sort(y.flatten(1))[0], torch.sort(x.flatten(1))[0])
    # and its log-det against the brute-force Jacobian: a permutation matrix, log|det J| = 0
    jac = torch.autograd.functional.jacobian(lambda t: fl.Squeeze()(t.view(1, 3, 4, 4))[0].flatten(), x[0].flatten())
    assert torch.equal(jac.sum(0), torch.ones(48)) and torch.equal(jac.sum(1), torch.ones(48))
    assert set(jac.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(ld, brute_logdet(lambda t: fl.Squeeze()(t)[0], x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("num_blocks", [0, 1])
def test_affine_coupling(parity, num_blocks):
    check_layer(fl.AffineCoupling(3, hidden=8, num_blocks=num_blocks, parity=parity), data((2, 3, 3, 3)))


@pytest.mark.parametrize("parity", [0, 1])
def test_spline_coupling_inside_and_outside_tails(parity):
    x = data((2, 4, 3, 3), scale=2.5)  # some values beyond tail_bound=3: linear tails
    assert (x.abs() > 3).any() and (x.abs() < 3).any()
    y, _ = check_layer(fl.SplineCoupling(4, hidden=8, num_blocks=1, parity=parity, num_bins=5, tail_bound=3.0), x)


def test_spline_coupling_starts_at_identity():
    layer = fl.SplineCoupling(4, hidden=8, num_blocks=1)
    x = data((2, 4, 3, 3))
    y, ld = layer(x)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ld, torch.zeros(2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_flow_step(coupling):
    check_layer(fl.FlowStep(4, coupling, hidden=8, num_blocks=1, parity=1, num_bins=4), data((2, 4, 2, 2)))


@pytest.mark.parametrize("coupling,num_blocks", [("affine", 0), ("spline", 1)])
def test_multiscale_flow_whole_model(coupling, num_blocks):
    flow = fl.MultiScaleFlow(1, levels=2, steps_per_level=2, hidden_channels=8, coupling=coupling,
                             num_blocks=num_blocks, num_bins=4)
    z, _ = check_layer(flow, data((2, 1, 4, 4)))
    assert z.shape == (2, 1, 4, 4)  # image-shaped latent


def test_multiscale_latent_layout_is_identity_without_steps():
    """With every level's steps replaced by the identity, squeeze/split/re-assembly give z == y."""
    flow = fl.MultiScaleFlow(1, levels=3, steps_per_level=1, hidden_channels=4)
    for i in range(len(flow.blocks)):
        flow.blocks[i] = fl.FlowSequential([])
    x = data((2, 1, 8, 8))
    z, ld = flow(x)
    assert torch.equal(z, x) and torch.equal(flow.inverse(z), x)
    assert torch.equal(ld, torch.zeros(2))


def test_lipswish_is_1_lipschitz():
    act = rl.LipSwish()
    with torch.no_grad():
        act.b.fill_(3.0)
    x = torch.linspace(-8, 8, 20001, requires_grad=True)
    (d,) = torch.autograd.grad(act(x).sum(), x)
    assert d.abs().max() <= 1.0


@pytest.mark.parametrize("k", [1, 3])
def test_spectral_norm_bounds_operator_norm(k):
    torch.manual_seed(0)  # weights and power-iteration start; unseeded, ~1 run in 10 ended 0.2% above the bound
    conv = rl.SNConv2d(3, 5, k, coeff=0.7, n_iterations=2)
    with torch.no_grad():
        conv.weight.mul_(10)
    x = data((4, 3, 6, 6))
    for _ in range(20):
        conv(x)  # training-mode power iterations
    conv.eval()
    # independent check: the exact operator norm from the dense matrix of the convolution
    w = conv.normalized_weight(x.shape).detach()
    mat = torch.autograd.functional.jacobian(
        lambda t: torch.nn.functional.conv2d(t.view(1, 3, 6, 6), w, padding=conv.padding).flatten(), torch.zeros(108),
        vectorize=True)
    sigma = torch.linalg.matrix_norm(mat, ord=2).item()
    assert sigma <= 0.7 * (1 + 1e-3)
    assert sigma > 0.69  # the bound is attained (weights were scaled up), not just met by shrinking


@pytest.mark.parametrize("k", [1, 3])
def test_spectral_norm_sigma_and_its_gradient_match_the_direct_formula(k):
    """sigma is computed as <W, G> (G its gradient in W, taken without a graph) to keep less for backward; value and
    gradient must equal those of the direct sigma = <u, conv(v, W)> that autograd differentiates itself."""
    torch.manual_seed(0)
    conv = rl.SNConv2d(3, 5, k, coeff=0.5, n_iterations=3).double()
    with torch.no_grad():
        conv.weight.mul_(10)  # sigma above coeff: the weight is divided by sigma / coeff, so sigma carries gradient
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    conv(x)  # set u, v
    conv.n_iterations = 0  # the same u, v for both computations below
    up = torch.randn(2, 5, 6, 6, dtype=torch.float64)
    ours = torch.autograd.grad((conv(x) * up).sum(), conv.weight)[0]
    w = conv.weight.detach().clone().requires_grad_(True)
    sigma = (conv.u * torch.nn.functional.conv2d(conv.v, w, padding=conv.padding)).sum()
    assert torch.allclose(conv.sigma, sigma.detach(), rtol=1e-12)
    direct = torch.autograd.grad((torch.nn.functional.conv2d(x, w / (sigma / 0.5), conv.bias.detach(),
                                                              padding=conv.padding) * up).sum(), w)[0]
    torch.testing.assert_close(ours, direct, rtol=1e-10, atol=1e-12)


def residual_block(c=2, hidden=4, coeff=0.9, noise=0.1, last_sign=1.0, **kw):
    """A block whose g is far from zero: identity-like kernels + noise, ReLU-like LipSwish, positive inputs.

    ``last_sign=-1`` flips the last kernel so J_g has negative eigenvalues: then every power-series
    term tr(J^k)/k has the same sign and a truncated or unreweighted series is visibly biased.
    """
    torch.manual_seed(0)
    net = rl.ResidualNet(c, hidden, coeff=coeff, n_iterations=5)
    convs = [m for m in net.modules() if isinstance(m, rl.SNConv2d)]
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, rl.LipSwish):
                m.b.fill_(3.0)
        for j, m in enumerate(convs):
            k = m.weight.shape[-1]
            eye = torch.zeros_like(m.weight)
            for i in range(min(m.weight.shape[:2])):
                eye[i, i, k // 2, k // 2] = 1.0
            sign = last_sign if j == len(convs) - 1 else 1.0
            m.weight.copy_(sign * eye + noise * torch.randn_like(m.weight))
    blk = rl.ResidualBlock(net, **kw).double()
    x = (data((3, c, 3, 3)).abs() * 2 + 0.5).double()
    blk(x)  # training-mode spectral-norm iterations
    blk.eval()
    return blk, x


def near_limit_block(**kw):
    """Estimator test block: aligned kernels at coefficient 0.97, ||J_g||_2 ~ 0.65 with negative eigenvalues,
    so the power series' tail (k >= 3) is large; below 1/sqrt(2) the roulette (geom_p 0.5) keeps a finite
    variance. Spectral-norm iterations off, so the function is fixed between calls."""
    blk, x = residual_block(coeff=0.97, noise=0.05, last_sign=-1.0, **kw)
    for conv in blk.modules():
        if isinstance(conv, rl.SNConv2d):
            conv.n_iterations = 0
    return blk, x


def jacobian_norms(blk, x):
    return [torch.linalg.matrix_norm(torch.autograd.functional.jacobian(
        lambda t: blk.g(t.view(1, *x.shape[1:])).flatten(), xi.flatten()), ord=2).item() for xi in x]


def test_residual_block_exact_logdet_and_inverse():
    blk, x = residual_block()
    blk.mode = "exact"
    y, ld = blk(x)
    bf = brute_logdet(lambda t: t + blk.g(t), x)
    torch.testing.assert_close(ld, bf, rtol=1e-8, atol=1e-10)
    assert (bf > 2.0).all()  # a non-trivial Jacobian
    blk.mode = "estimate"
    x_rec = blk.inverse(y)
    assert (x_rec - x).abs().max() < 1e-4
    assert 2 < blk.last_inverse_iterations < blk.max_iters


def _estimate_mean(blk, x, calls, reps, seed=0):
    """Mean over `calls` independent calls (each with its own roulette N) of the mean over `reps` Hutchinson vectors."""
    g = torch.Generator().manual_seed(seed)
    xs = x.repeat(reps, 1, 1, 1)
    per_call = []
    for _ in range(calls):
        _, ld = blk(xs, g)
        per_call.append(ld.view(reps, x.shape[0]).mean(0))
    per_call = torch.stack(per_call)
    return per_call.mean(0), per_call.std(0) / math.sqrt(calls)


@pytest.mark.parametrize("training", [False, True])
def test_residual_block_estimator_is_unbiased(training, monkeypatch):
    # one exact term so that the Russian roulette (not just a truncation) is exercised
    blk, x = near_limit_block(n_exact_terms=1, n_exact_terms_eval=1)
    assert min(jacobian_norms(blk, x)) > 0.6  # near the limit where the higher terms matter
    exact = brute_logdet(lambda t: t + blk.g(t), x)
    trace = torch.stack([torch.trace(torch.autograd.functional.jacobian(
        lambda t: blk.g(t.view(1, *x.shape[1:])).flatten(), xi.flatten())) for xi in x])
    blk.train(training)
    mean, se = _estimate_mean(blk, x, calls=60, reps=256)
    assert ((mean - exact) / se).abs().max() < 4.5, (mean, exact, se)
    # the test has power: the 1-term truncation tr(J) (a biased estimator) would fail it ...
    assert ((trace - exact) / se).abs().min() > 4.5, (trace, exact, se)
    # ... and so would the roulette without its 1/P(N >= k) reweighting, judged by the same criterion
    monkeypatch.setattr(blk, "coeff", lambda k, n_exact: 1.0)
    b_mean, b_se = _estimate_mean(blk, x, calls=60, reps=256)
    assert ((b_mean - exact) / b_se).abs().min() > 4.5, (b_mean, exact, b_se)


def test_neumann_gradient_is_unbiased(monkeypatch):
    blk, x = near_limit_block(n_exact_terms=1)
    blk.train()
    params = [p for p in blk.parameters() if p.requires_grad]
    direction = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype) for i, p in enumerate(params)]

    def dir_grad(ld):
        grads = torch.autograd.grad(ld.sum(), params, allow_unused=True)
        return sum((g * d).sum() for g, d in zip(grads, direction) if g is not None)

    def z_score():
        g = torch.Generator().manual_seed(1)
        xs = x.repeat(32, 1, 1, 1)
        draws = torch.tensor([dir_grad(blk(xs, g)[1]).item() / 32 for _ in range(60)])
        return (draws.mean().item() - exact) / (draws.std().item() / math.sqrt(len(draws)))

    blk.mode = "exact"
    exact = dir_grad(blk(x)[1]).item()
    blk.mode = "estimate"
    assert abs(z_score()) < 4.5
    # power: without the roulette reweighting (in value and Neumann series) the same criterion rejects it
    monkeypatch.setattr(blk, "coeff", lambda k, n_exact: 1.0)
    assert abs(z_score()) > 4.5


def _block_grads(blk, x, generator_seed, memory_efficient, ld_weights):
    """Gradients w.r.t. the block's input and parameters of sum(y * r) + sum(w * logdet), one seeded draw."""
    blk.memory_efficient = memory_efficient
    xi = x.clone().requires_grad_(True)
    y, ld = blk(xi, torch.Generator().manual_seed(generator_seed))
    r = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    loss = (y * r).sum() + (ld * ld_weights).sum()
    params = [p for p in blk.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [xi, *params])
    return y.detach(), ld.detach(), grads


def test_memory_efficient_gradient_equals_autograd_of_the_neumann_estimator():
    """The forward-pass gradient (Chen et al.'s --mem-eff) must be exactly the gradient that autograd takes of
    the same Neumann estimator (same roulette N, same Hutchinson vector), for the input and every parameter."""
    blk, x = near_limit_block(n_exact_terms=1)
    blk.train()
    w = torch.full((x.shape[0],), 0.7, dtype=x.dtype)
    for seed in range(3):  # three roulette draws (different numbers of terms)
        y_a, ld_a, g_a = _block_grads(blk, x, seed, False, w)
        y_m, ld_m, g_m = _block_grads(blk, x, seed, True, w)
        torch.testing.assert_close(y_m, y_a, rtol=0, atol=0)
        torch.testing.assert_close(ld_m, ld_a, rtol=1e-12, atol=1e-12)
        assert len(g_m) == len(g_a) == 1 + len([p for p in blk.parameters() if p.requires_grad])
        for a, m in zip(g_a, g_m):
            torch.testing.assert_close(m, a, rtol=1e-10, atol=1e-12)
        assert g_a[1].abs().sum() > 0  # the log-det part reaches the parameters
    # the log-det's weight reaches the gradient: with weight 0 only the y path is left, and it differs
    _, _, g_0 = _block_grads(blk, x, 0, True, torch.zeros_like(w))
    _, _, g_a0 = _block_grads(blk, x, 0, False, torch.zeros_like(w))
    torch.testing.assert_close(g_0[1], g_a0[1], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(g_0[1], _block_grads(blk, x, 0, True, w)[2][1])


def test_memory_efficient_gradient_refuses_unequal_per_image_weights():
    blk, x = near_limit_block(n_exact_terms=1)
    blk.train()
    with pytest.raises(RuntimeError, match="weights every image's log-det equally"):
        _block_grads(blk, x, 0, True, torch.tensor([1.0, 2.0, 3.0], dtype=x.dtype))


def test_residual_flow_whole_model_roundtrip_and_exact_logdet():
    torch.manual_seed(0)
    flow = rl.ResidualFlow(1, blocks_per_scale=(1, 1), hidden_channels=8, coeff=0.9).double()
    x = data((2, 1, 4, 4)).double()
    flow(x)  # ActNorm init + spectral-norm warm-up
    perturb(flow, 0.05)
    flow(x)
    flow.eval()
    flow.set_logdet_mode("exact")
    z, ld = flow(x)
    assert z.shape == (2, *flow.latent_shape(1, 4, 4))
    bf = brute_logdet(lambda t: flow(t)[0], x)
    torch.testing.assert_close(ld, bf, rtol=1e-7, atol=1e-9)
    assert (flow.inverse(z) - x).abs().max() < 1e-4
    assert all(it >= 2 for it in flow.last_inverse_iterations)


def test_preprocess_logdet_matches_brute_force():
    x = torch.randint(0, 256, (2, 1, 3, 3), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    s, ld = fl.preprocess(x, "logit", 0.05, generator=g)
    y = (torch.sigmoid(s.double()) - 0.05) / 0.9
    # d s / d y for s = logit(a + (1-2a) y), elementwise: brute force on the diagonal map
    bf = brute_logdet(lambda t: torch.logit(0.05 + 0.9 * t), y)
    torch.testing.assert_close(ld.double(), bf, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fl.postprocess(s, "logit", 0.05).double(), y, atol=1e-5, rtol=0)
    s2, ld2 = fl.preprocess(x, "center", generator=g)
    assert torch.equal(ld2, torch.zeros(2)) and s2.min() >= -0.5 and s2.max() < 0.5
    # uniform dequantization: y = (x + u) / 256 with u ~ U[0, 1) spread over the bin (std 1/sqrt(12)), not its centre
    many = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    u = (fl.preprocess(many, "center", generator=g)[0].double() + 0.5) * 256 - many.double()
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.03 and abs(u.std() - 12 ** -0.5) < 0.02
