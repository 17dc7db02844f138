"""Datasets as in-memory 8-bit tensors, with offline paths and integrity checks.

Every dataset loads to :class:`ImageData` (uint8 [N, C, H, W] + optional labels) so bits/dim and
metrics see exactly the 8-bit pixels (conventions in :mod:`bench.conventions`). Loaders:

- ``digits``: scikit-learn's bundled 8x8 digits (ships with the package; the embedded default).
  Its 17 grey levels (0..16) are mapped to 0..255 and the images resized to ``image_size``.
- ``mnist``: torchvision's MNIST, resized 28 -> ``image_size`` (32 as the seeds do).
- ``cifar10``: torchvision's CIFAR-10 (pickled batches, md5-checked by torchvision); where those are
  absent, the JPEG copy ``cifar10-jpeg.tar.gz`` (or its extracted ``cifar10-jpeg/`` folder) under the
  data root, extracted once into ``$GENBENCH_CACHE/data/``. JPEG is lossy (about 5.8/255 mean absolute
  pixel error), so such runs carry the source in the data name and are not comparable with published
  CIFAR-10 numbers.
- ``celeba``: torchvision's CelebA, centre crop 140 and resize to ``image_size`` (64).
- ``folder``: a folder of images (class sub-folders optional), ``path`` in the suite.
- ``npz``: a ``.npz`` with uint8 ``x`` ([N,H,W], [N,H,W,C] or [N,C,H,W]) and optional ``y``.

Nothing is downloaded unless ``download=True`` (``bench prefetch`` / ``--download``); offline,
``--data-root`` points at staged files and a missing or corrupt file is a one-line error naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from bench import paths
from bench.errors import BenchError, did_you_mean
from bench.registry import DataSpec

# md5 of the uncompressed MNIST idx files (byte-identical to the official ones).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


@dataclasses.dataclass
class ImageData:
    """A split held in memory as 8-bit images."""

    x: torch.Tensor  # uint8 [N, C, H, W]
    y: torch.Tensor | None  # int64 [N] or None
    num_classes: int
    name: str  # e.g. "digits/train@16"
    source: str = ""  # a caveat about where the pixels came from, carried into the name (e.g. lossy JPEG)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def spec(self) -> DataSpec:
        _, c, h, w = self.x.shape
        return DataSpec(channels=c, height=h, width=w, num_classes=self.num_classes if self.y is not None else 0)


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 [N,C,H,W] images, rounded back to 8 bits."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- loaders ----------------------------------------------------------------------------------

def load_digits(split: str, cfg: dict[str, Any]) -> ImageData:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    # Fixed split: a seeded permutation, 80% train / 20% test.
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_train = int(0.8 * len(labels))
    idx = perm[:n_train] if split == "train" else perm[n_train:]
    return ImageData(images[idx], labels[idx], 10, "digits")


def _torchvision():
    try:
        import torchvision
    except Exception as e:  # pragma: no cover - depends on the install
        raise BenchError(f"torchvision is not importable ({e}); reinstall with `pip install -e .`") from None
    return torchvision


def load_mnist(split: str, cfg: dict[str, Any]) -> ImageData:
    root = Path(cfg["root"])
    raw = root / "MNIST" / "raw"
    prefix = "train" if split == "train" else "t10k"
    missing = not all((raw / f"{prefix}-{k}").is_file() for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    if missing and cfg.get("download"):
        try:
            _torchvision().datasets.MNIST(str(root), train=split == "train", download=True)
        except Exception as e:
            raise BenchError(f"could not download MNIST into {raw} ({type(e).__name__}); offline, stage the raw "
                             "files there or pass --data-root DIR holding MNIST/raw/") from None
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        f = raw / f"{prefix}-{kind}"
        if not f.is_file():
            raise BenchError(f"MNIST file {f} is missing: stage MNIST's raw files in {raw} "
                             "(or pass --data-root DIR holding MNIST/raw/, or run `bench prefetch` with internet)")
        if cfg.get("verify", True) and _md5(f) != MNIST_MD5[f.name]:
            raise BenchError(f"MNIST file {f} is corrupt (md5 mismatch): delete it and stage a fresh copy")
    ds = _torchvision().datasets.MNIST(str(root), train=split == "train", download=False)
    x = ds.data.unsqueeze(1).contiguous()
    return ImageData(x, ds.targets.long(), 10, "mnist")


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_JPEG = "cifar10-jpeg"
CIFAR10_JPEG_SOURCE = ("source: cifar10-jpeg, lossy JPEG (q~75, ~5.8/255 mean abs error); "
                       "not comparable with published CIFAR-10 numbers")


def _cifar10_jpeg_dir(root: Path, cache_dir: Path) -> Path | None:
    """``cifar10-jpeg/`` under the data root, or the tarball there extracted once into the cache (None: neither).

    The extraction is keyed by the tarball's md5 (a replaced tarball is extracted afresh) and renamed into
    place when complete, so an interrupted extraction is never mistaken for a finished one."""
    if (root / CIFAR10_JPEG / "train").is_dir() or (root / CIFAR10_JPEG / "test").is_dir():
        return root / CIFAR10_JPEG
    tar_path = root / f"{CIFAR10_JPEG}.tar.gz"
    if not tar_path.is_file():
        return None
    dest = cache_dir / "data" / f"{CIFAR10_JPEG}-{_md5(tar_path)[:12]}"
    if not dest.is_dir():
        import shutil
        import tarfile
        import tempfile

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            with tarfile.open(tar_path) as tar:
                members = [m for m in tar.getmembers() if m.name.split("/")[0] == CIFAR10_JPEG]
                tar.extractall(tmp, members=members, filter="data")
            try:
                (tmp / CIFAR10_JPEG).rename(dest)
            except OSError:  # another process finished first
                if not dest.is_dir():
                    raise
        except (OSError, tarfile.TarError) as e:
            raise BenchError(f"cannot extract {tar_path} into {dest.parent} ({e}); check the file and free space, "
                             "or set GENBENCH_CACHE to a writable folder") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _load_cifar10_jpeg(base: Path, split: str) -> ImageData:
    """``base/<split>/<class>/NNNN.jpg`` in CIFAR-10's class order, interleaved by rank (image 0 of every
    class, then image 1, ...): the original global order is not recoverable, and any prefix (``limit_*``)
    stays class-balanced."""
    folder = base / split
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if tuple(classes) != CIFAR10_CLASSES:
        raise BenchError(f"{folder} must hold one folder per CIFAR-10 class ({', '.join(CIFAR10_CLASSES)}), "
                         f"found {classes or 'none'}; re-stage {CIFAR10_JPEG}")
    per_class = [sorted(p for p in (folder / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                 for c in CIFAR10_CLASSES]
    order = sorted(((int(p.stem) if p.stem.isdigit() else i, k, p) for k, files in enumerate(per_class)
                    for i, p in enumerate(files)), key=lambda r: (r[0], r[1]))
    x = _read_images([p for _, _, p in order], "RGB", folder)
    y = torch.tensor([k for _, k, _ in order], dtype=torch.long)
    return ImageData(x, y, 10, "cifar10", source=CIFAR10_JPEG_SOURCE)


def load_cifar10(split: str, cfg: dict[str, Any]) -> ImageData:
    """torchvision's pickled batches if staged (or downloadable), else the JPEG copy under the data root."""
    tv = _torchvision()
    root = Path(cfg["root"])
    batches = root / "cifar-10-batches-py"
    error = "not found"
    if batches.is_dir() or cfg.get("download"):
        try:
            ds = tv.datasets.CIFAR10(str(root), train=split == "train", download=bool(cfg.get("download")))
            x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            return ImageData(x, torch.tensor(ds.targets, dtype=torch.long), 10, "cifar10")
        except Exception as e:  # corrupt batches, or no internet: try the JPEG copy before giving up
            error = f"not found or corrupt ({type(e).__name__}: {e})"
    jpeg = _cifar10_jpeg_dir(root, Path(cfg.get("cache_dir") or paths.cache_dir()))
    if jpeg is not None:
        return _load_cifar10_jpeg(jpeg, split)
    raise BenchError(f"CIFAR-10 {error} under {root}: stage torchvision's python-version batches in {batches} or "
                     f"the JPEG copy {root / (CIFAR10_JPEG + '.tar.gz')} (or pass --data-root, or run "
                     "`bench prefetch` with internet)")


