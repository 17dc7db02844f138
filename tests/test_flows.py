"""Flow wrappers (resflow, glow, nsf): bits/dim bookkeeping, training, sampling, configs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from bench.errors import BenchError
from bench.registry import Batch, DataSpec, available, get

TINY = {
    "resflow": {"blocks_per_scale": [1, 1, 1], "hidden_channels": 8, "n_exact_terms_eval": 6, "eval_draws": 2},
    "glow": {"levels": 2, "steps_per_level": 2, "hidden_channels": 8},
    "nsf": {"levels": 2, "steps_per_level": 2, "hidden_channels": 8, "num_blocks": 1, "num_bins": 4},
}
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# Many tiny ops: one thread avoids OpenMP contention on busy 2-core machines (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")



def make(name, spec=DataSpec(1, 8, 8), **over):
    torch.manual_seed(0)
    return get(name)({**TINY[name], **over}, spec)


def uniform_pixels(n, shape=(1, 8, 8), seed=0):
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_registered_with_family_and_every_key_defaulted():
    models = available()
    for name in ("resflow", "glow", "nsf"):
        cls = models[name]
        assert cls.family == "flow" and cls.has_likelihood and not cls.conditional
        make(name)  # builds from defaults + overrides


def test_paper_config_parameter_counts():
    """Seed 000's CRF with 512 hidden channels: 15.7M parameters (the thesis's '16M'); 128 channels: 1.6M."""
    n512 = get("resflow")({}, DataSpec(1, 32, 32)).num_parameters()
    n128 = get("resflow")({"hidden_channels": 128}, DataSpec(1, 32, 32)).num_parameters()
    assert 15.5e6 < n512 < 16.5e6
    assert n128 < 2e6
    # seed 001 NSF baseline: 3 levels x 16 steps = 48 flows
    nsf = get("nsf")({}, DataSpec(1, 32, 32))
    assert sum(len(b.layers) for b in nsf.flow.blocks) == 48


@pytest.mark.parametrize("name", ["glow", "nsf"])
def test_bits_per_dim_is_change_of_variables_of_the_flow(name):
    """bpd = (-(log N(z) + log|det|) + D log 256)/(D log 2), checked with a brute-force Jacobian log-det."""
    m = make(name).double().eval()
    x = uniform_pixels(2)
    g = torch.Generator().manual_seed(3)
    likelihood = m.nll_bits_per_dim(Batch(x, None, g))
    assert likelihood.kind == "upper-bound"
    from baselines.nn import flow_layers as fl
    s, ld_pre = fl.preprocess(x, m.config["preprocessing"], m.config["alpha"], torch.Generator().manual_seed(3))
    s = s.double()
    out = []
    for si in s:
        jac = torch.autograd.functional.jacobian(lambda t: m.flow(t.view(1, 1, 8, 8))[0].flatten(), si.flatten())
        z = m.flow(si[None])[0]
        logp = -0.5 * (z ** 2).sum() - 32 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
        out.append(logp + torch.linalg.slogdet(jac)[1])
    log_p_y = torch.stack(out) + ld_pre.double()
    expected = (-log_p_y + 64 * torch.log(torch.tensor(256.0, dtype=torch.float64))) / (64 * torch.log(torch.tensor(2.0, dtype=torch.float64)))
    torch.testing.assert_close(likelihood.bits_per_dim.double(), expected, rtol=1e-6, atol=1e-6)


def test_resflow_estimate_has_stderr_and_agrees_with_brute_force():
    m = make("resflow", eval_draws=8, n_exact_terms_eval=10)
    x = uniform_pixels(4)
    m.train()
    m.loss(Batch(x, None, torch.Generator().manual_seed(0)))  # ActNorm init
    m.eval()
    est = m.nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(1)))
    assert est.kind == "estimate" and est.stderr is not None and (est.stderr > 0).all()
    m.cfg = dataclasses.replace(m.cfg, exact_logdet=True)
    exact = m.nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(1)))  # same dequantization noise
    assert exact.kind == "upper-bound" and exact.stderr is None
    assert ((est.bits_per_dim - exact.bits_per_dim).abs() <= 5 * est.stderr + 1e-4).all()


@pytest.mark.parametrize("name", ["resflow", "glow", "nsf"])
def test_uniform_pixels_never_below_8_bits_and_training_approaches_8(name):
    """i.i.d. uniform 8-bit pixels have entropy 8 bits/dim; the dequantization bound can't go below it."""
    torch.manual_seed(0)
    # logit preprocessing: logit of a uniform variable is logistic, close to the Gaussian base
    m = make(name, preprocessing="logit", alpha=1e-5)
    train, test = uniform_pixels(512, seed=1), uniform_pixels(128, seed=2)
    g = torch.Generator().manual_seed(0)
    before = m.eval().nll_bits_per_dim(Batch(test, None, g)).bits_per_dim.mean().item()
    m.train()
    m.optimizers = {"model": torch.optim.Adam(m.parameters(), lr=1e-2)}
    for step in range(40):
        idx = torch.randint(0, len(train), (64,), generator=g)
        m.training_step(Batch(train[idx], None, g), step)
    m.eval()
    res = m.nll_bits_per_dim(Batch(test, None, g))
    after = res.bits_per_dim.mean().item()
    slack = 0.0 if res.stderr is None else 3 * res.stderr.mean().item() / 11  # per-image SE -> mean over 128
    assert before >= 8.0 - 1e-3 and after >= 8.0 - slack - 1e-3, (before, after)
    assert after < 8.1, after


