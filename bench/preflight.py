"""Checks `bench run` makes before anything trains, so a mistake costs seconds and writes no record.

Each failure is a one-line :class:`~bench.errors.BenchError` naming the flag or suite key (exit 2): an output
folder that is not a writable folder, an unknown metric, a feature extractor without its staged weights, a model
that cannot be built or cannot take a step from its config, a sampler option the wrapper refuses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from bench import metrics, registry
from bench.data import ImageData
from bench.errors import BenchError, did_you_mean
from bench.metrics import extractors
from bench.registry import Batch
from bench.suite import Suite, model_config


def writable_folder(path: Path, flag: str) -> None:
    """``path`` exists as a folder this process can write (created if missing); a one-line BenchError otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".genbench-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"{flag} {path} is not a writable folder ({e.strerror or type(e).__name__}); "
                         f"point {flag} at one") from None


PREFLIGHT_IMAGES = 2  # the batch of the throwaway training step each model takes before the real runs


def check(suite: Suite, opts: Any, runs: list[str], train_data: ImageData) -> None:
    """What can be checked before anything trains, so a mistake costs seconds and no record: the output folders
    are writable, every metric and the feature extractor exist (with its weights), and every model builds from its
    config, takes one training step on two images on the CPU (a throwaway copy, the global RNG left as it was) and
    accepts its sampler and sweep options. ``opts`` is the run's :class:`bench.runner.RunOptions`."""
    for path, flag in ((opts.results_dir, "--results"), (opts.checkpoint_dir, "--checkpoints"),
                       (opts.cache_dir, "--cache-dir"), (getattr(opts, "reports_dir", None), "--reports")):
        if path is not None:
            writable_folder(Path(path), flag)
    known = metrics.known_metrics()
    for name in suite.eval["metrics"]:
        if name not in known:
            raise BenchError(f"unknown metric eval.metrics = {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}")
    extractors.preflight(suite.eval, suite.data["dataset"], opts.cache_dir)
    for run_name in runs:
        cfg = suite.models[run_name]
        what = "cannot be built from its config"
        try:
            with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the global RNG as it was
                model = registry.get(cfg["model"])(model_config(cfg), train_data.spec)
                what = "builds from its config but cannot take a training step"
                model.optimizers = model.configure_optimizers()
                batch = Batch(train_data.x[:PREFLIGHT_IMAGES],
                              train_data.y[:PREFLIGHT_IMAGES] if train_data.y is not None else None,
                              torch.Generator().manual_seed(0))
                model.training_step(batch, 0)
        except BenchError as e:
            raise BenchError(f"models.{run_name}: {e}") from None
        except Exception as e:
            raise BenchError(f"models.{run_name}: model {cfg['model']!r} {what} "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        main = dict(cfg.get("sampler") or {})
        for where, options in (("sampler", main), *((f"samplers.{k}", {**main, **v})
                                                    for k, v in (cfg.get("samplers") or {}).items())):
            try:
                model.check_sampler(options)
            except BenchError as e:
                raise BenchError(f"models.{run_name}.{where}: {e}") from None