def load_celeba(split: str, cfg: dict[str, Any]) -> ImageData:
    tv = _torchvision()
    root = Path(cfg["root"])
    size = int(cfg.get("image_size") or 64)
    transform = tv.transforms.Compose([tv.transforms.CenterCrop(140), tv.transforms.Resize(size),
                                       tv.transforms.PILToTensor()])
    try:
        ds = tv.datasets.CelebA(str(root), split="train" if split == "train" else "test", transform=transform,
                                download=bool(cfg.get("download")))
    except RuntimeError as e:
        raise BenchError(f"CelebA not found or corrupt under {root / 'celeba'} ({e}); stage img_align_celeba/ and "
                         "the list_*.txt files there (or pass --data-root)") from None
    limit = cfg.get("limit") or len(ds)
    x = torch.stack([ds[i][0] for i in range(min(limit, len(ds)))])
    return ImageData(x, None, 0, "celeba")


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def split_names(cfg: dict[str, Any]) -> tuple[str, str]:
    return str(cfg.get("train_split", "train")), str(cfg.get("eval_split", "test"))


def split_layout(found: set[str], train: str, test: str, whole: str, where: str) -> str | None:
    """Which part of a user's dataset to read, decided once for both splits so they can never overlap:
    None when both ``train`` and ``test`` parts exist (explicit splits), else the one part (``whole``, or ``train``
    alone) that a seeded held-out split is drawn from. Anything else is ambiguous: a one-line error naming what
    was found (``x`` beside ``x_train`` could be either the training images or all of them)."""
    parts = found & {train, test, whole}
    if parts == {train, test}:
        return None
    if parts in ({whole}, {train}):
        return next(iter(parts))
    shown = ", ".join(sorted(parts)) or "none of them"
    raise BenchError(f"{where}: ambiguous splits, found {shown}; give either {train} and {test} (explicit splits) or "
                     f"one of {whole} / {train} alone (a seeded held-out test split is drawn from it)")


