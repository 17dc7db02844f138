"""The project's flow-layer library for Glow and the neural spline flow (the residual flow's layers build on these
in :mod:`baselines.nn.residual_layers`).

API (every layer and model below follows it)
-------------------------------------------
``layer(x, generator=None) -> (y, logdet)``  with ``logdet`` the per-sample log|det dy/dx| [N]
(float32, summed over all dimensions); ``layer.inverse(y) -> x``. ``generator`` feeds the
stochastic log-det estimator of :class:`ResidualBlock` (ignored by exact layers).

Layers: :class:`ActNorm` (data-dependent init on its first forward), :class:`InvConv1x1`
(LU-decomposed, Kingma & Dhariwal 2018), :class:`AffineCoupling` (Glow), :class:`SplineCoupling`
(rational-quadratic spline coupling, Durkan et al. 2019; the spline itself is normflows'
``unconstrained_rational_quadratic_spline``, a verbatim port of Durkan's reference code),
:class:`Squeeze`, :class:`FlowSequential`.

Models (reusable nn.Modules mapping preprocessed images to a latent of the same total dimension):

- :class:`MultiScaleFlow` (Glow / NSF skeleton): ``forward(y) -> (z, logdet)`` with ``z`` a single
  tensor of the *input's shape* [N, C, H, W]. Internally: per level squeeze -> K steps
  (ActNorm -> 1x1 conv -> coupling) -> split off half of the channels (all but the last level);
  the factored-out halves and the last level's output are re-assembled by the inverse
  squeeze/concatenation (a permutation: no log-det), so ``z`` is image-shaped and
  ``inverse(z) -> y``. The base distribution is N(0, I) on all of ``z`` (no learned split prior),
  so a different prior (e.g. seed 001's DDPM on z0) can be put on ``z`` directly.

Preprocessing of 8-bit data (:func:`preprocess`) uses ``bench.conventions`` only: uniform
dequantization y = (x + u)/256, then "logit" (``logit_transform``) or "center" (y - 0.5, log-det 0);
:func:`bits_per_dim` turns log p(z) + flow log-det + preprocessing log-det into bits/dim of the
original 8-bit image.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench import conventions
from bench.registry import Option

LOG_2PI = math.log(2.0 * math.pi)


def _no_autocast(t: torch.Tensor):
    """Context that switches autocast off (numerically delicate parts run in float32)."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def _hi(t: torch.Tensor) -> torch.Tensor:
    """float32 unless already float64 (keeps float64 tests exact, lifts bf16/fp16 to float32)."""
    return t if t.dtype == torch.float64 else t.float()


def standard_normal_logprob(z: torch.Tensor) -> torch.Tensor:
    """Per-sample log N(z; 0, I) [N] (float32, or float64 for float64 input)."""
    z = _hi(z)
    return (-0.5 * (z * z + LOG_2PI)).flatten(1).sum(1)


# ---- preprocessing / bits per dim ------------------------------------------------------------------

# Config keys shared by the wrappers built from these layers (glow, nsf, resflow, daf): one meaning each.
PREPROCESSING_OPTIONS = {
    "preprocessing": Option("center", "how dequantized pixels y in [0,1) enter the flow: 'center' (y - 0.5) or "
                            "'logit' (logit(alpha + (1 - 2 alpha) y))", choices=("center", "logit")),
    "alpha": Option(0.05, "the logit preprocessing's margin (unused by 'center')", ge=0.0, lt=0.5),
}
MULTISCALE_OPTIONS = {
    "levels": Option(3, "levels L of squeeze -> K steps -> split", ge=1),
    "steps_per_level": Option(32, "flow steps K per level", ge=1),
    "hidden_channels": Option(512, "width of each coupling network", ge=1),
    "num_blocks": Option(0, "residual blocks in each coupling network (0: Glow's plain 3-conv network)", ge=0),
}
SPLINE_OPTIONS = {
    "num_bins": Option(8, "rational-quadratic spline bins per dimension", ge=1),
    "tail_bound": Option(3.0, "splines act on [-tail_bound, tail_bound]; identity (linear tails) outside", gt=0),
}


