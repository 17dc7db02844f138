"""The project's one U-Net (Ho et al. 2020 / Dhariwal & Nichol 2021 layout), shared by every family.

API
---
``UNet(in_channels, out_channels=None, base_channels=64, channel_mults=(1, 2, 2, 4), num_res_blocks=2,
attn_resolutions=(16,), num_heads=1, time_embedding="adagn", dropout=0.0, num_classes=0,
image_size=32, time_scale=1.0)``

``net(x, t, y=None)``: ``x`` [N, C, H, W]; ``t`` [N] (or a scalar) float/int timesteps, embedded
sinusoidally after multiplication by ``time_scale`` (pass ``time_scale=1000`` for continuous t in
[0, 1], as flow matching uses); ``y`` [N] int class labels in ``0..num_classes`` where the extra
index ``num_classes`` (:attr:`UNet.null_class`) is the "no label" class for classifier-free guidance.
``y=None`` on a conditional net means "all null". Returns [N, out_channels, H, W];
``out_channels`` defaults to ``in_channels`` (use ``2 * in_channels`` for learned variances).

``UNet.from_preset(name, in_channels, **overrides)`` with ``name`` in :data:`PRESETS`:

- ``ddpm-thesis``: seed 000's U-Net -- resolutions 32/16/8/4 (4 levels), 2 residual blocks per
  resolution, base 64 channels, multipliers 1,2,2,4, 2-head self-attention at 16x16, AdaGN time
  conditioning (``y_s * GroupNorm(h) + y_b``, implemented as ``GroupNorm(h) * (1 + s) + b`` as in
  Dhariwal & Nichol's code, which is the same family of functions with y_s = 1 + s).
- ``ddpm-ho``: Ho et al.'s CIFAR-10 U-Net -- base 128, multipliers 1,2,2,2, 2 residual blocks,
  1-head attention at 16x16, sinusoidal embedding added, dropout 0.1: 35.75M parameters at 3 channels
  (Ho et al. report 35.7M; tests/test_unet.py checks it and that diffusers' UNet2DModel built the
  same way has exactly the same count).
- ``tiny``: 16 channels, multipliers 1,2, one residual block, attention at 8x8: for smoke runs.

Parameter counts of ``ddpm-thesis`` (measured; tests/test_unet.py pins them): 18,087,361 at 1 channel
(MNIST) and 18,089,667 at 3 channels (CIFAR-10). The thesis reports 5.7M and 8.9M. Two counts 3.2M
apart cannot come from one architecture with 1 vs 3 image channels: the channel count only changes
conv_in and conv_out (2,306 parameters here). Most of the 18M sit in the 256-channel 4x4 level
(multiplier 4) and its three up-path blocks on concatenated 512-channel inputs. Nearby variants give
e.g. 9.6M with multipliers 1,2,2,2, 6.5M with 1,2,2,2 and one block per level, 4.5M at base 32 --
none is what the thesis' table states, so its figures come from an unstated configuration (or a
counting slip). The architecture is built exactly as the table describes it and its real count is
reported, rather than distorting it to hit either figure.

Layout (Ho et al.'s, also diffusers' ``UNet2DModel``): conv_in -> per level ``num_res_blocks``
ResBlocks (+ attention at the listed resolutions) and a stride-2 conv downsample (not after the
last level) -> middle ResBlock, attention, ResBlock -> per level ``num_res_blocks + 1`` ResBlocks
on the concatenated skips (+ attention) and nearest-upsample + conv -> GroupNorm, SiLU, conv_out.
The middle attention uses ``num_heads`` too. The time embedding is sinusoidal(base) -> Linear(4 base)
-> SiLU -> Linear(4 base); class labels are an embedding added to it.

Why not diffusers' ``UNet2DModel``: it builds the same layout (the same parameter count) and could be configured
for most of what the families need (an extra class as the null label, 2C outputs), but the noise-aware
classifier needs the encoder half on its own, and one short module we control keeps DDPM, iDDPM, NCSN, flow
matching and DAF on a single definition. It is measured against diffusers' in
tests/benchmarks/test_bench_diffusion.py (figures in docs/diffusion.md).

:class:`NoiseAwareClassifier` reuses the encoder half (down path + middle) with a pooled linear head:
a classifier of noisy images x_t for classifier guidance (Dhariwal & Nichol 2021).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.registry import Option

PRESETS: dict[str, dict[str, Any]] = {
    "ddpm-thesis": dict(base_channels=64, channel_mults=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
                        num_heads=2, time_embedding="adagn", dropout=0.0),
    "ddpm-ho": dict(base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                    num_heads=1, time_embedding="add", dropout=0.1),
    "tiny": dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                 num_heads=1, time_embedding="adagn", dropout=0.0),
}


# The one way a wrapper configures its U-Net: a preset name plus optional per-field overrides (None: the preset's).
UNET_OPTIONS: dict[str, Option] = {
    "unet": Option("ddpm-thesis", "U-Net preset (see baselines/nn/unet.py)", choices=tuple(PRESETS)),
    "base_channels": Option(None, "channels at the first resolution (None: the preset's)", type=int, ge=1),
    "channel_mults": Option(None, "channel multiplier per resolution, one level each", type=list, items=int, ge=1),
    "num_res_blocks": Option(None, "residual blocks per resolution", type=int, ge=1),
    "attn_resolutions": Option(None, "resolutions (image side) with self-attention", type=list, items=int, ge=1),
    "num_heads": Option(None, "self-attention heads", type=int, ge=1),
    "time_embedding": Option(None, "how the time embedding enters each residual block", type=str,
                             choices=("adagn", "add")),
    "dropout": Option(None, "dropout in the residual blocks", type=float, ge=0.0, lt=1.0),
}


def build_unet(cfg: Any, in_channels: int, image_size: int, out_channels: int | None = None,
               num_classes: int = 0, time_scale: float | None = None) -> "UNet":
    """The U-Net of a wrapper config object's :data:`UNET_OPTIONS` fields: its preset with every non-None override
    applied."""
    over = {k: (tuple(v) if isinstance(v, list) else v) for k in UNET_OPTIONS if k != "unet"
            for v in (getattr(cfg, k),) if v is not None}
    if time_scale is not None:
        over["time_scale"] = time_scale
    try:
        return UNet.from_preset(cfg.unet, in_channels, out_channels=out_channels, num_classes=num_classes,
                                image_size=image_size, **over)
    except ValueError as e:
        raise BenchError(f"bad U-Net config: {e}") from None


def num_groups(channels: int, max_groups: int = 32) -> int:
    """Largest group count <= max_groups that divides ``channels`` (32 for the standard widths)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-6 if channels >= 32 else 1e-5)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal embedding of (possibly fractional) timesteps t [N] -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, time conditioning (added, or AdaGN scale/shift), GroupNorm-SiLU-dropout-conv, skip."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, mode: str, dropout: float):
        super().__init__()
        self.mode = mode
        self.norm1 = norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, 2 * out_ch if mode == "adagn" else out_ch)
        self.norm2 = norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.temb(F.silu(emb))[:, :, None, None]
        if self.mode == "adagn":
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift  # AdaGN: y_s * GroupNorm(h) + y_b
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions (GroupNorm, qkv 1x1, SDPA, out 1x1, residual)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels are not divisible by {heads} heads")
        self.heads = heads
        self.norm = norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)  # [N, HW, C]
        q, k, v = self.qkv(t).view(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # [N, heads, HW, C/heads]
        a = a.transpose(1, 2).reshape(n, h * w, c)
        return x + self.out(a).transpose(1, 2).reshape(n, c, h, w)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """ResBlocks (each optionally followed by attention) of one resolution."""

    def __init__(self, blocks: list[ResBlock], attns: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)


def _check_config(time_embedding: str, channel_mults: Sequence[int], num_res_blocks: int, base_channels: int):
    if time_embedding not in ("adagn", "add"):
        raise ValueError(f"time_embedding must be 'adagn' or 'add', got {time_embedding!r}")
    if not channel_mults or any(int(m) <= 0 for m in channel_mults):
        raise ValueError(f"channel_mults must be a non-empty list of positive integers, got {channel_mults!r}")
    if num_res_blocks < 1 or base_channels < 1:
        raise ValueError("num_res_blocks and base_channels must be >= 1")


class _Encoder(nn.Module):
    """Time/class embedding, conv_in, the down path and the middle block (shared by UNet and classifier)."""

    def __init__(self, in_channels, base_channels, channel_mults, num_res_blocks, attn_resolutions, num_heads,
                 time_embedding, dropout, num_classes, image_size, time_scale):
        super().__init__()
        _check_config(time_embedding, channel_mults, num_res_blocks, base_channels)
        self.base_channels = base_channels
        self.time_scale = float(time_scale)
        self.num_classes = int(num_classes)
        temb = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.class_emb = nn.Embedding(self.num_classes + 1, temb) if self.num_classes > 0 else None
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        attn_resolutions = {int(r) for r in attn_resolutions}
        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        self.skip_channels = [base_channels]
        ch, res = base_channels, int(image_size)
        for level, mult in enumerate(channel_mults):
            out = base_channels * int(mult)
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, out, temb, time_embedding, dropout))
                attns.append(Attention(out, num_heads) if res in attn_resolutions else nn.Identity())
                ch = out
                self.skip_channels.append(ch)
            self.down.append(_Level(blocks, attns))
            if level != len(channel_mults) - 1:
                self.downsamplers.append(Downsample(ch))
                self.skip_channels.append(ch)
                res //= 2
        self.mid1 = ResBlock(ch, ch, temb, time_embedding, dropout)
        self.mid_attn = Attention(ch, num_heads)
        self.mid2 = ResBlock(ch, ch, temb, time_embedding, dropout)
        self.out_ch, self.out_res = ch, res
        self.attn_resolutions = attn_resolutions

    def embed(self, x, t, y):
        if not torch.is_tensor(t):
            t = torch.tensor(t, device=x.device)
        t = t.to(x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t * self.time_scale, self.base_channels).to(self.conv_in.weight.dtype))
        if self.class_emb is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.class_emb(y.long())
        elif y is not None:
            raise ValueError("class labels given to an unconditional U-Net (num_classes=0)")
        return emb

    def encode(self, x, emb):
        h = self.conv_in(x)
        skips = [h]
        for level, lv in enumerate(self.down):
            for block, attn in zip(lv.blocks, lv.attns):
                h = attn(block(h, emb))
                skips.append(h)
            if level < len(self.downsamplers):
                h = self.downsamplers[level](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        return h, skips


class UNet(nn.Module):
    """See the module docstring."""

    def __init__(self, in_channels: int, out_channels: int | None = None, base_channels: int = 64,
                 channel_mults: Sequence[int] = (1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), num_heads: int = 1, time_embedding: str = "adagn",
                 dropout: float = 0.0, num_classes: int = 0, image_size: int = 32, time_scale: float = 1.0):
        super().__init__()
        out_channels = out_channels or in_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_classes = int(num_classes)
        self.encoder = _Encoder(in_channels, base_channels, channel_mults, num_res_blocks, attn_resolutions,
                                num_heads, time_embedding, dropout, num_classes, image_size, time_scale)
        temb = 4 * base_channels
        skips = list(self.encoder.skip_channels)
        ch, res = self.encoder.out_ch, self.encoder.out_res
        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            out = base_channels * int(mult)
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(ch + skips.pop(), out, temb, time_embedding, dropout))
                attns.append(Attention(out, num_heads) if res in self.encoder.attn_resolutions else nn.Identity())
                ch = out
            self.up.append(_Level(blocks, attns))
            if level != 0:
                self.upsamplers.append(Upsample(ch))
                res *= 2
        self.norm_out = norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        self.levels = len(channel_mults)

    @property
    def null_class(self) -> int:
        """Label index meaning "unconditional" (classifier-free guidance)."""
        return self.num_classes

    @classmethod
    def from_preset(cls, name: str, in_channels: int, **overrides: Any) -> "UNet":
        if name not in PRESETS:
            raise ValueError(f"unknown U-Net preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(in_channels, **{**PRESETS[name], **overrides})

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] % (2 ** (self.levels - 1)) or x.shape[-2] % (2 ** (self.levels - 1)):
            raise ValueError(f"U-Net with {self.levels} levels needs H, W divisible by {2 ** (self.levels - 1)}, "
                             f"got {tuple(x.shape[-2:])}")
        emb = self.encoder.embed(x, t, y)
        h, skips = self.encoder.encode(x, emb)
        for i, lv in enumerate(self.up):
            for block, attn in zip(lv.blocks, lv.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsamplers):
                h = self.upsamplers[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))


class NoiseAwareClassifier(nn.Module):
    """Classifier p(y | x_t, t) on noisy images: the U-Net's encoder half + GroupNorm/SiLU/avg-pool/linear."""

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 32,
                 channel_mults: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 attn_resolutions: Sequence[int] = (), num_heads: int = 1, time_embedding: str = "adagn",
                 dropout: float = 0.0, image_size: int = 32, time_scale: float = 1.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError("a noise-aware classifier needs num_classes >= 2")
        self.encoder = _Encoder(in_channels, base_channels, channel_mults, num_res_blocks, attn_resolutions,
                                num_heads, time_embedding, dropout, 0, image_size, time_scale)
        self.norm_out = norm(self.encoder.out_ch)
        self.head = nn.Linear(self.encoder.out_ch, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.encoder.embed(x, t, None)
        h, _ = self.encoder.encode(x, emb)
        return self.head(F.silu(self.norm_out(h)).mean(dim=(2, 3)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
