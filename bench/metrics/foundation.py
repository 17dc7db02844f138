"""FD-DINOv2 and FD-CLIP: FID's formula (and KID, precision/recall) in the feature space of a foundation model,
loaded from a staged weights file, never downloaded at run time.

Stein et al. (2023) found the Fréchet distance in DINOv2 ViT-L/14's space ranks generative models as people do
where Inception's does not; EDM2 reports it beside FID. torch-fidelity 0.4 ships both extractors, but its DINOv2
loads only through ``torch.hub`` from GitHub (a weights path raises NotImplementedError), so:

- ``dinov2-vit-{s,b,l,g}-14``: the backbone is timm's ``VisionTransformer`` (``vit_*_patch14_dinov2``), chosen
  because it is maintained and its parameter names are the official checkpoint's, so the file ``torch.hub``
  downloads (``dinov2_vitl14_pretrain.pth``) loads strictly. The checkpoint's 37x37 position embedding (518 px)
  is resampled once to the 16x16 grid of a 224 px input with the official code's own formula (bicubic, scale
  factor (16 + 0.1) / 37, no antialiasing), so the features equal the official model's:
  ``tests/test_foundation_features.py`` checks them against Meta's code (a test-only copy in ``tests/peers``).
  Preprocessing is torch-fidelity's DINOv2 extractor's (TF1-compatible bilinear resize to 224, ImageNet mean/std);
  the feature is the CLS token after the final norm, as ``torch.hub``'s model returns.
- ``clip-*``: torch-fidelity's own CLIP extractor, which takes OpenAI's TorchScript archive (``ViT-L-14.pt``) by
  path. Its published sha256 is checked and the match recorded in the protocol.

Weights files are looked up in ``$GENBENCH_WEIGHTS_DIR``, ``<cache_dir>/weights`` (where ``bench prefetch`` puts
them) and ``torch.hub``'s checkpoint folder; a missing file is a one-line error naming it and its URL. None of
these spaces has class logits, so IS is "not defined" in them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch_fidelity import FeatureExtractorBase

from bench.errors import BenchError
from bench.metrics._torch_fidelity import register_extractor

WEIGHTS_DIR_ENV = "GENBENCH_WEIGHTS_DIR"
DINOV2_INPUT = 224  # torch-fidelity's DINOv2 input size
DINOV2_HUB_OFFSET = 0.1  # the official interpolate_offset of the released ViT-*/14 models
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# genbench name -> (timm architecture, official checkpoint stem); the file is <stem>_pretrain.pth
DINOV2 = {"dinov2-vit-s-14": ("vit_small_patch14_dinov2", "dinov2_vits14"),
          "dinov2-vit-b-14": ("vit_base_patch14_dinov2", "dinov2_vitb14"),
          "dinov2-vit-l-14": ("vit_large_patch14_dinov2", "dinov2_vitl14"),
          "dinov2-vit-g-14": ("vit_giant_patch14_dinov2", "dinov2_vitg14")}
CLIP = ("clip-rn50", "clip-rn101", "clip-rn50x4", "clip-rn50x16", "clip-rn50x64", "clip-vit-b-32", "clip-vit-b-16",
        "clip-vit-l-14", "clip-vit-l-14-336px")  # torch-fidelity's names
NAMES = (*DINOV2, *CLIP)


def weights_file(name: str) -> tuple[str, str, str | None]:
    """(file name, download URL, published sha256 or None) of extractor ``name``."""
    if name in DINOV2:
        stem = DINOV2[name][1]
        return f"{stem}_pretrain.pth", f"https://dl.fbaipublicfiles.com/dinov2/{stem}/{stem}_pretrain.pth", None
    from torch_fidelity.feature_extractor_clip import MODEL_METADATA, MODEL_URLS

    meta = MODEL_METADATA[name]
    return f"{meta['filename']}.pt", MODEL_URLS[name], meta["hash"]


def weights_candidates(name: str, cache_dir: str | Path | None) -> list[Path]:
    file, _, digest = weights_file(name)
    folders = [Path(os.environ[WEIGHTS_DIR_ENV])] if os.environ.get(WEIGHTS_DIR_ENV) else []
    folders += [Path(cache_dir) / "weights"] if cache_dir else []
    out = [f / file for f in folders]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    out.append(hub / file)
    if digest:  # where torch-fidelity's own download puts it
        out.append(hub / f"{name}-{digest}.pt")
    return out


def find_weights(name: str, cache_dir: str | Path | None) -> Path:
    """The staged weights of extractor ``name``; a one-line BenchError naming the file, its URL and where to put it."""
    cands = weights_candidates(name, cache_dir)
    for p in cands:
        if p.is_file():
            return p
    file, url, _ = weights_file(name)
    where = Path(cache_dir) / "weights" / file if cache_dir else cands[0]
    raise BenchError(f"{name} weights {file} not found: put it at {where} (or in ${WEIGHTS_DIR_ENV}); get it with "
                     f"`bench prefetch --suite ...` on a machine with internet, or from {url}")


def stage_weights(name: str, cache_dir: Path, log=print) -> Path:
    """Extractor ``name``'s weights at ``<cache_dir>/weights/<file>``: an already staged copy, else downloaded
    (checking the published sha256 where there is one)."""
    try:
        return find_weights(name, cache_dir)
    except BenchError:
        pass
    file, url, digest = weights_file(name)
    dest = Path(cache_dir) / "weights" / file
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log(f"downloading {url}")
    try:
        torch.hub.download_url_to_file(url, str(part), hash_prefix=digest, progress=True)
    except Exception as e:
        part.unlink(missing_ok=True)
        raise BenchError(f"cannot download {url} ({type(e).__name__}: {str(e)[:120]}); without internet, copy {file} "
                         f"to {dest} by hand") from None
    os.replace(part, dest)
    return dest


# ---- DINOv2 -------------------------------------------------------------------------------------

def hub_position_embedding(pos_embed: torch.Tensor, grid: int, offset: float = DINOV2_HUB_OFFSET) -> torch.Tensor:
    """The official DINOv2 ``interpolate_pos_encoding`` for a ``grid`` x ``grid`` input, computed once: the class
    token's embedding kept, the patch embeddings resampled bicubically by the scale factor (grid + offset) / M."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    m, dim = math.isqrt(patches.shape[1]), patches.shape[-1]
    if m * m != patches.shape[1]:
        raise BenchError(f"DINOv2 position embedding of {patches.shape[1]} patches is not a square grid")
    if m == grid:
        return pos_embed
    scale = (grid + offset) / m
    grid_embed = patches.float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
    resampled = F.interpolate(grid_embed, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    return torch.cat([cls, resampled.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos_embed.dtype)], dim=1)


