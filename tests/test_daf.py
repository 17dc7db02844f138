"""Diffusion-augmented flow (seed 001): prior consistency, continuous-latent VLB, sampling/inversion, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from bench.errors import BenchError
from bench.registry import Batch, DataSpec, get
from baselines.nn import schedule as S

SPEC = DataSpec(1, 8, 8)
FLOW = {"levels": 2, "steps_per_level": 2, "hidden_channels": 8, "num_blocks": 1, "num_bins": 4}
UNET = {"unet_channels": 8, "unet_channel_mults": [1, 2], "unet_res_blocks": 1, "unet_attn_resolutions": [],
        "unet_heads": 1, "timesteps": 20}


def images(n=6, seed=0, spec=SPEC):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *spec.shape), generator=g, dtype=torch.uint8)


def perturb(module, seed=1, scale=0.05):
    """Move every parameter off its (identity) initialisation so the test sees a non-trivial map."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def make_daf(spec=SPEC, **cfg):
    torch.manual_seed(0)
    return get("daf")({**FLOW, **UNET, **cfg}, spec)


def gen(seed=3):
    return torch.Generator().manual_seed(seed)


def test_gaussian_prior_daf_equals_bare_nsf_exactly():
    x = images()
    nsf = get("nsf")(dict(FLOW), SPEC)
    nsf.loss(Batch(x, None, gen(9)))  # ActNorm data-dependent init
    perturb(nsf.flow)
    daf = make_daf(prior="gaussian")
    daf.flow.load_state_dict(nsf.flow.state_dict())
    nsf.eval(), daf.eval()
    b_nsf = nsf.nll_bits_per_dim(Batch(x, None, gen())).bits_per_dim
    b_daf = daf.nll_bits_per_dim(Batch(x, None, gen())).bits_per_dim
    assert torch.equal(b_daf, b_nsf)
    # and against the flow module + standard normal computed here, independently of both wrappers
    y = (x.float() + torch.rand(x.shape, generator=gen())) / 256.0
    s = y - 0.5  # "center" preprocessing, log-det 0
    z, ld = daf.flow(s)
    log_pz = (-0.5 * z.double() ** 2 - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    d = SPEC.dims
    expected = (-(log_pz + ld.double()) / (d * math.log(2)) + 8.0).float()
    torch.testing.assert_close(b_daf, expected, atol=1e-5, rtol=0)
    # the training loss with the Gaussian prior is the bare flow's loss too
    assert torch.equal(daf.loss(Batch(x, None, gen(5))), nsf.loss(Batch(x, None, gen(5))))


def test_continuous_decoder_is_a_gaussian_density():
    sched = S.Schedule(S.make_betas("linear", 10))
    g = gen(0)
    x0, xt = torch.randn(4, 2, 4, 4, generator=g), torch.randn(4, 2, 4, 4, generator=g)
    out = torch.randn(4, 4, 4, 4, generator=g).clamp(-1, 1)
    t = torch.zeros(4, dtype=torch.long)
    p = sched.p_mean_var(out, xt, t, "learned")
    ref = -torch.distributions.Normal(p["mean"], torch.exp(0.5 * p["logvar"])).log_prob(x0).flatten(1).sum(1)
    got = sched.vb_term(out, x0, xt, t, "learned", decoder="continuous")
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)
    # for t > 0 the term is the KL, whatever the decoder
    t1 = torch.full((4,), 3, dtype=torch.long)
    torch.testing.assert_close(sched.vb_term(out, x0, xt, t1, "learned", decoder="continuous"),
                               sched.vb_term(out, x0, xt, t1, "learned"))


def test_continuous_vlb_is_exact_for_the_exact_reverse_process():
    # z0 ~ N(0, I) is the stationary law of the forward chain, so the exact reverse kernels are
    # q(z_{t-1} | z_t) = N(sqrt(alpha_t) z_t, beta_t): eps*(z_t) = sqrt(1 - abar_t) z_t with variance beta_t
    # (learned-variance output v = 1). Then p(z_{0:T}) = q(z_{0:T}) and the VLB equals -log N(z0; 0, I)
    # in expectation, at every T. A discretized 8-bit decoder would be off by ~log(127.5) nats/dim.
    T, n = 50, 300
    sched = S.Schedule(S.make_betas("linear", T, 1e-4 * 1000 / T, 0.02 * 1000 / T))
    abar = sched.alphas_cumprod.float()

    def exact(zt, t):
        eps = (1 - abar[t]).sqrt().view(-1, 1, 1, 1) * zt
        return torch.cat([eps, torch.ones_like(zt)], 1)

    z0 = torch.randn(n, 1, 4, 4, generator=gen(1))
    vlb = sched.vlb(exact, z0, "learned", gen(2), decoder="continuous")["total"].double()
    true = -torch.distributions.Normal(0.0, 1.0).log_prob(z0.double()).flatten(1).sum(1)
    gap = (vlb - true) / 16
    se = float(gap.std() / math.sqrt(n))
    assert abs(float(gap.mean())) < 4 * se + 1e-3, (float(gap.mean()), se)
    assert abs(float(gap.mean())) < 0.1  # vs ~4.8 nats/dim for a discretized decoder


