"""Diffusion-augmented flow (DAF, seed 001 chapters 4-5): a neural spline flow whose Gaussian prior
is replaced by a DDPM on its latent.

Model. ``f`` is the multi-scale NSF of ``baselines/nn/flow_layers.py`` (:class:`MultiScaleFlow`
with rational-quadratic spline coupling, the same module the ``nsf`` wrapper uses); it maps the
preprocessed dequantized image s (``bench.conventions`` via ``flow_layers.preprocess``) to an
image-shaped latent z0 = f(s) of the same dimension D. A DDPM with the shared U-Net
(``baselines/nn/unet.py``) and the shared noise schedule (``baselines/nn/schedule.py``) models z0.
No U-Net, spline or schedule code lives in this file.

Training objective (per dimension, one sample t ~ U{0..T-1}, eps ~ N(0, I)), the issue's
L = L_diff(z0) - log|det df/dx| with L_diff = L_simple + lambda * L_vlb (``flow_objective = "thesis"``,
the default: the flow NLL with log p_Z(f(x)) replaced by the diffusion loss, as the thesis trains it):

    L = L_simple + lambda * L_vlb + flow_bits
    flow_bits = (-log|det df/ds| - log|ds/dy|) / (D ln 2) + 8

L_simple is the per-dim MSE of the eps prediction; L_vlb = T * L_t in bits/dim with the U-Net's eps
output detached (L_vlb trains the learned variances, as in Nichol & Dhariwal's hybrid loss); both
reach the flow through z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps. lambda = ``vlb_weight`` = 0.001 (their value; the
thesis cites their loss without lambda). The thesis prints the log-det with a plus sign (eq. 4.6); the
likelihood-consistent objective subtracts it, as here. Nothing in this loss charges the flow for the
scale of z0, and the flow can lower flow_bits by spreading z0 further than the diffusion models well
(docs/daf.md has the measurement: 18.0 bits/dim after 400 steps on digits-daf's smoke sizes).

``flow_objective = "bound"`` (an addition, not the thesis's): L = L_simple + lambda * L_vlb + flow_bits
+ B(z0) (L_vlb's posterior target then uses z0 detached), where B(z0) = (T * L_t + L_T) / (D ln 2)
is a one-sample unbiased estimate of the diffusion's VLB on -log p(z0), computed with the U-Net as a
fixed function (detached weights): its gradient trains the flow only, so the flow minimises the same
bound that ``nll_bits_per_dim`` reports (8.99 vs 18.0 bits/dim at 400 digits-daf steps; one more U-Net
forward and input-backward per step). With ``prior = "gaussian"`` the diffusion part is replaced by
N(0, I) and L is exactly the ``nsf`` wrapper's loss.

``training``: "joint" (default; the thesis trains flow and diffusion "together ... end to end"
from the start) or "flow-first": the first ``flow_first_steps`` optimizer steps train the flow
alone with the N(0, I) prior, then both jointly.

Likelihood (``nll_bits_per_dim``): L_simple is not a likelihood, so the reported bits/dim is

    -log p(y) <= VLB(z0) - log|det df/ds| - log|ds/dy|,   bits/dim = that / (D ln 2) + 8,

with VLB(z0) the diffusion's full variational bound on -log p(z0) (prior KL + all T terms).
z0 is continuous, so the t = 0 term is the *continuous* Gaussian density -log N(z0; mu(z1), s1^2)
(``schedule.vb_term(..., decoder="continuous")``), not the discretized 8-bit decoder of Ho et al.:
the discretization to 8 bits already happened before the flow (uniform dequantization, Theis et
al. 2016), and a discretized decoder on z0 would be a probability of a bin of a space that has no
bins, not a density, and would not combine with the flow's Jacobian. Each of the T terms uses one
draw of z_t, so the number is an unbiased estimate of an upper bound (Likelihood kind
"upper-bound"). The training loss is reported separately (``loss``, ``l_simple``, ``l_vlb``,
``flow_bits`` in the step output). Seed 001's "NLL" column has no stated unit; genbench's is a
bits/dim upper bound (see docs/daf.md).

Sampling: reverse diffusion in latent space (ancestral with the learned variances, or DDIM;
``steps`` respaces the schedule), then s = f^-1(z0) and images = postprocess(s) in [0, 1].
``nfe`` = diffusion steps + 1 (the flow inverse pass).

The options' defaults are Table 5.1's MNIST configuration (3 levels x 8 steps, 64 hidden channels, 2 resnet
blocks in flow and U-Net, T = 500). What the thesis does not state is a config value with a
documented choice: U-Net channel multipliers and attention, beta schedule (Ho et al.'s linear
schedule rescaled by 1000/T as in Nichol & Dhariwal's code), learning rate.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bench.conventions import draw
from bench.errors import BenchError
from bench.registry import Batch, GenerativeModel, Likelihood, Option, Samples, register
from baselines.nn import flow_layers as fl
from baselines.nn import schedule as S
from baselines.nn.samplers import DiffusionChain
from baselines.nn.unet import UNet

LN2 = math.log(2.0)


@register
class DiffusionAugmentedFlow(GenerativeModel):
    """DAF (seed 001): multi-scale NSF x -> z0, DDPM prior on z0; see the module docstring."""

    name = "daf"
    tiny = {"levels": 2, "steps_per_level": 2, "hidden_channels": 8, "num_blocks": 1, "num_bins": 4,
            "unet_channels": 8, "unet_channel_mults": [1, 2], "unet_res_blocks": 1, "unet_attn_resolutions": [],
            "timesteps": 20}
    family = "hybrid"
    has_likelihood = True
    conditional = False
    sampler_options = DiffusionChain.schema(clip=False)
    # The U-Net keys carry a unet_ prefix (not the shared UNET_OPTIONS): the flow has its own hidden_channels
    # and num_blocks, and Table 5.1's U-Net is no preset, so every field is set here.
    options = {
        "lr": Option(2e-4, "Adam learning rate of the flow and the diffusion prior together", gt=0),
        # flow f (Table 5.1, MNIST): levels x steps_per_level spline-coupling steps
        **fl.MULTISCALE_OPTIONS, "steps_per_level": fl.MULTISCALE_OPTIONS["steps_per_level"].with_default(8),
        "hidden_channels": fl.MULTISCALE_OPTIONS["hidden_channels"].with_default(64),
        "num_blocks": fl.MULTISCALE_OPTIONS["num_blocks"].with_default(2),
        **fl.SPLINE_OPTIONS, **fl.PREPROCESSING_OPTIONS,
        # diffusion on z0: the shared U-Net (base channels = Table 5.1's hidden channels)
        "unet_channels": Option(64, "U-Net channels at the first resolution", ge=1),
        "unet_channel_mults": Option([1, 2, 2, 2], "U-Net channel multiplier per resolution", items=int, ge=1),
        "unet_res_blocks": Option(2, "U-Net residual blocks per resolution", ge=1),
        "unet_attn_resolutions": Option([16], "resolutions (side) with self-attention", items=int, ge=1),
        "unet_heads": Option(1, "self-attention heads", ge=1),
        "unet_time_embedding": Option("adagn", "how the time embedding enters each residual block",
                                      choices=("adagn", "add")),
        "unet_dropout": Option(0.0, "dropout in the U-Net's residual blocks", ge=0, lt=1),
        "timesteps": Option(500, "diffusion steps T of the prior on z0", ge=2),
        "beta_schedule": Option("linear", "noise schedule of the prior", choices=("linear", "cosine")),
        "variance": Option("learned", "reverse-process variance of the prior", choices=S.VARIANCES),
        # objective
        "vlb_weight": Option(0.001, "weight of the VLB term in the prior's hybrid loss", ge=0),
        "training": Option("joint", "'joint': flow and prior from step 0; 'flow-first': the flow alone for "
                           "flow_first_steps, then both", choices=("joint", "flow-first")),
        "flow_first_steps": Option(1000, "steps of flow-only training with training = 'flow-first'", ge=0),
        "prior": Option("diffusion", "prior on z0: the diffusion model, or a standard normal (the NSF ablation)",
                        choices=("diffusion", "gaussian")),
        "flow_objective": Option("thesis", "the flow's loss: the thesis's objective, or the bound that bits/dim "
                                 "reports", choices=("thesis", "bound")),
    }

    def __init__(self, config: dict[str, Any], data):
        super().__init__(config, data)
        cfg = self.cfg
        levels = cfg.levels
        mults = [int(m) for m in cfg.unet_channel_mults]
        for factor, what in ((2 ** levels, f"levels={levels}"), (2 ** (len(mults) - 1), f"unet_channel_mults={mults}")):
            if data.height % factor or data.width % factor:
                raise BenchError(f"daf: {what} needs image sides divisible by {factor}, got "
                                 f"{data.height}x{data.width}; change image_size or the config")
        self.flow = fl.MultiScaleFlow(data.channels, levels, cfg.steps_per_level, cfg.hidden_channels,
                                      "spline", cfg.num_blocks, cfg.num_bins, cfg.tail_bound)
        c = data.channels
        self.learned_variance = cfg.variance == "learned"
        self.unet = UNet(c, 2 * c if self.learned_variance else c, base_channels=cfg.unet_channels,
                         channel_mults=mults, num_res_blocks=cfg.unet_res_blocks,
                         attn_resolutions=[int(r) for r in cfg.unet_attn_resolutions],
                         num_heads=cfg.unet_heads, time_embedding=cfg.unet_time_embedding,
                         dropout=cfg.unet_dropout, image_size=data.height)
        T = cfg.timesteps
        if cfg.beta_schedule == "linear":  # Ho et al.'s 1e-4..0.02 at T = 1000, rescaled by 1000/T (iDDPM code)
            betas = S.make_betas("linear", T, 1e-4 * 1000 / T, min(0.02 * 1000 / T, 0.999))  # capped for T < 21
        else:
            try:
                betas = S.make_betas(cfg.beta_schedule, T)
            except ValueError as e:
                raise BenchError(f"daf: {e}") from None
        self.schedule = S.Schedule(betas)

    # ---- pieces ----------------------------------------------------------------------------------
    def _eps_model(self, z, t):
        return self.unet(z, t).float()

    def _eps_model_frozen(self, z, t):
        """The U-Net as a fixed function of its input: gradients reach z (and the flow), not the U-Net."""
        params = {k: v.detach() for k, v in self.unet.named_parameters()}
        return torch.func.functional_call(self.unet, (params, dict(self.unet.named_buffers())), (z, t)).float()

    def _flow_forward(self, x, generator):
        """uint8 images -> (z0 float32, flow log-det, preprocessing log-det), per image."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            s, ld_pre = fl.preprocess(x, self.cfg.preprocessing, self.cfg.alpha, generator)
        z0, ld = self.flow(s, generator)
        return z0.float(), ld.float(), ld_pre.float()

    def _flow_bits(self, ld, ld_pre):
        """The bare flow's bits/dim without its prior term: (-logdet - logdet_pre)/(D ln 2) + 8."""
        return fl.bits_per_dim(torch.zeros_like(ld), ld, ld_pre, self.data.dims)

    def _gaussian_prior_bits(self, z0):
        return -fl.standard_normal_logprob(z0) / (self.data.dims * LN2)

    def _diffusion_loss(self, z0, generator):
        """Per-image (L_diff, L_simple, L_vlb, latent bound) in per-dim units (bits/dim for the last two).

        The latent bound is a one-sample unbiased estimate of the diffusion's VLB on -log p(z0):
        T * L_t (t uniform; the t = 0 term is the continuous decoder) + the prior KL L_T."""
        n, T = z0.shape[0], self.schedule.T
        t = draw(torch.randint, 0, T, (n,), generator=generator, device=z0.device)
        eps = S.randn(z0.shape, generator, z0.device)
        zt = self.schedule.q_sample(z0, t, eps)
        out = self._eps_model(zt, self.schedule.model_t(t))
        c, d = z0.shape[1], self.data.dims * LN2
        l_simple = ((eps - out[:, :c]) ** 2).flatten(1).mean(1)
        weight = self.cfg.vlb_weight
        bound = self.cfg.flow_objective == "bound"
        l_vlb = torch.zeros_like(l_simple)
        latent_bound = torch.zeros_like(l_simple)
        if weight > 0:
            frozen = torch.cat([out[:, :c].detach(), out[:, c:]], 1)  # L_vlb trains the variances, not eps
            # with flow_objective = "bound" the flow gets its gradient from latent_bound instead
            z0_vlb = z0.detach() if bound else z0
            zt_vlb = self.schedule.q_sample(z0_vlb, t, eps)
            l_vlb = T * self.schedule.vb_term(frozen, z0_vlb, zt_vlb, t, self.cfg.variance,
                                              decoder="continuous") / d
        if bound:
            # gradient into the flow only (through z0, z_t and the U-Net's input): the U-Net keeps the hybrid
            # loss (L_simple + lambda L_vlb) and the flow minimises the bound that is reported
            fixed = self._eps_model_frozen(zt, self.schedule.model_t(t))
            l_t = self.schedule.vb_term(fixed, z0, zt, t, self.cfg.variance, decoder="continuous")
            latent_bound = (T * l_t + self.schedule.prior_kl(z0)) / d
        return l_simple + weight * l_vlb, l_simple, l_vlb, latent_bound

    def _joint(self, step: int | None) -> bool:
        if self.cfg.prior == "gaussian":
            return False
        if self.cfg.training == "flow-first":
            return step is None or step >= self.cfg.flow_first_steps
        return True

    # ---- training --------------------------------------------------------------------------------
    def _losses(self, batch: Batch, step: int | None) -> dict[str, torch.Tensor]:
        z0, ld, ld_pre = self._flow_forward(batch.x, batch.generator)
        flow_bits = self._flow_bits(ld, ld_pre)
        if self._joint(step):
            l_diff, l_simple, l_vlb, latent_bound = self._diffusion_loss(z0, batch.generator)
            out = {"loss": (l_diff + latent_bound + flow_bits).mean(), "l_simple": l_simple.mean(),
                   "l_vlb": l_vlb.mean(), "flow_bits": flow_bits.mean()}
            if self.cfg.flow_objective == "bound":
                out["latent_bound"] = latent_bound.mean()
            return out
        # standard-normal prior (prior = "gaussian", or the flow-first phase): the bare flow's bits/dim
        return {"loss": (self._gaussian_prior_bits(z0) + flow_bits).mean(), "flow_bits": flow_bits.mean()}

    def loss(self, batch: Batch) -> torch.Tensor:
        """The objective at the end of any flow-first phase (joint, or Gaussian prior)."""
        return self._losses(batch, None)["loss"]

    def training_step(self, batch: Batch, step: int) -> dict[str, float]:
        out = self._losses(batch, step)
        self.optimize(out["loss"], "model")
        return {k: float(v.detach()) for k, v in out.items()}

    # ---- likelihood ------------------------------------------------------------------------------
    @torch.no_grad()
    def latent_nll(self, z0: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-image upper bound on -log p(z0) in nats (continuous latent) and its prior-KL part."""
        if self.cfg.prior == "gaussian":
            nll = -fl.standard_normal_logprob(z0)
            return {"total": nll, "prior": torch.zeros_like(nll)}
        return self.schedule.vlb(self._eps_model, z0.float(), self.cfg.variance, generator,
                                 decoder="continuous")

    @torch.no_grad()
    def nll_bits_per_dim(self, batch: Batch) -> Likelihood:
        z0, ld, ld_pre = self._flow_forward(batch.x, batch.generator)
        latent = self.latent_nll(z0, batch.generator)
        bpd = fl.bits_per_dim(-latent["total"], ld, ld_pre, self.data.dims)
        d = self.data.dims * LN2
        gaussian = self.cfg.prior == "gaussian"
        info = {"bound": ("dequantization bound; latent prior N(0, I), exact" if gaussian else
                          "dequantization bound + diffusion VLB on -log p(z0) (continuous Gaussian decoder at t=0), "
                          f"all {self.schedule.T} terms, one z_t draw each"),
                "latent_bits_per_dim": float((latent["total"] / d).mean()),
                "latent_prior_kl_bits_per_dim": float((latent["prior"] / d).mean()),
                "flow_bits_per_dim": float(self._flow_bits(ld, ld_pre).mean())}
        return Likelihood(bpd.float(), kind="upper-bound", info=info)

    # ---- sampling --------------------------------------------------------------------------------
    def _sampler(self, sampler: dict[str, Any]) -> DiffusionChain:
        """The latent chain (shared with ddpm: ancestral/DDIM, respacing); it does not clip, z0 is unbounded."""
        return DiffusionChain.parse(sampler, self.schedule.T, self.name, self.sampler_options)[0]

    def check_sampler(self, options: dict[str, Any]) -> None:
        self._sampler(options)

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None, **sampler) -> Samples:
        chain = self._sampler(sampler)
        dev = next(self.parameters()).device
        shape = (n, *self.data.shape)
        if self.cfg.prior == "gaussian":
            z0, steps, info = S.randn(shape, generator, dev), 0, {"sampler": "gaussian-prior"}
        else:
            z0, steps, ran = chain.run(self._eps_model, self.schedule, shape, variance=self.cfg.variance,
                                       generator=generator, device=dev)
            info = chain.resolved(ran)
        s = self.flow.inverse(z0.float())
        images = fl.postprocess(s, self.cfg.preprocessing, self.cfg.alpha)
        return Samples(images, nfe=steps + 1, info={**info, "diffusion_steps": steps, "flow_inverse_passes": 1})
