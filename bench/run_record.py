"""A run's result record: the fields it starts with, its identity (resolved-config hash), which runs already
finished, and writing it with its sample grid, atomically."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import checkpoint, environment, metrics, real_data
from bench.data import ImageData
from bench.errors import BenchError
from bench.evaluation import SAMPLE_GRID
from bench.records import RunRecord, atomic_write_bytes, disk_full_message, load_records, utc_now, write_record
from bench.registry import GenerativeModel
from bench.suite import Suite


def run_hash(suite: Suite, run_name: str) -> str:
    """The resolved-config hash of one run of ``suite`` (the real-data row: its data and evaluation settings)."""
    if run_name != real_data.NAME:
        return suite.config_hash(run_name)
    payload = {"eval": suite.eval, "data": suite.data, "what": real_data.NAME}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def finished_runs(suite: Suite, results_dir: Path) -> dict[tuple[str, int], str]:
    """(run, seed) -> record path of every ``ok`` record of this suite and profile whose resolved config hash
    equals the run's current one: what ``--resume`` need not run again."""
    done: dict[tuple[str, int], str] = {}
    for r in load_records(Path(results_dir), suite.name, suite.profile):
        if r.status != "ok" or (r.model not in suite.models and r.model != real_data.NAME):
            continue
        if r.config_hash == run_hash(suite, r.model):
            done[(r.model, r.seed)] = r.path
    return done


def record_header(suite: Suite, run_name: str, seed: int, train_data: ImageData, eval_data: ImageData,
                  cls: type[GenerativeModel], config: dict[str, Any], config_hash: str) -> RunRecord:
    """A new record with the fields every run starts with: what ran, on what data, with which settings and code."""
    return RunRecord(
        suite=suite.name, profile=suite.profile, mirrors=list(suite.mirrors), model=run_name, registered=cls.name,
        family=cls.family, seed=seed, config=config, config_hash=config_hash, overrides=list(suite.overrides),
        budget={"kind": suite.budget_for(run_name).kind, "value": suite.budget_for(run_name).value},
        data={**suite.data, "train": train_data.name, "eval": eval_data.name, "train_size": len(train_data),
              "eval_size": len(eval_data)},
        train_settings={k: v for k, v in suite.train.items() if k != "seeds"},
        eval_settings=suite.eval, has_likelihood=cls.has_likelihood,
        started=utc_now(), versions=environment.package_versions(), git_commit=environment.git_commit())


def failed_record(suite_name: str, profile: str, model: str, seed: int, error: BaseException,
                  budget: dict[str, Any], overrides: list[str], started: str) -> RunRecord:
    """The record of a run that failed before it had a model (bad data path, a crash outside the model)."""
    import traceback

    return RunRecord(suite=suite_name, profile=profile, model=model, seed=seed, status="failed",
                     error=f"{type(error).__name__}: {error}".splitlines()[0][:500], traceback=traceback.format_exc(),
                     budget=budget, overrides=list(overrides), started=started, finished=utc_now())


def loss_curve(losses: list[float], points: int = 200) -> list[list[float]]:
    """[[step, mean loss over the window ending at step], ...] with at most ``points`` entries."""
    if not losses:
        return []
    window = max(1, math.ceil(len(losses) / points))
    return [[min(i + window, len(losses)), float(np.mean(losses[i:i + window]))] for i in range(0, len(losses), window)]


def save_samples(samples: metrics.Samples, path: Path) -> None:
    """Atomically save up to SAMPLE_GRID samples as uint8 (and labels) for reports."""
    from bench.conventions import to_uint8

    arrays = {"images": to_uint8(samples.images[:SAMPLE_GRID]).numpy()}
    labels = samples.info.get("labels")
    if isinstance(labels, torch.Tensor):
        arrays["labels"] = labels[:SAMPLE_GRID].numpy()
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def write(record: RunRecord, results_dir: Path) -> Path:
    """Write the record (and its sample grid) under ``results_dir``; returns the record's path.

    A finished run's checkpoints are cleared only after its record is written, so a kill in between
    leaves a resumable checkpoint rather than neither."""
    try:
        if record.samples is not None:
            stamp = record.finished.replace(":", "").replace("-", "").replace(".", "")
            rel = Path("runs") / record.suite / record.profile / "samples" / f"{record.model}__seed{record.seed}__{stamp}.npz"
            save_samples(record.samples, Path(results_dir) / rel)
            record.artifacts = {"samples": str(rel)}
        path = write_record(record, Path(results_dir))
    except OSError as e:
        raise BenchError(disk_full_message(e) or f"cannot write the record of {record.model} seed {record.seed} "
                         f"under {results_dir} ({e.strerror or e}); make it a writable folder and run again with --resume") from None
    if record.clear_checkpoints:
        checkpoint.clear(Path(record.clear_checkpoints))
    return path