@pytest.mark.parametrize("name", ["resflow", "glow", "nsf"])
def test_sampling_in_unit_interval_and_options(name):
    m = make(name).eval()
    s = m.sample(6, generator=torch.Generator().manual_seed(0))
    assert s.images.shape == (6, 1, 8, 8) and s.images.min() >= 0 and s.images.max() <= 1
    assert s.nfe >= 1
    cold = m.sample(6, generator=torch.Generator().manual_seed(0), temperature=0.5)
    assert not torch.equal(cold.images, s.images)
    with pytest.raises(BenchError, match="unknown sampler option"):
        m.sample(2, steps=10)
    with pytest.raises(BenchError, match="sampler option name must be one of 'default'"):
        m.sample(2, name="ddim")


def test_resflow_sampling_reports_fixed_point_iterations_and_inverts():
    m = make("resflow")
    x = uniform_pixels(8)
    m.loss(Batch(x, None, torch.Generator().manual_seed(0)))
    m.eval()
    s = m.sample(4, generator=torch.Generator().manual_seed(0))
    info = s.info
    assert info["fixed_point_iterations_total"] >= 3 * 2 and info["fixed_point_iterations_max"] >= 2
    z = torch.randn(3, *m._latent_shape())
    with torch.no_grad():
        y = m.flow.inverse(z)
        z2, _ = m.flow(y)
    assert (z2 - z).abs().max() < 1e-4
    assert info["fixed_point_unconverged_blocks"] == 0 and info["fixed_point_atol"] == m.config["fixed_point_atol"]
    assert "warning" not in info
    # an iteration cap far below what the tolerance needs: every block is reported unconverged, with a warning the
    # record keeps beside the sampler settings (bench.metrics.resolved_sampler) for the report to show
    for block in m.flow.residual_blocks():
        block.max_iters, block.atol, block.rtol = 2, 1e-12, 0.0
    out = m.sample(4, generator=torch.Generator().manual_seed(0))
    info = out.info
    n = len(m.flow.last_inverse_iterations)
    assert info["fixed_point_unconverged_blocks"] == n > 0
    assert info["warning"].startswith(f"{n} of {n} residual block inverse(s) stopped at the ")
    from bench.metrics import resolved_sampler
    assert resolved_sampler(out)["warning"] == info["warning"]


def test_glow_temperature_zero_like_is_mode():
    m = make("glow").eval()
    a = m.sample(3, generator=torch.Generator().manual_seed(0), temperature=1e-6).images
    b = m.sample(3, generator=torch.Generator().manual_seed(1), temperature=1e-6).images
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_bad_configs_are_one_line_errors():
    with pytest.raises(BenchError, match="divisible"):
        get("glow")({"levels": 4}, DataSpec(1, 8, 8))
    with pytest.raises(BenchError, match="lipschitz_coeff"):
        get("resflow")({"lipschitz_coeff": 1.2, "blocks_per_scale": [1]}, DataSpec(1, 8, 8))
    with pytest.raises(BenchError, match="preprocessing"):
        get("nsf")({"preprocessing": "tanh"}, DataSpec(1, 8, 8))


