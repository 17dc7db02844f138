"""Process-wide stop requests: a preemption signal (SIGTERM from `scontrol requeue` or a time limit, SIGUSR1/2 as
a notice) asks the running loop to checkpoint at its next step boundary, or during an evaluation at its next sample
batch or metric, and stop."""

from __future__ import annotations

import signal
from typing import Any

STOP: dict[str, Any] = {"signal": None}  # the signal that asked for a stop, None while none did


class Interrupted(Exception):
    """A stop was requested (SIGTERM/SIGUSR1/SIGUSR2); a checkpoint was written first."""


def request_stop(signum: int | None = None, frame: Any = None) -> None:
    """Ask the running loop to checkpoint and stop (what the signal handlers do)."""
    STOP["signal"] = signum or signal.SIGTERM


def stop_requested() -> bool:
    return STOP["signal"] is not None


def clear() -> None:
    """Forget a stop an earlier run of this process honoured."""
    STOP["signal"] = None


def signal_name() -> str:
    """The name of the signal that asked for the stop (SIGTERM when it came from no signal)."""
    return signal.Signals(STOP["signal"] or signal.SIGTERM).name


def install_signal_handlers() -> None:
    """SIGTERM (scontrol requeue, time limit) and SIGUSR1/2 (preemption notice) checkpoint and stop."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        try:
            signal.signal(sig, request_stop)
        except ValueError:  # not the main thread
            return
