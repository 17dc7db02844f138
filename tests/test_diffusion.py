"""The diffusion wrappers: training, EMA, samplers and their options, guidance, bits/dim."""

import dataclasses
import math

import pytest
import torch

from bench.errors import BenchError
from bench.registry import Batch, DataSpec, get

# Many tiny ops: one thread avoids OpenMP contention on busy 2-core machines (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


SPEC = DataSpec(1, 16, 16, 10)
TINY = {"unet": "tiny", "timesteps": 20, "beta_start": 5e-3, "beta_end": 0.5, "ema_decay": 0.5, "lr": 1e-3}


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return Batch(x, y, torch.Generator().manual_seed(seed + 1))


def _train(model, steps=2):
    for s in range(steps):
        out = model.training_step(_batch(seed=s), s)
        assert math.isfinite(out["loss"])
    return out


@pytest.mark.parametrize("name,extra", [("ddpm", {}), ("iddpm", {}), ("ncsn", {"unet": "tiny", "ema_decay": 0.5})])
def test_models_train_and_sample_in_unit_range(name, extra):
    torch.manual_seed(0)
    cfg = extra if name == "ncsn" else TINY
    m = get(name)(cfg, SPEC)
    assert m.family == "diffusion"
    _train(m)
    opts = {"steps_each": 2} if name == "ncsn" else {"steps": 5}
    s = m.sample(4, generator=torch.Generator().manual_seed(0), **opts)
    assert s.images.shape == (4, 1, 16, 16)
    assert 0.0 <= s.images.min() and s.images.max() <= 1.0
    assert s.nfe == (2 * 10 + 1 if name == "ncsn" else 5)
    again = m.sample(4, generator=torch.Generator().manual_seed(0), **opts)
    assert torch.equal(s.images, again.images)  # the generator makes sampling reproducible


def test_ema_update_is_the_configured_lerp_and_used_for_sampling():
    m = get("ddpm")({**TINY, "ema_decay": 0.75}, SPEC)
    before = [p.detach().clone() for p in m.ema.parameters()]
    _train(m, 1)
    d = min(0.75, 2 / 11)  # the first update's warmed-up decay, (1 + n) / (10 + n) at n = 1
    for e, b, p in zip(m.ema.parameters(), before, m.net.parameters()):
        assert torch.allclose(e, d * b + (1 - d) * p.detach(), atol=1e-6)
    assert any(k.startswith("ema.") for k in m.state_dict()) and int(m.ema_steps) == 1
    assert m.num_parameters() == sum(p.numel() for p in m.net.parameters())
    # Sampling uses the EMA weights: perturbing the raw net does not change samples, perturbing EMA does.
    ref = m.sample(2, generator=torch.Generator().manual_seed(0), steps=3).images
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(1.0)
    assert torch.equal(ref, m.sample(2, generator=torch.Generator().manual_seed(0), steps=3).images)
    with torch.no_grad():
        m.ema.conv_out.bias.add_(0.5)
    assert not torch.equal(ref, m.sample(2, generator=torch.Generator().manual_seed(0), steps=3).images)


def test_sampler_options_nfe_and_errors():
    m = get("ddpm")(TINY, SPEC)
    assert m.sample(2, steps=20).nfe == 20
    for spacing in ("uniform", "linspace", "leading", "trailing", "quadratic"):
        s = m.sample(2, name="ddim", steps=10, eta=0.5, spacing=spacing)
        assert s.nfe == s.info["steps"] <= 10 and s.info["spacing"] == spacing
    assert m.sample(2, name="ddim", steps=7, spacing="linspace").nfe == 7
    with pytest.raises(BenchError, match="unknown sampler option"):
        m.sample(2, stepz=3)
    with pytest.raises(BenchError):
        m.sample(2, name="euler")
    with pytest.raises(BenchError):
        m.sample(2, steps=50)
    with pytest.raises(BenchError):
        m.sample(2, classifier_scale=1.0)  # no classifier trained
    with pytest.raises(BenchError):
        m.sample(2, labels=torch.tensor([1, 2]))  # unconditional


def test_bad_configs_are_one_line_errors():
    with pytest.raises(BenchError):
        get("ddpm")({**TINY, "variance": "huge"}, SPEC)
    with pytest.raises(BenchError):
        get("ddpm")({**TINY, "loss": "hybrid"}, SPEC)  # hybrid needs learned variances
    with pytest.raises(BenchError):
        get("ddpm")({**TINY, "class_conditional": True}, DataSpec(1, 16, 16, 0))
    with pytest.raises(BenchError):
        get("ddpm")({**TINY, "unet": "giant"}, SPEC)
    with pytest.raises(BenchError):
        get("ddpm")({**TINY, "beta_schedule": "sigmoid"}, SPEC)


