"""The preemption path of a SLURM task without a cluster: requeue refusals are retried."""

from __future__ import annotations

import subprocess

import pytest

from bench.launch.slurm import _checkpoint_and_requeue


class FlakyRequeue:
    """Stands in for submitit's checkpoint-and-requeue handler: scontrol refuses ``refusals`` times."""

    def __init__(self, refusals: int):
        self.refusals, self.calls = refusals, 0

    def __call__(self, signum, frame):
        self.calls += 1
        if self.calls <= self.refusals:
            raise subprocess.CalledProcessError(1, ["scontrol", "requeue", "7_1"])
        raise SystemExit(-1)  # submitit exits once the requeue is accepted


def test_a_refused_requeue_is_retried_until_slurm_accepts_it(capsys):
    handler = FlakyRequeue(refusals=2)
    with pytest.raises(SystemExit):
        _checkpoint_and_requeue(handler, tries=5, wait_s=0, job_state=lambda: "RUNNING")
    assert handler.calls == 3
    assert capsys.readouterr().err.count("scontrol requeue failed") == 2


def test_requeue_gives_up_after_the_last_try(capsys):
    handler = FlakyRequeue(refusals=10)
    _checkpoint_and_requeue(handler, tries=3, wait_s=0, job_state=lambda: "RUNNING")  # returns; no result
    assert handler.calls == 3
    assert "try 3/3" in capsys.readouterr().err


def test_a_failed_requeue_command_counts_when_slurm_has_requeued_the_task():
    # the repeated preemption signal killed scontrol, but the job is pending again: do not requeue twice
    handler = FlakyRequeue(refusals=10)
    with pytest.raises(SystemExit):
        _checkpoint_and_requeue(handler, tries=5, wait_s=0, job_state=lambda: "PENDING")
    assert handler.calls == 1