def load_folder(split: str, cfg: dict[str, Any]) -> ImageData:
    """``path/<train>/`` and ``path/<test>/`` ([class/]*.png) when both exist, else the images of ``path`` (or of
    ``path/<train>/`` alone) with a seeded held-out test split (:func:`split_layout`)."""
    base = Path(cfg.get("path") or "")
    if not base.is_dir():
        raise BenchError(f"image folder {base} not found: set data.path in the suite to a folder of images")
    train, test = split_names(cfg)
    found = {name for name in (train, test) if (base / name).is_dir()}
    whole = split_layout(found or {"."}, train, test, ".", f"image folder {base}")
    if whole is None:
        base = base / split
    elif whole == train:
        base = base / train
    files = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BenchError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {base}")
    classes = sorted({p.parent.name for p in files}) if any(p.parent != base for p in files) else []
    x = _read_images(files, "L" if int(cfg.get("channels") or 3) == 1 else "RGB", base)
    y = torch.tensor([classes.index(p.parent.name) for p in files]) if classes else None
    data = ImageData(x, y, len(classes), f"folder:{base}")
    if whole is None:
        return data
    return held_out_split(data, split, cfg, f"{base} (no {test}/ folder)" if whole == train
                          else f"{base} (no {train}/ and {test}/ folders)")


