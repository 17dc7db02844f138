"""DDP on CPU: 2 gloo processes (torchrun) give the same loss curve as 1 process, same global batch.

The reference model has no per-rank randomness (no dequantization noise), so the only
difference is floating-point summation order. A global batch of 63 gives unequal shards
(32 + 31), which exercises the shard-size weighting of the gradient average.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.launch import ddp

REPO = Path(__file__).resolve().parents[1]
STEPS = 25


def _run(root: Path, nproc: int) -> dict:
    args = ["-m", "bench.cli", "run", "--model", "reference", "--budget", f"steps={STEPS}", "--device", "cpu",
            "--set", "train.batch_size=63", "--set", 'eval.metrics=["bits_per_dim"]', "--set", "train.warmup_steps=0",
            "--quiet", "--no-report", "--results", str(root / "results"), "--checkpoints", str(root / "ckpt"),
            "--cache-dir", str(root / "cache")]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    recs = list((root / "results" / "runs" / "digits" / "smoke").glob("*.json"))
    assert len(recs) == 1, f"expected one record (rank 0 writes), got {recs}"
    return json.loads(recs[0].read_text())


def test_two_gloo_processes_match_one_process(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = _run(tmp_path / "one", 1)
    two = _run(tmp_path / "two", 2)
    assert one["train"]["world_size"] == 1 and two["train"]["world_size"] == 2
    for rec in (one, two):  # the budget means the same thing: same global batch, same images seen
        assert rec["train"]["global_batch"] == 63 and rec["train"]["steps"] == STEPS
    assert one["train"]["images"] == two["train"]["images"]  # (an epoch's last, smaller batch included)
    c1, c2 = one["train"]["loss_curve"], two["train"]["loss_curve"]
    assert len(c1) == len(c2) == STEPS  # one point per step at this length
    assert [s for s, _ in c1] == [s for s, _ in c2]
    assert c1[-1][1] < c1[0][1] - 0.1  # it actually trained
    for (_, a), (_, b) in zip(c1, c2):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
    bpd1, bpd2 = one["metrics"]["bits_per_dim"]["value"], two["metrics"]["bits_per_dim"]["value"]
    assert bpd2 == pytest.approx(bpd1, rel=1e-5)
    t = two["timings"]
    assert t["train_images_per_second_per_device"] == pytest.approx(t["train_images_per_second"] / 2)


def test_single_process_needs_no_process_group(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "SUBMITIT_EXECUTOR", "SUBMITIT_FOLDER"):
        monkeypatch.delenv(k, raising=False)
    assert ddp.init_from_env("cpu") == (0, 1)
    assert ddp.env_world_size() == 1
    assert ddp.backend_for("cpu") == "gloo" and ddp.backend_for("cuda:0") == "nccl"


def test_incomplete_torchrun_environment_is_a_clear_error(monkeypatch):
    from bench.errors import BenchError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(BenchError, match="torchrun"):
        ddp.init_from_env("cpu")
