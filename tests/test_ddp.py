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

from bench import distributed as ddp

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


# ---- a stochastic model: every rank draws its own timesteps and noise -------------------------------

DDPM_STEPS, DDPM_BATCH = 6, 15  # slices of 8 and 7 images
DDPM_OVERRIDES = [f"train.batch_size={DDPM_BATCH}", "train.eval_fractions=[1.0]", "train.warmup_steps=0",
                  "train.device=\"cpu\""]


def _ddpm_suite():
    from bench.suite import load_suite

    return load_suite("digits", "smoke", DDPM_OVERRIDES, f"steps={DDPM_STEPS}")


def _ddpm_worker(rank: int, world: int, init_file: str, out: str) -> None:
    """One process of a 2-process gloo run of the digits suite's tiny ddpm; saves losses, draws, weights."""
    import torch

    from bench.data import load_split
    from bench.runner import RunOptions, Trainer

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        suite = _ddpm_suite()
        data = load_split(suite.data, "train", None, None)
        tr = Trainer(suite, "ddpm", 0, RunOptions(checkpoint_dir=Path(out) / "ckpt", progress=False), data, data)
        tr.build()
        draws, draw = [], tr.model._draw

        def recording_draw(batch, x0):
            t, noise = draw(batch, x0)
            draws.append(t.clone())
            return t, noise

        tr.model._draw = recording_draw
        tr.train()
        torch.save({"losses": tr.state.losses, "draws": draws, "weights": tr.model.state_dict()},
                   Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _ddpm_one_process_emulation():
    """The same training computed in one process, written out independently of the runner's loop:
    each step's global batch is sliced [r::2], slice r draws from step_generator(seed, step, r), the
    slice losses weighted by slice size are summed and backpropagated once (= the gradient of the
    global batch's mean loss), then one Adam step and the EMA update."""
    import torch

    from bench import registry
    from bench.data import EpochLoader, load_split
    from bench.registry import Batch
    from bench.seeding import seed_everything, step_generator
    from bench.suite import model_config

    suite = _ddpm_suite()
    data = load_split(suite.data, "train", None, None)
    seed_everything(0)
    model = registry.get("ddpm")(model_config(suite.models["ddpm"]), data.spec)
    (opt,) = model.configure_optimizers().values()
    loader, losses = EpochLoader(data, DDPM_BATCH, 0), []
    for step in range(DDPM_STEPS):
        x, y, _ = loader.next()
        total, objective = 0.0, 0.0
        for r in range(2):
            w = len(x[r::2]) / len(x)
            loss = model.loss(Batch(x[r::2], y[r::2], step_generator(0, step, r, torch.device("cpu"))))
            objective = objective + w * loss
            total += w * float(loss.detach())
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        model.after_optimizer_step("model")
        losses.append(total)
    return losses, model


def test_stochastic_model_ranks_draw_independently_and_match_the_one_process_computation(tmp_path):
    """ddpm (random timesteps and noise, EMA) on 2 gloo processes: the ranks' draws differ (one shared
    stream gave every slice the same timesteps), and the run equals, to float tolerance, one process
    computing the same global-batch objective with the per-rank generators."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_ddpm_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert len(r0["draws"]) == len(r1["draws"]) == DDPM_STEPS
    for a, b in zip(r0["draws"], r1["draws"]):
        assert not torch.equal(a[:7], b[:7])  # slices of 8 and 7: compare the common length
    assert r0["losses"] == r1["losses"]  # every rank logs the global batch's loss
    losses, model = _ddpm_one_process_emulation()
    assert r0["losses"] == pytest.approx(losses, rel=1e-5)
    # The trained network and its EMA compute the same function. (Weights are compared through their
    # outputs: a conv bias followed by GroupNorm has an exactly-zero true gradient, so Adam turns the
    # float noise of either summation order into lr-sized steps that do not change any output.)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(4, 1, 16, 16, generator=g), torch.randint(0, 100, (4,), generator=g)
    with torch.no_grad():
        want = {name: getattr(model, name)(x, t) for name in ("net", "ema")}
        for rec in (r0, r1):
            model.load_state_dict(rec["weights"])
            for name, out in want.items():
                torch.testing.assert_close(getattr(model, name)(x, t), out, rtol=1e-4, atol=1e-5, msg=name)


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
