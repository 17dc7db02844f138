"""Shared pieces of the metric tests: a fake model that replays given images and an EvalContext for it."""

from __future__ import annotations

import pytest
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


def random_inception_state_dict(calibration: torch.Tensor, seed: int = 0, logit_std: float = 3.0) -> dict:
    """A random state dict with the shapes of torch-fidelity's Inception-v3 whose features have real spread.

    The network's default initialisation (PyTorch's fan-in uniform, gain 1/sqrt(3)) shrinks the activations
    ~6x per conv+ReLU, so after ~90 layers every image gives ~1e-8 features: FID ~ 0 and IS = 1 for any
    input. Here the convolutions get He-normal weights (std sqrt(2/fan_in), scale-preserving through ReLU)
    and the batch norms stay identity. Random ReLU nets map all images close to one shared direction, which
    would give every image the same logits (IS ~ 1); so the fc rows are drawn orthogonal to the mean
    2048-d feature of ``calibration`` (uint8 [N, C, H, W], N >= 2, not the images a test evaluates) and
    scaled so that its logits vary across images with std ``logit_std``. Everything is drawn from a
    generator seeded with ``seed``; one forward pass over ``calibration`` (~0.3 s per image on a CPU).
    """
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    from bench.metrics.extractors import rgb

    with pytest.MonkeyPatch.context() as mp:  # build the module without fetching or loading any weights
        mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
        feats = net(rgb(calibration))[0].double()
        mean = feats.mean(0)
        u = mean / mean.norm()
        w = torch.randn(net.fc.weight.shape, generator=g, dtype=torch.float64)
        w -= (w @ u)[:, None] * u[None]
        w *= logit_std / ((feats - mean) @ w.T).std(0).mean()
        net.fc.weight.copy_(w.float())
        net.fc.bias.zero_()
    return net.state_dict()


def digits_data(size: int = 16) -> tuple[ImageData, ImageData]:
    cfg = {"dataset": "digits", "image_size": size, "channels": 1}
    return load_split(cfg, "train"), load_split(cfg, "test")


def make_ctx(model, train: ImageData, real: ImageData, cache_dir, **eval_cfg) -> EvalContext:
    cfg = {"num_samples": len(real), "sample_batch_size": 128, "repeats": 1, "feature_extractor": "auto",
           "num_real": 0, "speed_batch": 16, **eval_cfg}
    return EvalContext(model=model, real=real, train=train, eval_cfg=cfg, device=torch.device("cpu"),
                       precision="fp32", seed=0, sampler={}, cache_dir=str(cache_dir),
                       dataset={"dataset": "digits", "image_size": int(real.x.shape[-1]), "channels": 1})
