"""Conditional flow matching (Lipman et al. 2023) with the optimal-transport path of seed 004, and OT-CFM.

Time runs from noise (t = 0, x0 ~ N(0, I)) to data (t = 1, x1 = the dequantized image scaled to
[-1, 1]). The conditional path and its velocity (seed 004)::

    x_t = (1 - (1 - sigma_min) t) x0 + t x1,      u_t = x1 - (1 - sigma_min) x0 = d x_t / d t

and the loss is || v_theta(t, x_t, y) - u_t ||^2 averaged over pixels, t ~ U[0, 1].

- ``cfm``: x0 and x1 drawn independently.
- ``ot-cfm`` (Tong et al. 2024, minibatch OT coupling): within each batch the noise is re-paired
  with the data by the exact optimal assignment for the squared Euclidean cost
  (``scipy.optimize.linear_sum_assignment``, O(B^3), a few ms for B <= 256). For uniform
  weights on two equally sized minibatches the exact OT plan is a permutation (Birkhoff), so the
  assignment *is* the exact W2 plan that torchcfm obtains through POT's ``ot.emd``; it needs no
  new dependency (scipy is already one) and is deterministic. torchcfm's default then *samples*
  pairs from the plan with replacement; re-pairing by the permutation keeps every image once.
- Velocity network: the shared U-Net (:mod:`baselines.nn.unet`, a preset by name), ``time_scale``
  1000 so the sinusoidal embedding sees t in [0, 1000] like a DDPM timestep.
- Conditioning: the instance's ``conditional`` is True only when ``class_conditional`` (default true)
  and the data has classes; on unlabelled data (or with it false) the model trains and samples
  unconditionally and refuses labels.
- Classifier-free guidance (Ho & Salimans 2022; seed 004): when conditional, each label
  is replaced by the U-Net's null class with probability ``label_dropout`` during training; the
  sampler uses v(x, null) + w (v(x, y) - v(x, null)) (``guidance`` = w; 1 = plain conditional,
  0 = unconditional). Both branches run as one batch of 2N, so NFE counts 2 network evaluations
  per solver evaluation when 0 != w != 1.
- Samplers (:mod:`baselines.nn.ode`): ``euler`` / ``midpoint`` / ``rk4`` with ``steps``, or
  ``dopri5`` with ``rtol``/``atol``; options from the suite's ``sampler`` table:
  ``{name = "rk4", steps = 25, guidance = 2.0}``.
- Bits/dim: the probability-flow ODE integrated from the data back to t = 0 (unconditional
  velocity v(x, null) when the model is class-conditional, i.e. log p(x), not log p(x | y)),
  with the exact divergence for images of at most ``exact_max_dims`` dimensions and Hutchinson
  otherwise. log p(y) of the dequantized image y in [0,1)^D adds the [0,1] -> [-1,1] Jacobian
  D log 2; bench.conventions turns it into bits/dim of the 8-bit image. Kind "upper-bound":
  with one draw of dequantization noise it is an unbiased estimate of the dequantization bound
  on the discrete NLL (Theis et al. 2016); the Hutchinson standard error is reported as stderr.
  That holds for the adaptive ``dopri5`` solve (the default). A fixed-step ``nll_solver`` is solved at
  ``nll_steps`` and twice that (:func:`baselines.nn.ode.log_likelihood`): kind "estimate" (≈), with the
  difference recorded as ``solver_error`` and added to the value's error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench import conventions
from bench.errors import BenchError
from bench.registry import Batch, DataSpec, GenerativeModel, Likelihood, Option, Samples, parse_options, register
from baselines.nn import ode
from baselines.nn.ema import EMAMixin
from baselines.nn.labels import class_labels
from baselines.nn.samplers import ODE_OPTIONS, ODESolve
from baselines.nn.unet import UNET_OPTIONS, UNet, build_unet

# sample()'s options; each None default is the config key of the same name
SAMPLER_OPTIONS = {
    "name": Option(None, "the ODE solver (another name for solver)", type=str, choices=ode.SOLVERS),
    **ODE_OPTIONS,
    "guidance": Option(None, "classifier-free guidance weight w (1: the conditional field alone)", type=float, ge=0),
}


def ot_path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """x_t = (1 - (1 - sigma_min) t) x0 + t x1, with t [N] broadcast over the image dimensions."""
    t = t.reshape(-1, *([1] * (x0.dim() - 1)))
    return (1.0 - (1.0 - sigma_min) * t) * x0 + t * x1


def ot_target(x0: torch.Tensor, x1: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """The conditional velocity d x_t / d t = x1 - (1 - sigma_min) x0 (independent of t)."""
    return x1 - (1.0 - sigma_min) * x0


def ot_pairing(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Permutation ``p`` such that (x0[p[i]], x1[i]) is the exact minibatch OT (squared Euclidean) pairing."""
    cost = torch.cdist(x0.flatten(1).float(), x1.flatten(1).float()).pow(2)
    from scipy.optimize import linear_sum_assignment  # here, not at import: scipy costs every model ~0.35 s, ~40 MB

    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    perm = np.empty(len(cols), dtype=np.int64)
    perm[cols] = rows
    return torch.as_tensor(perm, device=x0.device)


