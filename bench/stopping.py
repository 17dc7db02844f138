"""Process-wide stop requests: a preemption signal (SIGTERM from `scontrol requeue` or a time limit, SIGUSR1/2 as
a notice) or Ctrl-C (SIGINT) asks the running loop to checkpoint at its next step boundary, or during an evaluation at
its next sample batch or metric, and stop. A second Ctrl-C while that stop is pending aborts at once
(KeyboardInterrupt), for a user who will not wait for the checkpoint."""

from __future__ import annotations

import signal
from typing import Any

STOP: dict[str, Any] = {"signal": None}  # the signal that asked for a stop, None while none did


class Interrupted(Exception):
    """A stop was requested (SIGTERM/SIGUSR1/SIGUSR2); a checkpoint was written first."""


def request_stop(signum: int | None = None, frame: Any = None) -> None:
    """Ask the running loop to checkpoint and stop (what the signal handlers do); a repeated Ctrl-C aborts."""
    if signum == signal.SIGINT and STOP["signal"] == signal.SIGINT:
        raise KeyboardInterrupt
    STOP["signal"] = signum or signal.SIGTERM


def stop_requested() -> bool:
    return STOP["signal"] is not None


def clear() -> None:
    """Forget a stop an earlier run of this process honoured."""
    STOP["signal"] = None


def signal_name() -> str:
    """The name of the signal that asked for the stop (SIGTERM when it came from no signal)."""
    return signal.Signals(STOP["signal"] or signal.SIGTERM).name


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


def install_signal_handlers() -> dict[int, Any]:
    """SIGTERM (scontrol requeue, time limit), SIGUSR1/2 (preemption notice) and Ctrl-C checkpoint and stop.
    Returns the handlers they replace (for :func:`restore_signal_handlers`)."""
    previous: dict[int, Any] = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread
            break
    return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    """Put back what :func:`install_signal_handlers` replaced: after training, Ctrl-C interrupts again (a report
    render has no checkpoint to honour a stop request)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
