"""Exact checks of the noise-schedule module against independent computations."""

import math

import pytest
import torch

from baselines.nn import schedule as S


# Many tiny ops: one thread avoids OpenMP contention on busy 2-core machines (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(params=["linear", "cosine"])
def sched(request):
    return S.Schedule(S.make_betas(request.param, 200))


def test_closed_form_q_matches_iterating_one_step_kernels(sched):
    # Iterate q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t): mean and variance recursions in float64.
    x0 = torch.tensor([-0.7, 0.2, 0.9])
    m, v = x0.double().clone(), torch.zeros(3, dtype=torch.float64)
    for i in range(sched.T):
        b = sched.betas[i]
        m, v = torch.sqrt(1 - b) * m, (1 - b) * v + b
        t = torch.full((3,), i)
        cm, cv = sched.q_mean_var(x0.view(3, 1), t)
        assert torch.allclose(cm.flatten().double(), m, atol=1e-5)
        assert torch.allclose(cv.flatten().double(), v, atol=1e-5)


def test_closed_form_q_matches_monte_carlo_chain():
    sched = S.Schedule(S.make_betas("linear", 100))
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.5)
    x = x0.clone()
    for i in range(50):
        b = float(sched.betas[i])
        x = math.sqrt(1 - b) * x + math.sqrt(b) * torch.randn(x.shape, generator=g)
    mean, var = sched.q_mean_var(x0[:1], torch.tensor([49]))
    assert abs(x.mean() - mean.item()) < 4 * math.sqrt(var.item() / x.shape[0])
    assert abs(x.var() - var.item()) < 0.01 * var.item() + 4 * var.item() * math.sqrt(2 / x.shape[0])


@pytest.mark.parametrize("t", [1, 17, 150])
def test_posterior_matches_bayes_rule_on_a_grid(sched, t):
    # q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0), normalised numerically on a fine grid.
    x0, xt = 0.3, -0.4
    abar_prev = float(sched.alphas_cumprod[t - 1])
    b = float(sched.betas[t])
    grid = torch.linspace(-6, 6, 400_001, dtype=torch.float64)
    logp = (-(xt - math.sqrt(1 - b) * grid) ** 2 / (2 * b)
            - (grid - math.sqrt(abar_prev) * x0) ** 2 / (2 * (1 - abar_prev)))
    w = torch.exp(logp - logp.max())
    w = w / w.sum()
    mean_num = (w * grid).sum()
    var_num = (w * (grid - mean_num) ** 2).sum()
    mean, var, logvar = sched.q_posterior(torch.tensor([[x0]]), torch.tensor([[xt]]), torch.tensor([t]))
    assert mean.item() == pytest.approx(float(mean_num), abs=1e-5)
    assert var.item() == pytest.approx(float(var_num), rel=1e-3)
    assert logvar.exp().item() == pytest.approx(var.item(), rel=1e-5)


def test_discretized_gaussian_matches_numerical_integration():
    x = torch.tensor([-1.0, -1.0 + 2 / 255 * 3, 0.0 + 1 / 255, 1.0, 0.5 - 0.5 / 255])
    x = (torch.round((x + 1) * 127.5) / 127.5 - 1)
    mean = torch.tensor([-0.9, -0.95, 0.2, 0.98, 0.51])
    log_scale = torch.log(torch.tensor([0.1, 0.01, 0.3, 0.05, 0.002]))
    got = S.discretized_gaussian_log_likelihood(x, mean, log_scale)
    for i in range(5):
        lo = -math.inf if x[i] < -0.999 else float(x[i]) - 1 / 255
        hi = math.inf if x[i] > 0.999 else float(x[i]) + 1 / 255
        s, m = float(log_scale[i].exp()), float(mean[i])
        cdf = lambda z: 0.5 * (1 + math.erf((z - m) / (s * math.sqrt(2)))) if math.isfinite(z) else (1.0 if z > 0 else 0.0)
        assert got[i].item() == pytest.approx(math.log(cdf(hi) - cdf(lo)), rel=1e-4, abs=1e-6)


def _gaussian_eps_model(sched, mu, s2):
    """E[eps | x_t] for data x0 ~ N(mu, s2) per dimension: the exact eps-model of a Gaussian dataset."""
    def model_fn(x, t):
        a = sched._at("alphas_cumprod", t, x)
        return torch.sqrt(1 - a) * (x - torch.sqrt(a) * mu) / (a * s2 + 1 - a)
    return model_fn


