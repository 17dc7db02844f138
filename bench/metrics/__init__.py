"""Metric registry and the evaluation context every metric reads from.

A metric is a function ``fn(ctx: EvalContext) -> dict[str, MetricValue-dict]`` registered with
:func:`metric`; suites name metrics in ``eval.metrics``. Sample-based metrics share one set of
generated samples per evaluation (``ctx.samples()``), so FID, IS and class coverage see the
same images and sampling is paid once. Every value carries its ``protocol`` (how it was
computed) so a reader can tell which numbers are comparable.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable

import torch

from bench.data import ImageData
from bench.errors import BenchError, did_you_mean
from bench.registry import Batch, GenerativeModel, Likelihood, Samples

MetricFn = Callable[["EvalContext"], dict[str, dict[str, Any]]]

DIRECTIONS = ("lower", "higher", "none")
KINDS = ("quality", "timing", "memory")


@dataclasses.dataclass(frozen=True)
class Output:
    """One value a metric writes into the record (``record["metrics"][key]``), described once for every reader:
    ``bench compare`` takes its direction and kind, the report its column header."""

    direction: str = "none"  # "lower" / "higher" is better; "none": informational, never improves or regresses
    kind: str = "quality"  # how `bench compare` tolerates a change: "quality" additive, "timing"/"memory" by factor
    column: str | None = None  # the report's main-table header; None: not a main-table column
    feature_space: bool = False  # measured in eval.feature_extractor's space (the header then names the space)

    def __post_init__(self):
        if self.direction not in DIRECTIONS or self.kind not in KINDS:
            raise ValueError(f"Output(direction={self.direction!r}, kind={self.kind!r}): "
                             f"direction is one of {DIRECTIONS}, kind one of {KINDS}")


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registered metric: the function and what the runner, prefetch, report and compare need to know of it."""

    name: str
    fn: MetricFn
    outputs: dict[str, Output]  # record keys it writes; fnmatch patterns allowed ("sample_*")
    reads_samples: bool  # computed from the shared sample set: also defined on real images (the real-data floor)
    sampler_dependent: bool  # recomputed under each sampler of a sweep, as <key>@<label>
    needs_extractor: bool  # measured in eval.feature_extractor's space: its weights must be staged
    final_only: bool  # skipped at intermediate (budget-fraction) evaluations


METRICS: dict[str, Metric] = {}

# Values the harness measures itself (record["timings"]), described like metric outputs.
TIMINGS: dict[str, Output] = {
    "train_images_per_second": Output("higher", "timing", column="train img/s"),
    "peak_rss_mb": Output("lower", "memory"),
    "cuda_max_allocated_mb": Output("lower", "memory"),
}


def metric(name: str, *, outputs: dict[str, Output] | None = None, reads_samples: bool = False,
           sampler_dependent: bool | None = None, needs_extractor: bool = False,
           final_only: bool = False, aliases: tuple[str, ...] = ()) -> Callable[[MetricFn], MetricFn]:
    """Register a metric under ``name`` (the name suites use in ``eval.metrics``), with its one declaration.

    ``outputs`` defaults to one informational value under ``name``; ``sampler_dependent`` defaults to
    ``reads_samples``; ``aliases`` are further names for the same metric (torch-fidelity's ``prc``). A metric
    that returns a key it did not declare records an error instead (see :func:`compute`)."""

    def wrap(fn: MetricFn) -> MetricFn:
        for n in (name, *aliases):
            METRICS[n] = Metric(n, fn, dict(outputs or {name: Output()}), reads_samples,
                                reads_samples if sampler_dependent is None else sampler_dependent,
                                needs_extractor, final_only)
        return fn

    return wrap


