"""`bench run --like RECORD`: repeat one recorded run exactly, on any machine.

The repeat takes from the record what made the run what it was: the suite and profile (with the record's
``--set`` overrides), the run and its seed, the wrapper's resolved config and samplers, the training and evaluation
settings, and the training length as a ``steps`` budget of the steps it trained (an ``images`` budget where it
trained on images, whose last batch may have been cut). So a wall-clock run made on another machine is repeated
step for step here, and a FLOP-budgeted one without counting again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.records import RunRecord, record_problem
from bench.suite import Budget, Suite, load_suite


def read_record(path: str | Path) -> RunRecord:
    """One record file, or a one-line error naming it and what is wrong."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise BenchError(f"--like {p}: no such record file; records live under <results>/runs/<suite>/<profile>/") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchError(f"--like {p}: unreadable record ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    problem = record_problem(data)
    if problem:
        raise BenchError(f"--like {p}: not a run record ({problem})")
    return RunRecord.from_json(data, path=str(p))


def training_length(record: RunRecord) -> Budget:
    """The budget that trains what the record trained: its images where its budget was images, else its steps."""
    steps, images = record.train.get("steps"), record.train.get("images")
    if record.budget.get("kind") == "images" and isinstance(images, int) and images > 0:
        return Budget("images", float(images))
    if not isinstance(steps, int) or steps <= 0:
        raise BenchError(f"--like {record.path}: the record trained no steps (status {record.status}); "
                         "repeat a run that trained")
    return Budget("steps", float(steps))


def suite_like(record: RunRecord, suite_file: str | None = None, overrides: list[str] | None = None) -> Suite:
    """The suite of ``record`` narrowed to its run, with the record's config, settings and training length.
    ``suite_file``: where the suite lives when it is a user's TOML file (records name the suite, not the file)."""
    if record.family == "real-data" or not record.registered:
        raise BenchError(f"--like {record.path}: {record.model} is not a trained model's record; nothing to repeat")
    suite = load_suite(suite_file or record.suite, record.profile, [*record.overrides, *(overrides or [])])
    if record.model not in suite.models:
        raise BenchError(f"--like {record.path}: suite {suite.name} [{record.profile}] has no run {record.model!r} "
                         "any more; pass --suite FILE with the suite the record came from")
    run: dict[str, Any] = {"model": record.registered, **record.config, "sampler": dict(record.sampler),
                           "samplers": dict(record.samplers)}
    if record.train.get("global_batch"):
        run["batch_size"] = int(record.train["global_batch"])
    suite.models = {record.model: run}
    suite.train = {**suite.train, **record.train_settings, "seeds": [record.seed]}
    suite.eval = {**suite.eval, **record.eval_settings}
    suite.budget = training_length(record)
    suite.overrides = [*suite.overrides, f"--like {record.path}"]
    return suite
