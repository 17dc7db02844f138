"""Default locations, in one place: the folders genbench reads and writes when no option names them.

Relative defaults (results, checkpoints, reports) are resolved against the working directory, as the README's
commands assume; the cache and data roots follow ``$GENBENCH_CACHE`` / ``$GENBENCH_DATA_ROOT``, read when asked
(not at import), so a test or a job script that sets them later is obeyed.
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = "results"  # one JSON record per run under <results>/runs/<suite>/<profile>/
CHECKPOINTS = "checkpoints"  # resumable training state, cleared when a run finishes
REPORTS_SUBDIR = "reports"  # <results>/reports/<suite>/<profile>/README.md and report.html, unless --reports says
CACHE_ENV = "GENBENCH_CACHE"
DATA_ROOT_ENV = "GENBENCH_DATA_ROOT"


def reports_dir(results: str | Path, reports: str | Path | None = None) -> Path:
    """Where reports go: ``--reports`` when given, else beside the records they render (``<results>/reports``).
    Never the checkout's committed ``reports/`` unless the user names it: a run with ``--results /tmp/x`` must leave
    the checkout untouched."""
    return Path(reports) if reports else Path(results) / REPORTS_SUBDIR


def cache_dir() -> Path:
    """Reference statistics, classifiers, staged weights: ``$GENBENCH_CACHE``, else ``~/.cache/genbench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "genbench")


def data_root() -> Path:
    """Downloaded or staged datasets: ``$GENBENCH_DATA_ROOT``, else ``~/.cache/genbench/data``."""
    return Path(os.environ.get(DATA_ROOT_ENV) or Path.home() / ".cache" / "genbench" / "data")