@pytest.mark.parametrize("name", ["resflow", "glow", "nsf"])
def test_trains_on_mnist_32(name):
    if not (SHARED_DATA / "MNIST").exists():
        pytest.skip("../shared/data/MNIST not present")
    from bench.data import load_split

    data = load_split({"dataset": "mnist", "image_size": 32}, "test", data_root=str(SHARED_DATA))
    x = data.x[:32]
    m = make(name, spec=data.spec)
    g = torch.Generator().manual_seed(0)
    losses = [m.training_step(Batch(x, None, g), i)["loss"] for i in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    m.eval()
    assert m.sample(2, generator=g).images.shape == (2, 1, 32, 32)
    assert torch.isfinite(m.nll_bits_per_dim(Batch(x[:4], None, g)).bits_per_dim).all()


def _exact_metric_ctx(name, tmp_path, n=6, **over):
    from bench.data import ImageData
    from tests.metrics_helpers import make_ctx
    m = make(name, **over)
    x = uniform_pixels(n, seed=5)
    m.train()
    m.loss(Batch(x, None, torch.Generator().manual_seed(0)))  # ActNorm init, spectral-norm warm-up
    real = ImageData(x, None, 0, "uniform/test@8")
    return m, make_ctx(m, real, real, tmp_path, exact_bpd_images=4)


def test_bits_per_dim_exact_metric_matches_brute_force_and_the_estimate(tmp_path):
    from bench.metrics.exact_bpd import bits_per_dim_exact
    from baselines.nn import flow_layers as fl
    m, ctx = _exact_metric_ctx("resflow", tmp_path, eval_draws=64, n_exact_terms_eval=10)
    rec = bits_per_dim_exact(ctx)["bits_per_dim_exact"]
    assert rec["n"] == 4 and rec["protocol"]["images"] == 4 and m.training  # training mode restored
    # independent: log N(z) + log|det| of the whole flow from its full Jacobian, same dequantization noise
    m.eval()
    s, ld_pre = fl.preprocess(ctx.real.x[:4], "logit", m.config["alpha"], ctx.generator(offset=4))
    bpd = []
    with torch.no_grad():
        for si, ldp in zip(s, ld_pre):
            m.flow.set_logdet_mode("exact")  # no roulette draws, a deterministic map
            jac = torch.autograd.functional.jacobian(lambda t: m.flow(t.view(1, 1, 8, 8))[0].flatten(), si.flatten())
            z = m.flow(si[None])[0]
            log_p = -0.5 * (z ** 2).sum() - 32 * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1] + ldp
            bpd.append((-log_p.item() + 64 * math.log(256)) / (64 * math.log(2)))
    expected = sum(bpd) / len(bpd)
    assert abs(rec["value"] - expected) < 1e-4, (rec["value"], expected)
    p = rec["protocol"]
    assert p["estimate_stderr"] > 0 and abs(p["estimate"] - rec["value"]) < 4 * p["estimate_stderr"], p
    assert p["estimate"] != rec["value"]  # the estimate really is a separate (stochastic) computation


def test_bits_per_dim_exact_metric_not_defined_or_refused(tmp_path, monkeypatch):
    from bench.metrics import compute
    _, ctx = _exact_metric_ctx("glow", tmp_path)
    rec = compute(["bits_per_dim_exact"], ctx)["bits_per_dim_exact"]
    assert rec["value"] is None and "not defined" in rec["note"]
    m, ctx = _exact_metric_ctx("resflow", tmp_path)
    monkeypatch.setattr(m, "exact_bpd_max_dims", 32)  # an 8x8 image (64 dims) is then too large
    rec = compute(["bits_per_dim_exact"], ctx)["bits_per_dim_exact"]
    assert rec["value"] is None and "skipped: 64 dimensions" in rec["note"]


def test_resflow_standard_errors_are_calibrated_both_ways(monkeypatch):
    """Repeat the Russian-roulette estimate on fixed dequantized images (only the estimator's draws vary): the
    empirical spread / the reported standard error must lie in [0.7, 1.4], per image and for the batch mean, so
    an error missing its 1/sqrt(draws) (2x too large) fails as surely as one shrunk by a spurious factor."""
    m = make("resflow", eval_draws=4, n_exact_terms_eval=1)
    x = uniform_pixels(8)
    m.train()
    m.loss(Batch(x, None, torch.Generator().manual_seed(0)))  # ActNorm init
    m.eval()
    fixed = m._preprocess(x, torch.Generator().manual_seed(1))
    monkeypatch.setattr(m, "_preprocess", lambda x, generator: fixed)
    runs = [m.nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(100 + r))) for r in range(150)]
    values = torch.stack([r.bits_per_dim for r in runs]).double()  # [R, N]
    per_image = values.var(0).mean() / torch.stack([r.stderr for r in runs]).double().pow(2).mean()
    batch = values.mean(1).var() / torch.tensor([r.batch_stderr ** 2 for r in runs], dtype=torch.float64).mean()
    assert values.std(0).min() > 0  # the estimator is stochastic at these settings
    assert 0.7 < float(per_image.sqrt()) < 1.4
    assert 0.7 < float(batch.sqrt()) < 1.4


def test_resflow_whole_model_estimate_is_unbiased(monkeypatch):
    """Through the whole model (not one block): with a single exact term the roulette tail carries the higher
    powers, so a tail weight off by one factor 1/(1 - p) biases the mean of many draws away from the brute-force
    log-det by many standard errors; the right weights agree within a few."""
    m = make("resflow", eval_draws=DRAWS_UNBIASED, n_exact_terms_eval=1, geom_p=0.5)
    x = uniform_pixels(8)
    m.train()
    m.loss(Batch(x, None, torch.Generator().manual_seed(0)))  # ActNorm init
    m.eval()
    fixed = m._preprocess(x, torch.Generator().manual_seed(1))
    monkeypatch.setattr(m, "_preprocess", lambda x, generator: fixed)
    est = m.nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(2)))
    exact = m.nll_bits_per_dim(Batch(x, None, torch.Generator().manual_seed(2)), exact=True)
    gap = float(est.bits_per_dim.mean() - exact.bits_per_dim.mean())
    assert abs(gap) < 4 * est.batch_stderr, (gap, est.batch_stderr)


DRAWS_UNBIASED = 400
