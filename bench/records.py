"""Result records: one JSON file per run, written atomically and never overwritten.

On disk a record is plain JSON, so users' notebooks read it without genbench. In genbench it is a
:class:`RunRecord`: built in one place by the runner (:mod:`bench.run_record`), and the one accessor through which
results, reports and ``bench compare`` read it (:func:`load_records` returns them). ``bench results`` flattens
them into a pandas table.

Schema (version 1): the fields of :class:`RunRecord`. A metric's entry is {value, stderr | std, n, protocol, note}:
``stderr`` is the standard error of its value (bits/dim: test images, a stochastic estimator and an ODE solver's
error in quadrature); ``std`` is a spread over repeats or subsets (FID, IS, KID, coverage). Records written before
2026-12 kept bits/dim's standard error under ``std``; ``metric_error`` reads both.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Iterable

SCHEMA_VERSION = 1
RUNS_SUBDIR = "runs"


@dataclasses.dataclass
class RunRecord:
    """One run's result: what ran (suite, model, seed, config and its hash, data, settings, code), how it ended
    (status, error) and what it measured (metrics, the curve at budget fractions, training and timings).

    Read with :meth:`from_json`, which tolerates old and hand-edited files: a missing or mistyped section becomes
    empty (readers never guard against None), and keys this version does not know are kept in ``extra`` and
    written back. ``path`` (where it was read from), ``samples`` and ``clear_checkpoints`` (handed from the runner to
    :func:`bench.run_record.write`) are never written."""

    suite: str
    profile: str
    model: str  # the run's name in the suite
    seed: int
    status: str = "ok"  # "ok" | "diverged" | "failed"
    error: str | None = None
    traceback: str | None = None
    registered: str | None = None  # the wrapper's registry name
    family: str | None = None
    mirrors: list | None = None  # the reference tables the suite mirrors (None: not recorded, the report asks the suite)
    config: dict = dataclasses.field(default_factory=dict)
    config_hash: str | None = None
    sampler: dict = dataclasses.field(default_factory=dict)
    samplers: dict = dataclasses.field(default_factory=dict)
    sampler_resolved: dict = dataclasses.field(default_factory=dict)
    overrides: list = dataclasses.field(default_factory=list)
    search: dict = dataclasses.field(default_factory=dict)  # {of, point}: the [search] grid point this run is
    budget: dict = dataclasses.field(default_factory=dict)  # {kind, value}
    data: dict = dataclasses.field(default_factory=dict)
    train_settings: dict = dataclasses.field(default_factory=dict)
    eval_settings: dict = dataclasses.field(default_factory=dict)
    has_likelihood: bool | None = None
    conditional: bool | None = None
    parameters: int | None = None
    hardware: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)  # {name: {value, stderr | std, n, protocol, note}}
    curve: list = dataclasses.field(default_factory=list)  # [{fraction, step, images, train_seconds, metrics}]
    train: dict = dataclasses.field(default_factory=dict)  # {steps, images, epochs, loss_*, loss_curve, ...}
    timings: dict = dataclasses.field(default_factory=dict)
    interruptions: list = dataclasses.field(default_factory=list)
    artifacts: dict = dataclasses.field(default_factory=dict)  # {"samples": path under the results folder}
    submission: dict = dataclasses.field(default_factory=dict)  # {id, index, folder} of a `bench submit` task
    versions: dict = dataclasses.field(default_factory=dict)
    git_commit: str | None = None
    started: str | None = None
    finished: str | None = None
    schema: int = SCHEMA_VERSION
    extra: dict = dataclasses.field(default_factory=dict)
    path: str | None = None
    samples: Any = None
    clear_checkpoints: str | None = None

    NOT_WRITTEN: ClassVar[tuple[str, ...]] = ("extra", "path", "samples", "clear_checkpoints")

    @classmethod
    def _fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls) if f.name not in cls.NOT_WRITTEN}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str | None = None) -> "RunRecord":
        """A record from its JSON object (check it with :func:`record_problem` first)."""
        fields, values, extra = cls._fields(), {}, {}
        for key, value in data.items():
            f = fields.get(key)
            if f is None:
                extra[key] = value
            elif f.default_factory is not dataclasses.MISSING:  # a section: a dict or a list, else empty
                empty = f.default_factory()
                values[key] = value if isinstance(value, type(empty)) else empty
            else:
                values[key] = value
        return cls(**values, extra=extra, path=path)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to disk: every field (schema first), then the keys kept in ``extra``."""
        out = {"schema": self.schema}
        out.update((name, getattr(self, name)) for name in self._fields() if name != "schema")
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    def metric(self, name: str) -> dict[str, Any] | None:
        """The entry of metric ``name`` (None when absent or not an entry)."""
        m = self.metrics.get(name)
        return m if isinstance(m, dict) else None

    def metric_value(self, name: str) -> Any:
        m = self.metric(name)
        return m.get("value") if m is not None else None


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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not e.filename:  # a failed write() names no file: say which (disk full)
            e.filename = str(path)
        raise
    return path


