"""Class labels a caller passes to ``sample``: one check shared by every conditional family."""

from __future__ import annotations

import torch

from bench.errors import BenchError


def class_labels(labels, n: int, num_classes: int, device: torch.device, model: str) -> torch.Tensor:
    """``labels`` as ``n`` class indices (long, on ``device``); a one-line BenchError for a wrong count or range."""
    y = torch.as_tensor(labels, device=device).long().flatten()
    if y.numel() != n or (n and (y.min() < 0 or y.max() >= num_classes)):
        raise BenchError(f"{model}: labels must be {n} class indices in [0, {num_classes}), got shape "
                         f"{tuple(torch.as_tensor(labels).shape)}")
    return y