def timm_state_dict(official: dict[str, torch.Tensor], grid: int) -> dict[str, torch.Tensor]:
    """An official DINOv2 checkpoint in timm's layout: the unused mask token dropped, the giant model's SwiGLU
    ``w12``/``w3`` renamed to timm's ``fc1``/``fc2``, the position embedding resampled to ``grid``."""
    out = {}
    for k, v in official.items():
        if k == "mask_token":
            continue
        out[k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")] = v
    if "pos_embed" in out:
        out["pos_embed"] = hub_position_embedding(out["pos_embed"], grid)
    return out


def load_dinov2(name: str, path: str | Path) -> torch.nn.Module:
    """The DINOv2 backbone of ``name`` at 224 px with the official weights in ``path`` (a one-line error otherwise)."""
    import timm

    arch = DINOV2[name][0]
    model = timm.create_model(arch, pretrained=False, img_size=DINOV2_INPUT, num_classes=0)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(timm_state_dict(state, DINOV2_INPUT // 14), strict=True)
    except Exception as e:
        raise BenchError(f"{path} is not the {name} checkpoint {weights_file(name)[0]} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160]}); stage a fresh copy from {weights_file(name)[1]}") from None
    return model.eval().requires_grad_(False)


class FeatureExtractorDinoV2Staged(FeatureExtractorBase):
    """torch-fidelity feature extractor ``genbench-dinov2-vit-*-14``: torch-fidelity's DINOv2 preprocessing on a
    backbone loaded from ``feature_extractor_weights_path``; feature ``"dinov2"`` (the CLS token)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError("genbench's DINOv2 extractor loads staged weights only (feature_extractor_weights_path)")
        self.model = load_dinov2(name.removeprefix("genbench-"), feature_extractor_weights_path)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    @staticmethod
    def get_provided_features_list():
        return ("dinov2",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "dinov2"

    @staticmethod
    def can_be_compiled():
        return True

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)

    def forward(self, x):
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expecting uint8 Bx3xHxW images, got {tuple(x.shape)} {x.dtype}")
        x = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(DINOV2_INPUT, DINOV2_INPUT), align_corners=False)
        return (self.model.forward_features((x - self.mean) / self.std)[:, 0].float(),)


for _name in DINOV2:
    register_extractor(f"genbench-{_name}", FeatureExtractorDinoV2Staged)


def build(name: str, path: Path) -> tuple[Any, str, str, dict[str, Any]]:
    """(torch-fidelity module, feature layer, resize description, protocol info) of extractor ``name``."""
    from torch_fidelity.utils import create_feature_extractor

    if name in DINOV2:
        module = create_feature_extractor(f"genbench-{name}", ["dinov2"], cuda=False,
                                          feature_extractor_weights_path=str(path), verbose=False)
        return module, "dinov2", f"TF1-compatible bilinear to {DINOV2_INPUT}x{DINOV2_INPUT} (torch-fidelity)", {
            "network": f"DINOv2 {name.removeprefix('dinov2-').upper()} (timm backbone, official weights, "
                       "position embedding resampled as torch.hub's)"}
    try:
        module = create_feature_extractor(name, ["clip"], cuda=False, feature_extractor_weights_path=str(path),
                                          verbose=False)
    except Exception as e:
        raise BenchError(f"cannot load {path} as {name} (OpenAI's TorchScript archive {weights_file(name)[0]}): "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
    return module, "clip", f"TF1-compatible bilinear to {module.resolution}x{module.resolution} (torch-fidelity)", {
        "network": f"OpenAI CLIP {name.removeprefix('clip-').upper()} image encoder (torch-fidelity)"}
