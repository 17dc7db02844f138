"""baselines/nn/ode.py: solvers against closed-form flows, NFE counts, exact/Hutchinson likelihoods."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.nn import ode
from baselines.nn.flow_layers import standard_normal_logprob
from bench.errors import BenchError

# A rotation-and-decay field v(x) = M x: x(1) = expm(M) x(0), a curved path that separates the solvers.
M = torch.tensor([[-0.3, 2.0], [-2.0, -0.3]], dtype=torch.float64)


def linear_field(t, x):
    return x @ M.T.to(x.dtype)


class AffineGaussianFlow:
    """v(t, x) = m + (A - I)((1 - t) I + t A)^{-1}(x - t m): the straight-line flow x_t = ((1-t) I + t A) x0 + t m.

    It carries N(0, I) at t = 0 to N(m, A A^T) at t = 1 (A lower triangular, positive diagonal),
    and its divergence is tr((A - I)((1 - t) I + t A)^{-1}).
    """

    def __init__(self, d: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.3
        self.A = torch.tril(a, -1) + torch.diag(torch.rand(d, generator=g, dtype=torch.float64) * 1.2 + 0.4)
        self.m = torch.randn(d, generator=g, dtype=torch.float64)
        self.d = d

    def __call__(self, t, x):
        t = float(t)
        eye = torch.eye(self.d, dtype=torch.float64)
        k = (self.A - eye) @ torch.linalg.inv((1 - t) * eye + t * self.A)
        xf = x.reshape(x.shape[0], self.d).double()
        return (self.m + (xf - t * self.m) @ k.T).to(x.dtype).reshape(x.shape)

    def push(self, x0):
        return (x0.reshape(x0.shape[0], self.d).double() @ self.A.T + self.m).reshape(x0.shape)

    def distribution(self):
        return torch.distributions.MultivariateNormal(self.m, scale_tril=self.A)


@pytest.mark.parametrize("solver,steps,tol,nfe", [("euler", 40, 0.15, 40), ("midpoint", 40, 3e-3, 80),
                                                  ("rk4", 40, 1e-5, 160), ("dopri5", None, 1e-4, None)])
def test_solvers_match_matrix_exponential_and_count_nfe(solver, steps, tol, nfe):
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    res = ode.integrate(linear_field, x0, solver=solver, steps=steps, rtol=1e-7, atol=1e-7)
    exact = (x0.double() @ torch.linalg.matrix_exp(M).T)
    err = (res.x.double() - exact).abs().max().item()
    assert err < tol
    if nfe is not None:
        assert res.nfe == nfe
    else:
        assert 6 <= res.nfe < 1000


def test_solver_order_shows_in_the_error():
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(2))
    exact = x0.double() @ torch.linalg.matrix_exp(M).T
    errs = {s: (ode.integrate(linear_field, x0, solver=s, steps=20).x.double() - exact).abs().max().item()
            for s in ("euler", "midpoint", "rk4")}
    assert errs["euler"] > 10 * errs["midpoint"] > 10 * errs["rk4"]


def test_nfe_counter_counts_calls_and_backward_integration_inverts():
    flow = AffineGaussianFlow(3)
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(3))
    fwd = ode.integrate(flow, x0, solver="dopri5", rtol=1e-8, atol=1e-8)
    calls = []
    counted = ode.CountedVelocity(lambda t, x: (calls.append(1), flow(t, x))[1])
    back = ode.integrate(counted, fwd.x, t0=1.0, t1=0.0, solver="rk4", steps=10)
    assert counted.nfe == len(calls) == 40 and back.nfe == 40
    torch.testing.assert_close(back.x, x0, atol=1e-4, rtol=0)


def test_gaussian_to_gaussian_transport_each_solver():
    flow = AffineGaussianFlow(3, seed=4)
    x0 = torch.randn(20000, 3, generator=torch.Generator().manual_seed(5))
    for solver in ode.SOLVERS:
        x1 = ode.integrate(flow, x0, solver=solver, steps=8, rtol=1e-6, atol=1e-6).x.double()
        torch.testing.assert_close(x1, flow.push(x0), atol=2e-4, rtol=0)
        cov = torch.cov(x1.T)
        assert (x1.mean(0) - flow.m).abs().max() < 0.05
        assert (cov - flow.A @ flow.A.T).abs().max() < 0.06


def test_exact_likelihood_matches_closed_form_density():
    flow = AffineGaussianFlow(4, seed=6)
    dist = flow.distribution()
    x = dist.sample((10,)).float()
    res = ode.log_likelihood(flow, x, divergence="exact", solver="dopri5", rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(res.log_prob.double(), dist.log_prob(x.double()), atol=1e-3, rtol=0)
    assert res.stderr is None and res.probes == 0 and res.nfe > 0
    # fixed-step rk4 as well
    res4 = ode.log_likelihood(flow, x, divergence="exact", solver="rk4", steps=20)
    torch.testing.assert_close(res4.log_prob.double(), dist.log_prob(x.double()), atol=1e-3, rtol=0)


def test_exact_divergence_equals_brute_force_jacobian_trace():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6))
    x = torch.randn(5, 6, requires_grad=True)
    v = net(x)
    brute = torch.stack([torch.autograd.functional.jacobian(net, x[i].detach()).trace() for i in range(5)])
    for chunk in (1, 4, 64):
        torch.testing.assert_close(ode.exact_divergence(v, x, chunk=chunk), brute, atol=1e-5, rtol=1e-5)


def test_hutchinson_agrees_with_exact_within_its_error():
    flow = AffineGaussianFlow(6, seed=7)
    x = flow.distribution().sample((40,)).float()
    exact = ode.log_likelihood(flow, x, divergence="exact", solver="rk4", steps=10)
    est = ode.log_likelihood(flow, x, divergence="hutchinson", probes=8, solver="rk4", steps=10,
                             generator=torch.Generator().manual_seed(8))
    assert est.probes == 8 and est.stderr is not None and (est.stderr > 0).all()
    z = (est.log_prob - exact.log_prob) / est.stderr
    assert z.abs().max() < 6  # per image
    assert z.pow(2).mean() < 3  # calibrated on average (~1 when the stderr is right)
    mean_diff = (est.log_prob - exact.log_prob).mean()
    assert mean_diff.abs() < 4 * est.stderr.pow(2).sum().sqrt() / len(x)  # unbiased
    # a single probe gives no stderr
    one = ode.log_likelihood(flow, x[:3], divergence="hutchinson", probes=1, solver="euler", steps=4)
    assert one.stderr is None


def test_likelihood_works_under_inference_mode():
    flow = AffineGaussianFlow(2, seed=9)
    x = flow.distribution().sample((4,)).float()
    with torch.inference_mode():
        res = ode.log_likelihood(flow, x, divergence="exact", solver="rk4", steps=8)
    torch.testing.assert_close(res.log_prob.double(), flow.distribution().log_prob(x.double()), atol=1e-3, rtol=0)


def test_bad_solver_options_are_clear_errors():
    x = torch.zeros(2, 2)
    with pytest.raises(BenchError, match="unknown ODE solver 'rk5'"):
        ode.integrate(linear_field, x, solver="rk5")
    with pytest.raises(BenchError, match="positive integer number of steps"):
        ode.integrate(linear_field, x, solver="euler", steps=0)
    with pytest.raises(BenchError, match="unknown divergence"):
        ode.log_likelihood(linear_field, x, divergence="hutch")


def test_standard_normal_log_prob():
    z = torch.randn(3, 1, 2, 2)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(standard_normal_logprob(z), ref)
    assert math.isclose(float(standard_normal_logprob(torch.zeros(1, 4))), -2 * math.log(2 * math.pi), rel_tol=1e-6)


def test_hutchinson_standard_error_is_calibrated_both_ways():
    """One image replicated 400 times gets 400 independent sets of K probes: the spread of the estimates over the
    replicates / the reported standard error (RMS) must lie in [0.7, 1.4], so an error missing its 1/sqrt(K)
    (2x too large at K = 4) fails, as does one shrunk by a spurious factor."""
    flow = AffineGaussianFlow(6, seed=11)
    x = flow.distribution().sample((1,)).float().repeat(400, 1)
    est = ode.log_likelihood(flow, x, divergence="hutchinson", probes=4, solver="dopri5", rtol=1e-6, atol=1e-6,
                             generator=torch.Generator().manual_seed(12))
    ratio = est.log_prob.double().std() / est.stderr.double().pow(2).mean().sqrt()
    assert est.log_prob.double().std() > 0
    assert 0.7 < float(ratio) < 1.4