def test_classifier_free_and_classifier_guidance():
    torch.manual_seed(0)
    m = get("ddpm")({**TINY, "class_conditional": True, "classifier": True, "classifier_channels": 8}, SPEC)
    out = _train(m, 2)
    assert "classifier_loss" in out and set(m.configure_optimizers()) == {"model", "classifier"}
    labels = torch.arange(4)
    g = lambda: torch.Generator().manual_seed(0)
    plain = m.sample(4, labels=labels, generator=g(), name="ddim", steps=4, classifier_scale=0.0)
    cfg = m.sample(4, labels=labels, generator=g(), name="ddim", steps=4, guidance=4.0, classifier_scale=0.0)
    clf = m.sample(4, labels=labels, generator=g(), name="ddim", steps=4, classifier_scale=10.0)
    assert plain.nfe == 4 and cfg.nfe == 8  # guidance evaluates the conditional and the null branch
    assert plain.info["classifier_evals"] == cfg.info["classifier_evals"] == 0
    assert clf.nfe == 4 and clf.info["classifier_evals"] == 4  # one classifier forward+backward per step, apart
    assert not torch.allclose(plain.images, cfg.images) and not torch.allclose(plain.images, clf.images)
    # Without the option, the config's classifier_scale (default 1.0) applies.
    assert m.sample(2, labels=labels[:2], name="ddim", steps=3).info["classifier_scale"] == 1.0
    # Labels default to a per-class grid 0, 1, ..., 9, 0, ...
    assert m.sample(12, steps=2).info["labels"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    # The conditional branch depends on the label.
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 5])
    assert not torch.allclose(m.ema(x, t, torch.tensor([1, 1])), m.ema(x, t, torch.tensor([2, 2])))


def test_hybrid_loss_vlb_part_trains_only_the_variance_head():
    m = get("iddpm")(TINY, SPEC)
    b = _batch()
    captured = {}
    orig = m.net.forward
    m.net.forward = lambda *a, **k: captured.setdefault("out", orig(*a, **k))
    m.cfg = dataclasses.replace(m.cfg, vlb_weight=1.0)
    total = m.loss(b)
    out = captured["out"]
    m.cfg = dataclasses.replace(m.cfg, loss="simple")
    captured.clear()
    simple = m.loss(_batch())
    captured["out"].retain_grad()
    # Gradient of (hybrid - simple) w.r.t. the eps channels vanishes; w.r.t. the variance channels it does not.
    g = torch.autograd.grad(total, out, retain_graph=True)[0]
    g_simple = torch.autograd.grad(simple, captured["out"])[0]
    assert torch.allclose(g[:, :1], g_simple[:, :1], atol=1e-7)
    assert g[:, 1:].abs().sum() > 0 and g_simple[:, 1:].abs().sum() == 0


def test_bits_per_dim_is_an_upper_bound_over_all_terms():
    torch.manual_seed(0)
    for name in ("ddpm", "iddpm"):
        m = get(name)(TINY, SPEC)
        _train(m, 1)
        lik = m.nll_bits_per_dim(_batch(4))
        assert lik.kind == "upper-bound" and lik.bits_per_dim.shape == (4,)
        assert torch.isfinite(lik.bits_per_dim).all() and (lik.bits_per_dim > 0).all()
        assert lik.info["terms"] == 21
    assert not get("ncsn").has_likelihood


def test_train_on_mnist_test_split(shared_data):
    from bench.data import load_split

    data = load_split({"dataset": "mnist", "image_size": 32}, "test", data_root=str(shared_data))
    x, y = data.x[:16], data.y[:16]
    spec = DataSpec(1, 32, 32, 10)
    for name, cfg in [("ddpm", {**TINY, "class_conditional": True}), ("iddpm", TINY),
                      ("ncsn", {"unet": "tiny", "ema_decay": 0.5})]:
        m = get(name)(cfg, spec)
        for s in range(2):
            out = m.training_step(Batch(x, y, torch.Generator().manual_seed(s)), s)
            assert math.isfinite(out["loss"])
        opts = {"steps_each": 1} if name == "ncsn" else {"steps": 3}
        assert m.sample(2, **opts).images.shape == (2, 1, 32, 32)