def atomic_write_text(path: Path, text: str, overwrite: bool = True) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite)


def record_dir(results_dir: Path, suite: str, profile: str) -> Path:
    return Path(results_dir) / RUNS_SUBDIR / suite / profile


def write_record(record: "RunRecord | dict[str, Any]", results_dir: Path) -> Path:
    """Write ``record`` (a :class:`RunRecord`, or its JSON object) as a new file; a name clash gets a numeric
    suffix, never an overwrite."""
    record = record if isinstance(record, RunRecord) else RunRecord.from_json(record)
    folder = record_dir(results_dir, record.suite, record.profile)
    stamp = (record.finished or utc_now()).replace(":", "").replace("-", "").replace(".", "")
    stem = f"{record.model}__seed{record.seed}__{stamp}"
    text = json.dumps(_clean(record.to_json()), indent=1, sort_keys=False)
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


def metric_problems(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, what is wrong) for each metric entry a reader cannot use: not an object, or a value that is neither a
    number nor null (a hand edit that wrote "0.5" or [0.5]). The rest of the record stays usable."""
    out = []
    for key, entry in metrics.items():
        if not isinstance(entry, dict):
            out.append((key, f"is {type(entry).__name__}, not an object with a value"))
        elif not (entry.get("value") is None or (isinstance(entry["value"], (int, float))
                                                 and not isinstance(entry["value"], bool))):
            out.append((key, f"has value {entry['value']!r} ({type(entry['value']).__name__}), not a number"))
    return out


def load_records(results_dir: Path, suite: str | None = None, profile: str | None = None,
                 warn=None) -> list[RunRecord]:
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
        for key, problem in metric_problems(rec["metrics"] if isinstance(rec.get("metrics"), dict) else {}):
            warn(f"warning: record {path}: metric {key!r} {problem}; its cell stays blank")
        out.append(RunRecord.from_json(rec, path=str(path)))
    out.sort(key=lambda r: str(r.finished or ""))
    return out


def latest_per_run(records: Iterable[RunRecord]) -> list[RunRecord]:
    """The newest record of each (suite, profile, model, seed)."""
    latest: dict[tuple, RunRecord] = {}
    for r in records:
        latest[(r.suite, r.profile, r.model, r.seed)] = r
    return list(latest.values())


def records_table(records: Iterable[RunRecord]):
    """A pandas DataFrame: one row per record, metrics and timings as columns."""
    import pandas as pd

    rows = []
    for r in records:
        row = {k: getattr(r, k) for k in ("suite", "profile", "model", "family", "seed", "status", "parameters")}
        row["budget"] = f"{r.budget.get('value')} {r.budget.get('kind')}"
        for name in r.metrics:
            if r.metric(name) is not None:
                row[name] = r.metric_value(name)
        for name, v in r.timings.items():
            if isinstance(v, (int, float)) or v is None:
                row[name] = v
        row["error"] = r.error
        row["finished"] = r.finished
        rows.append(row)
    return pd.DataFrame(rows)
