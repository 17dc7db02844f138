"""DCGAN (Radford et al. 2016) and its class-conditional variant (Mirza & Osindero 2014), as in seed 004.

- Generator: z (``latent_dim``, standard normal) -> transposed conv 4x4 to a 4x4 map, then
  stride-2 transposed convs (batch norm + ReLU) doubling the resolution up to the image size,
  tanh output in [-1, 1]. Channel widths halve at each doubling, ending at ``g_channels``.
- Discriminator: stride-2 convs (LeakyReLU 0.2; batch norm on every layer but the first)
  halving the resolution down to 4x4, then a 4x4 conv to one logit. Both networks adapt to any
  square power-of-two image size >= 8 (16x16 digits, 32x32 MNIST/CIFAR-10, 64x64 CelebA).
- Conditional (``cdcgan``): the class goes to both networks, as a learned embedding
  concatenated to z for G and as one-hot channel maps concatenated to the image for D.
- Losses: D minimises softplus(-D(x)) + softplus(D(G(z))); G the non-saturating
  softplus(-D(G(z))) = -log sigmoid(D(G(z))). Adam(lr 2e-4, betas (0.5, 0.999)), weights
  initialised N(0, 0.02) (batch-norm scales N(1, 0.02)) -- the DCGAN settings.
- Data: the uniformly dequantized image scaled to [-1, 1] (bench.conventions), so the real
  images D sees are continuous like G's output.

Divergence / collapse rule (documented in docs/flow_matching_gans.md). After each step the wrapper
checks three conditions and raises ``FloatingPointError("diverged: <reason>")``, which the harness
records as the run's ``diverged`` status instead of reporting its samples as a result:

1. a non-finite D or G loss (immediately);
2. D has won: D loss < ``diverge_d_loss`` while G loss > ``diverge_g_loss`` for
   ``diverge_patience`` consecutive steps (G gets no useful gradient any more);
3. mode collapse: the per-pixel standard deviation across the fake batch, averaged over pixels,
   falls below ``collapse_ratio`` times that of the real batch for ``diverge_patience``
   consecutive steps (all z map to (nearly) the same image).

The counters are buffers, so they survive checkpoint/resume. ``diverge_patience = 0`` disables 2 and 3.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.nn.labels import class_labels
from bench import conventions
from bench.errors import BenchError
from bench.registry import Batch, DataSpec, GenerativeModel, Option, Samples, register


def _check_size(data: DataSpec) -> int:
    if data.height != data.width:
        raise BenchError(f"DCGAN needs square images, got {data.height}x{data.width}; set data.image_size")
    s = data.height
    if s < 8 or s & (s - 1):
        raise BenchError(f"DCGAN needs a power-of-two image size >= 8, got {s}; set data.image_size to 16, 32 or 64")
    return int(math.log2(s)) - 2  # number of stride-2 stages between 4x4 and the image size


class Generator(nn.Module):
    def __init__(self, latent_dim: int, out_channels: int, stages: int, base: int, num_classes: int = 0,
                 embed_dim: int = 0):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        widths = [base * 2 ** (stages - 1 - i) for i in range(stages)]  # e.g. stages 3: 4b, 2b, b
        in_dim = latent_dim + (embed_dim if num_classes else 0)
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_dim, widths[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(True)]  # 1x1 -> 4x4
        for i in range(1, stages):
            layers += [nn.ConvTranspose2d(widths[i - 1], widths[i], 4, 2, 1, bias=False),
                       nn.BatchNorm2d(widths[i]), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y).to(z.dtype)], dim=1)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    def __init__(self, in_channels: int, stages: int, base: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        widths = [base * 2 ** i for i in range(stages)]  # e.g. b, 2b, 4b
        layers: list[nn.Module] = [nn.Conv2d(in_channels + num_classes, widths[0], 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, True)]
        for i in range(1, stages):
            layers += [nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=False),
                       nn.BatchNorm2d(widths[i]), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)]  # 4x4 -> 1x1 logit
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            onehot = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, onehot.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        return self.net(x).flatten()


def _dcgan_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 1.0)


@register
class DCGAN(GenerativeModel):
    """DCGAN (Radford et al. 2016): transposed-conv generator and conv discriminator, non-saturating loss; no likelihood."""

    name = "dcgan"
    tiny = {"g_channels": 8, "d_channels": 8, "latent_dim": 16, "embed_dim": 8}
    family = "gan"
    options = {
        "lr": Option(2e-4, "Adam learning rate of both networks (DCGAN)", gt=0),
        "beta1": Option(0.5, "Adam beta1 (DCGAN's 0.5)", ge=0, lt=1),
        "beta2": Option(0.999, "Adam beta2", ge=0, lt=1),
        "latent_dim": Option(100, "dimension of the generator's input noise z", ge=1),
        "g_channels": Option(64, "width of the generator's last hidden layer (doubles towards 4x4)", ge=1),
        "d_channels": Option(64, "width of the discriminator's first layer (doubles towards 4x4)", ge=1),
        "embed_dim": Option(50, "cdcgan: size of the class embedding concatenated to z", ge=1),
        "diverge_d_loss": Option(1e-3, "D has won when its loss stays below this ...", ge=0),
        "diverge_g_loss": Option(10.0, "... while G's loss stays above this", ge=0),
        "collapse_ratio": Option(0.05, "mode collapse: sample diversity below this fraction of the real batch's",
                                 ge=0),
        "diverge_patience": Option(500, "consecutive steps either condition must hold to stop the run (0: never)",
                                   ge=0),
    }
    has_likelihood = False
    conditional = False

    def __init__(self, config: dict[str, Any], data: DataSpec):
        super().__init__(config, data)
        c = self.cfg
        stages = _check_size(data)
        num_classes = 0
        if self.conditional:
            if data.num_classes <= 0:
                raise BenchError(f"{self.name} is class-conditional but the dataset has no labels; use dcgan instead")
            num_classes = data.num_classes
        self.num_classes = num_classes
        self.generator = Generator(c.latent_dim, data.channels, stages, c.g_channels,
                                   num_classes, c.embed_dim)
        self.discriminator = Discriminator(data.channels, stages, c.d_channels, num_classes)
        self.apply(_dcgan_init)
        self.register_buffer("_won_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("_collapsed_steps", torch.zeros((), dtype=torch.long))

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.cfg
        betas = (c.beta1, c.beta2)
        return {"discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr, betas=betas),
                "generator": torch.optim.Adam(self.generator.parameters(), lr=c.lr, betas=betas)}

    # ---- helpers --------------------------------------------------------------------------
    def _latent(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        return conventions.draw(torch.randn, n, self.cfg.latent_dim, generator=generator, device=device)

    def _labels(self, n: int, labels: torch.Tensor | None, generator: torch.Generator | None,
                device: torch.device) -> torch.Tensor | None:
        if not self.num_classes:
            if labels is not None:
                raise BenchError(f"{self.name} is unconditional; it cannot sample given labels (use cdcgan)")
            return None
        if labels is None:  # uniform over the classes
            return conventions.draw(torch.randint, 0, self.num_classes, (n,), generator=generator, device=device)
        return class_labels(labels, n, self.num_classes, device, self.name)

    # ---- training -------------------------------------------------------------------------
    def training_step(self, batch: Batch, step: int) -> dict[str, float]:
        device = batch.x.device
        real = conventions.dequantize(batch.x, batch.generator) * 2.0 - 1.0
        y = None
        if self.num_classes:
            if batch.y is None:
                raise BenchError(f"{self.name} needs class labels in the training data")
            y = batch.y.to(device).long()
        z = self._latent(real.shape[0], batch.generator, device)
        fake = self.generator(z, y)

        # Discriminator step: G's output is detached, so no gradient reaches G.
        d_loss = F.softplus(-self.discriminator(real, y)).mean() + F.softplus(self.discriminator(fake.detach(), y)).mean()
        self.optimize(d_loss, "discriminator")

        # Generator step (non-saturating): D's parameters are frozen so no gradient is accumulated in them.
        # D stays in train mode here, as in the DCGAN reference implementations (PyTorch's examples/dcgan,
        # Radford et al.'s code): its batch norm normalises the fake batch with that batch's statistics, the same
        # as in the D step, so G is trained against the D that was just updated. This forward does move D's
        # BatchNorm running statistics (buffers, not parameters); that is intended and harmless: D is only ever
        # run in train mode (sampling uses G alone), so the running statistics are never read.
        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        try:
            g_loss = F.softplus(-self.discriminator(fake, y)).mean()
            self.optimize(g_loss, "generator")
        finally:
            for p in self.discriminator.parameters():
                p.requires_grad_(True)

        d, g = float(d_loss.detach()), float(g_loss.detach())
        with torch.no_grad():
            fake_spread = fake.detach().float().std(0).mean()
            real_spread = real.float().std(0).mean().clamp_min(1e-8)
            diversity = float(fake_spread / real_spread)
        self._check_divergence(d, g, diversity)
        return {"loss": d + g, "d_loss": d, "g_loss": g, "diversity": diversity}

    def _check_divergence(self, d: float, g: float, diversity: float) -> None:
        """Raise FloatingPointError('diverged: ...') when the run is beyond saving (rule in the module docstring)."""
        c = self.cfg
        if not (math.isfinite(d) and math.isfinite(g)):
            raise FloatingPointError(f"diverged: non-finite loss (D {d}, G {g})")
        patience = c.diverge_patience
        if patience <= 0:
            return
        won = d < c.diverge_d_loss and g > c.diverge_g_loss
        self._won_steps.fill_(int(self._won_steps) + 1 if won else 0)
        collapsed = diversity < c.collapse_ratio
        self._collapsed_steps.fill_(int(self._collapsed_steps) + 1 if collapsed else 0)
        if int(self._won_steps) >= patience:
            raise FloatingPointError(f"diverged: discriminator won for {patience} steps (D loss {d:.2e}, G loss {g:.1f})")
        if int(self._collapsed_steps) >= patience:
            raise FloatingPointError(f"diverged: mode collapse for {patience} steps (fake/real pixel spread {diversity:.3f})")

    # ---- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               **sampler: Any) -> Samples:
        self.check_sampler(sampler)
        device = next(self.parameters()).device
        y = self._labels(n, labels, generator, device)
        z = self._latent(n, generator, device)
        images = conventions.from_signed(self.generator(z, y).float())
        info = {"label_source": "given" if labels is not None else ("uniform" if self.num_classes else "none")}
        return Samples(images, nfe=1, info=info)


@register
class ConditionalDCGAN(DCGAN):
    """Class-conditional DCGAN: the DCGAN with the label embedded into generator and discriminator."""

    name = "cdcgan"
    family = "gan"
    conditional = True
