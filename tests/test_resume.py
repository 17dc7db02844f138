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


def bench_cmd(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.cli", "run", "--model", "reference", "--budget", f"steps={STEPS}",
            "--set", "train.checkpoint_every_s=0.05", "--set", 'eval.metrics=["bits_per_dim"]', "--device", "cpu", "--quiet", "--no-report",
            "--results", str(root / "results"), "--checkpoints", str(root / "ckpt"),
            "--cache-dir", str(root / "cache"), *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1"}


def run(root: Path, *extra: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(bench_cmd(root, *extra), cwd=root, env=env(), capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


def the_record(root: Path) -> dict:
    recs = sorted((root / "results" / "runs" / "digits" / "smoke").glob("*.json"))
    assert len(recs) == 1, recs
    return json.loads(recs[0].read_text())


def ckpt_folder(root: Path) -> Path:
    found = list((root / "ckpt").glob("digits/smoke/reference__seed0__*"))
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


def newest_step(root: Path) -> int:
    try:
        return json.loads((ckpt_folder(root) / "latest.json").read_text())["files"][0]["step"]
    except (OSError, ValueError, KeyError, IndexError):
        return -1


def start_and_wait_for_checkpoint(root: Path, min_step: int = 0) -> subprocess.Popen:
    """Start a run; return once it has checkpointed at step >= min_step (still training)."""
    p = subprocess.Popen(bench_cmd(root), cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t_end = time.monotonic() + 120
    while time.monotonic() < t_end and p.poll() is None:
        if newest_step(root) >= min_step:
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


def test_sigterm_writes_checkpoint_and_resume_continues(tmp_path, uninterrupted):
    p = start_and_wait_for_checkpoint(tmp_path, min_step=5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert p.returncode == 3, err.decode()[-1000:]  # EXIT_INTERRUPTED
    assert "--resume" in err.decode()
    payload, notes = checkpoint.load(ckpt_folder(tmp_path))
    assert notes == []
    stopped_at = payload["state"]["step"]
    assert payload["state"]["interruptions"][-1]["signal"] == "SIGTERM"
    assert payload["state"]["interruptions"][-1]["step"] == stopped_at
    run(tmp_path, "--resume")
    rec = the_record(tmp_path)
    assert outcome(rec) == uninterrupted
    assert [i.get("signal") for i in rec["interruptions"]][0] == "SIGTERM"
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
    from bench import cli, runner

    def disk_full(record, results_dir):
        raise OSError("No space left on device")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "write_record", disk_full)
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