def _read_images(files: list[Path], mode: str, base: Path) -> torch.Tensor:
    """Decode image files (PIL ``mode`` "L" or "RGB") to uint8 [N, C, H, W]; BenchError on a bad file."""
    from PIL import Image

    arrays = []
    for p in files:
        try:
            with Image.open(p) as im:
                arrays.append(np.asarray(im.convert(mode)))
        except Exception as e:
            raise BenchError(f"cannot read image {p} ({e}): remove or replace it") from None
    if len({a.shape for a in arrays}) != 1:
        raise BenchError(f"images under {base} differ in size; resize them to one size first")
    x = torch.from_numpy(np.stack(arrays))
    return (x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)).contiguous()


def load_npz(split: str, cfg: dict[str, Any]) -> ImageData:
    """``x_train``/``x_test`` (and ``y_*``) when both are present, else ``x`` (or ``x_train`` alone) with a seeded
    held-out test split (:func:`split_layout`)."""
    path = Path(cfg.get("path") or "")
    if not path.is_file():
        raise BenchError(f".npz file {path} not found: set data.path in the suite")
    if not zipfile.is_zipfile(path):
        raise BenchError(f"{path} is not a NumPy .npz archive (np.savez writes one); it must hold a uint8 array "
                         "'x' (and optional 'y'), or x_train/x_test")
    train, test = split_names(cfg)
    try:
        arrays = np.load(path, allow_pickle=False)
        whole = split_layout({k[2:] if k.startswith("x_") else k for k in arrays.files if k == "x" or k.startswith("x_")},
                             train, test, "x", str(path))
        key = f"x_{split}" if whole is None else ("x" if whole == "x" else f"x_{train}")
        ykey = "y" + key[1:]
        x = arrays[key]
        y = arrays[ykey] if ykey in arrays.files else None
    except BenchError:
        raise
    except Exception as e:
        raise BenchError(f"cannot read {path} ({str(e).splitlines()[0][:200]}); it must be a .npz with a uint8 array "
                         "'x' (and optional 'y')") from None
    if x.dtype != np.uint8:
        raise BenchError(f"{path}: '{key}' must be uint8 (8-bit images), got {x.dtype}")
    if x.ndim not in (3, 4) or x.shape[0] == 0:
        raise BenchError(f"{path}: '{key}' must hold at least one image as [N,H,W], [N,H,W,C] or [N,C,H,W], "
                         f"got shape {list(x.shape)}")
    t = torch.from_numpy(x)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    elif t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    elif t.shape[1] not in (1, 3):
        raise BenchError(f"{path}: '{key}' has shape {list(x.shape)}: 4-D images need 1 or 3 channels, as [N,C,H,W] "
                         f"or [N,H,W,C]; neither axis 1 ({x.shape[1]}) nor the last ({x.shape[-1]}) is 1 or 3")
    yt = None
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise BenchError(f"{path}: '{ykey}' must be one non-negative integer label per image ({len(x)}), "
                             f"got {y.dtype} of shape {list(y.shape)}; fix it or drop '{ykey}'")
        yt = torch.from_numpy(y).long()
    data = ImageData(t.contiguous(), yt, int(yt.max()) + 1 if yt is not None else 0, f"npz:{path.name}")
    if whole is None:
        return data
    return held_out_split(data, split, cfg, f"{path.name} ('{key}', no x_{test})")


DEFAULT_EVAL_FRACTION = 0.1


def held_out_split(data: ImageData, split: str, cfg: dict[str, Any], what: str) -> ImageData:
    """A seeded split of a dataset without its own train/test: ``data.eval_fraction`` (default 10 %) of the
    images, drawn by ``data.split_seed`` (default 0), are the test split and never trained on.

    Without it, bits/dim and FID would be measured on the training images. The split is named in
    ``source``, which every record's data name and the report carry."""
    frac = float(cfg.get("eval_fraction", DEFAULT_EVAL_FRACTION))
    if not 0 < frac < 1:
        raise BenchError(f"data.eval_fraction must be in (0, 1), got {frac}")
    n = len(data)
    n_test = max(1, round(n * frac))
    if n - n_test < 1:
        raise BenchError(f"{what} has {n} image(s): too few to hold out a test split; add images or give explicit splits")
    seed = int(cfg.get("split_seed", 0))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    idx = order[n_test:] if split == "train" else order[:n_test]
    idx = idx.sort().values
    source = f"held-out split: {frac:.0%} of {what}, seed {seed}"
    return ImageData(data.x[idx].contiguous(), data.y[idx] if data.y is not None else None, data.num_classes,
                     data.name, source=source)


