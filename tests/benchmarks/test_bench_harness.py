"""Harness overhead (issue 2): bench.runner.Trainer.train against a bare PyTorch loop that trains
the same model, from the same initial weights, on the same batches with the same noise.

The two benchmarks form the group ``harness-overhead``; ``scripts/perf_check.py`` prints
min(harness) / min(bare) - 1 (the figure in docs/ci.md). The bare loop reproduces the harness's
loss curve exactly, which the test asserts, so the comparison is like for like.
"""

from __future__ import annotations

import textwrap

import pytest
import torch

from bench.data import EpochLoader, load_split
from bench.registry import Batch
from bench.runner import RunOptions, Trainer, seed_everything
from bench.suite import load_suite
from tests.benchmarks.conftest import ConvDenoiser

SEED = 0


@pytest.fixture(scope="module")
def setup(overhead_config, tmp_path_factory):
    cfg = overhead_config
    tmp = tmp_path_factory.mktemp("overhead")
    path = tmp / "overhead.toml"
    path.write_text(textwrap.dedent(f"""
        name = "overhead"
        [data]
        dataset = "digits"
        image_size = {cfg['image_size']}
        channels = 1
        [train]
        batch_size = {cfg['batch_size']}
        seeds = [{SEED}]
        eval_fractions = [1.0]
        checkpoint_every_s = 0
        device = "cpu"
        [models.reference]
        lr = 0.001
        [profiles.smoke]
        budget = {{ steps = {cfg['steps']} }}
    """))
    suite = load_suite(str(path), "smoke")
    train = load_split(suite.data, "train")
    model_cls = type("ConvDenoiserBench", (ConvDenoiser,), {"width": cfg["width"]})
    opts = RunOptions(results_dir=tmp / "results", checkpoint_dir=tmp / "ckpt", progress=False)
    return {"suite": suite, "train": train, "cls": model_cls, "opts": opts, "steps": cfg["steps"],
            "batch_size": cfg["batch_size"], "rounds": cfg["rounds"]}


def make_trainer(s):
    tr = Trainer(s["suite"], "reference", SEED, s["opts"], s["train"], s["train"])
    tr.cls = s["cls"]
    tr.build()
    return tr


def make_bare(s):
    """What a user would write: model + Adam, the same seeded init, batch order and noise generator."""
    seed_everything(SEED)
    spec = s["train"].spec
    model = s["cls"]({"lr": 0.001}, spec)
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    loader = EpochLoader(s["train"], s["batch_size"], SEED)
    batches = []
    for _ in range(s["steps"]):
        idx_start = loader.offset
        perm = loader._order()
        batches.append(perm[idx_start:idx_start + min(s["batch_size"], len(s["train"]) - idx_start)])
        loader.next()
    gen = torch.Generator().manual_seed(SEED * 7919 + 1)  # the harness's per-step generator seed
    return model, opt, batches, gen


def bare_loop(model, opt, batches, gen, data_x):
    losses = []
    for idx in batches:
        loss = model.loss(Batch(data_x[idx], None, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.benchmark(group="harness-overhead")
def test_bench_train_harness(benchmark, setup):
    holder = {}

    def prepare():
        holder["tr"] = make_trainer(setup)
        return (holder["tr"],), {}

    benchmark.pedantic(lambda tr: tr.train(), setup=prepare, rounds=setup["rounds"])
    tr = holder["tr"]
    assert tr.state.step == setup["steps"]
    benchmark.extra_info["steps"] = setup["steps"]
    # like for like: the bare loop reproduces the harness's loss curve exactly
    model, opt, batches, gen = make_bare(setup)
    assert bare_loop(model, opt, batches, gen, setup["train"].x) == tr.state.losses


@pytest.mark.benchmark(group="harness-overhead")
def test_bench_train_bare(benchmark, setup):
    x = setup["train"].x

    def prepare():
        return make_bare(setup) + (x,), {}

    losses = benchmark.pedantic(bare_loop, setup=prepare, rounds=setup["rounds"])
    assert len(losses) == setup["steps"] and all(l == l for l in losses)
    benchmark.extra_info["steps"] = setup["steps"]