@register
class ConditionalFlowMatching(EMAMixin, GenerativeModel):
    """Conditional flow matching (Lipman et al. 2023; torchcfm's independent coupling): U-Net velocity field, ODE sampling and likelihood."""

    name = "cfm"
    tiny = {"unet": "tiny", "ema_decay": 0.5, "steps": 4}
    family = "flow-matching"
    coupling = "independent"
    options = {
        "lr": Option(2e-4, "Adam learning rate", gt=0),
        **UNET_OPTIONS,
        "sigma_min": Option(1e-4, "width of the Gaussian probability path around the straight line", ge=0, lt=1),
        "class_conditional": Option(True, "use the labels when the data has them (false: unconditional on any data)"),
        "label_dropout": Option(0.1, "classifier-free guidance: probability a label is dropped (0: conditional only)",
                                ge=0, lt=1),
        "ema_decay": Option(0.9999, "EMA decay of the weights used for sampling and bits/dim (0: no EMA copy)",
                            ge=0, lt=1),
        # sampling (overridable per evaluation by the suite's sampler table)
        "solver": Option("euler", "sampling ODE solver", choices=ode.SOLVERS),
        "steps": Option(50, "sampling: steps of a fixed-step solver", ge=1),
        "rtol": Option(1e-5, "sampling: relative tolerance of an adaptive solver", gt=0),
        "atol": Option(1e-5, "sampling: absolute tolerance of an adaptive solver", gt=0),
        "guidance": Option(1.0, "classifier-free guidance weight w (1: the conditional field alone)", ge=0),
        # likelihood (probability-flow ODE)
        "nll_solver": Option("dopri5", "likelihood ODE solver (fixed-step ones report an estimate with its solver "
                             "error)", choices=ode.SOLVERS),
        "nll_steps": Option(50, "likelihood: steps of a fixed-step solver (also solved at twice that)", ge=1),
        "nll_rtol": Option(1e-5, "likelihood: relative tolerance of dopri5", gt=0),
        "nll_atol": Option(1e-5, "likelihood: absolute tolerance of dopri5", gt=0),
        "divergence": Option("auto", "divergence of the velocity: 'auto' is exact up to exact_max_dims dimensions, "
                             "else Hutchinson", choices=("auto",) + ode.DIVERGENCES),
        "exact_max_dims": Option(64, "largest image (in dimensions) whose divergence 'auto' computes exactly "
                                 "(D backward passes per evaluation)", ge=1),
        "hutchinson_probes": Option(4, "Hutchinson probe vectors per divergence estimate", ge=1),
    }
    sampler_options = SAMPLER_OPTIONS
    has_likelihood = True
    conditional = True  # can be; the instance's attribute says whether it is (class_conditional and labelled data)

    def __init__(self, config: dict[str, Any], data: DataSpec):
        super().__init__(config, data)
        c = self.cfg
        if data.height != data.width:
            raise BenchError(f"{self.name} needs square images, got {data.height}x{data.width}")
        # Per instance: conditional only when configured so and the data has classes (unlabelled data: unconditional).
        self.conditional = c.class_conditional and data.num_classes > 0
        self.num_classes = data.num_classes if self.conditional else 0
        self.net = build_unet(c, data.channels, data.height, num_classes=self.num_classes, time_scale=1000.0)
        levels = len(self.net.encoder.down)
        if data.height % 2 ** (levels - 1):
            raise BenchError(f"U-Net preset {c['unet']!r} has {levels} levels and needs an image size divisible by "
                             f"{2 ** (levels - 1)}, got {data.height}")
        self._init_ema(enabled=c.ema_decay > 0)

    # ---- training -------------------------------------------------------------------------
    def _rand(self, shape, generator, device, kind="randn"):
        sampler = torch.randn if kind == "randn" else torch.rand
        return conventions.draw(sampler, shape, generator=generator, device=device)

    def loss(self, batch: Batch) -> torch.Tensor:
        gen = batch.generator
        x1 = conventions.dequantize(batch.x, gen) * 2.0 - 1.0
        device = x1.device
        n = x1.shape[0]
        x0 = self._rand(x1.shape, gen, device)
        if self.coupling == "ot":
            x0 = x0[ot_pairing(x0, x1)]
        t = self._rand((n,), gen, device, "rand")
        sigma_min = self.cfg.sigma_min
        xt = ot_path(x0, x1, t, sigma_min)
        target = ot_target(x0, x1, sigma_min)
        y = None
        if self.conditional:
            if batch.y is None:
                raise BenchError(f"{self.name}: the data spec has classes but the batch has no labels")
            y = batch.y.to(device).long()
            p = self.cfg.label_dropout
            if p > 0:
                drop = self._rand((n,), gen, device, "rand") < p
                y = torch.where(drop, torch.full_like(y, self.net.null_class), y)
        v = self.net(xt, t, y)
        return F.mse_loss(v.float(), target)

    # ---- velocity -------------------------------------------------------------------------
    def eval_net(self) -> UNet:
        """The network used for sampling and likelihood: the EMA copy when enabled."""
        return self.ema if self.ema is not None else self.net

    def velocity(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None,
                 guidance: float = 1.0) -> torch.Tensor:
        """v(t, x | y) with classifier-free guidance weight ``guidance`` (y None: unconditional)."""
        net = self.eval_net()
        if y is None or not self.conditional:
            return net(x, t, None)
        w = float(guidance)
        if w == 1.0:
            return net(x, t, y)
        null = torch.full_like(y, net.null_class)
        if w == 0.0:
            return net(x, t, null)
        v = net(torch.cat([x, x]), t, torch.cat([y, null]))
        v_cond, v_uncond = v.chunk(2)
        return v_uncond + w * (v_cond - v_uncond)

    def transport(self, x0: torch.Tensor, y: torch.Tensor | None = None, *, solver: str = "euler",
                  steps: int | None = 50, rtol: float = 1e-5, atol: float = 1e-5,
                  guidance: float = 1.0) -> ode.ODEResult:
        """Integrate the learned flow from noise x0 at t = 0 to t = 1 (unclamped, in [-1, 1] scale)."""
        return ODESolve(solver, steps, rtol, atol).run(lambda t, x: self.velocity(t, x, y, guidance), x0)

    # ---- evaluation -----------------------------------------------------------------------
    def _sampler(self, options: dict[str, Any]) -> tuple[ODESolve, float]:
        """(the ODE solve, the guidance weight) from a suite's sampler table over this model's config."""
        given = parse_options(options, self.sampler_options, self.name)
        if given["name"] is not None and given["solver"] is not None and given["name"] != given["solver"]:
            raise BenchError(f"{self.name}: sampler name {given['name']!r} and solver {given['solver']!r} disagree")
        given["solver"] = given["solver"] or given["name"]
        guidance = self.cfg.guidance if given["guidance"] is None else given["guidance"]
        return ODESolve.parse(given, self.cfg), float(guidance)

    def check_sampler(self, options: dict[str, Any]) -> None:
        self._sampler(options)

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               **sampler: Any) -> Samples:
        solve, w = self._sampler(sampler)
        device = next(self.parameters()).device
        y = None
        label_source = "none"
        if self.conditional:
            if labels is None:
                y = conventions.draw(torch.randint, 0, self.num_classes, (n,), generator=generator, device=device)
                label_source = "uniform"
            else:
                y = class_labels(labels, n, self.num_classes, device, self.name)
                label_source = "given"
        elif labels is not None:
            raise BenchError(f"{self.name} was trained without labels; it cannot sample given labels")
        x0 = self._rand((n, *self.data.shape), generator, device)
        res = solve.run(lambda t, x: self.velocity(t, x, y, w), x0)
        per_call = 2 if (y is not None and w not in (0.0, 1.0)) else 1
        info = {**solve.resolved(), "solver_evals": res.nfe, "guidance": w if y is not None else 0.0,
                "label_source": label_source}
        return Samples(conventions.from_signed(res.x), nfe=res.nfe * per_call, info=info)

    def divergence_mode(self) -> str:
        mode = self.cfg.divergence
        if mode == "auto":
            mode = "exact" if self.data.dims <= self.cfg.exact_max_dims else "hutchinson"
        return mode

    def nll_bits_per_dim(self, batch: Batch) -> Likelihood:
        c = self.cfg
        d = self.data.dims
        y01 = conventions.dequantize(batch.x, batch.generator)
        s = y01 * 2.0 - 1.0
        mode = self.divergence_mode()
        # The likelihood ODE runs in fp32 even under a bf16 autocast: dopri5's tolerances sit far
        # below bf16 resolution, and the exact divergence would otherwise carry bf16 rounding.
        with torch.autocast(s.device.type, enabled=False):
            res = ode.log_likelihood(lambda t, x: self.velocity(t, x, None).float(), s, divergence=mode,
                                     probes=c.hutchinson_probes, generator=batch.generator,
                                     solver=c.nll_solver, steps=c.nll_steps, rtol=c.nll_rtol,
                                     atol=c.nll_atol, t_data=1.0, t_noise=0.0)
        log_p_y = res.log_prob + d * math.log(2.0)  # [0,1] -> [-1,1] has Jacobian 2 per dimension
        bpd = conventions.unit_density_to_bits_per_dim(log_p_y, d)
        nats_to_bpd = 1.0 / (d * math.log(2.0))
        stderr = None if res.stderr is None else res.stderr * nats_to_bpd
        solver_error = None if res.solver_error is None else res.solver_error * nats_to_bpd
        info = {"divergence": mode, "likelihood_nfe": res.nfe, "likelihood_solver": c.nll_solver,
                "hutchinson_probes": res.probes}
        if res.steps is not None:
            info["likelihood_steps"] = res.steps
        else:  # the stated tolerances of the adaptive solve, recorded with the value
            info.update(likelihood_rtol=c.nll_rtol, likelihood_atol=c.nll_atol)
        # Only an adaptive solve at its tolerances is the dequantization bound; a fixed-step solve is that
        # bound plus a discretisation error of either sign, so its value is an estimate with a measured error.
        kind = "upper-bound" if solver_error is None else "estimate"
        return Likelihood(bpd.detach(), kind=kind, stderr=stderr, solver_error=solver_error, info=info)


@register
class OTConditionalFlowMatching(ConditionalFlowMatching):
    """OT-CFM (Tong et al. 2024): flow matching with minibatch optimal-transport pairs of noise and data."""

    name = "ot-cfm"
    family = "flow-matching"
    coupling = "ot"