def test_samples_in_unit_interval_and_flow_inverts():
    daf = make_daf()
    daf.loss(Batch(images(), None, gen()))
    perturb(daf.flow)
    daf.eval()
    out = daf.sample(5, generator=gen(4))
    assert out.images.shape == (5, *SPEC.shape)
    assert float(out.images.min()) >= 0.0 and float(out.images.max()) <= 1.0
    assert out.nfe == daf.schedule.T + 1
    ddim = daf.sample(3, generator=gen(4), name="ddim", steps=5)
    assert ddim.nfe == 6 and float(ddim.images.min()) >= 0.0 and float(ddim.images.max()) <= 1.0
    z = torch.randn(5, *SPEC.shape, generator=gen(6))
    with torch.no_grad():
        z2, _ = daf.flow(daf.flow.inverse(z))
    torch.testing.assert_close(z2, z, atol=1e-4, rtol=1e-4)


def _grads(module):
    return [p.grad for p in module.parameters() if p.requires_grad]


def _nonzero(grads):
    return sum(1 for g in grads if g is not None and float(g.abs().sum()) > 0)


def test_joint_training_gradients_reach_flow_and_unet():
    daf = make_daf()
    batch = Batch(images(), None, gen())
    daf.loss(batch)  # ActNorm init
    daf.zero_grad()
    daf.loss(Batch(images(seed=1), None, gen(1))).backward()
    assert _nonzero(_grads(daf.unet)) > 0.5 * len(_grads(daf.unet))
    assert _nonzero(_grads(daf.flow)) > 0
    # the flow is trained by the diffusion loss itself, not only by its log-det
    daf.zero_grad()
    z0, _, _ = daf._flow_forward(images(seed=2), gen(2))
    l_diff, _, _, _ = daf._diffusion_loss(z0, gen(3))
    l_diff.mean().backward()
    assert _nonzero(_grads(daf.flow)) > 0
    # with the hybrid loss the U-Net's variance half is trained as well (by L_vlb)
    w = daf.unet.conv_out.weight.grad
    assert float(w[SPEC.channels:].abs().sum()) > 0


def test_flow_first_trains_only_the_flow_at_first():
    daf = make_daf(training="flow-first", flow_first_steps=2)
    unet0, flow0 = [p.detach().clone() for p in daf.unet.parameters()], [p.detach().clone() for p in daf.flow.parameters()]
    out0 = daf.training_step(Batch(images(), None, gen()), 0)
    assert "l_simple" not in out0 and math.isfinite(out0["loss"])
    assert all(torch.equal(a, p) for a, p in zip(unet0, daf.unet.parameters()))  # the U-Net got no step
    assert any(not torch.equal(a, p) for a, p in zip(flow0, daf.flow.parameters()))
    out2 = daf.training_step(Batch(images(), None, gen()), 2)
    assert "l_simple" in out2 and any(not torch.equal(a, p) for a, p in zip(unet0, daf.unet.parameters()))


def test_bits_per_dim_is_an_upper_bound_made_of_flow_and_latent_parts():
    daf = make_daf()
    daf.loss(Batch(images(), None, gen()))
    daf.eval()
    lik = daf.nll_bits_per_dim(Batch(images(seed=4), None, gen(7)))
    assert lik.kind == "upper-bound" and lik.bits_per_dim.shape == (6,)
    assert torch.isfinite(lik.bits_per_dim).all()
    parts = lik.info["flow_bits_per_dim"] + lik.info["latent_bits_per_dim"]
    assert abs(float(lik.bits_per_dim.mean()) - parts) < 1e-3


def test_bad_config_and_sampler_options_are_clear_errors():
    with pytest.raises(BenchError, match="training"):
        make_daf(training="sequential")
    with pytest.raises(BenchError, match="prior"):
        make_daf(prior="laplace")
    with pytest.raises(BenchError, match="divisible"):
        make_daf(spec=DataSpec(1, 12, 12), levels=3)
    daf = make_daf()
    with pytest.raises(BenchError, match="unknown sampler option"):
        daf.sample(2, temperature=0.5)
    with pytest.raises(BenchError, match="steps"):
        daf.sample(2, steps=10_000)