def _captured_model_fn(m, monkeypatch, n=3, **options):
    """The eps-model function ``m.sample`` hands its DDIM sampler (the sampler itself is stubbed out)."""
    from baselines import diffusion

    seen = {}

    def fake_ddim(model_fn, sched, shape, **kw):
        seen["fn"] = model_fn
        return torch.zeros(shape), sched.T
    monkeypatch.setattr(diffusion.S, "ddim_sample", fake_ddim)
    s = m.sample(n, name="ddim", steps=4, **options)
    return seen["fn"], s


def _abar(t):
    """alpha-bar of TINY's linear schedule at index t, computed directly (float64)."""
    betas = torch.linspace(TINY["beta_start"], TINY["beta_end"], TINY["timesteps"], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)[t]


def test_classifier_free_guided_eps_is_the_formula(monkeypatch):
    # Convention (Ho & Salimans' eps~ = (1 + w') eps_c - w' eps_u with w = 1 + w'): eps_u + w (eps_c - eps_u).
    torch.manual_seed(0)
    m = get("ddpm")({**TINY, "class_conditional": True}, SPEC)
    _train(m, 2)
    labels, w = torch.tensor([3, 0, 7]), 2.5
    fn, s = _captured_model_fn(m, monkeypatch, labels=labels, guidance=w)
    assert s.nfe == 2 * 4
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([15, 15, 15])
    with torch.no_grad():
        eps_c = m.ema(x, t, labels)
        eps_u = m.ema(x, t, torch.full_like(labels, 10))  # the null class
        assert not torch.allclose(eps_c, eps_u, atol=1e-4)
        torch.testing.assert_close(fn(x, t), eps_u + w * (eps_c - eps_u), atol=1e-5, rtol=1e-5)


def test_classifier_guided_eps_is_the_formula_and_labels_work_without_class_conditioning(monkeypatch):
    # Classifier guidance alone (unconditional U-Net + noise-aware classifier) is conditional per instance.
    torch.manual_seed(0)
    m = get("ddpm")({**TINY, "classifier": True, "classifier_channels": 8, "classifier_scale": 3.0}, SPEC)
    assert m.conditional is True and get("ddpm")(TINY, SPEC).conditional is False
    _train(m, 2)
    labels = torch.tensor([3, 0, 7])
    fn, s = _captured_model_fn(m, monkeypatch, labels=labels)  # default scale: the config's 3.0
    assert s.info["classifier_scale"] == 3.0 and s.nfe == 4 and s.info["classifier_evals"] == 4
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([15, 12, 15])
    xi = x.clone().requires_grad_(True)
    logp = torch.log_softmax(m.classifier(xi, t), -1)[torch.arange(3), labels].sum()
    grad = torch.autograd.grad(logp, xi)[0]
    assert grad.abs().max() > 0
    with torch.no_grad():
        eps = m.ema(x, t)
    sigma = (1 - _abar(t)).sqrt().float().view(-1, 1, 1, 1)
    torch.testing.assert_close(fn(x, t), eps - sigma * 3.0 * grad, atol=1e-5, rtol=1e-5)
    # The real sampler with labels and no explicit scale, and a per-class grid without labels.
    out = m.sample(3, labels=labels, name="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (3, 1, 16, 16) and out.info["labels"].tolist() == [3, 0, 7]
    assert m.sample(2, steps=2).info["labels"].tolist() == [0, 1]
    with pytest.raises(BenchError, match="classifier_scale = 0"):
        m.sample(2, labels=torch.tensor([0, 1]), steps=2, classifier_scale=0.0)
    with pytest.raises(BenchError, match="class indices"):
        m.sample(2, labels=torch.tensor([0, 10]), steps=2)


def test_vlb_of_uniform_pixels_is_never_below_their_entropy():
    """i.i.d. uniform 8-bit pixels have entropy 8 bits/dim, so any model's NLL, and a fortiori its variational
    bound, is >= 8 bits/dim on them. A short training on such pixels brings the bound within ~1.4x of 8, close
    enough that a bound in the wrong unit (nats/dim are 0.69x bits/dim) would land below the entropy. DDPM (fixed
    variances) trains there; iDDPM, which inherits its ``nll_bits_per_dim``, is still at ~40 bits/dim here."""
    torch.manual_seed(0)
    spec = DataSpec(1, 4, 4)
    m = get("ddpm")({**TINY, "timesteps": 40, "ema_decay": 0.0}, spec)
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (512, 1, 4, 4), generator=g, dtype=torch.uint8)
    test = torch.randint(0, 256, (256, 1, 4, 4), generator=g, dtype=torch.uint8)
    for step in range(STEPS_UNIFORM):
        m.training_step(Batch(train[torch.randint(0, 512, (64,), generator=g)], None, g), step)
    bpd = m.nll_bits_per_dim(Batch(test, None, torch.Generator().manual_seed(1))).bits_per_dim.double()
    mean, se = float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd)))
    assert mean >= 8.0 - 3 * se, (mean, se)
    assert mean < 8.0 / math.log(2.0) - 3 * se, (mean, se)  # the unit matters at this distance from 8


