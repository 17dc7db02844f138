"""The shared EMA (baselines/nn/ema.py) against closed forms."""

from __future__ import annotations

import math

import torch
from torch import nn

from baselines.nn.ema import ema_copy, update_ema


def test_warmed_up_ema_of_fixed_weights_matches_the_closed_form_product():
    # With the net's weights held at w, after n updates ema = w + (e0 - w) * prod_k d_k, and during the
    # warm-up d_k = (1 + k) / (10 + k), so prod_{k=1..n} d_k = 10! (n + 1)! / (n + 10)!.
    net = nn.Linear(3, 2)
    ema = ema_copy(net)
    e0 = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    n = 30
    for k in range(1, n + 1):
        update_ema(ema, net, decay=0.9999, updates=k)
    prod = math.factorial(10) * math.factorial(n + 1) / math.factorial(n + 10)
    for e, start, w in zip(ema.parameters(), e0, net.parameters()):
        assert torch.allclose(e, w + (start - w) * prod, atol=1e-6)
    assert not any(p.requires_grad for p in ema.parameters())


def test_the_configured_decay_caps_the_warm_up():
    net = nn.Linear(2, 2)
    ema = ema_copy(net)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for p in ema.parameters():
            p.fill_(1.0)
    update_ema(ema, net, decay=0.5, updates=1000)  # warm-up 1001/1010 > 0.5: the configured decay wins
    assert all(torch.allclose(p, torch.full_like(p, 0.5)) for p in ema.parameters())
