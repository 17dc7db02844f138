"""Data scaling and dequantization conventions, defined once because bits/dim depends on them.

Every dataset reaches a model as 8-bit integers x in {0..255}^D (a uint8 tensor, D = C*H*W).
Continuous models see the uniformly dequantized value y = (x + u) / 256 with u ~ U[0,1)^D,
so y lies in [0, 1). For a density p_y on [0,1]^D,

    -log2 P(x) <= E_u[-log2 p_y(y)] + D*log2(256)        (Theis et al. 2016)

and bits/dim of the 8-bit image is that divided by D. Wrappers that rescale y (logit, [-1, 1])
add the log-Jacobian of the rescaling to log p_y; the helpers below give it in closed form.
Diffusion models with a discretized Gaussian decoder work on x/127.5 - 1 in [-1, 1] directly.
"""

from __future__ import annotations

import math

import torch

BITS_PER_PIXEL = 8
LOG_256 = math.log(256.0)


def dims(x: torch.Tensor) -> int:
    """Number of dimensions D of one image in a batch [N, C, H, W]."""
    return int(x[0].numel())


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 {0..255} -> float bin centres in (0, 1): (x + 0.5) / 256 (no noise; for evaluation/metrics)."""
    return (x.float() + 0.5) / 256.0


def draw(sampler, *args, generator: torch.Generator | None, device, **kwargs) -> torch.Tensor:
    """``sampler(*args, **kwargs)`` (torch.randn, rand, randint, ...) drawn from ``generator`` on the generator's own
    device, then moved to ``device``. The harness's generators may live elsewhere than the model (a CPU generator,
    a GPU model): drawing where the generator lives keeps a seeded run reproducible and resumable. The one RNG
    helper of every wrapper."""
    return sampler(*args, generator=generator, device=device if generator is None else generator.device,
                   **kwargs).to(device)


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 {0..255} -> y = (x + u) / 256 in [0, 1), u ~ U[0,1) (uniform dequantization)."""
    return (x.float() + draw(torch.rand, x.shape, generator=generator, device=x.device)) / 256.0


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """uint8 {0..255} -> [-1, 1] as DDPM (Ho et al. 2020) scales data: x / 127.5 - 1."""
    return x.float() / 127.5 - 1.0


def from_signed(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model output -> [0, 1] images (clamped)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images -> uint8 the way reference FID code does (round half up, clamp)."""
    return (images.clamp(0.0, 1.0) * 255.0 + 0.5).floor().to(torch.uint8)


def bits_per_dim(nll_nats: torch.Tensor, d: int) -> torch.Tensor:
    """Per-image NLL in nats (of the 8-bit image) -> bits per dimension."""
    return nll_nats / (d * math.log(2.0))


def unit_density_to_bits_per_dim(log_p_y: torch.Tensor, d: int) -> torch.Tensor:
    """Per-image log-density of y in [0,1)^D (nats) -> bits/dim of the 8-bit image (dequantization bound)."""
    return bits_per_dim(-log_p_y + d * LOG_256, d)


def logit_transform(y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """s = logit(alpha + (1 - 2 alpha) y) and the per-image log|ds/dy| (Dinh et al. 2017).

    Used by flows that model logit space; adding the returned log-det to log p(s) gives log p(y).
    """
    p = alpha + (1.0 - 2.0 * alpha) * y
    s = torch.log(p) - torch.log1p(-p)
    logdet = (math.log(1.0 - 2.0 * alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
    return s, logdet


def inverse_logit_transform(s: torch.Tensor, alpha: float) -> torch.Tensor:
    """Inverse of :func:`logit_transform`, back to y in [0, 1] (clamped)."""
    return ((torch.sigmoid(s) - alpha) / (1.0 - 2.0 * alpha)).clamp(0.0, 1.0)