def test_daf_trains_a_few_steps_on_mnist(shared_data):
    from bench.data import load_split

    data = load_split({"dataset": "mnist", "image_size": 32}, "test", data_root=str(shared_data))
    x = data.x[:16]
    spec = DataSpec(1, 32, 32)
    daf = make_daf(spec=spec, levels=3, unet_channel_mults=[1, 2], lr=1e-3)
    losses = [daf.training_step(Batch(x, None, gen(i)), i)["loss"] for i in range(4)]
    assert all(math.isfinite(v) for v in losses)
    daf.eval()
    lik = daf.nll_bits_per_dim(Batch(x[:4], None, gen(9)))
    assert torch.isfinite(lik.bits_per_dim).all() and float(lik.bits_per_dim.min()) > 0
    s = daf.sample(2, generator=gen(1))
    assert s.images.shape == (2, 1, 32, 32)


def test_default_objective_is_the_thesis_loss_L_diff_minus_log_det():
    # the L = L_diff(z0) - log|det df/dx|, L_diff = L_simple + lambda * L_vlb, recomputed here from the
    # flow module, the U-Net and the schedule with the same random draws (dequantization, t, eps)
    lam = 1.0  # not the default 0.001, so that L_vlb's share of the gradients is visible at this tolerance
    daf = make_daf(vlb_weight=lam)
    assert daf.config["flow_objective"] == "thesis"
    perturb(daf.flow)
    perturb(daf.unet, scale=0.02)
    daf.loss(Batch(images(), None, gen()))  # ActNorm init
    x = images(seed=1)
    got = daf.loss(Batch(x, None, gen(1)))
    g = gen(1)
    y = (x.float() + torch.rand(x.shape, generator=g)) / 256.0
    z0, ld = daf.flow(y - 0.5)  # "center" preprocessing: log-det 0
    T, n, d = daf.schedule.T, x.shape[0], SPEC.dims * math.log(2)
    t = torch.randint(0, T, (n,), generator=g)
    eps = torch.randn(z0.shape, generator=g)
    abar = daf.schedule.alphas_cumprod.float()[t].view(-1, 1, 1, 1)
    zt = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
    out = daf.unet(zt, t)
    l_simple = ((eps - out[:, :1]) ** 2).flatten(1).mean(1)
    l_vlb = T * daf.schedule.vb_term(torch.cat([out[:, :1].detach(), out[:, 1:]], 1), z0, zt, t, "learned",
                                     decoder="continuous") / d
    expected = (l_simple + lam * l_vlb - ld / d + 8.0).mean()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # and the same gradients into the flow (through z_t, the U-Net's eps and variance outputs, and the log-det)
    params = [p for p in daf.flow.parameters() if p.requires_grad]
    g_got = torch.autograd.grad(daf.loss(Batch(x, None, gen(1))), params)
    g_exp = torch.autograd.grad(expected, params)
    for a, b in zip(g_got, g_exp):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bound_objective_trains_the_flow_on_the_bound_and_leaves_the_unets_loss_alone():
    # "bound" adds B(z0) (the one-sample VLB estimate on -log p(z0)) through the U-Net as a fixed function:
    # the U-Net's gradients equal those of the thesis objective, the flow's differ by B's gradient.
    grads = {}
    for objective in ("thesis", "bound"):
        daf = make_daf(flow_objective=objective)
        perturb(daf.flow)
        daf.loss(Batch(images(), None, gen()))  # ActNorm init
        daf.zero_grad()
        out = daf._losses(Batch(images(seed=1), None, gen(1)), None)
        out["loss"].backward()
        grads[objective] = ({n: p.grad.clone() for n, p in daf.unet.named_parameters() if p.grad is not None},
                            {n: p.grad.clone() for n, p in daf.flow.named_parameters() if p.grad is not None})
        if objective == "bound":
            assert float(out["latent_bound"].detach()) > 0
    (unet_t, flow_t), (unet_b, flow_b) = grads["thesis"], grads["bound"]
    assert unet_t.keys() == unet_b.keys() and len(unet_t) > 0
    for n in unet_t:
        assert torch.allclose(unet_t[n], unet_b[n], atol=1e-6, rtol=1e-5), n
    assert any(not torch.allclose(flow_t[n], flow_b[n], atol=1e-6) for n in flow_t)


def test_frozen_unet_is_the_same_function_with_gradients_only_to_its_input():
    daf = make_daf()
    perturb(daf.unet)
    z = torch.randn(2, *SPEC.shape, generator=gen(5), requires_grad=True)
    t = daf.schedule.model_t(torch.tensor([3, 11]))
    out = daf._eps_model_frozen(z, t)
    assert torch.allclose(out, daf._eps_model(z, t), atol=1e-6)
    out.square().sum().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    assert all(p.grad is None for p in daf.unet.parameters())
