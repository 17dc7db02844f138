"""baselines/flow_matching.py: the CFM path/target, OT coupling, guidance, transport and bits/dim vs closed forms."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch

from baselines import flow_matching as fm
from baselines.nn import ode
from bench import conventions, registry
from bench.errors import BenchError
from bench.registry import Batch, DataSpec
from tests.test_ode import AffineGaussianFlow

TINY = {"unet": "tiny", "ema_decay": 0.0}


def make(name="cfm", size=4, classes=0, **cfg):
    torch.manual_seed(0)
    return registry.get(name)({**TINY, **cfg}, DataSpec(1, size, size, classes))


@pytest.mark.parametrize("sigma_min", [0.0, 1e-4, 0.1])
def test_target_is_time_derivative_of_the_path(sigma_min):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.rand(6, generator=g, dtype=torch.float64) * 0.9 + 0.05
    h = 1e-5
    fd = (fm.ot_path(x0, x1, t + h, sigma_min) - fm.ot_path(x0, x1, t - h, sigma_min)) / (2 * h)
    torch.testing.assert_close(fm.ot_target(x0, x1, sigma_min), fd, atol=1e-8, rtol=1e-8)
    # end points: noise at t = 0, N(x1, sigma_min^2) scale at t = 1
    torch.testing.assert_close(fm.ot_path(x0, x1, torch.zeros(6, dtype=torch.float64), sigma_min), x0)
    torch.testing.assert_close(fm.ot_path(x0, x1, torch.ones(6, dtype=torch.float64), sigma_min), x1 + sigma_min * x0)


def test_ot_pairing_is_the_brute_force_optimum():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    perm = fm.ot_pairing(x0, x1)
    assert sorted(perm.tolist()) == list(range(6))
    cost = lambda p: float(((x0[list(p)] - x1) ** 2).sum())  # noqa: E731
    best = min(cost(p) for p in itertools.permutations(range(6)))
    assert math.isclose(cost(perm.tolist()), best, rel_tol=1e-6)
    assert cost(perm.tolist()) <= cost(range(6))


def test_ot_cfm_loss_uses_the_coupling(monkeypatch):
    calls = []
    orig = fm.ot_pairing
    monkeypatch.setattr(fm, "ot_pairing", lambda a, b: (calls.append(1), orig(a, b))[1])
    x = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8)
    make("cfm").loss(Batch(x, None, torch.Generator().manual_seed(0)))
    assert not calls
    make("ot-cfm").loss(Batch(x, None, torch.Generator().manual_seed(0)))
    assert calls == [1]


def gaussian_model(d_side=2, **cfg):
    """A flow-matching model whose velocity is replaced by the exact one of a Gaussian-to-Gaussian problem."""
    model = make(size=d_side, **cfg) if d_side >= 2 else None
    flow = AffineGaussianFlow(d_side * d_side, seed=3)
    flow.m = flow.m * 0.3  # keep the target inside roughly [-1, 1] like images
    flow.A = flow.A * 0.3
    model.velocity = lambda t, x, y=None, guidance=1.0: flow(t, x)
    return model, flow


def test_exact_velocity_transports_gaussian_with_each_solver():
    model, flow = gaussian_model()
    x0 = torch.randn(20000, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    for solver in ode.SOLVERS:
        res = model.transport(x0, solver=solver, steps=6)
        x1 = res.x.flatten(1).double()
        assert (x1.mean(0) - flow.m).abs().max() < 0.01
        assert (torch.cov(x1.T) - flow.A @ flow.A.T).abs().max() < 0.005
        assert res.nfe == {"euler": 6, "midpoint": 12, "rk4": 24}.get(solver, res.nfe) and res.nfe > 0


def expected_bpd(flow, x, gen_seed):
    """Closed-form bits/dim of 8-bit x under the Gaussian in [-1,1] scale, same dequantization noise."""
    y = conventions.dequantize(x, torch.Generator().manual_seed(gen_seed))
    s = (y * 2 - 1).flatten(1).double()
    d = s.shape[1]
    log_p_y = flow.distribution().log_prob(s) + d * math.log(2.0)
    return (-log_p_y + d * math.log(256.0)) / (d * math.log(2.0))


def test_bits_per_dim_of_analytic_velocity_matches_closed_form():
    model, flow = gaussian_model(divergence="exact", nll_rtol=1e-7, nll_atol=1e-7)
    x = conventions.to_uint8((flow.distribution().sample((12,)).float().reshape(12, 1, 2, 2) + 1) / 2)
    lik = model.nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(5)))
    assert lik.kind == "upper-bound" and lik.stderr is None and lik.info["divergence"] == "exact"
    assert lik.info["likelihood_rtol"] == 1e-7 and lik.info["likelihood_atol"] == 1e-7  # stated with the value
    torch.testing.assert_close(lik.bits_per_dim.double(), expected_bpd(flow, x, 5), atol=1e-4, rtol=0)


def test_a_fixed_step_likelihood_is_an_estimate_with_its_measured_solver_error():
    """A fixed-step solve is not a bound: its value is marked "estimate" and carries |fine - coarse|, which
    covers the true error of the value and shrinks ~2^4 per doubling of the steps (rk4 is 4th order)."""
    model, flow = gaussian_model(divergence="exact", nll_solver="rk4", nll_steps=2)
    x = conventions.to_uint8((flow.distribution().sample((12,)).float().reshape(12, 1, 2, 2) + 1) / 2)
    truth = expected_bpd(flow, x, 5)
    lik = model.nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(5)))
    assert lik.kind == "estimate" and lik.info["likelihood_steps"] == 4 and lik.info["likelihood_nfe"] == 4 * (2 + 4)
    err = (lik.bits_per_dim.double() - truth).abs()
    assert err.max() > 1e-5  # the grid is coarse enough to matter
    assert (err <= lik.solver_error.double()).all()
    model.cfg = dataclasses.replace(model.cfg, nll_steps=4)
    finer = model.nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(5)))
    ratio = lik.solver_error.double() / finer.solver_error.double()
    assert 6 < float(ratio.median()) < 40


def test_hutchinson_bits_per_dim_agrees_with_exact_within_error():
    model, flow = gaussian_model(divergence="hutchinson", hutchinson_probes=8, nll_solver="rk4", nll_steps=10)
    x = conventions.to_uint8((flow.distribution().sample((30,)).float().reshape(30, 1, 2, 2) + 1) / 2)
    lik = model.nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(6)))
    assert lik.info["divergence"] == "hutchinson" and lik.stderr is not None and (lik.stderr > 0).all()
    z = (lik.bits_per_dim.double() - expected_bpd(flow, x, 6)) / lik.stderr.double()
    assert z.abs().max() < 6 and z.pow(2).mean() < 3


def test_exact_and_hutchinson_agree_on_a_unet():
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    common = dict(nll_solver="rk4", nll_steps=4)
    exact = make(divergence="exact", **common).nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(8)))
    est = make(divergence="hutchinson", hutchinson_probes=16, **common).nll_bits_per_dim(
        Batch(x, None, torch.Generator().manual_seed(8)))
    z = (est.bits_per_dim - exact.bits_per_dim) / est.stderr
    assert z.abs().max() < 6 and z.pow(2).mean() < 4
    assert torch.isfinite(exact.bits_per_dim).all()


def test_divergence_auto_picks_by_size():
    assert make(size=8).divergence_mode() == "exact"  # 64 dims
    assert make(size=16).divergence_mode() == "hutchinson"


def test_classifier_free_guidance_combines_conditional_and_null_velocity():
    model = make(size=8, classes=10)
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor(0.3)
    y = torch.tensor([1, 4, 9])
    with torch.no_grad():
        vc = model.net(x, t, y)
        vu = model.net(x, t, torch.full_like(y, model.net.null_class))
        torch.testing.assert_close(model.velocity(t, x, y, 3.0), vu + 3.0 * (vc - vu), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.velocity(t, x, y, 1.0), vc)
        torch.testing.assert_close(model.velocity(t, x, y, 0.0), vu)
        assert not torch.allclose(vc, vu)  # the class embedding matters (random init)


def test_label_dropout_feeds_the_null_class():
    model = make(size=8, classes=10, label_dropout=0.5)
    seen = []
    orig = model.net.forward
    model.net.forward = lambda x, t, y=None: (seen.append(y.clone()), orig(x, t, y))[1]
    x = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    y = torch.randint(0, 10, (64,))
    model.loss(Batch(x, y, torch.Generator().manual_seed(0)))
    dropped = seen[0] == model.net.null_class
    assert 15 < int(dropped.sum()) < 49  # ~Binomial(64, 0.5)
    assert torch.equal(seen[0][~dropped], y[~dropped])


def test_sample_options_nfe_and_errors():
    model = make(size=8, classes=10)
    model.eval()
    g = torch.Generator().manual_seed(0)
    s = model.sample(4, generator=g, name="euler", steps=5)
    assert s.images.shape == (4, 1, 8, 8) and s.nfe == 5 and s.info["label_source"] == "uniform"
    assert 0 <= float(s.images.min()) and float(s.images.max()) <= 1
    assert model.sample(4, generator=g, name="rk4", steps=3, guidance=2.0).nfe == 24  # 2 branches x 12
    assert model.sample(4, labels=torch.arange(4), generator=g, solver="midpoint", steps=2).nfe == 4
    with pytest.raises(BenchError, match="unknown sampler option 'eta'"):
        model.sample(2, eta=0.0)
    with pytest.raises(BenchError, match="sampler option name must be one of 'euler'"):
        model.sample(2, name="ddim")
    with pytest.raises(BenchError, match="unet must be one of 'ddpm-thesis', 'ddpm-ho', 'tiny'"):
        make(unet="huge")


@pytest.mark.parametrize("name", ["cfm", "ot-cfm"])
def test_conditional_is_per_instance_and_unlabelled_data_trains_and_samples(name):
    # The class says "can be conditional"; the instance says whether it is: labelled data and
    # class_conditional (default true) -> conditional; no classes, or class_conditional = false -> not.
    assert make(name, size=8, classes=10).conditional is True
    for model in (make(name, size=8, classes=0), make(name, size=8, classes=10, class_conditional=False)):
        assert model.conditional is False and model.num_classes == 0
        assert model.net.encoder.class_emb is None  # no label pathway built
        x = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        y = torch.arange(8) if model.data.num_classes else None  # class_conditional = false ignores labels
        out = model.training_step(Batch(x, y, torch.Generator().manual_seed(1)), 0)
        assert math.isfinite(out["loss"])
        model.eval()
        s = model.sample(3, generator=torch.Generator().manual_seed(0), name="euler", steps=2)
        assert s.images.shape == (3, 1, 8, 8) and s.nfe == 2 and s.info["label_source"] == "none"
        with pytest.raises(BenchError, match="without labels"):
            model.sample(2, labels=torch.tensor([0, 1]), steps=2)


def test_training_reduces_loss_and_updates_ema():
    model = make("ot-cfm", size=8, classes=10, ema_decay=0.99, lr=2e-3)
    x = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (32,))
    g = torch.Generator().manual_seed(2)
    losses = [model.training_step(Batch(x, y, g), i)["loss"] for i in range(20)]
    assert sum(losses[-5:]) < sum(losses[:5])
    assert int(model.ema_steps) == 20
    assert not all(torch.equal(a, b) for a, b in zip(model.ema.parameters(), model.net.parameters()))
    assert model.eval_net() is model.ema
    assert model.num_parameters() == sum(p.numel() for p in model.net.parameters())


@pytest.mark.parametrize("name", ["cfm", "ot-cfm"])
def test_trains_on_mnist_test_subset(name, shared_data):
    from bench.data import load_split

    data = load_split({"dataset": "mnist", "image_size": 32}, "test", data_root=str(shared_data))
    model = registry.get(name)({"unet": "tiny", "base_channels": 8, "nll_solver": "euler", "nll_steps": 2,
                                "hutchinson_probes": 2}, data.spec)
    g = torch.Generator().manual_seed(0)
    for step in range(2):
        out = model.training_step(Batch(data.x[step * 16:(step + 1) * 16], data.y[step * 16:(step + 1) * 16], g), step)
        assert math.isfinite(out["loss"])
    model.eval()
    s = model.sample(2, generator=g, name="euler", steps=2)
    assert s.images.shape == (2, 1, 32, 32)
    lik = model.nll_bits_per_dim(Batch(data.x[:2], None, g))
    assert lik.info["divergence"] == "hutchinson" and torch.isfinite(lik.bits_per_dim).all()


def test_the_fence_catches_a_coarse_solve_of_a_sharp_field(tmp_path):
    """A trained CFM's velocity is sharp near the data; a coarse rk4 then over-integrates the divergence and
    reports a likelihood no distribution over 8-bit images can have (seen: -0.455 bits/dim). The exact velocity
    of a Gaussian as narrow as one 8-bit bin plays that trained field: the metric must turn the coarse value
    into an error, and the adaptive default must give the closed form, which is >= 0."""
    from bench.data import ImageData
    from bench.metrics import builtin
    from tests.metrics_helpers import make_ctx

    flow = AffineGaussianFlow(4, seed=3)
    flow.m, flow.A = flow.m * 0.3, torch.eye(4, dtype=torch.float64) * 0.004  # std ~ half a bin (2/256)
    x = conventions.to_uint8((flow.distribution().sample((32,)).float().reshape(32, 1, 2, 2) + 1) / 2)
    real = ImageData(x, None, 0, "sharp-gaussian/test@2")

    def metric(**cfg):
        model = make(size=2, divergence="exact", **cfg)
        model.velocity = lambda t, v, y=None, guidance=1.0: flow(t, v)
        return builtin.bits_per_dim(make_ctx(model, real, real, tmp_path, eval_batch_size=32))["bits_per_dim"]

    coarse = metric(nll_solver="rk4", nll_steps=2)
    assert coarse["value"] is None and coarse["note"].startswith("error: invalid likelihood")
    adaptive = metric(nll_solver="dopri5", nll_rtol=1e-6, nll_atol=1e-6)
    truth = float(expected_bpd(flow, x, 0).mean())  # the dequantization noise of make_ctx's generator differs:
    assert truth >= 0 and adaptive["protocol"]["kind"] == "upper-bound"  # compare on the same scale only
    assert adaptive["value"] >= 0 and abs(adaptive["value"] - truth) < 0.5