STEPS_UNIFORM = 150


@pytest.mark.parametrize("name", ["ddpm", "iddpm"])
def test_bits_per_dim_of_the_exact_eps_of_gaussian_pixels_is_their_bin_mass(name):
    """Through the wrapper (uint8 -> [-1, 1], its schedule, the sum over pixels, bits, / D): 8-bit pixels drawn
    from N(mu, s2) binned, and a network that is the exact E[eps | x_t] of that Gaussian (iDDPM: plus the v that
    sets its learned variance to the true reverse variance, which makes the bound tight). The true NLL is
    -log2 of each pixel's bin mass; DDPM's fixed variances only bound it from above."""
    from tests.test_schedule import _gaussian_eps_model, _true_variance_v

    torch.manual_seed(0)
    m = get(name)({"unet": "tiny", "ema_decay": 0.5}, DataSpec(1, 4, 4))
    sched, mu, s2 = m.schedule, 0.1, 0.2 ** 2
    eps, v = _gaussian_eps_model(sched, mu, s2), _true_variance_v(sched, s2)

    class ExactNet(torch.nn.Module):
        def forward(self, x, t):
            return torch.cat([eps(x, t), v(x, t)], 1) if m.config["variance"] == "learned" else eps(x, t)

    m.ema = ExactNet()
    g = torch.Generator().manual_seed(0)
    xc = torch.randn(400, 1, 4, 4, generator=g) * math.sqrt(s2) + mu
    x = torch.round((xc + 1) * 127.5).clamp(0, 255).to(torch.uint8)
    bpd = m.nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(1))).bits_per_dim.double()
    xs = x.double().flatten(1) / 127.5 - 1
    normal = torch.distributions.Normal(torch.tensor(mu, dtype=torch.float64), math.sqrt(s2))
    true = -torch.log2(normal.cdf(xs + 1 / 255) - normal.cdf(xs - 1 / 255)).mean(1)
    diff = bpd - true
    se = float(diff.std() / math.sqrt(len(diff)))
    assert float(diff.mean()) > -4 * se  # an upper bound, in bits (nats would land 31 % below the truth)
    if name == "iddpm":
        assert float(diff.mean()) < 4 * se + 0.01 * float(true.mean())  # tight with the true variances


def test_mu_prediction_reads_as_the_true_noise_and_trains_to_the_posterior_mean():
    """prediction = "mu" (Ho et al.'s baseline): the network's mu is turned into eps through the posterior mean's
    closed form mu = c1 x0 + c2 x_t, so the true posterior mean reads as the true noise; its loss is the MSE to that
    mean, zero for a network that outputs it exactly (and not zero for an eps-model with the same network)."""
    from bench.conventions import to_signed

    m = get("ddpm")({**TINY, "prediction": "mu"}, SPEC)
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(6, 1, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    t = torch.randint(0, m.schedule.T, (6,), generator=g)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xt = m.schedule.q_sample(x0, t, noise)
    mu = m.schedule.q_posterior(x0, xt, t)[0]
    torch.testing.assert_close(m.as_eps(mu, xt, t).double(), noise, rtol=1e-4, atol=1e-4)

    batch = _batch(6)
    x0b = to_signed(batch.x)

    class TruePosteriorMean(torch.nn.Module):
        def forward(self, x, tt, y=None):
            return m.schedule.q_posterior(x0b, x, tt)[0]

    for prediction, zero in (("mu", True), ("eps", False)):
        model = get("ddpm")({**TINY, "prediction": prediction}, SPEC)
        model.net = TruePosteriorMean()
        loss = float(model.loss(Batch(batch.x, None, torch.Generator().manual_seed(4))))
        assert (loss < 1e-10) == zero, (prediction, loss)


def test_mu_prediction_refuses_learned_variances():
    with pytest.raises(BenchError, match="prediction = \"mu\" is the fixed-variance baseline"):
        get("ddpm")({**TINY, "prediction": "mu", "variance": "learned", "loss": "hybrid"}, SPEC)