def get(name: str) -> Metric:
    """The declaration of metric ``name``; unknown names are a one-line BenchError with "did you mean"."""
    _load_metrics()
    if name not in METRICS:
        raise BenchError(f"unknown metric {name!r}{did_you_mean(name, METRICS)}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def describe(key: str) -> Output | None:
    """The declared :class:`Output` of a record key (``fid``, ``fid@ddim-10``, ``sample_eta``, a harness timing),
    None when nothing declares it. Exact keys first, then patterns in registration order."""
    _load_metrics()
    key = key.split("@", 1)[0]
    if key in TIMINGS:
        return TIMINGS[key]
    for m in METRICS.values():
        if key in m.outputs:
            return m.outputs[key]
    for m in METRICS.values():
        for pattern, out in m.outputs.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(key, pattern):
                return out
    return None


def producer(key: str) -> str | None:
    """The ``eval.metrics`` name whose declaration writes record key ``key`` (``precision`` -> ``precision_recall``)."""
    _load_metrics()
    key = key.split("@", 1)[0]
    return next((name for name, m in METRICS.items() if m.name == name and declared_key(m, key)), None)


def columns() -> list[tuple[str, str]]:
    """(record key, header) of every declared output with a main-table ``column``, in registration order: how a
    new metric gets its report column with no list to edit."""
    _load_metrics()
    return [(key, out.column) for m in METRICS.values() for key, out in m.outputs.items()
            if out.column and not any(c in key for c in "*?[")]


def declared_key(m: Metric, key: str) -> bool:
    return key in m.outputs or any(fnmatch.fnmatchcase(key, p) for p in m.outputs)


def value(v: float | None, *, std: float | None = None, stderr: float | None = None, n: int | None = None,
          note: str | None = None, **protocol: Any) -> dict[str, Any]:
    """A metric value with its protocol; ``None`` means "not defined" (say why in ``note``).

    Two different errors, never mixed: ``std`` is a spread (sample std over repeats or subsets), ``stderr``
    the standard error of the value itself (e.g. the mean bits/dim over test images)."""
    out: dict[str, Any] = {"value": None if v is None else float(v)}
    if std is not None:
        out["std"] = float(std)
    if stderr is not None:
        out["stderr"] = float(stderr)
    if n is not None:
        out["n"] = int(n)
    if note:
        out["note"] = note
    out["protocol"] = protocol
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EvaluationStopped(Exception):
    """A stop was requested (preemption signal) during an evaluation; the runner checkpoints and stops."""


@dataclasses.dataclass
class EvalContext:
    """Everything a metric may need; built by the runner for each evaluation."""

    model: GenerativeModel
    real: ImageData  # the evaluation split (uint8)
    train: ImageData  # the training split (some metrics need it, e.g. to fit a domain classifier)
    eval_cfg: dict[str, Any]
    device: torch.device
    precision: str
    seed: int
    sampler: dict[str, Any]  # sampler options for this evaluation
    cache_dir: str  # where reference statistics / classifiers are cached
    dataset: dict[str, Any]  # the suite's data table (dataset name, image size, ...)
    final: bool = True  # False for intermediate (budget-fraction) evaluations
    stop_requested: Callable[[], bool] | None = None  # the runner's stop flag, polled between sample batches
    data_root: str | None = None  # the run's --data-root (the domain classifier loads the full splits from it)
    _samples: Samples | None = None
    _sample_seconds: float | None = None

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh generator on the model's device, seeded from the run seed (evaluation never perturbs training RNG)."""
        return torch.Generator(self.device).manual_seed(10_000 + 97 * self.seed + offset)

    def check_stop(self) -> None:
        """Raise :class:`EvaluationStopped` when a stop was requested, so a preempted evaluation
        stops within one sample batch instead of running to its end."""
        if self.stop_requested is not None and self.stop_requested():
            raise EvaluationStopped("stop requested during evaluation")

    def labels(self, n: int) -> torch.Tensor | None:
        """Balanced class labels for conditional models (0, 1, ..., K-1, 0, ...), else None.

        The built instance decides: a wrapper sets ``self.conditional`` per configuration/data
        (cfm on unlabelled data is unconditional although its class attribute says True)."""
        k = self.model.data.num_classes
        if not (self.model.conditional and k):
            return None
        return torch.arange(n, device=self.device) % k

    @contextmanager
    def sampling(self):
        """Eval mode, no autograd, the run's precision; the model's training mode is restored after."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.autocast():
                yield
        finally:
            self.model.train(was_training)

    def timed_sample(self, n: int, offset: int) -> tuple[Samples, float]:
        """One ``sample(n)`` call (balanced labels for conditional models) and its device-synchronised
        wall time; call inside :meth:`sampling`."""
        labels = self.labels(n)
        synchronize(self.device)
        t0 = time.perf_counter()
        s = self.model.sample(n, labels=labels, generator=self.generator(offset), **self.sampler)
        synchronize(self.device)
        return s, time.perf_counter() - t0

    def draw(self, n: int, offset: int = 0) -> Samples:
        """Generate ``n`` images in batches of ``eval.sample_batch_size``; images on the CPU."""
        bs = int(self.eval_cfg.get("sample_batch_size") or n)
        gen = self.generator(offset)
        chunks, nfe, info = [], None, {}
        labels = self.labels(n)
        with self.sampling():
            for start in range(0, n, bs):
                self.check_stop()
                m = min(bs, n - start)
                lab = labels[start:start + m] if labels is not None else None
                s = self.model.sample(m, labels=lab, generator=gen, **self.sampler)
                chunks.append(s.images.float().clamp(0, 1).cpu())
                nfe, info = s.nfe, s.info
        out = Samples(torch.cat(chunks), nfe=nfe, info=dict(info))
        if labels is not None:
            out.info["labels"] = labels.cpu()
        return out

    @property
    def drawn(self) -> bool:
        """Whether :meth:`samples` has drawn this evaluation's shared sample set."""
        return self._samples is not None

    def samples(self) -> Samples:
        """The shared sample set of this evaluation (``eval.num_samples`` images), generated once."""
        if self._samples is None:
            t0 = time.perf_counter()
            self._samples = self.draw(int(self.eval_cfg["num_samples"]))
            self._sample_seconds = time.perf_counter() - t0
        return self._samples


def compute(names: list[str], ctx: EvalContext) -> dict[str, dict[str, Any]]:
    """Run the named metrics; a metric that fails records its error instead of stopping the run."""
    declared = [get(name) for name in names]
    out: dict[str, dict[str, Any]] = {}
    for m in declared:
        ctx.check_stop()
        try:
            got = m.fn(ctx)
        except (BenchError, EvaluationStopped):
            raise
        except Exception as e:  # keep the other metrics and the run's record
            out[m.name] = value(None, note=f"error: {type(e).__name__}: {e}")
            continue
        undeclared = [k for k in got if not declared_key(m, k)]
        if undeclared:  # the metric's author forgot a declaration: compare and report would misread the values
            out[m.name] = value(None, note=f"error: metric {m.name!r} wrote {', '.join(undeclared)}, which its "
                                           "@metric(outputs=...) does not declare")
            continue
        out.update(got)
    return out


def known_metrics() -> list[str]:
    _load_metrics()
    return sorted(METRICS)


def _load_metrics() -> None:
    """Import every module of this package so their @metric registrations run (plugins registered
    elsewhere, e.g. by a test, stay registered)."""
    global _LOADED
    if _LOADED:
        return
    import importlib
    import pkgutil

    import bench.metrics as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"bench.metrics.{info.name}")
    _LOADED = True


