"""Training progress for a person watching: a rich bar on a terminal, plain lines otherwise (a SLURM log)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable


class PlainProgress:
    """Progress as plain lines, at most one per ``every`` seconds per run, for output that is not a terminal
    (a SLURM log, ``| tee``): model, step, share of the budget, loss, img/s and ETA."""

    def __init__(self, log: Callable[[str], None], every: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.log, self.every, self.clock = log, every, clock
        self.started: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def update(self, name: str, tr: Any, loss: float) -> None:
        now = self.clock()
        start = self.started.setdefault(name, now)
        if now - self.last.get(name, start) < self.every and not tr.finished():
            return
        self.last[name] = now
        p = tr.progress()
        eta = (now - start) * (1 - p) / p if p > 0 else float("nan")
        ips = tr.throughput() or 0.0
        self.log(f"{name}: step {tr.state.step}, {100 * p:.0f}% of {tr.budget}, loss {loss:.4g}, "
                 f"{ips:.0f} img/s, ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def progress_bar(enabled: bool):
    """A rich progress bar, or ``nullcontext(None)`` where the output is not a terminal."""
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                    TextColumn("step {task.fields[step]}"),
                    TextColumn("loss {task.fields[loss]:.4g}"), TextColumn("{task.fields[ips]:.0f} img/s"),
                    TimeElapsedColumn(), TimeRemainingColumn())
