"""Checkpoint/resume: kill -9 at random points, SIGTERM, corrupt checkpoints.

Every run is a real ``bench run`` subprocess on the digits suite's ``reference`` model with a
small steps budget and a checkpoint every 0.05 s; the resumed run's final metrics, evaluation
curve and loss curve must equal an uninterrupted run's exactly (bit-identical on CPU).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import checkpoint

REPO = Path(__file__).resolve().parents[1]
STEPS = 1000


# A stochastic model with EMA: ddpm (random timesteps and noise from batch.generator, EMA weights
# used by its bits/dim), small enough for a trial: batch 16, 40 steps, one bits/dim batch of 32.
DDPM = ("--model", "ddpm", "--budget", "steps=40", "--set", "train.batch_size=16", "--set", "eval.bpd_batches=1",
        "--set", "train.eval_batch_size=32")


def bench_cmd(root: Path, *extra: str, model: tuple[str, ...] = ()) -> list[str]:
    model = model or ("--model", "reference", "--budget", f"steps={STEPS}")
    return [sys.executable, "-m", "bench.cli", "run", *model,
            "--set", "train.checkpoint_every_s=0.05", "--set", 'eval.metrics=["bits_per_dim"]', "--device", "cpu", "--quiet", "--no-report",
            "--results", str(root / "results"), "--checkpoints", str(root / "ckpt"),
            "--cache-dir", str(root / "cache"), *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1"}


def run(root: Path, *extra: str, ok: bool = True, model: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    r = subprocess.run(bench_cmd(root, *extra, model=model), cwd=root, env=env(), capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


def the_record(root: Path) -> dict:
    recs = sorted((root / "results" / "runs" / "digits" / "smoke").glob("*.json"))
    assert len(recs) == 1, recs
    return json.loads(recs[0].read_text())


def ckpt_folder(root: Path, model: str = "reference") -> Path:
    found = list((root / "ckpt").glob(f"digits/smoke/{model}__seed0__*"))
    return found[0] if found else root / "ckpt" / "missing"


def outcome(rec: dict) -> dict:
    """What must not depend on interruptions (timings excluded)."""
    return {"status": rec["status"], "bpd": rec["metrics"]["bits_per_dim"]["value"],
            "curve": [(c["step"], c["metrics"]["bits_per_dim"]["value"]) for c in rec["curve"]],
            "steps": rec["train"]["steps"], "images": rec["train"]["images"],
            "loss_curve": rec["train"]["loss_curve"], "loss_last": rec["train"]["loss_last"]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("uninterrupted")
    run(root)
    rec = the_record(root)
    assert rec["status"] == "ok" and rec["interruptions"] == []
    assert not ckpt_folder(root).exists()  # a finished run clears its checkpoints
    return outcome(rec)


def newest_step(root: Path, model: str = "reference") -> int:
    try:
        return json.loads((ckpt_folder(root, model) / "latest.json").read_text())["files"][0]["step"]
    except (OSError, ValueError, KeyError, IndexError):
        return -1


def start_and_wait_for_checkpoint(root: Path, min_step: int = 0, model: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start a run; return once it has checkpointed at step >= min_step (still training)."""
    p = subprocess.Popen(bench_cmd(root, model=model), cwd=root, env=env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    t_end = time.monotonic() + 120
    name = model[1] if model else "reference"
    while time.monotonic() < t_end and p.poll() is None:
        if newest_step(root, name) >= min_step:
            return p
        time.sleep(0.01)
    p.kill()
    pytest.fail(f"no checkpoint appeared (exit {p.poll()}): {p.stderr.read().decode()[-1000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_kill9_at_random_point_then_resume_equals_uninterrupted(tmp_path, uninterrupted, trial):
    rng = random.Random(trial)
    p = start_and_wait_for_checkpoint(tmp_path, min_step=rng.randint(5, STEPS * 3 // 5))
    time.sleep(rng.uniform(0.0, 0.05))  # anywhere: mid-step, mid-checkpoint-write, mid-evaluation
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    if list((tmp_path / "results").rglob("*.json")):
        pytest.skip("the run finished before the kill (machine faster than expected)")
    payload, _ = checkpoint.load(ckpt_folder(tmp_path))
    # Up to STEPS: a kill during the final evaluation (training done, no record yet) must resume too.
    assert payload is not None and 0 < payload["state"]["step"] <= STEPS
    if trial == 0:  # also: the newest checkpoint is truncated -> the previous good one is used
        index = json.loads((ckpt_folder(tmp_path) / "latest.json").read_text())["files"]
        if len(index) == 2:
            newest = ckpt_folder(tmp_path) / index[0]["file"]
            newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    run(tmp_path, "--resume")
    rec = the_record(tmp_path)
    assert outcome(rec) == uninterrupted
    resumed = [i for i in rec["interruptions"] if "resumed_at_step" in i]
    assert len(resumed) == 1 and 0 < resumed[0]["resumed_at_step"] <= STEPS
    if trial == 0 and resumed[0]["notes"]:
        assert "corrupt" in resumed[0]["notes"][0]


@pytest.mark.slow
def test_kill9_of_a_stochastic_ema_model_then_resume_is_bit_identical(tmp_path):
    """ddpm: its random timesteps/noise (the step generator's state), EMA weights and Adam moments all
    come back from the checkpoint, so the resumed loss curve and bits/dim equal an uninterrupted run's."""
    (tmp_path / "plain").mkdir()
    (tmp_path / "killed").mkdir()
    run(tmp_path / "plain", model=DDPM)
    expected = the_record(tmp_path / "plain")
    assert expected["status"] == "ok" and expected["interruptions"] == []
    assert len(expected["train"]["loss_curve"]) == 40 and len(expected["curve"]) == 1  # fraction 0.5
    root = tmp_path / "killed"
    p = start_and_wait_for_checkpoint(root, min_step=random.Random(7).randint(5, 25), model=DDPM)
    p.send_signal(signal.SIGKILL)
    p.wait()
    if list((root / "results").rglob("*.json")):
        pytest.skip("the run finished before the kill (machine faster than expected)")
    payload, _ = checkpoint.load(ckpt_folder(root, "ddpm"))
    assert payload is not None and 0 < payload["state"]["step"] <= 40
    assert int(payload["model"]["ema_steps"]) == payload["state"]["step"]  # the EMA is in the checkpoint
    run(root, "--resume", model=DDPM)
    rec = the_record(root)
    assert outcome(rec) == outcome(expected)
    assert rec["interruptions"][-1]["resumed_at_step"] == payload["state"]["step"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_writes_checkpoint_and_resume_continues(tmp_path, uninterrupted, sig):
    """SIGTERM (preemption) and Ctrl-C (SIGINT) both checkpoint at the step boundary; --resume is bit-exact."""
    p = start_and_wait_for_checkpoint(tmp_path, min_step=5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip(f"the run finished before {sig.name} arrived")
    assert p.returncode == 3, err.decode()[-1000:]  # EXIT_INTERRUPTED
    assert "--resume" in err.decode()
    payload, notes = checkpoint.load(ckpt_folder(tmp_path))
    assert notes == []
    stopped_at = payload["state"]["step"]
    assert payload["state"]["interruptions"][-1]["signal"] == sig.name
    assert payload["state"]["interruptions"][-1]["step"] == stopped_at
    run(tmp_path, "--resume")
    rec = the_record(tmp_path)
    assert outcome(rec) == uninterrupted
    assert [i.get("signal") for i in rec["interruptions"]][0] == sig.name
    assert rec["interruptions"][1]["resumed_at_step"] == stopped_at  # nothing redone: saved at the stop


def test_corrupt_and_truncated_checkpoints_fall_back(tmp_path):
    folder = tmp_path / "c"
    checkpoint.save(folder, {"w": torch.arange(5.0), "step": 1}, 1)
    checkpoint.save(folder, {"w": torch.arange(5.0) * 2, "step": 2}, 2)
    newest = folder / "ckpt-2.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, wrong checksum
    newest.write_bytes(bytes(data))
    payload, notes = checkpoint.load(folder)
    assert payload["step"] == 1 and torch.equal(payload["w"], torch.arange(5.0))
    assert notes and "ckpt-2.pt corrupt" in notes[0]
    (folder / "ckpt-1.pt").write_bytes(b"")  # the older one truncated to nothing as well
    payload, notes = checkpoint.load(folder)
    assert payload is None and len(notes) == 2


def test_kill_between_training_and_record_leaves_a_resumable_checkpoint(tmp_path, monkeypatch, uninterrupted):
    """Checkpoints are cleared only after the record is on disk: a crash while writing it keeps them,
    and --resume then evaluates from the final step without retraining."""
    from bench import cli, run_record

    def disk_full(record, results_dir):
        raise OSError("No space left on device")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_record, "write_record", disk_full)
    argv = bench_cmd(tmp_path)[3:]  # drop "python -m bench.cli"
    assert cli.main(argv) != 0
    payload, notes = checkpoint.load(ckpt_folder(tmp_path))
    assert notes == [] and payload is not None and payload["state"]["step"] == STEPS
    monkeypatch.undo()
    run(tmp_path, "--resume")
    rec = the_record(tmp_path)
    assert outcome(rec) == uninterrupted
    assert rec["interruptions"][-1]["resumed_at_step"] == STEPS
    assert not ckpt_folder(tmp_path).exists()


# ---- a stop request during an evaluation (final or at a budget fraction) -------------------------

EVAL_STEPS = 40


def _draw_mean(ctx):
    """A sample-based test metric: 24 samples drawn in 3 batches of 8 (eval.sample_batch_size)."""
    from bench.metrics import value

    return {"draw_mean": value(float(ctx.draw(24, offset=7).images.double().mean()))}


def _eval_argv(root: Path, *extra: str) -> list[str]:
    return ["run", "--model", "reference", "--budget", f"steps={EVAL_STEPS}", "--device", "cpu", "--quiet",
            "--no-report", "--set", 'eval.metrics=["bits_per_dim", "draw_mean"]', "--set", "eval.sample_batch_size=8",
            "--results", str(root / "results"), "--checkpoints", str(root / "ckpt"),
            "--cache-dir", str(root / "cache"), *extra]


def _eval_outcome(rec: dict) -> dict:
    return {**outcome(rec), "draw_mean": rec["metrics"]["draw_mean"]["value"],
            "curve_draw": [c["metrics"]["draw_mean"]["value"] for c in rec["curve"]]}


@pytest.mark.parametrize("phase", ["final evaluation", "evaluation"])
def test_stop_during_evaluation_checkpoints_and_resume_equals_uninterrupted(tmp_path, monkeypatch, phase):
    """SIGUSR2 arriving while samples are drawn stops within one sample batch (not at the end of the
    evaluation); the checkpoint holds the finished training, and --resume redoes only the evaluation."""
    from bench import cli, metrics, registry, stopping

    armed = {"on": False}

    def draw_mean(ctx):
        if armed["on"] and ctx.final == (phase == "final evaluation"):
            armed["on"] = False
            stopping.request_stop(signal.SIGUSR2)  # what the signal handler does
        return _draw_mean(ctx)

    monkeypatch.setitem(metrics.METRICS, "draw_mean", metrics.Metric(
        "draw_mean", draw_mean, {"draw_mean": metrics.Output()}, reads_samples=False, sampler_dependent=True,
        needs_extractor=False, final_only=False))
    monkeypatch.setitem(stopping.STOP, "signal", None)
    monkeypatch.chdir(tmp_path)
    assert cli.main(_eval_argv(tmp_path / "plain")) == 0
    expected = _eval_outcome(the_record(tmp_path / "plain"))

    root = tmp_path / "stopped"
    armed["on"] = True
    assert cli.main(_eval_argv(root)) == cli.EXIT_INTERRUPTED
    assert not list((root / "results").rglob("*.json"))  # no record yet
    payload, notes = checkpoint.load(ckpt_folder(root))
    stop = payload["state"]["interruptions"][-1]
    assert notes == [] and stop["signal"] == "SIGUSR2" and stop["phase"] == phase
    stopped_at = EVAL_STEPS if phase == "final evaluation" else EVAL_STEPS // 2  # eval_fractions [0.5, 1.0]
    assert payload["state"]["step"] == stop["step"] == stopped_at
    # the interrupted evaluation left no partial result (only the one at fraction 0.5 before a final stop)
    assert len(payload["state"]["curve"]) == (1 if phase == "final evaluation" else 0)

    cls = registry.get("reference")
    trained = []
    step = cls.training_step
    def counted(self, batch, i):  # the harness's steps (its hook is set), not `bench run`'s throwaway preflight step
        if self._optimize_hook is not None:
            trained.append(i)
        return step(self, batch, i)

    monkeypatch.setattr(cls, "training_step", counted)
    assert cli.main(_eval_argv(root, "--resume")) == 0
    rec = the_record(root)
    assert _eval_outcome(rec) == expected
    assert len(trained) == EVAL_STEPS - stopped_at  # a stop in the final evaluation retrains nothing
    assert [i.get("phase") for i in rec["interruptions"]] == [phase, None]
    assert rec["interruptions"][1]["resumed_at_step"] == stopped_at
    assert not ckpt_folder(root).exists()


def test_resume_skips_runs_finished_with_the_same_config_and_rerun_forces_them(tmp_path, capsys):
    from bench import records
    from tests.helpers import TINY_DIGITS, run_cli, write_suite

    body = TINY_DIGITS.replace('metrics = ["bits_per_dim"]', 'metrics = ["bits_per_dim", "class_coverage"]')
    suite = write_suite(tmp_path / "s.toml", body)
    base = ["run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--checkpoints", str(tmp_path / "c"),
            "--quiet", "--no-report", "--cache-dir", str(tmp_path / "cache")]

    def count():
        return len(records.load_records(tmp_path / "r", "tiny", "smoke"))

    assert run_cli(base, capsys)[0] == 0 and count() == 2  # real-data + reference
    code, out, err = run_cli(base + ["--resume"], capsys)
    assert code == 0 and count() == 2, err
    assert "reference seed 0: skipped, finished with the same config" in out and "real-data seed 0: skipped" in out
    code, out, _ = run_cli(base + ["--resume", "--set", "models.reference.lr=0.01"], capsys)
    assert code == 0 and count() == 3 and "reference seed 0: skipped" not in out  # another config: runs
    code, out, _ = run_cli(base + ["--resume", "--rerun"], capsys)
    assert code == 0 and count() == 5 and "skipped" not in out