_LOADED = False


def resolved_sampler(samples: Samples) -> dict[str, Any]:
    """The sampler settings the model reports having used (its ``Samples.info`` scalars: solver,
    steps, timestep spacing, eta, ...), defaults included, which the suite's ``sampler`` table may
    leave out."""
    return {k: v for k, v in samples.info.items() if v is None or isinstance(v, (str, bool, int, float))}


def estimator_sum_variance(lik: Likelihood) -> float:
    """Variance of the sum of one batch's bits/dim that a stochastic log-det adds (0 when exact): a batch-level
    error (``batch_stderr``, correlated within the batch) counts as (n_b * se)^2, per-image errors (``stderr``)
    add. The estimator's standard error of a mean over N images is sqrt(sum over batches) / N."""
    if lik.batch_stderr is not None:
        return (len(lik.bits_per_dim) * float(lik.batch_stderr)) ** 2
    if lik.stderr is not None:
        return float((lik.stderr.detach().double() ** 2).sum())
    return 0.0


def mean_and_stderr(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    n = x.numel()
    return float(x.mean()), (float(x.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0)


def make_batch(real: ImageData, start: int, stop: int, device: torch.device, generator: torch.Generator) -> Batch:
    y = real.y[start:stop].to(device) if real.y is not None else None
    return Batch(real.x[start:stop].to(device), y, generator)