def test_ddim_eta1_full_steps_matches_ddpm_ancestral_in_distribution():
    sched = S.Schedule(S.make_betas("linear", 1000))
    mu, s2, n = 0.3, 0.25, 40_000
    model = _gaussian_eps_model(sched, mu, s2)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    a, nfe_a = S.ancestral_sample(model, sched, (n, 1), variance="fixedsmall", clip=False, generator=g1)
    d, nfe_d = S.ddim_sample(model, sched, (n, 1), eta=1.0, clip=False, generator=g2)
    assert nfe_a == nfe_d == 1000
    se_mean = math.sqrt(s2 / n)
    assert abs(a.mean() - d.mean()) < 5 * math.sqrt(2) * se_mean
    assert abs(a.var() - d.var()) < 5 * s2 * math.sqrt(4 / n)
    # Both reproduce the data distribution N(mu, s2) (the reverse kernels are exact up to their variance).
    assert abs(a.mean() - mu) < 0.01 and abs(a.var() - s2) < 0.01
    # Same noise, same path: DDIM(eta=1, S=T) is the ancestral sampler with the posterior variance.
    a2, _ = S.ancestral_sample(model, sched, (64, 1), variance="fixedsmall", clip=False,
                               generator=torch.Generator().manual_seed(3))
    d2, _ = S.ddim_sample(model, sched, (64, 1), eta=1.0, clip=False, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a2, d2, atol=1e-3)
    # eta = 0 (the probability-flow ODE, discretised) lands on the data moments with S = T; with 50 steps
    # the discretisation error shows up as a visibly smaller variance.
    e0, _ = S.ddim_sample(model, sched, (n, 1), eta=0.0, clip=False, generator=torch.Generator().manual_seed(4))
    assert abs(e0.mean() - mu) < 0.01 and abs(e0.var() - s2) < 0.01
    e50, nfe50 = S.ddim_sample(model, sched.respace(S.spacing("trailing", 1000, 50)), (n, 1), eta=0.0, clip=False,
                               generator=torch.Generator().manual_seed(4))
    assert nfe50 == 50 and abs(e50.var() - s2) > abs(e0.var() - s2)


def _true_variance_v(sched, s2):
    """v in [-1, 1] that makes the learned variance equal the true Var(x_{t-1} | x_t) for N(mu, s2) data."""
    def v_of(x, t):
        a = sched._at("alphas_cumprod", t, x)
        coef1 = sched._at("posterior_mean_coef1", t, x)
        var_x0 = 1.0 / (1.0 / s2 + a / (1 - a))
        true_var = sched._at("posterior_variance", t, x) + coef1 ** 2 * var_x0
        lo, hi = sched._at("posterior_log_variance_clipped", t, x), sched._at("log_betas", t, x)
        frac = (torch.log(true_var) - lo) / (hi - lo)
        return (2 * frac - 1).clamp(-1, 1).expand_as(x)
    return v_of


def test_vlb_of_true_eps_model_matches_closed_form_nll():
    # Data N(mu, s2) per pixel. With its exact eps (E[eps | x_t]) and the true reverse variances the bound is
    # tight: E[VLB] = -log p(x0) up to the prior mismatch KL(q(x_T) || N(0, I)) (~1e-6 nats).
    sched = S.Schedule(S.make_betas("linear", 1000))
    mu, s2, n, d = 0.1, 0.2 ** 2, 3000, 2
    eps_fn, v_fn = _gaussian_eps_model(sched, mu, s2), _true_variance_v(sched, s2)
    model = lambda x, t: torch.cat([eps_fn(x, t), v_fn(x, t)], 1)
    torch.manual_seed(0)
    xc = (torch.randn(n, d) * math.sqrt(s2) + mu).view(n, d, 1, 1)
    normal = torch.distributions.Normal(torch.tensor(mu, dtype=torch.float64), math.sqrt(s2))
    # (a) continuous data, continuous Gaussian decoder: against the closed-form Gaussian NLL, paired per image.
    out = sched.vlb(model, xc, variance="learned", generator=torch.Generator().manual_seed(1), decoder="continuous")
    diff = out["total"].double() - (-normal.log_prob(xc.double()).flatten(1).sum(1))
    se = diff.std().item() / math.sqrt(n)
    assert abs(diff.mean().item()) < 4 * se + 1e-3
    # (b) 8-bit data, discretized decoder: against -log of each bin's Gaussian mass (the data's own NLL).
    xd = torch.round((xc + 1) * 127.5).clamp(0, 255) / 127.5 - 1
    out = sched.vlb(model, xd, variance="learned", generator=torch.Generator().manual_seed(1))
    x = xd.double().flatten(1)
    nll = -torch.log(normal.cdf(x + 1 / 255) - normal.cdf(x - 1 / 255)).sum(1)
    diff = out["total"].double() - nll
    se = diff.std().item() / math.sqrt(n)
    assert diff.mean().item() > -4 * se  # an upper bound (in expectation)
    assert out["total"].mean().item() == pytest.approx(nll.mean().item(), rel=0.01)
    # A wrong model (eps of a unit-variance dataset, fixed variances) gives a clearly worse bound.
    bad = _gaussian_eps_model(sched, mu, 1.0)
    worse = sched.vlb(bad, xd[:300], variance="fixedlarge")["total"].mean().item()
    assert worse > nll[:300].mean().item() + 1.0


