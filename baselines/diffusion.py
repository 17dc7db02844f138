"""Diffusion family: DDPM (Ho et al. 2020), improved DDPM (Nichol & Dhariwal 2021), NCSN (Song & Ermon 2019).

Registered models (family "diffusion"):

- ``ddpm``: eps-prediction with L_simple, linear (or cosine) beta, fixed variances, EMA of the weights.
  Options: class conditioning with label dropout for classifier-free guidance (``class_conditional``,
  ``label_dropout``), and a noise-aware classifier trained on x_t beside the model (``classifier``) for
  classifier guidance. The U-Net is ``baselines.nn.unet.UNet`` chosen by preset (``unet`` =
  "ddpm-thesis" | "ddpm-ho" | "tiny") with any of its fields overridable.
  Why ``ddpm-thesis`` has 18.09M parameters (18,087,361 at 1 channel, 18,089,667 at 3) where seed 000
  prints 5.7M (MNIST) and 8.9M (CIFAR-10): the image channel count only changes conv_in/conv_out (2,306
  parameters), so two counts 3.2M apart cannot be one architecture at 1 and 3 channels; built as the
  thesis' table states (32/16/8/4, 2 blocks, base 64, multipliers 1,2,2,4), most of the 18M sit in the
  256-channel 4x4 level and its up-path blocks on 512-channel concatenations. Nearby variants give 9.6M
  (multipliers 1,2,2,2), 6.5M (and one block per level), 4.5M (base 32) -- none is the stated table, so the
  thesis' figures come from an unstated configuration or a counting slip. We build the stated architecture
  and report its real count rather than bend it to hit a number (details: unet module, docs/diffusion.md).
  ``conditional`` is per instance: True when the model can produce per-class samples, i.e. with
  ``class_conditional`` or with a ``classifier`` (classifier guidance alone conditions an unconditional
  U-Net); ``sample(n, labels=...)`` then accepts labels.
- ``iddpm``: the same with learned variances (2C output channels, interpolated log-variance), the hybrid
  loss L_simple + lambda * L_vlb (stop-gradient on the mean for L_vlb), cosine schedule; sample it respaced
  with ``steps=S``.
- ``ncsn``: noise-conditional score network (the U-Net conditioned on the noise-level index) with geometric
  sigmas, denoising score matching, annealed Langevin dynamics. No likelihood.

Sampler options (``sample(n, **options)``, from a suite's ``[models.X.sampler]`` or eval ``samplers``; the chain's
are :class:`baselines.nn.samplers.DiffusionChain`'s, shared with ``daf``):
``name`` ("ancestral", also "ddpm" | "ddim"), ``steps`` (S <= T; ancestral with S < T samples the respaced process),
``eta`` (DDIM), ``spacing`` (uniform | linspace | leading | trailing | quadratic), ``clip`` (clip x0 to
[-1, 1]), ``guidance`` (classifier-free weight w: eps_u + w (eps_c - eps_u); 1 = plain conditional),
``classifier_scale`` (classifier guidance s: eps - sqrt(1 - abar_t) s grad log p(y | x_t); default the
config's ``classifier_scale`` when a classifier is trained, 0 = off).
Samples report ``nfe`` (U-Net evaluations per image; classifier-free guidance counts 2 per step) and, with
classifier guidance, ``info["classifier_evals"]``: classifier forward+backward passes per image (1 per
step), which nfe does not include.

Bits/dim: the exact variational bound over all T steps + prior with the discretized Gaussian decoder on
x/127.5 - 1 (``bench.conventions.to_signed``), with the learned variances where present, evaluated with the
EMA weights; a ``Likelihood(kind="upper-bound")``. A class-conditional model is evaluated through its
null-label (unconditional) branch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from bench.conventions import bits_per_dim, dequantize, draw, from_signed, to_signed
from bench.errors import BenchError
from bench.registry import Batch, GenerativeModel, Likelihood, Option, Samples, register
from baselines.nn import schedule as S
from baselines.nn.ema import EMAMixin
from baselines.nn.labels import class_labels
from baselines.nn.samplers import LANGEVIN_OPTIONS, AnnealedLangevin, DiffusionChain
from baselines.nn.unet import UNET_OPTIONS, NoiseAwareClassifier, build_unet


# ddpm/iddpm's options beyond the shared chain's (name, steps, spacing, eta, clip)
GUIDANCE_OPTIONS = {
    "guidance": Option(1.0, "classifier-free guidance weight w: eps_u + w (eps_c - eps_u); 1 = the conditional eps",
                       ge=0.0),
    "classifier_scale": Option(None, "classifier-guidance scale s (None: the config's; 0 turns it off)", type=float,
                               ge=0.0),
}


@register
class DDPM(EMAMixin, GenerativeModel):
    """DDPM (Ho et al. 2020): U-Net noise prediction, linear betas, ancestral or DDIM sampling, bits/dim by the variational bound."""

    name = "ddpm"
    tiny = {"unet": "tiny", "attn_resolutions": [], "timesteps": 20, "beta_start": 5e-3, "beta_end": 0.5,
            "ema_decay": 0.5}
    family = "diffusion"
    has_likelihood = True
    conditional = False  # per instance: True when class_conditional or classifier guidance is configured
    options = {
        "lr": Option(2e-4, "Adam learning rate of the denoiser", gt=0), **UNET_OPTIONS,
        "timesteps": Option(1000, "diffusion steps T", ge=2),
        "beta_schedule": Option("linear", "noise schedule: Ho et al.'s linear betas or Nichol & Dhariwal's cosine",
                                choices=("linear", "cosine")),
        "beta_start": Option(1e-4, "linear schedule: beta_1", gt=0, lt=1),
        "beta_end": Option(0.02, "linear schedule: beta_T", gt=0, lt=1),
        "variance": Option("fixedlarge", "reverse-process variance: beta_t, the posterior's, or learned (iDDPM)",
                           choices=S.VARIANCES),
        "prediction": Option("eps", "what the network predicts: the noise eps (Ho et al.'s choice) or the posterior "
                             "mean mu of q(x_{t-1} | x_t, x_0) (their baseline, trained by MSE to it)",
                             choices=("eps", "mu")),
        "loss": Option("simple", "'simple' eps-MSE, or 'hybrid' (+ vlb_weight x VLB; needs learned variances)",
                       choices=("simple", "hybrid")),
        "vlb_weight": Option(0.001, "weight of the VLB term in the hybrid loss", ge=0),
        "ema_decay": Option(0.9999, "EMA decay of the weights used for sampling and bits/dim", ge=0, lt=1),
        "class_conditional": Option(False, "condition the denoiser on labels (classifier-free guidance)"),
        "label_dropout": Option(0.1, "probability a training label is replaced by the null class", ge=0, lt=1),
        "classifier": Option(False, "also train a noise-aware classifier for classifier guidance"),
        "classifier_lr": Option(1e-3, "Adam learning rate of the classifier", gt=0),
        "classifier_channels": Option(32, "base channels of the classifier", ge=1),
        "classifier_scale": Option(1.0, "default guidance scale s with a classifier (a sampler option overrides)",
                                   ge=0),
    }
    learned_variance = False

    def __init__(self, config, data):
        super().__init__(config, data)
        c = self.cfg
        if c.loss == "hybrid" and c.variance != "learned":
            raise BenchError(f"{self.name}: the hybrid loss trains learned variances; set variance = \"learned\"")
        if c.prediction == "mu" and c.variance == "learned":
            raise BenchError(f"{self.name}: prediction = \"mu\" is the fixed-variance baseline; use variance = "
                             "\"fixedlarge\" or \"fixedsmall\"")
        if (c.class_conditional or c.classifier) and data.num_classes < 2:
            raise BenchError(f"{self.name}: class conditioning / classifier guidance need a labelled dataset")
        try:
            self.schedule = S.Schedule(S.make_betas(c.beta_schedule, c.timesteps, c.beta_start,
                                                    c.beta_end))
        except ValueError as e:
            raise BenchError(f"{self.name}: {e}") from None
        self.learned = c.variance == "learned"
        self.num_classes = data.num_classes if c.class_conditional else 0
        self.conditional = bool(c.class_conditional or c.classifier)
        self.net = build_unet(c, data.channels, data.height, data.channels * (2 if self.learned else 1),
                              self.num_classes)
        self._init_ema()
        self.classifier = None
        if c.classifier:
            self.classifier = NoiseAwareClassifier(data.channels, data.num_classes,
                                                   base_channels=c.classifier_channels,
                                                   channel_mults=(1, 2, 2) if data.height >= 16 else (1, 2),
                                                   image_size=data.height)

    # ---- training -----------------------------------------------------------------------------------
    def configure_optimizers(self):
        opts = {"model": torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)}
        if self.classifier is not None:
            opts["classifier"] = torch.optim.Adam(self.classifier.parameters(), lr=self.cfg.classifier_lr)
        return opts

    def _draw(self, batch: Batch, x0: torch.Tensor):
        g = batch.generator
        n = x0.shape[0]
        t = draw(torch.randint, 0, self.schedule.T, (n,), generator=g, device=x0.device)
        return t, S.randn(x0.shape, g, x0.device)

    def _labels_for_training(self, batch: Batch, device) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if batch.y is None:
            raise BenchError(f"{self.name}: class_conditional needs labels, but the batch has none")
        y = batch.y.to(device).long()
        g = batch.generator
        drop = draw(torch.rand, y.shape, generator=g, device=device)
        return torch.where(drop < self.cfg.label_dropout, torch.full_like(y, self.num_classes), y)

    def loss(self, batch: Batch) -> torch.Tensor:
        x0 = to_signed(batch.x)
        t, noise = self._draw(batch, x0)
        xt = self.schedule.q_sample(x0, t, noise)
        out = self.net(xt, t, self._labels_for_training(batch, x0.device))
        c = x0.shape[1]
        target = self.schedule.q_posterior(x0, xt, t)[0] if self.cfg.prediction == "mu" else noise
        loss = F.mse_loss(out[:, :c].float(), target)
        if self.cfg.loss == "hybrid":
            # L_vlb with a stop-gradient on the mean: only the variance head learns from it (Nichol & Dhariwal).
            frozen = torch.cat([out[:, :c].detach(), out[:, c:]], 1).float()
            vb = self.schedule.vb_term(frozen, x0, xt, t, "learned") / (x0[0].numel() * math.log(2.0))
            loss = loss + self.cfg.vlb_weight * self.schedule.T * vb.mean()
        return loss

    def classifier_loss(self, batch: Batch) -> torch.Tensor:
        x0 = to_signed(batch.x)
        t, noise = self._draw(batch, x0)
        xt = self.schedule.q_sample(x0, t, noise)
        return F.cross_entropy(self.classifier(xt, t).float(), batch.y.to(x0.device).long())

    def training_step(self, batch: Batch, step: int) -> dict[str, float]:
        loss = self.loss(batch)
        self.optimize(loss, "model")
        out = {"loss": float(loss.detach())}
        if self.classifier is not None:
            if batch.y is None:
                raise BenchError(f"{self.name}: classifier guidance needs labels, but the batch has none")
            closs = self.classifier_loss(batch)
            self.optimize(closs, "classifier")
            out["classifier_loss"] = float(closs.detach())
        return out

    # ---- sampling -----------------------------------------------------------------------------------
    sampler_options = {**DiffusionChain.schema(), **GUIDANCE_OPTIONS}

    def as_eps(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's output with its first C channels as eps: a mu-prediction mu = c1 x0 + c2 x_t (the
        posterior mean) gives x0 = (mu - c2 x_t) / c1 and eps from x0, so every sampler and the bound read eps."""
        if self.cfg.prediction == "eps":
            return out
        c = self.data.channels
        s = self.schedule
        x0 = (out[:, :c].float() - s._at("posterior_mean_coef2", t, xt) * xt) / s._at("posterior_mean_coef1", t, xt)
        return torch.cat([s.x0_to_eps(xt, t, x0).to(out.dtype), out[:, c:]], 1)

    def _eps_model(self, labels, guidance: float, classifier_scale: float):
        c = self.data.channels
        use_cfg = self.num_classes > 0 and labels is not None and guidance != 1.0

        def net(x, t, y=None):
            return self.as_eps(self.ema(x, t, y) if y is not None else self.ema(x, t), x, t)

        def model_fn(x, t):
            if use_cfg:
                null = torch.full_like(labels, self.num_classes)
                out = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
                cond, unc = out.chunk(2)
                eps = unc[:, :c] + guidance * (cond[:, :c] - unc[:, :c])
                out = torch.cat([eps, cond[:, c:]], 1)
            else:
                out = net(x, t, labels if self.num_classes else None)
            if classifier_scale:
                with torch.enable_grad():
                    xi = x.detach().requires_grad_(True)
                    logp = F.log_softmax(self.classifier(xi, t).float(), -1)
                    grad = torch.autograd.grad(logp.gather(1, labels[:, None]).sum(), xi)[0]
                sigma = self.schedule._at("sqrt_one_minus_alphas_cumprod", t, x)
                out = torch.cat([out[:, :c] - sigma * classifier_scale * grad, out[:, c:]], 1)
            return out
        return model_fn, (2 if use_cfg else 1)

    def _sampler(self, options: dict[str, Any]) -> tuple[DiffusionChain, float, float]:
        """(the chain, guidance w, classifier scale s) from a suite's sampler table."""
        chain, extra = DiffusionChain.parse(options, self.schedule.T, self.name, self.sampler_options)
        if extra["classifier_scale"] and self.classifier is None:
            raise BenchError(f"{self.name}: classifier_scale needs a model trained with classifier = true")
        cscale = extra["classifier_scale"]
        cscale = float(self.cfg.classifier_scale if cscale is None else cscale) if self.classifier else 0.0
        return chain, float(extra["guidance"]), cscale

    def check_sampler(self, options: dict[str, Any]) -> None:
        self._sampler(options)

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None, **options) -> Samples:
        chain, guidance, cscale = self._sampler(options)
        device = self.net.conv_out.weight.device
        if (self.num_classes or cscale) and labels is None:
            labels = torch.arange(n, device=device) % self.data.num_classes  # per-class grid order
        if labels is not None:
            if not (self.num_classes or cscale):
                why = "classifier_scale = 0 turns its classifier guidance off" if self.classifier else \
                    "it is neither class-conditional nor classifier-guided"
                raise BenchError(f"{self.name}: labels given but {why}; drop the labels or set "
                                 f"class_conditional / classifier (with classifier_scale > 0)")
            labels = class_labels(labels, n, self.data.num_classes, device, self.name)
        model_fn, per_step = self._eps_model(labels, guidance, cscale)
        # on a respaced process the ancestral step uses its own beta_t = 1 - abar_t / abar_prev
        x, nfe, ran = chain.run(model_fn, self.schedule, (n, *self.data.shape), variance=self.cfg.variance,
                                generator=generator, device=device)
        info = {**chain.resolved(ran), "guidance": guidance, "classifier_scale": cscale,
                # classifier forward + backward per image, one per step; not in nfe (U-Net evaluations only)
                "classifier_evals": nfe if cscale else 0}
        if labels is not None:
            info["labels"] = labels.cpu()
        return Samples(from_signed(x.float()), nfe=nfe * per_step, info=info)

    # ---- likelihood ---------------------------------------------------------------------------------
    @torch.no_grad()
    def nll_bits_per_dim(self, batch: Batch) -> Likelihood:
        x0 = to_signed(batch.x)
        net = self.ema

        def model_fn(x, t):
            return self.as_eps(net(x, t, None) if self.num_classes else net(x, t), x, t)

        out = self.schedule.vlb(model_fn, x0, self.cfg.variance, batch.generator)
        d = x0[0].numel()
        return Likelihood(bits_per_dim(out["total"].double(), d).float(), kind="upper-bound",
                          info={"terms": self.schedule.T + 1, "prior_bpd": float(bits_per_dim(out["prior"], d).mean()),
                                "variance": self.cfg.variance})


