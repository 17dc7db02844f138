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


# ---- bench submit carries every run option into the task specs (plan / --dry-run, no cluster) ----

def _submit_args(*argv: str):
    from bench.cli import build_parser

    return build_parser().parse_args(["submit", "--dry-run", *argv])


def test_submit_carries_run_options_into_each_task(tmp_path, monkeypatch):
    from bench.launch import slurm
    from bench.launch.local import TaskSpec
    from bench.suite import load_suite

    monkeypatch.delenv("GENBENCH_INCEPTION_WEIGHTS", raising=False)
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"staged")
    args = _submit_args("--model", "reference", "--seed", "3", "--data-root", str(tmp_path / "data"),
                        "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--budget", "steps=7",
                        "--set", "train.precision=bf16", "--inception-weights", str(weights))
    suite = load_suite("digits", args.profile, args.overrides, args.budget)
    _, data = slurm.plan(suite, args, slurm.load_profile(None), tmp_path / "results")
    (task,) = data["tasks"]
    spec = TaskSpec(**task["spec"])
    assert spec.inception_weights == str(weights.resolve())
    assert (spec.model, spec.seed, spec.budget, spec.device) == ("reference", 3, "steps=7", "cpu")
    assert spec.data_root == str((tmp_path / "data").resolve()) and spec.cache_dir == str((tmp_path / "cache").resolve())
    assert "train.precision=bf16" in spec.overrides
    assert load_suite(spec.suite, spec.profile, spec.overrides, spec.budget).train["precision"] == "bf16"


def test_submit_rejects_missing_inception_weights_before_submitting(tmp_path, monkeypatch, capsys):
    from bench import cli

    monkeypatch.delenv("GENBENCH_INCEPTION_WEIGHTS", raising=False)
    missing = tmp_path / "nowhere.pth"
    rc = cli.main(["submit", "--dry-run", "--model", "reference", "--results", str(tmp_path / "r"),
                   "--inception-weights", str(missing)])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USER_ERROR and str(missing) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing submitted, no submission folder
    monkeypatch.setenv("GENBENCH_INCEPTION_WEIGHTS", str(missing))  # the variable is checked the same way
    assert cli.main(["submit", "--dry-run", "--model", "reference", "--results", str(tmp_path / "r")]) != 0
    assert "GENBENCH_INCEPTION_WEIGHTS" in capsys.readouterr().err


def test_task_sets_the_submitted_inception_weights(tmp_path, monkeypatch):
    """run_task exports the weights for the metrics; a file gone on the node is this task's failed record."""
    import os

    from bench.launch.local import TaskSpec, run_task

    monkeypatch.setenv("GENBENCH_INCEPTION_WEIGHTS", "unset")  # restored after the test (run_task sets it)
    monkeypatch.delenv("GENBENCH_INCEPTION_WEIGHTS")
    monkeypatch.setattr("bench.runner.run_one", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop here")))
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    spec = TaskSpec(suite="digits", profile="smoke", model="reference", seed=0, results_dir=str(tmp_path / "r"),
                    checkpoint_dir=str(tmp_path / "c"), inception_weights=str(weights), device="cpu")
    out = run_task(spec)
    assert out["status"] == "failed" and "stop here" in out["error"]  # got past the weights check to the run
    assert os.environ["GENBENCH_INCEPTION_WEIGHTS"] == str(weights)
    weights.unlink()
    out = run_task(spec)
    assert out["status"] == "failed" and "does not exist on this node" in out["error"]


def test_a_task_is_prepared_as_bench_run_prepares_a_run(tmp_path, monkeypatch):
    """run_task goes through runner.prepare_run: the same model selection (with "did you mean"), the same preflight
    (a model that cannot take a step fails here, before training), each ending as this task's failed record."""
    from bench.launch.local import TaskSpec, run_task
    from bench.records import load_records

    common = dict(suite="digits", profile="smoke", seed=0, results_dir=str(tmp_path / "r"),
                  checkpoint_dir=str(tmp_path / "c"), cache_dir=str(tmp_path / "cache"), device="cpu")
    out = run_task(TaskSpec(model="refrence", **common))
    assert out["status"] == "failed" and "has no model 'refrence' (did you mean 'reference'?)" in out["error"]
    prepared = []
    monkeypatch.setattr("bench.preflight.check", lambda suite, opts, runs, data: prepared.append(runs))
    monkeypatch.setattr("bench.runner.run_one", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop here")))
    out = run_task(TaskSpec(model="reference", **common))
    assert prepared == [["reference"]] and "stop here" in out["error"]
    (first, second) = sorted(load_records(tmp_path / "r"), key=lambda r: r.model)
    assert first.model == "reference" and first.traceback and second.model == "refrence"
