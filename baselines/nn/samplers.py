"""Sampler objects shared by the wrappers: typed options (one parser, one set of names) and ``resolved()`` for the record.

- :class:`DiffusionChain`: the reverse chain of a discrete-time diffusion, ancestral (DDPM) or DDIM, over the
  full or a respaced schedule. ``ddpm``, ``iddpm`` and ``daf`` (on its latent) sample through it, so DDIM, step
  respacing and their names are the same in all three. ``"ddpm"`` is accepted as another name for ``"ancestral"``.

The ODE solvers of flow matching live in :mod:`baselines.nn.ode` (their options are the wrapper's
``sampler_options``); annealed Langevin (``ncsn``) and one-pass samplers (flows, GANs) have a handful of typed
options each in their wrapper. All of them are checked by :func:`bench.registry.parse_options`, and
``bench list --model NAME`` prints every wrapper's sampler options.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from baselines.nn import schedule as S
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
