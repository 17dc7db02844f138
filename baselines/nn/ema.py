"""Exponential moving average of a network's weights, shared by the diffusion and flow-matching families.

The decay is warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the ``num_updates``
schedule of TensorFlow's ExponentialMovingAverage). Without it a decay of 0.9999 keeps the EMA at
the initial weights for the first few thousand steps, so a short budget would sample from an
untrained network; at the papers' 800k steps the warm-up ends long before training does (the
warmed-up decay passes 0.9999 after ~90k updates) and changes nothing.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay used for update number ``updates`` (1-based)."""
    return min(float(decay), (1.0 + updates) / (10.0 + updates))


def ema_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of ``net`` to hold the averaged weights."""
    ema = copy.deepcopy(net)
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, decay: float, updates: int) -> None:
    """ema <- d * ema + (1 - d) * net with d = warmed_up_decay(decay, updates); buffers are copied."""
    d = warmed_up_decay(decay, updates)
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in net.parameters()], 1.0 - d)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


class EMAMixin:
    """The EMA of ``self.net`` that a family samples from: a frozen copy and its update count, both in the module's
    state_dict (so a resumed run continues the average), updated after each step of the ``"model"`` optimizer."""

    def _init_ema(self, enabled: bool = True) -> None:
        """``enabled=False`` (an ``ema_decay`` of 0 where a family allows it) keeps no copy: ``self.ema`` is None."""
        self.ema = ema_copy(self.net) if enabled else None
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))

    def after_optimizer_step(self, optimizer: str) -> None:
        if optimizer == "model" and self.ema is not None:
            self.ema_steps += 1
            update_ema(self.ema, self.net, self.cfg.ema_decay, int(self.ema_steps))
