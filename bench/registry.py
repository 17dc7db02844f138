"""The model-wrapper protocol and the registry every family plugs into.

A family is one file in ``baselines/`` that subclasses :class:`GenerativeModel` and decorates
the class with :func:`register`. The harness discovers every module of the ``baselines``
package (and of any package named in ``GENBENCH_PLUGINS``), so adding a family touches
nothing in ``bench/``.

Division of labour (mimicry's rule: the model owns its training step, the trainer stays generic):

- the wrapper builds its networks from ``config`` and the :class:`DataSpec`, computes its
  losses, and hands each loss to :meth:`GenerativeModel.optimize` (several optimizers, e.g. a
  GAN's, are just several names);
- the harness owns the loop, device, precision (autocast), seeding, gradient all-reduce across
  processes, timing, checkpoints and logging. ``optimize`` is the one hook through which it acts
  inside a step, so wrappers never touch those concerns.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from bench.errors import BenchError, did_you_mean
from bench.options import Option, build_config, check_config, config_class, parse_options  # noqa: F401 (re-exported)

FAMILIES = ("flow", "diffusion", "flow-matching", "gan", "hybrid", "reference")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data to build itself."""

    channels: int
    height: int
    width: int
    num_classes: int = 0  # 0: no labels available

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def dims(self) -> int:
        return self.channels * self.height * self.width


