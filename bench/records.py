"""Result records: one JSON file per run, written atomically and never overwritten.

A record is a plain dict (schema below) so that reports, comparisons and users' notebooks
read it without genbench. ``bench results`` flattens all records into a pandas table.

Schema (version 1): suite, profile, model (run name), registered (wrapper name), family, seed,
config, config_hash, overrides, budget {kind, value}, status ("ok" | "diverged" | "failed"),
error, metrics {name: {value, stderr | std, n, protocol, note}}, curve [{fraction, step, images,
train_seconds, metrics}], timings {...}, train {steps, images, epochs, loss_curve, ...},
parameters, hardware, versions, git_commit, started, finished, interruptions, artifacts.

A metric's ``stderr`` is the standard error of its value (bits/dim: test images, a stochastic estimator and an
ODE solver's error in quadrature); ``std`` is a spread over repeats or subsets (FID, IS, KID, coverage).
Records written before 2026-12 kept bits/dim's standard error under ``std``; ``metric_error`` reads both.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1
RUNS_SUBDIR = "runs"


def metric_error(entry: dict[str, Any]) -> Any:
    """A metric entry's recorded error: its ``stderr``, else its ``std`` (spreads, and bits/dim in old records)."""
    return entry["stderr"] if "stderr" in entry else entry.get("std")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (strict JSON), tensors/numpy scalars become numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def disk_full_message(e: BaseException) -> str | None:
    """The one-line error for an out-of-space (or quota) OSError anywhere in its cause chain; None otherwise.

    A full disk is the machine's problem, not the model's: the suite stops instead of recording failures."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            where = e.filename or "the results or checkpoint folder"
            return (f"out of disk space writing {where}: free space there (or point --results/--checkpoints at another "
                    "disk) and run the same command with --resume; records already written are kept")
        e = e.__cause__ or e.__context__
    return None


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = True) -> Path:
    """Write via a unique temp file in the same folder, fsync, then rename (or link when not overwriting).

    The temp name is unique (mkstemp), so several processes, or nodes sharing one folder where PIDs
    collide, may write the same file concurrently. With ``overwrite=False`` an existing file is never
    replaced: FileExistsError instead.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would hide records from a group's shared folder
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: no silent overwrite
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Path, text: str, overwrite: bool = True) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite)


def record_dir(results_dir: Path, suite: str, profile: str) -> Path:
    return Path(results_dir) / RUNS_SUBDIR / suite / profile


def write_record(record: dict[str, Any], results_dir: Path) -> Path:
    """Write ``record`` as a new file; a name clash gets a numeric suffix, never an overwrite."""
    record = {"schema": SCHEMA_VERSION, **record}
    folder = record_dir(results_dir, record["suite"], record["profile"])
    stamp = record.get("finished", utc_now()).replace(":", "").replace("-", "").replace(".", "")
    stem = f"{record['model']}__seed{record['seed']}__{stamp}"
    text = json.dumps(_clean(record), indent=1, sort_keys=False)
    for i in range(1000):
        path = folder / (f"{stem}.json" if i == 0 else f"{stem}-{i}.json")
        try:
            return atomic_write_text(path, text, overwrite=False)
        except FileExistsError:
            continue
    raise RuntimeError(f"could not find a free record name for {stem} in {folder}")


REQUIRED_KEYS = ("suite", "profile", "model", "seed", "status")


def record_problem(rec: Any) -> str | None:
    """Why a parsed JSON file cannot be used as a record (None: it can)."""
    if not isinstance(rec, dict):
        return f"not a JSON object but {type(rec).__name__}"
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    if not isinstance(rec["seed"], int) or isinstance(rec["seed"], bool):
        return f"seed is {rec['seed']!r}, not an integer"
    if not isinstance(rec.get("metrics", {}), dict):
        return "metrics is not an object"
    return None


def load_records(results_dir: Path, suite: str | None = None, profile: str | None = None,
                 warn=None) -> list[dict[str, Any]]:
    """All records under ``results_dir`` (optionally one suite/profile), oldest first.

    A file that cannot be read, is not JSON (e.g. truncated) or lacks a record's keys is skipped with one
    warning line naming it and what is wrong (``warn``, default: stderr), so one bad file never hides the rest."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    base = Path(results_dir) / RUNS_SUBDIR
    if suite:
        base = base / suite
        if profile:
            base = base / profile
    out = []
    for path in sorted(base.rglob("*.json")) if base.is_dir() else []:
        try:
            rec = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            warn(f"warning: skipping record {path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            continue
        problem = record_problem(rec)
        if problem:
            warn(f"warning: skipping record {path}: {problem}")
            continue
        rec["_path"] = str(path)
        out.append(rec)
    out.sort(key=lambda r: str(r.get("finished") or ""))
    return out


def latest_per_run(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest record of each (suite, profile, model, seed)."""
    latest: dict[tuple, dict] = {}
    for r in records:
        latest[(r["suite"], r["profile"], r["model"], r["seed"])] = r
    return list(latest.values())


def metric_value(record: dict[str, Any], name: str) -> float | None:
    m = (record.get("metrics") or {}).get(name)
    return m.get("value") if isinstance(m, dict) else None


def records_table(records: Iterable[dict[str, Any]]):
    """A pandas DataFrame: one row per record, metrics and timings as columns."""
    import pandas as pd

    rows = []
    for r in records:
        row = {k: r.get(k) for k in ("suite", "profile", "model", "family", "seed", "status", "parameters")}
        row["budget"] = f"{r.get('budget', {}).get('value')} {r.get('budget', {}).get('kind')}"
        for name, m in (r.get("metrics") or {}).items():
            if isinstance(m, dict):
                row[name] = m.get("value")
        for name, v in (r.get("timings") or {}).items():
            if isinstance(v, (int, float)) or v is None:
                row[name] = v
        row["error"] = r.get("error")
        row["finished"] = r.get("finished")
        rows.append(row)
    return pd.DataFrame(rows)