def preprocess(x: torch.Tensor, kind: str, alpha: float = 1e-5, generator: torch.Generator | None = None,
               noise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> (s, log|ds/dy|) with y the dequantized image in [0,1).

    ``kind``: "logit" (s = logit(alpha + (1-2alpha) y)) or "center" (s = y - 0.5).
    ``noise=False`` uses bin centres instead of uniform noise (not a valid likelihood bound).
    """
    y = conventions.dequantize(x, generator) if noise else conventions.to_unit(x)
    if kind == "logit":
        return conventions.logit_transform(y, alpha)
    if kind == "center":
        return y - 0.5, torch.zeros(y.shape[0], device=y.device)
    raise ValueError(f"unknown preprocessing {kind!r}; use 'logit' or 'center'")


def postprocess(s: torch.Tensor, kind: str, alpha: float = 1e-5) -> torch.Tensor:
    """Inverse of :func:`preprocess` (without the noise): model space -> images in [0, 1]."""
    s = s.float()
    if kind == "logit":
        return conventions.inverse_logit_transform(s, alpha)
    return (s + 0.5).clamp(0.0, 1.0)


def bits_per_dim(log_pz: torch.Tensor, logdet_flow: torch.Tensor, logdet_pre: torch.Tensor, d: int) -> torch.Tensor:
    """log p(z) + log|det| terms (nats, per image) -> bits/dim of the 8-bit image (dequantization bound)."""
    log_p_y = _hi(log_pz) + _hi(logdet_flow) + _hi(logdet_pre)
    return conventions.unit_density_to_bits_per_dim(log_p_y, d)


# ---- basic layers ------------------------------------------------------------------------------------

class FlowLayer(nn.Module):
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class FlowSequential(FlowLayer):
    """A chain of flow layers; log-dets add up."""

    def __init__(self, layers: Sequence[FlowLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, generator=None):
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=_hi(x).dtype)
        for layer in self.layers:
            x, ld = layer(x, generator)
            logdet = logdet + _hi(ld)
        return x, logdet

    def inverse(self, y):
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class ActNorm(FlowLayer):
    """Per-channel affine y = (x + b) * exp(s), initialised from the first batch it sees (zero mean, unit var)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def _init(self, x):
        xf = x.float().transpose(0, 1).flatten(1)
        mean, std = xf.mean(1), xf.std(1) if xf.shape[1] > 1 else torch.ones_like(xf[:, 0])
        self.bias.copy_((-mean).view_as(self.bias))
        self.logs.copy_((-torch.log(std + 1e-6)).view_as(self.logs))
        self.initialized.fill_(1)

    def forward(self, x, generator=None):
        if not bool(self.initialized):
            self._init(x)
        y = (x + self.bias) * torch.exp(self.logs)
        hw = x.shape[2] * x.shape[3]
        return y, (hw * _hi(self.logs).sum()).expand(x.shape[0])

    def inverse(self, y):
        return y * torch.exp(-self.logs) - self.bias


class InvConv1x1(FlowLayer):
    """Invertible 1x1 convolution, W = P L (U + diag(sign * exp(log_s))) (LU-decomposed, Glow)."""

    def __init__(self, channels: int):
        super().__init__()
        q = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lmask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> torch.Tensor:
        lower = self.lower * self.lmask + self.eye
        upper = self.upper * self.lmask.t() + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x, generator=None):
        w = self.weight()
        y = F.conv2d(x, w.view(*w.shape, 1, 1))
        hw = x.shape[2] * x.shape[3]
        return y, (hw * _hi(self.log_s).sum()).expand(x.shape[0])

    def inverse(self, y):
        with _no_autocast(y):
            w_inv = torch.linalg.inv(self.weight().double()).to(self.log_s.dtype)
            return F.conv2d(y.to(w_inv.dtype), w_inv.view(*w_inv.shape, 1, 1))


