"""Shared pieces of the metric tests: a fake model that replays given images and an EvalContext for it."""

from __future__ import annotations

import torch

from bench.data import ImageData, load_split
from bench.metrics import EvalContext
from bench.registry import GenerativeModel, Samples

FAST_RECIPE = {"epochs": 1, "min_steps": 40, "max_train": 2000}


class Replay(GenerativeModel):
    """Samples are the given uint8 images (in order, wrapping), optionally plus Gaussian noise of std ``noise``."""

    name = "replay-test"
    family = "test"
    defaults = {"lr": 1e-3}

    def __init__(self, images: torch.Tensor, noise: float = 0.0, conditional_labels: bool = False):
        _, c, h, w = images.shape
        from bench.registry import DataSpec

        super().__init__({}, DataSpec(c, h, w, 10 if conditional_labels else 0))
        self.bank = images
        self.noise = noise
        self.pos = 0
        self.w = torch.nn.Parameter(torch.zeros(1))

    def sample(self, n, *, labels=None, generator=None, **sampler):
        idx = (torch.arange(n) + self.pos) % len(self.bank)
        self.pos += n
        x = self.bank[idx].float() / 255.0
        if self.noise:
            x = x + self.noise * torch.randn(x.shape, generator=generator, device=x.device)
        return Samples(x.clamp(0, 1), nfe=1, info={"spacing": "none"})


def digits_data(size: int = 16) -> tuple[ImageData, ImageData]:
    cfg = {"dataset": "digits", "image_size": size, "channels": 1}
    return load_split(cfg, "train"), load_split(cfg, "test")


def make_ctx(model, train: ImageData, real: ImageData, cache_dir, **eval_cfg) -> EvalContext:
    cfg = {"num_samples": len(real), "sample_batch_size": 128, "repeats": 1, "feature_extractor": "auto",
           "num_real": 0, "speed_batch": 16, **eval_cfg}
    return EvalContext(model=model, real=real, train=train, eval_cfg=cfg, device=torch.device("cpu"),
                       precision="fp32", seed=0, sampler={}, cache_dir=str(cache_dir),
                       dataset={"dataset": "digits", "image_size": int(real.x.shape[-1]), "channels": 1})
