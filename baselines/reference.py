"""Independent-pixel categorical model: the floor every real model must beat.

Each of the D pixels gets its own 256-way categorical distribution (D*256 logits), fitted by
maximum likelihood. Its bits/dim is exact (no dequantization bound: it is a discrete model), it
trains in milliseconds, and its optimum is the per-pixel marginal entropy, so any model that
captures correlations between pixels must report fewer bits/dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.registry import Batch, GenerativeModel, Likelihood, Option, Samples, register


@register
class IndependentPixels(GenerativeModel):
    """Independent per-pixel categorical: the likelihood floor every model must beat, and its samples the FID ceiling."""

    name = "reference"
    family = "reference"
    options = {"lr": Option(0.05, "Adam learning rate of the per-pixel logits", gt=0)}
    has_likelihood = True

    def __init__(self, config, data):
        super().__init__(config, data)
        self.logits = nn.Parameter(torch.zeros(data.dims, 256))

    def _nll_nats(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image negative log-likelihood in nats of uint8 images x."""
        logp = F.log_softmax(self.logits.float(), dim=-1)  # [D, 256]
        flat = x.flatten(1).long()  # [N, D]
        picked = logp.gather(1, flat.t()).t()  # [N, D]: log p_d(x_d)
        return -picked.sum(1)

    def loss(self, batch: Batch) -> torch.Tensor:
        return self._nll_nats(batch.x).mean() / self.data.dims

    def nll_bits_per_dim(self, batch: Batch) -> Likelihood:
        bpd = self._nll_nats(batch.x) / (self.data.dims * math.log(2.0))
        return Likelihood(bpd.detach(), kind="exact")

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None, **sampler) -> Samples:
        self.check_sampler(sampler)
        probs = F.softmax(self.logits.float(), dim=-1)
        draws = torch.multinomial(probs, n, replacement=True, generator=generator)  # [D, n]
        images = draws.t().reshape(n, *self.data.shape).float() / 255.0
        return Samples(images, nfe=1)
