"""The real-data row: real images measured in the models' feature space and protocol.

The seeds print a "real images" row beside their models (seed 000: FID of 10,000 real images). Such a
row is the floor a model's FID/KID can reach with that many samples and the ceiling of its IS and class
coverage, so every FID in a report needs it beside it. genbench measures it, not transcribes it: a
seeded subset of the *training* split (disjoint from the evaluation split), of ``eval.num_samples``
images per repeat like a model's samples, goes through the same sample metrics against the same
evaluation split. It is written as an ordinary record (model ``real-data``, family ``real-data``), so
results, reports and ``bench compare`` read it like any run.
"""

from __future__ import annotations

from typing import Any

import torch

from bench import metrics
from bench.data import ImageData
from bench.registry import GenerativeModel, Samples

NAME = "real-data"


class RealImages(GenerativeModel):
    """Draws images from a fixed pool without replacement, as a model would draw samples.

    One draw (the calls made with one generator, e.g. the batches of ``EvalContext.draw``) walks one
    seeded permutation of the pool, so its images are distinct; a new generator starts a new permutation.
    A draw larger than the pool wraps into a fresh permutation (``info['with_replacement']``)."""

    name, family = NAME, NAME
    defaults: dict[str, Any] = {}
    has_likelihood = False

    def __init__(self, pool: ImageData):
        super().__init__({}, pool.spec)
        self.pool = pool.x
        self._generator: torch.Generator | None = None
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = 0
        self._wrapped = False

    def _next(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        if generator is not self._generator:
            self._generator, self._order, self._pos, self._wrapped = generator, self._perm(generator), 0, False
        out = []
        while n > 0:
            if self._pos >= len(self._order):
                self._order, self._pos, self._wrapped = self._perm(generator), 0, True
            take = self._order[self._pos:self._pos + n]
            self._pos += len(take)
            n -= len(take)
            out.append(take)
        return torch.cat(out)

    def _perm(self, generator: torch.Generator | None) -> torch.Tensor:
        g = generator if generator is not None and generator.device.type == "cpu" else None
        return torch.randperm(len(self.pool), generator=g)

    def sample(self, n: int, *, labels=None, generator=None, **options) -> Samples:
        idx = self._next(n, generator)
        images = self.pool[idx].float() / 255.0
        return Samples(images, nfe=0, info={"pool_size": len(self.pool), "with_replacement": self._wrapped})

    def loss(self, batch):  # pragma: no cover - never trained
        raise NotImplementedError("real-data rows are measured, not trained")


def wanted(metric_names: list[str]) -> list[str]:
    """The suite's metrics that a real-data row carries (empty: the suite measures no sample quality)."""
    return [m for m in metric_names if metrics.get(m).reads_samples]  # no likelihood, no sampling cost


def evaluate(make_context, train_data: ImageData, compute) -> dict[str, dict[str, Any]]:
    """Sample metrics of real training images against the evaluation split.

    ``make_context(model)`` builds the EvalContext the models use (same extractor, counts, repeats,
    cache); ``compute(names, ctx)`` is :func:`bench.metrics.compute`. Each value's protocol says what
    stood in for the samples."""
    model = RealImages(train_data)
    ctx = make_context(model)
    result = compute(wanted(list(ctx.eval_cfg["metrics"])), ctx)
    n = int(ctx.eval_cfg["num_samples"])
    for v in result.values():
        v.setdefault("protocol", {})["samples"] = (
            f"{n} real training images per repeat (seeded, without replacement from {len(train_data)}; "
            f"disjoint from the evaluation split)")
    return result