@register
class ImprovedDDPM(DDPM):
    """Improved DDPM (Nichol & Dhariwal 2021): cosine schedule, learned variances, hybrid loss."""

    name = "iddpm"
    options = {**DDPM.options, "lr": DDPM.options["lr"].with_default(1e-4),
               "beta_schedule": DDPM.options["beta_schedule"].with_default("cosine"),
               "variance": DDPM.options["variance"].with_default("learned"),
               "loss": DDPM.options["loss"].with_default("hybrid")}


@register
class NCSN(EMAMixin, GenerativeModel):
    """Song & Ermon 2019 on dequantized [0, 1] data; score s(x, i) = net(x, i) / sigma_i (NCSNv2's scaling)."""

    name = "ncsn"
    tiny = {"unet": "tiny", "num_scales": 4, "ema_decay": 0.5}
    family = "diffusion"
    has_likelihood = False
    options = {"lr": Option(1e-3, "Adam learning rate", gt=0),
               **UNET_OPTIONS, "unet": UNET_OPTIONS["unet"].with_default("tiny"),
               "sigma_max": Option(1.0, "largest noise level sigma_1", gt=0),
               "sigma_min": Option(0.01, "smallest noise level sigma_L (geometric in between)", gt=0),
               "num_scales": Option(10, "noise levels L", ge=1),
               "ema_decay": Option(0.999, "EMA decay of the weights used for sampling", ge=0, lt=1)}
    sampler_options = LANGEVIN_OPTIONS

    def __init__(self, config, data):
        super().__init__(config, data)
        c = self.cfg
        if not c.sigma_min < c.sigma_max:
            raise BenchError(f"ncsn: sigma_min={c['sigma_min']} must be below sigma_max={c['sigma_max']}")
        sig = torch.exp(torch.linspace(math.log(c.sigma_max), math.log(c.sigma_min),
                                       c.num_scales, dtype=torch.float64)).float()
        self.register_buffer("sigmas", sig, persistent=False)
        self.net = build_unet(c, data.channels, data.height)
        self._init_ema()

    def configure_optimizers(self):
        return {"model": torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)}

    def score(self, net, x, idx):
        return net(x, idx) / self.sigmas[idx].view(-1, 1, 1, 1)

    def loss(self, batch: Batch) -> torch.Tensor:
        g = batch.generator
        x = dequantize(batch.x, g)
        n = x.shape[0]
        idx = draw(torch.randint, 0, len(self.sigmas), (n,), generator=g, device=x.device)
        z = S.randn(x.shape, g, x.device)
        sigma = self.sigmas[idx].view(-1, 1, 1, 1)
        # lambda(sigma) = sigma^2 weighting: 1/2 || sigma s(x~) + z ||^2 = 1/2 || net(x~) + z ||^2
        return 0.5 * ((self.net(x + sigma * z, idx).float() + z) ** 2).flatten(1).sum(1).mean() / x[0].numel()

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None, **options) -> Samples:
        langevin = AnnealedLangevin.parse(options, self.name)
        if labels is not None:
            raise BenchError("ncsn: the model is unconditional; labels are not accepted")
        x = draw(torch.rand, (n, *self.data.shape), generator=generator, device=self.sigmas.device)
        x, nfe = langevin.run(lambda x, idx: self.score(self.ema, x, idx), self.sigmas, x, generator)
        return Samples(x.clamp(0.0, 1.0), nfe=nfe, info=langevin.resolved(len(self.sigmas)))