LOADERS: dict[str, Callable[[str, dict[str, Any]], ImageData]] = {
    "digits": load_digits, "mnist": load_mnist, "cifar10": load_cifar10, "celeba": load_celeba,
    "folder": load_folder, "npz": load_npz,
}
DEFAULT_SIZE = {"digits": 16, "mnist": 32, "cifar10": 32, "celeba": 64}


def load_split(data_cfg: dict[str, Any], split: str, data_root: str | None = None,
               download: bool | None = None, cache_dir: str | Path | None = None) -> ImageData:
    """Load one split of the suite's dataset, resized to ``image_size``; BenchError if unavailable.

    ``download=None`` (the default) downloads missing files the standard way (torchvision) only
    when no ``data_root`` was given: an explicit data root means "offline, use what is staged".
    ``cache_dir`` (default ``$GENBENCH_CACHE`` or ~/.cache/genbench) receives extracted archives.
    """
    name = data_cfg["dataset"]
    if name not in LOADERS:
        raise BenchError(f"unknown dataset {name!r}{did_you_mean(name, LOADERS)}; known: {', '.join(LOADERS)}")
    if download is None:
        download = data_root is None and not data_cfg.get("root")
    cfg = {**data_cfg, "root": data_root or data_cfg.get("root") or str(paths.data_root()), "download": download,
           "cache_dir": cache_dir}
    data = LOADERS[name](split, cfg)
    size = data_cfg.get("image_size") or DEFAULT_SIZE.get(name)
    x = resize_uint8(data.x, int(size)) if size else data.x
    channels = data_cfg.get("channels")
    if channels and int(channels) != x.shape[1]:
        if int(channels) == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        else:
            raise BenchError(f"data.channels={channels} but {name} has {x.shape[1]} channels")
    limit = data_cfg.get(f"limit_{'train' if split == 'train' else 'eval'}")
    y = data.y
    if limit:
        x, y = x[: int(limit)], (y[: int(limit)] if y is not None else None)
    source = f" [{data.source}]" if data.source else ""
    return ImageData(x, y, data.num_classes, f"{name}/{split}@{x.shape[-1]}{source}", source=data.source)


class EpochLoader:
    """Deterministic, resumable batches from an in-memory split.

    Epoch ``e`` visits every image once in the order ``randperm(N, seed=(seed, e))``; the last
    batch of an epoch may be smaller. The position (epoch, offset) is all the state there is, so
    a checkpoint restores the data order exactly.
    """

    def __init__(self, data: ImageData, batch_size: int, seed: int):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.epoch, self.offset = 0, 0
        self._perm: torch.Tensor | None = None

    def _order(self) -> torch.Tensor:
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            self._perm = torch.randperm(len(self.data), generator=g)
        return self._perm

    def next(self, max_images: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """(x, y, epoch_finished) of the next batch, at most ``max_images`` images."""
        n = min(self.batch_size, len(self.data) - self.offset)
        if max_images is not None:
            n = min(n, max_images)
        idx = self._order()[self.offset:self.offset + n]
        x = self.data.x[idx]
        y = self.data.y[idx] if self.data.y is not None else None
        self.offset += n
        finished = self.offset >= len(self.data)
        if finished:
            self.epoch, self.offset, self._perm = self.epoch + 1, 0, None
        return x, y, finished

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.offset, self._perm = int(state["epoch"]), int(state["offset"]), None