def test_spacings_are_subsequences_with_expected_ends():
    T = 1000
    for kind in S.SPACINGS:
        for n in (1, 10, 50, 100, 1000):
            seq = S.spacing(kind, T, n)
            assert seq == sorted(set(seq)) and 0 <= seq[0] and seq[-1] < T
            if kind in ("linspace", "leading", "trailing"):
                assert len(seq) == n
    assert S.spacing("trailing", 1000, 10)[-1] == 999
    assert S.spacing("leading", 1000, 10)[0] == 0 and S.spacing("leading", 1000, 10)[-1] == 900
    assert S.spacing("linspace", 1000, 10)[-1] == 999
    assert S.spacing("quadratic", 1000, 10)[-1] == int(math.sqrt(800) ** 2)
    with pytest.raises(ValueError):
        S.spacing("bogus", T, 10)
    with pytest.raises(ValueError):
        S.spacing("linspace", T, 0)


def test_respacing_keeps_alphas_bar_and_maps_timesteps():
    sched = S.Schedule(S.make_betas("cosine", 1000))
    seq = S.spacing("linspace", 1000, 25)
    r = sched.respace(seq)
    assert r.T == 25
    assert torch.allclose(r.alphas_cumprod, sched.alphas_cumprod[seq])
    assert r.timestep_map.tolist() == seq
    # Respacing a respaced schedule composes.
    rr = r.respace([0, 5, 24])
    assert rr.timestep_map.tolist() == [seq[0], seq[5], seq[24]]


def test_cosine_schedule_matches_formula():
    T = 1000
    b = S.make_betas("cosine", T)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2
    abar = torch.cumprod(1 - b, 0)
    assert abar[499].item() == pytest.approx(f(500) / f(0), rel=1e-6)
    assert b.max().item() <= 0.999


@pytest.mark.parametrize("eta,clip", [(0.0, True), (0.5, True), (1.0, False)])
def test_ddim_sample_matches_the_update_written_out(eta, clip):
    # ddim_sample precomputes its per-step scalars; check it against DDIM's update (Song et al. eq. 12) written
    # directly from the respaced alpha-bars, in float64, with the same noise draws.
    sched = S.Schedule(S.make_betas("linear", 1000)).respace(S.spacing("trailing", 1000, 7))
    model = lambda x, t: torch.sin(3 * x) + t.view(-1, 1).to(x.dtype) / 1000  # noqa: E731  any eps-model of (x, t)
    got, nfe = S.ddim_sample(model, sched, (16, 3), eta=eta, clip=clip, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x = torch.randn((16, 3), generator=g).double()
    abar = sched.alphas_cumprod
    for i in reversed(range(sched.T)):
        a, ap = abar[i], (abar[i - 1] if i > 0 else torch.tensor(1.0, dtype=torch.float64))
        eps = model(x, torch.full((16,), int(sched.timestep_map[i])))
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        sigma = eta * ((1 - ap) / (1 - a) * (1 - a / ap)).sqrt()
        x = ap.sqrt() * x0 + (1 - ap - sigma ** 2).clamp(min=0).sqrt() * eps
        if i > 0 and eta > 0:
            x = x + sigma * torch.randn((16, 3), generator=g).double()
    assert nfe == sched.T == 7
    torch.testing.assert_close(got.double(), x, atol=2e-4, rtol=1e-4)