@dataclasses.dataclass
class Batch:
    """One training/evaluation batch: 8-bit images and (optional) class labels.

    ``x`` is uint8 [N, C, H, W] in {0..255}; see :mod:`bench.conventions` for how to scale it.
    ``generator`` is the harness's seeded RNG for this step (dequantization noise, timesteps,
    ...): drawing from it keeps runs reproducible and resumable.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    generator: torch.Generator | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclasses.dataclass
class Samples:
    """What ``sample`` returns: images in [0, 1] plus what it cost."""

    images: torch.Tensor  # float [n, C, H, W] in [0, 1]
    nfe: int | None = None  # network function evaluations per sample (None: not meaningful)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. fixed-point iterations
    # info["warning"] (a string), when set, says why these samples are not what the sampler promised (an iterative
    # inverse stopped at its cap, ...): the record keeps it with the sampler settings and the report shows it


@dataclasses.dataclass
class Likelihood:
    """Per-image bits/dim of the 8-bit test images and what kind of number it is."""

    bits_per_dim: torch.Tensor  # [N]
    kind: str = "exact"  # "exact" | "upper-bound" (variational / dequantization bound) | "estimate"
    stderr: torch.Tensor | None = None  # [N] standard error of a stochastic estimator, if any
    # Standard error of the batch *mean* when the estimator's errors are shared across the batch (one
    # random draw for all images, e.g. a Russian-roulette truncation): per-image errors then do not average out.
    batch_stderr: float | None = None
    # [N] measured discretisation error of a fixed-step solve (|fine - coarse| bits/dim): systematic, so the
    # mean's error gets its mean, not its root-sum-square / N
    solver_error: torch.Tensor | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


class GenerativeModel(nn.Module):
    """Base class of every wrapper. Subclasses set ``name``, ``family`` and ``options``.

    ``options`` is the wrapper's config schema: every key it understands as an :class:`Option` (default,
    type, allowed values, meaning). Unknown keys and bad values are one-line errors naming the key, at
    suite load and again here; ``defaults`` (key -> default) is derived from it.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {"lr": Option(1e-3, "Adam learning rate", gt=0)}
    defaults: ClassVar[dict[str, Any]] = {k: o.default for k, o in options.items()}  # so in every subclass
    # The typed options of ``sample()`` (a suite's ``sampler`` table and ``samplers`` sweep entries); a None
    # default means "from the model's config". ``bench list --model NAME`` prints them beside the config keys.
    sampler_options: ClassVar[dict[str, Option]] = {}
    # The wrapper's smallest working config (overrides of ``defaults``): what the contract test every wrapper
    # passes (tests/test_contract.py) builds, trains two steps and samples from, in seconds on a CPU.
    tiny: ClassVar[dict[str, Any]] = {}
    has_likelihood: ClassVar[bool] = False  # False: bits/dim is "not defined" (GANs)
    conditional: ClassVar[bool] = False  # True: samples can be conditioned on class labels

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.defaults = {key: opt.default for key, opt in cls.options.items()}
        cls.Config = config_class(cls.__name__ + "Config", cls.options)

    def __init__(self, config: dict[str, Any], data: DataSpec):
        super().__init__()
        check_config(self.name or type(self).__name__, self.options, config, self.name or type(self).__name__)
        self.cfg = build_config(type(self).Config, self.options, config)  # typed, frozen: self.cfg.timesteps
        self.data = data
        self._optimize_hook: Callable[[torch.Tensor, str], None] | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config as a plain dict (what the record keeps); the wrapper reads the typed ``self.cfg``."""
        return dataclasses.asdict(self.cfg)

    # ---- construction -------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimizers; called once by the harness after the model is on its device."""
        return {"model": torch.optim.Adam(self.parameters(), lr=self.cfg.lr)}

    # ---- training -----------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        """Scalar training loss of one batch (single-optimizer families implement only this)."""
        raise NotImplementedError

    def training_step(self, batch: Batch, step: int) -> dict[str, float]:
        """One optimisation step. Must return at least ``{"loss": float}``.

        The default computes :meth:`loss` and optimizes it with the ``"model"`` optimizer.
        Families with several optimizers (GANs) override this and call :meth:`optimize` once
        per optimizer.
        """
        loss = self.loss(batch)
        self.optimize(loss, "model")
        return {"loss": float(loss.detach())}

    def optimize(self, loss: torch.Tensor, optimizer: str = "model") -> None:
        """Backward + step of one named optimizer, done the harness's way.

        Inside the harness this runs its hook (gradient all-reduce across processes, clipping,
        step). Outside it (a notebook, a unit test) it falls back to a plain zero_grad/backward/step.
        """
        if self._optimize_hook is not None:
            self._optimize_hook(loss, optimizer)
            return
        if not self.optimizers:
            self.optimizers = self.configure_optimizers()
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)  # free them now, not after the next forward: a parameter-sized set
        self.after_optimizer_step(optimizer)

    def after_optimizer_step(self, optimizer: str) -> None:
        """Called after each optimizer step (e.g. to update an EMA of the weights)."""

    # ---- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, **sampler: Any) -> Samples:
        """``n`` images in [0, 1]; ``sampler`` holds sampler options from the suite (name, steps...)."""
        raise NotImplementedError

    def check_sampler(self, options: dict[str, Any]) -> None:
        """Raise a BenchError for sampler options :meth:`sample` would refuse (unknown names or values).

        The harness calls it for the suite's ``sampler`` and every ``samplers`` entry before anything trains, so a
        typo costs a second, not a training run. The default checks ``options`` against ``sampler_options``; a
        wrapper adds checks that depend on the instance (e.g. steps <= T)."""
        parse_options(options, self.sampler_options, self.name)

    def nll_bits_per_dim(self, batch: Batch) -> Likelihood:
        """Bits/dim of the 8-bit images in ``batch`` (only when ``has_likelihood``)."""
        raise NotImplementedError(f"{self.name} has no likelihood")

    def num_parameters(self) -> int:
        """Trainable parameters (EMA copies and buffers excluded)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


_REGISTRY: dict[str, type[GenerativeModel]] = {}
_DISCOVERED = False


def register(cls: type[GenerativeModel]) -> type[GenerativeModel]:
    """Class decorator: make a wrapper available to suites under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} must set a non-empty `name`")
    if cls.family not in FAMILIES:
        raise TypeError(f"{cls.__qualname__}.family={cls.family!r} is not one of {FAMILIES}")
    if not (cls.__dict__.get("__doc__") or "").strip():
        raise TypeError(f"{cls.__qualname__} needs a docstring: its first line is the model's summary in `bench list`")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise TypeError(f"model name {cls.name!r} registered twice ({existing.__qualname__}, {cls.__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def discover() -> None:
    """Import every module of ``baselines`` (and of packages in $GENBENCH_PLUGINS, comma-separated)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    packages = ["baselines"] + [p for p in os.environ.get("GENBENCH_PLUGINS", "").split(",") if p]
    for package_name in packages:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_") or info.ispkg:
                continue  # sub-packages (baselines.nn) are shared pieces, not wrappers
            importlib.import_module(f"{package_name}.{info.name}")
    _DISCOVERED = True


def summary(cls: type[GenerativeModel]) -> str:
    """The first paragraph of the wrapper's docstring on one line: its description in `bench list`."""
    paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def available() -> dict[str, type[GenerativeModel]]:
    """All registered wrappers by name."""
    discover()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> type[GenerativeModel]:
    """The wrapper class registered as ``name``; a :class:`BenchError` with a suggestion otherwise."""
    models = available()
    if name not in models:
        raise BenchError(f"unknown model {name!r}{did_you_mean(name, models)}; `bench list` shows the registered models")
    return models[name]
