"""Normalizing-flow family: contractive residual flow (seed 000), Glow, neural spline flow (seed 001).

All three model the uniformly dequantized image y = (x + u)/256 (``bench.conventions``), after a
fixed preprocessing ("logit": s = logit(alpha + (1 - 2 alpha) y), or "center": s = y - 0.5) whose
log-Jacobian is added, so ``nll_bits_per_dim`` is the bits/dim of the original 8-bit image
(the dequantization bound; kind "upper-bound" where the flow's log-det is exact, "estimate" with a
standard error for the residual flow's stochastic log-det). Pieces live in
``baselines/nn/flow_layers.py``.

The options' defaults are the seed configurations (MNIST 1x32x32):

- ``resflow``: seed 000 §4.3.1 = Chen et al. 2019's MNIST model: logit (alpha 1e-5) -> 16 blocks ->
  [squeeze -> 16 blocks] x 2, ActNorm before and after each block, LipSwish -> 3x3 -> LipSwish -> 1x1
  -> LipSwish -> 3x3 convs spectrally normalised to 0.98, batch 64, Adam 1e-3. The thesis quotes
  "channel size 128" and 16M parameters; these cannot both hold: with 128 hidden channels the model
  has 1.6M parameters, with 512 (Chen et al.'s ``--idim 512`` default) it has 15.7M ("16M"), so the
  default is 512 hidden channels (see docs/flows.md). For CIFAR-10 set ``alpha = 0.05`` (3 channels:
  21.9M here). Chen et al.'s code (``--fc-end``, default on for every dataset) also appends 4 fully
  connected residual blocks (128 hidden) after the last scale: +1.1M on MNIST (16.9M), +3.2M on CIFAR-10
  (25.2M, the thesis's 25M); the thesis does not list them and they are not implemented here.
- ``glow``: Kingma & Dhariwal 2018 (L = 3 levels, K = 32 steps, 512 hidden channels, affine coupling).
- ``nsf``: seed 001's NSF baseline: Glow skeleton with rational-quadratic spline coupling, 3 levels
  x 16 steps = 48 flows, 64 hidden channels, 2 residual blocks in each coupling network.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bench.conventions import draw
from bench.errors import BenchError
from bench.registry import Batch, GenerativeModel, Likelihood, Option, Samples, parse_options, register
from baselines.nn import flow_layers as fl
from baselines.nn import residual_layers as rl


# the sampling temperature every flow here takes (the latent's standard deviation)
TEMPERATURE = Option(1.0, "default sampling temperature: the latent's standard deviation (a sampler option "
                     "overrides it)", gt=0.0)


class _Flow(GenerativeModel):
    family = "flow"
    has_likelihood = True
    conditional = False

    def _check_divisible(self, factor: int, what: str):
        if self.data.height % factor or self.data.width % factor:
            raise BenchError(f"{self.name}: {what} needs image sides divisible by {factor}, got "
                             f"{self.data.height}x{self.data.width}; change image_size or the config")

    def _preprocess(self, x, generator):
        with torch.autocast(device_type=x.device.type, enabled=False):
            return fl.preprocess(x, self.cfg.preprocessing, self.cfg.alpha, generator)

    def _bpd(self, x, generator):
        s, ld_pre = self._preprocess(x, generator)
        z, ld = self.flow(s, generator)
        return fl.bits_per_dim(fl.standard_normal_logprob(z), ld, ld_pre, self.data.dims)

    def loss(self, batch: Batch) -> torch.Tensor:
        return self._bpd(batch.x, batch.generator).mean()

    def _latent_shape(self):
        return self.data.shape

    sampler_options = {
        "name": Option("default", "flows sample in one inverse pass ('default', or the model's own name)",
                       choices=("default",)),
        "temperature": Option(None, "the latent's standard deviation (None: the config's temperature)", type=float,
                              gt=0.0),
    }

    def _sampler_options(self, sampler: dict[str, Any]) -> float:
        opts = dict(sampler)
        if opts.get("name") == self.name:
            opts["name"] = "default"
        temperature = parse_options(opts, self.sampler_options, self.name)["temperature"]
        return float(self.cfg.temperature if temperature is None else temperature)

    def check_sampler(self, options: dict[str, Any]) -> None:
        self._sampler_options(options)

    def _draw_latent(self, n, generator, temperature):
        dev = next(self.parameters()).device
        return draw(torch.randn, (n, *self._latent_shape()), generator=generator, device=dev) * temperature

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None, **sampler) -> Samples:
        temperature = self._sampler_options(sampler)
        s = self.flow.inverse(self._draw_latent(n, generator, temperature))
        images = fl.postprocess(s, self.cfg.preprocessing, self.cfg.alpha)
        return Samples(images, nfe=1, info={"temperature": temperature})


class _MultiScale(_Flow):
    coupling = "affine"

    def __init__(self, config, data):
        super().__init__(config, data)
        cfg = self.cfg
        self._check_divisible(2 ** cfg.levels, f"levels={cfg.levels}")
        self.flow = fl.MultiScaleFlow(data.channels, cfg.levels, cfg.steps_per_level,
                                      cfg.hidden_channels, self.coupling, cfg.num_blocks,
                                      int(getattr(cfg, "num_bins", 8)), float(getattr(cfg, "tail_bound", 3.0)))

    @torch.no_grad()
    def nll_bits_per_dim(self, batch: Batch) -> Likelihood:
        bpd = self._bpd(batch.x, batch.generator)
        return Likelihood(bpd.float(), kind="upper-bound",
                          info={"logdet": "exact", "dequantization": "uniform, one draw per image"})


@register
class Glow(_MultiScale):
    """Glow (Kingma & Dhariwal 2018): squeeze -> K x (ActNorm, LU 1x1 conv, affine coupling) -> split.

    Differences from the paper, on purpose: standard-normal prior on all factored-out latents
    (no learned split prior), no ActNorm inside the coupling networks. Sampling option
    ``temperature`` scales the latent's standard deviation.
    """

    name = "glow"
    tiny = {"levels": 2, "steps_per_level": 2, "hidden_channels": 8}
    coupling = "affine"
    options = {"lr": Option(1e-3, "Adam learning rate", gt=0), **fl.MULTISCALE_OPTIONS, **fl.PREPROCESSING_OPTIONS,
               "temperature": TEMPERATURE}


@register
class NeuralSplineFlow(_MultiScale):
    """Neural spline flow (Durkan et al. 2019) as seed 001's baseline: the Glow skeleton with
    rational-quadratic spline coupling (``num_bins`` bins on [-tail_bound, tail_bound], linear
    tails), conditioner = convolutional ResNet with ``num_blocks`` residual blocks."""

    name = "nsf"
    tiny = {"levels": 2, "steps_per_level": 2, "hidden_channels": 8, "num_blocks": 1, "num_bins": 4}
    coupling = "spline"
    options = {"lr": Option(5e-4, "Adam learning rate", gt=0),
               **fl.MULTISCALE_OPTIONS, "steps_per_level": fl.MULTISCALE_OPTIONS["steps_per_level"].with_default(16),
               "hidden_channels": fl.MULTISCALE_OPTIONS["hidden_channels"].with_default(64),
               "num_blocks": fl.MULTISCALE_OPTIONS["num_blocks"].with_default(2),
               **fl.SPLINE_OPTIONS, **fl.PREPROCESSING_OPTIONS, "temperature": TEMPERATURE}


@register
class ResFlow(_Flow):
    """Contractive residual flow (Chen et al. 2019) configured as seed 000 (see the module docstring).

    Training uses the unbiased Russian-roulette power-series log-det (``n_exact_terms`` exact terms
    + Geometric(``geom_p``) more) with one Hutchinson vector and the Neumann-series gradient, taken during
    the forward pass (``memory_efficient``, the official code's ``--mem-eff`` default) so that the
    double-backward graph of each block is freed before the next block runs.
    ``nll_bits_per_dim`` averages ``eval_draws`` independent log-det estimates (``n_exact_terms_eval``
    exact terms, as Chen et al. evaluate) and reports their standard error; with
    ``exact_logdet = true`` it computes log|det(I + J_g)| of every block from the full Jacobian
    instead (affordable only for small images, e.g. 1x16x16). Sampling inverts each block by
    fixed-point iteration to |x_k - x_(k-1)| <= atol + rtol |y| (float32) and reports the iterations.
    Parameters: 15.7M at the default (MNIST) config, the thesis's "16M".
    """

    name = "resflow"
    tiny = {"blocks_per_scale": [1, 1, 1], "hidden_channels": 8, "sn_iterations": 1, "n_exact_terms_eval": 6,
            "eval_draws": 2}
    # nll_bits_per_dim(batch, exact=True) is offered up to this many dimensions per image (bench.metrics.exact_bpd):
    # one Jacobian of D vector-Jacobian products per block and image; 1024 = MNIST at 32x32 (on a GPU)
    exact_bpd_max_dims = 1024
    options = {
        "lr": Option(1e-3, "Adam learning rate", gt=0),
        "blocks_per_scale": Option([16, 16, 16], "residual blocks per scale (a squeeze between scales)", items=int, ge=0),
        "hidden_channels": Option(512, "hidden channels of each block's 3-1-3 convolution stack", ge=1),
        "lipschitz_coeff": Option(0.98, "spectral-norm bound c of every convolution, Lip(g) <= c < 1 (invertibility)",
                                  gt=0.0, lt=1.0),
        "actnorm": Option(True, "an ActNorm layer before every residual block"),
        "preprocessing": fl.PREPROCESSING_OPTIONS["preprocessing"].with_default("logit"),
        "alpha": fl.PREPROCESSING_OPTIONS["alpha"].with_default(1e-5),
        "sn_iterations": Option(5, "power iterations per training forward for each spectral norm", ge=1),
        "n_exact_terms": Option(2, "log-det power-series terms always computed in training", ge=1),
        "n_exact_terms_eval": Option(20, "exact power-series terms at evaluation (Chen et al. evaluate with 20)", ge=1),
        "geom_p": Option(0.5, "success probability of the Russian-roulette Geometric number of extra terms", gt=0.0, lt=1.0),
        "neumann_grad": Option(True, "train with the Neumann-series log-det gradient (false: backprop every term)"),
        "memory_efficient": Option(True, "take the log-det gradient inside the forward pass (Chen et al.'s --mem-eff)"),
        "eval_draws": Option(4, "independent log-det estimates averaged per image for bits/dim (>= 2 for a stderr)",
                             ge=1),
        "exact_logdet": Option(False, "bits/dim from the full Jacobian of every block (small images only)"),
        "fixed_point_atol": Option(1e-5, "inverse: stop when |x_k - x_(k-1)| <= atol + rtol |y|", gt=0),
        "fixed_point_rtol": Option(1e-5, "inverse: relative part of the stopping tolerance", ge=0),
        "fixed_point_max_iters": Option(500, "inverse: fixed-point iterations at most (then flagged not converged)",
                                        ge=1),
        "temperature": TEMPERATURE,
    }

    def __init__(self, config, data):
        super().__init__(config, data)
        cfg = self.cfg
        blocks = [int(b) for b in cfg.blocks_per_scale]
        if not blocks:
            raise BenchError("resflow: blocks_per_scale must list at least one scale's block count, e.g. [16, 16, 16]")
        if cfg.eval_draws < 2 and not cfg.exact_logdet:
            raise BenchError("resflow: eval_draws must be >= 2 to report a standard error")
        self._check_divisible(2 ** (len(blocks) - 1), f"{len(blocks) - 1} squeezes")
        self.flow = rl.ResidualFlow(
            data.channels, blocks, cfg.hidden_channels, cfg.lipschitz_coeff, cfg.actnorm,
            cfg.sn_iterations, n_exact_terms=cfg.n_exact_terms,
            n_exact_terms_eval=cfg.n_exact_terms_eval, geom_p=cfg.geom_p,
            neumann_grad=cfg.neumann_grad, memory_efficient=cfg.memory_efficient,
            fixed_point_atol=cfg.fixed_point_atol,
            fixed_point_rtol=cfg.fixed_point_rtol, fixed_point_max_iters=cfg.fixed_point_max_iters)

    def _latent_shape(self):
        return self.flow.latent_shape(*self.data.shape)

    def nll_bits_per_dim(self, batch: Batch, exact: bool | None = None) -> Likelihood:
        """The estimate (``exact=False``) or the brute-force value (``exact=True``); ``None`` follows the
        ``exact_logdet`` config. The dequantization noise is the generator's first draw in both, so two
        calls with equally seeded generators see the same dequantized images."""
        exact = self.cfg.exact_logdet if exact is None else exact
        with torch.autocast(device_type=batch.x.device.type, enabled=False), torch.no_grad():
            s, ld_pre = self._preprocess(batch.x, batch.generator)  # one dequantization draw per image
            if exact:
                self.flow.set_logdet_mode("exact")
                try:
                    z, ld = self.flow(s)
                finally:
                    self.flow.set_logdet_mode("estimate")
                bpd = fl.bits_per_dim(fl.standard_normal_logprob(z), ld, ld_pre, self.data.dims)
                return Likelihood(bpd, kind="upper-bound", info={"logdet": "exact (brute-force Jacobian)"})
            draws = []
            for _ in range(self.cfg.eval_draws):
                z, ld = self.flow(s, batch.generator)
                draws.append(fl.bits_per_dim(fl.standard_normal_logprob(z), ld, ld_pre, self.data.dims))
            d = torch.stack(draws)
            # each draw shares one roulette truncation across the batch: the batch mean's stderr comes from
            # the spread of the draws' batch means, not from per-image spreads
            return Likelihood(d.mean(0), kind="estimate", stderr=d.std(0) / math.sqrt(d.shape[0]),
                              batch_stderr=float(d.mean(1).std() / math.sqrt(d.shape[0])),
                              info={"logdet": f"Russian-roulette power series, {d.shape[0]} draws",
                                    "bound": "dequantization upper bound"})

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None, **sampler) -> Samples:
        temperature = self._sampler_options(sampler)
        s = self.flow.inverse(self._draw_latent(n, generator, temperature))
        its = self.flow.last_inverse_iterations
        images = fl.postprocess(s, self.cfg.preprocessing, self.cfg.alpha)
        mean_it = sum(its) / max(len(its), 1)
        unconverged = self.flow.last_inverse_unconverged
        info = {"temperature": temperature, "fixed_point_iterations_total": int(sum(its)),
                "fixed_point_iterations_mean": mean_it, "fixed_point_iterations_max": int(max(its, default=0)),
                "fixed_point_atol": self.cfg.fixed_point_atol, "fixed_point_rtol": self.cfg.fixed_point_rtol,
                "fixed_point_unconverged_blocks": unconverged}
        if unconverged:  # a block near its Lipschitz bound: the samples are approximate and the NFE is the cap's
            info["warning"] = (f"{unconverged} of {len(its)} residual block inverse(s) stopped at the "
                               f"{self.cfg.fixed_point_max_iters}-iteration cap above the tolerance: the samples are "
                               "approximate inverses and the NFE is set by the cap")
        return Samples(images, nfe=max(1, round(mean_it)), info=info)
