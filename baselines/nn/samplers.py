"""Sampler objects shared by the wrappers: typed options (one parser, one set of names) and ``resolved()`` for the record.

- :class:`DiffusionChain`: the reverse chain of a discrete-time diffusion, ancestral (DDPM) or DDIM, over the
  full or a respaced schedule. ``ddpm``, ``iddpm`` and ``daf`` (on its latent) sample through it, so DDIM, step
  respacing and their names are the same in all three. ``"ddpm"`` is accepted as another name for ``"ancestral"``.
- :class:`ODESolve`: integrating a velocity field from noise to data with one of :mod:`baselines.nn.ode`'s
  solvers (flow matching, OT-CFM); the numerics stay in that module, this is the choice of solver and its settings.
- :class:`AnnealedLangevin`: Song & Ermon's annealed Langevin dynamics over a score model's noise levels (ncsn).

One-pass samplers (a flow's inverse, a GAN's generator) have one option or none (a flow's ``temperature``), typed
in their wrapper. Every option is checked by :func:`bench.registry.parse_options`, and ``bench list --model NAME``
prints every wrapper's sampler options.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch

from baselines.nn import ode
from baselines.nn import schedule as S
from bench.conventions import draw
from bench.errors import BenchError
from bench.registry import Option, parse_options

NAME_ALIASES = {"ddpm": "ancestral", "default": "ancestral"}

CHAIN_OPTIONS: dict[str, Option] = {
    "name": Option("ancestral", "ancestral (DDPM; also 'ddpm') or DDIM", choices=("ancestral", "ddim")),
    "steps": Option(None, "steps S <= T of the respaced chain (None: all T)", type=int, ge=1),
    "spacing": Option("linspace", "which S of the T timesteps a respaced chain keeps", choices=S.SPACINGS),
    "eta": Option(0.0, "DDIM noise: 0 deterministic, 1 DDPM-like (ignored by ancestral)", ge=0.0),
    "clip": Option(True, "clip the predicted x0 to [-1, 1] at every step"),
}


@dataclasses.dataclass(frozen=True)
class DiffusionChain:
    """Ancestral or DDIM sampling over a (respaced) schedule of T steps."""

    name: str
    steps: int
    spacing: str
    eta: float
    clip: bool

    @classmethod
    def parse(cls, options: dict[str, Any], T: int, model: str,
              schema: dict[str, Option]) -> tuple["DiffusionChain", dict[str, Any]]:
        """(the chain, the values of the wrapper's other options) from a suite's sampler table, checked against the
        wrapper's ``sampler_options`` (:meth:`schema` plus its own keys)."""
        opts = dict(options)
        if opts.get("name") in NAME_ALIASES:
            opts["name"] = NAME_ALIASES[opts["name"]]
        values = parse_options(opts, schema, model)
        steps = T if values["steps"] is None else values["steps"]
        if steps > T:
            raise BenchError(f"{model}: sampler option steps must be a whole number in 1..{T}, got {steps}")
        chain = cls(values["name"], steps, values["spacing"], float(values["eta"]), bool(values["clip"]))
        return chain, {k: v for k, v in values.items() if k not in CHAIN_OPTIONS}

    @staticmethod
    def schema(clip: bool = True) -> dict[str, Option]:
        """The chain's options with the wrapper's default for ``clip`` (a latent-space chain does not clip)."""
        return {**CHAIN_OPTIONS, "clip": CHAIN_OPTIONS["clip"].with_default(clip)}

    def respaced(self, schedule: S.Schedule) -> S.Schedule:
        """The schedule the chain runs on: the full one for all T steps in order, else its respaced subsequence."""
        if self.steps == schedule.T and self.spacing in ("linspace", "uniform"):
            return schedule
        return schedule.respace(S.spacing(self.spacing, schedule.T, self.steps))

    def run(self, model_fn: Callable, schedule: S.Schedule, shape, *, variance: str,
            generator: torch.Generator | None, device) -> tuple[torch.Tensor, int, S.Schedule]:
        """(x_0, model evaluations per image, the schedule run). ``variance``: the ancestral step's."""
        sched = self.respaced(schedule)
        if self.name == "ancestral":
            x, nfe = S.ancestral_sample(model_fn, sched, shape, variance=variance, clip=self.clip,
                                        generator=generator, device=device)
        else:
            x, nfe = S.ddim_sample(model_fn, sched, shape, eta=self.eta, clip=self.clip, generator=generator,
                                   device=device)
        return x, nfe, sched

    def resolved(self, ran: S.Schedule | None = None) -> dict[str, Any]:
        """What ran, defaults included (the record's ``sampler_resolved``); ``ran``: the schedule :meth:`run` returned,
        whose length is the number of steps taken (a quadratic spacing drops repeated timesteps)."""
        return {"sampler": self.name, "steps": ran.T if ran is not None else self.steps, "spacing": self.spacing,
                "eta": self.eta if self.name == "ddim" else None, "clip": self.clip}


# each None default: the wrapper's config key of the same name (``ODESolve.parse``'s ``defaults``)
ODE_OPTIONS: dict[str, Option] = {
    "solver": Option(None, "the ODE solver", type=str, choices=ode.SOLVERS),
    "steps": Option(None, "steps of a fixed-step solver", type=int, ge=1),
    "rtol": Option(None, "relative tolerance of an adaptive solver", type=float, gt=0),
    "atol": Option(None, "absolute tolerance of an adaptive solver", type=float, gt=0),
}


@dataclasses.dataclass(frozen=True)
class ODESolve:
    """dx/dt = v(t, x) from t = 0 (noise) to t = 1 (data) with one of :data:`baselines.nn.ode.SOLVERS`: a fixed-step
    solver over ``steps`` uniform steps, or adaptive ``dopri5`` to ``rtol`` / ``atol``."""

    solver: str
    steps: int
    rtol: float
    atol: float

    @classmethod
    def parse(cls, values: dict[str, Any], defaults: Any) -> "ODESolve":
        """From parsed sampler options (:data:`ODE_OPTIONS`, None where not given) over the wrapper's config object
        (its fields of the same names)."""
        pick = {k: getattr(defaults, k) if values.get(k) is None else values[k] for k in ODE_OPTIONS}
        return cls(str(pick["solver"]), int(pick["steps"]), float(pick["rtol"]), float(pick["atol"]))

    def run(self, velocity: ode.Velocity, x0: torch.Tensor) -> ode.ODEResult:
        return ode.integrate(velocity, x0, t0=0.0, t1=1.0, solver=self.solver, steps=self.steps, rtol=self.rtol,
                             atol=self.atol)

    def resolved(self) -> dict[str, Any]:
        """What ran: the solver with its steps (fixed-step) or its tolerances (adaptive)."""
        if self.solver in ode.FIXED_STEP_SOLVERS:
            return {"sampler": "ode", "solver": self.solver, "steps": self.steps}
        return {"sampler": "ode", "solver": self.solver, "rtol": self.rtol, "atol": self.atol}


LANGEVIN_OPTIONS: dict[str, Option] = {
    "name": Option("langevin", "annealed Langevin dynamics (Song & Ermon 2019)", choices=("langevin",)),
    "steps_each": Option(100, "Langevin steps per noise level", ge=1),
    "step_lr": Option(2e-5, "step size epsilon at the smallest sigma (scaled by sigma_i^2 / sigma_L^2)", gt=0),
    "denoise": Option(True, "a final Tweedie denoising step at the smallest sigma"),
}


@dataclasses.dataclass(frozen=True)
class AnnealedLangevin:
    """Annealed Langevin dynamics (Song & Ermon 2019): ``steps_each`` steps x <- x + alpha_i/2 s(x, i) + sqrt(alpha_i) z
    at each noise level, alpha_i = step_lr sigma_i^2 / sigma_L^2, then optionally Tweedie's denoising step
    x + sigma_L^2 s(x, L) (Song & Ermon 2020)."""

    steps_each: int
    step_lr: float
    denoise: bool

    @classmethod
    def parse(cls, options: dict[str, Any], model: str) -> "AnnealedLangevin":
        v = parse_options(options, LANGEVIN_OPTIONS, model)
        return cls(int(v["steps_each"]), float(v["step_lr"]), bool(v["denoise"]))

    def run(self, score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sigmas: torch.Tensor,
            x: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, int]:
        """(the final x, score evaluations per image); ``score(x, level index per image)``, ``x`` the start."""
        n, device, nfe = x.shape[0], x.device, 0
        last = float(sigmas[-1])
        for i, sigma in enumerate(sigmas.tolist()):
            idx = torch.full((n,), i, device=device, dtype=torch.long)
            alpha = self.step_lr * (sigma / last) ** 2
            for _ in range(self.steps_each):
                x = x + 0.5 * alpha * score(x, idx).float() + math.sqrt(alpha) * draw(
                    torch.randn, x.shape, generator=generator, device=device)
                nfe += 1
        if self.denoise:
            idx = torch.full((n,), len(sigmas) - 1, device=device, dtype=torch.long)
            x = x + last ** 2 * score(x, idx).float()
            nfe += 1
        return x, nfe

    def resolved(self, num_scales: int) -> dict[str, Any]:
        return {"sampler": "annealed-langevin", "steps_each": self.steps_each, "step_lr": self.step_lr,
                "denoise": self.denoise, "num_scales": num_scales}