def squeeze2d(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, 4C, H/2, W/2] (space-to-depth, RealNVP/Glow order)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * 4, h // 2, w // 2)


def unsqueeze2d(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, h * 2, w * 2)


class Squeeze(FlowLayer):
    def forward(self, x, generator=None):
        return squeeze2d(x), torch.zeros(x.shape[0], device=x.device)

    def inverse(self, y):
        return unsqueeze2d(y)


# ---- coupling layers -----------------------------------------------------------------------------------

class CouplingNet(nn.Module):
    """The conditioner of a coupling layer; its last convolution starts at zero (identity flow).

    ``num_blocks == 0``: Glow's network (3x3 conv -> ReLU -> 1x1 conv -> ReLU -> 3x3 conv);
    ``num_blocks > 0``: Durkan et al.'s convolutional ResNet (3x3 conv, then ``num_blocks``
    pre-activation residual blocks of two 3x3 convs, ReLU, 3x3 conv).
    """

    def __init__(self, cin: int, cout: int, hidden: int, num_blocks: int = 0):
        super().__init__()
        self.inp = nn.Conv2d(cin, hidden, 3, padding=1)
        if num_blocks == 0:
            self.mid = nn.ModuleList([nn.Conv2d(hidden, hidden, 1)])
        else:
            self.mid = nn.ModuleList(
                nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                              nn.Conv2d(hidden, hidden, 3, padding=1)) for _ in range(num_blocks))
        self.resnet = num_blocks > 0
        self.out = nn.Conv2d(hidden, cout, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        h = self.inp(x)
        for m in self.mid:
            h = h + m(h) if self.resnet else m(F.relu(h))
        return self.out(F.relu(h))


class _Coupling(FlowLayer):
    """Transforms one half of the channels conditioned on the other; ``parity`` picks the half."""

    def __init__(self, channels: int, params_per_dim: int, hidden: int, num_blocks: int, parity: int):
        super().__init__()
        if channels < 2:
            raise ValueError("a coupling layer needs at least 2 channels (squeeze first)")
        self.c_id = channels // 2  # conditioning channels: the first c_id (parity 0) or the last (parity 1)
        self.c_tr = channels - self.c_id
        self.parity = parity
        self.k = params_per_dim
        self.net = CouplingNet(self.c_id, self.c_tr * params_per_dim, hidden, num_blocks)

    def _split(self, x):
        if self.parity == 0:
            return x[:, : self.c_id], x[:, self.c_id:]  # (conditioning, transformed)
        return x[:, self.c_tr:], x[:, : self.c_tr]

    def _join(self, cond, tr):
        return torch.cat([cond, tr], 1) if self.parity == 0 else torch.cat([tr, cond], 1)

    def _params(self, cond):
        h = self.net(cond)
        n, _, hh, ww = h.shape
        return h.view(n, self.c_tr, self.k, hh, ww)

    def forward(self, x, generator=None):
        cond, tr = self._split(x)
        y, logdet = self._transform(tr, self._params(cond), inverse=False)
        return self._join(cond, y), _hi(logdet).flatten(1).sum(1)

    def inverse(self, y):
        cond, tr = self._split(y)
        x, _ = self._transform(tr, self._params(cond), inverse=True)
        return self._join(cond, x)


class AffineCoupling(_Coupling):
    """Glow's affine coupling: y_b = (x_b + t(x_a)) * sigmoid(s(x_a) + 2)."""

    def __init__(self, channels: int, hidden: int, num_blocks: int = 0, parity: int = 0):
        super().__init__(channels, 2, hidden, num_blocks, parity)

    def _transform(self, x, p, inverse):
        shift, raw = p[:, :, 0], p[:, :, 1]
        log_scale = F.logsigmoid(_hi(raw) + 2.0)
        if not inverse:
            return (x + shift) * torch.exp(log_scale).to(x.dtype), log_scale
        return x * torch.exp(-log_scale).to(x.dtype) - shift, -log_scale


class SplineCoupling(_Coupling):
    """Rational-quadratic spline coupling (Durkan et al. 2019) with linear tails outside [-B, B].

    Widths/heights are divided by sqrt(hidden) as in Durkan's code; the derivative outputs are
    offset so that the zero-initialised conditioner gives the identity. The spline runs in float32
    (autocast off).
    """

    _IDENTITY_DERIV = math.log(math.expm1(1.0 - 1e-3))  # softplus^-1(1 - min_derivative)

    def __init__(self, channels: int, hidden: int, num_blocks: int = 2, parity: int = 0,
                 num_bins: int = 8, tail_bound: float = 3.0):
        super().__init__(channels, 3 * num_bins - 1, hidden, num_blocks, parity)
        self.num_bins, self.tail_bound, self.hidden = num_bins, tail_bound, hidden

    def _transform(self, x, p, inverse):
        from normflows.utils.splines import unconstrained_rational_quadratic_spline

        k = self.num_bins
        with _no_autocast(x):
            p = _hi(p).permute(0, 1, 3, 4, 2)  # [N, c, H, W, 3K-1]
            scale = math.sqrt(self.hidden)
            out, lad = unconstrained_rational_quadratic_spline(
                _hi(x), p[..., :k] / scale, p[..., k:2 * k] / scale, p[..., 2 * k:] + self._IDENTITY_DERIV,
                inverse=inverse, tails="linear", tail_bound=self.tail_bound)
        return out.to(x.dtype), lad


class FlowStep(FlowSequential):
    """ActNorm -> invertible 1x1 conv -> coupling (one Glow / NSF step)."""

    def __init__(self, channels, coupling: str, hidden, num_blocks, parity, num_bins=8, tail_bound=3.0):
        if coupling == "affine":
            cpl = AffineCoupling(channels, hidden, num_blocks, parity)
        elif coupling == "spline":
            cpl = SplineCoupling(channels, hidden, num_blocks, parity, num_bins, tail_bound)
        else:
            raise ValueError(f"unknown coupling {coupling!r}; use 'affine' or 'spline'")
        super().__init__([ActNorm(channels), InvConv1x1(channels), cpl])


class MultiScaleFlow(nn.Module):
    """Glow/NSF multi-scale flow; see the module docstring for the latent layout."""

    def __init__(self, in_channels: int, levels: int, steps_per_level: int, hidden_channels: int,
                 coupling: str = "affine", num_blocks: int = 0, num_bins: int = 8, tail_bound: float = 3.0):
        super().__init__()
        self.levels = levels
        blocks, c = [], in_channels
        for i in range(levels):
            c = 4 * c
            blocks.append(FlowSequential([FlowStep(c, coupling, hidden_channels, num_blocks, k % 2, num_bins, tail_bound)
                                          for k in range(steps_per_level)]))
            if i < levels - 1:
                c = c // 2
        self.blocks = nn.ModuleList(blocks)

    def forward(self, y: torch.Tensor, generator: torch.Generator | None = None):
        logdet = torch.zeros(y.shape[0], device=y.device, dtype=_hi(y).dtype)
        h, zs = y, []
        for i, block in enumerate(self.blocks):
            h, ld = block(squeeze2d(h), generator)
            logdet = logdet + ld
            if i < self.levels - 1:
                z_i, h = h.chunk(2, 1)
                zs.append(z_i)
        z = h
        for i in reversed(range(self.levels)):
            if i < self.levels - 1:
                z = torch.cat([zs[i], z], 1)
            z = unsqueeze2d(z)
        return z, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        zs, h = [], z
        for i in range(self.levels):
            h = squeeze2d(h)
            if i < self.levels - 1:
                z_i, h = h.chunk(2, 1)
                zs.append(z_i)
        for i in reversed(range(self.levels)):
            if i < self.levels - 1:
                h = torch.cat([zs[i], h], 1)
            h = unsqueeze2d(self.blocks[i].inverse(h))
        return h
