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


def measure_overhead(pairs: int = 5, steps: int = 30, batch_size: int = 32, width: int = 32) -> dict:
    """Interleaved harness/bare runs (robust to load drift); min over pairs of each. Used for docs/ci.md:
    ``python -m tests.benchmarks.test_bench_harness``."""
    import pathlib
    import tempfile
    import time

    class _Factory:
        def mktemp(self, name):
            return pathlib.Path(tempfile.mkdtemp(prefix=name))

    s = setup.__wrapped__({"steps": steps, "batch_size": batch_size, "image_size": 16, "width": width, "rounds": 1},
                          _Factory())
    # CPU time of this process (one intra-op thread): far less sensitive than wall-clock to other
    # processes competing for the cores, which is the norm on shared CI machines.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    harness, bare = [], []
    try:
        for i in range(pairs + 1):  # the first pair warms up allocators and kernels
            def run_harness():
                tr = make_trainer(s)
                t0 = time.process_time()
                tr.train()
                harness.append(time.process_time() - t0)

            def run_bare():
                m = make_bare(s)
                t0 = time.process_time()
                bare_loop(*m, s["train"].x)
                bare.append(time.process_time() - t0)

            order = (run_harness, run_bare) if i % 2 == 0 else (run_bare, run_harness)  # cancel order effects
            for run in order:
                run()
    finally:
        torch.set_num_threads(threads)
    h, b = min(harness[1:]), min(bare[1:])
    paired = sorted(x / y - 1 for x, y in zip(harness[1:], bare[1:]))
    return {"harness_s": h, "bare_s": b, "overhead": h / b - 1, "steps": steps, "pairs": pairs,
            "median_paired_overhead": paired[len(paired) // 2],
            "step_ms_bare": 1e3 * b / steps, "harness_all": harness[1:], "bare_all": bare[1:]}


def measure_bookkeeping(steps: int = 2000) -> dict:
    """Absolute per-step cost of the harness loop around a model whose step does nothing, against a bare
    loop that only fetches the same batches (CPU time, one thread): the overhead without model noise."""
    import pathlib
    import tempfile
    import time

    class _Factory:
        def mktemp(self, name):
            return pathlib.Path(tempfile.mkdtemp(prefix=name))

    class _Null(ConvDenoiser):
        def training_step(self, batch, step):
            return {"loss": 0.0}

    s = setup.__wrapped__({"steps": steps, "batch_size": 32, "image_size": 16, "width": 4, "rounds": 1}, _Factory())
    s["cls"] = _Null
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    h, b = [], []
    try:
        for _ in range(3):
            tr = make_trainer(s)
            t0 = time.process_time()
            tr.train()
            h.append(time.process_time() - t0)
            _, _, batches, gen = make_bare(s)
            x = s["train"].x
            t0 = time.process_time()
            for idx in batches:
                Batch(x[idx], None, gen)
            b.append(time.process_time() - t0)
    finally:
        torch.set_num_threads(threads)
    return {"harness_us": 1e6 * min(h) / steps, "bare_us": 1e6 * min(b) / steps}


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    r = measure_overhead(n)
    print(f"harness {r['harness_s']:.3f}s, bare {r['bare_s']:.3f}s CPU for {r['steps']} steps "
          f"({r['step_ms_bare']:.1f} ms/step): overhead {100 * r['overhead']:+.2f}% (min of {r['pairs']} interleaved pairs), "
          f"median of paired ratios {100 * r['median_paired_overhead']:+.2f}%")
    print("harness runs:", " ".join(f"{t:.3f}" for t in r["harness_all"]))
    print("bare runs:   ", " ".join(f"{t:.3f}" for t in r["bare_all"]))
    k = measure_bookkeeping()
    extra = k["harness_us"] - k["bare_us"]
    print(f"null model: harness loop {k['harness_us']:.1f} us/step, bare batch fetch {k['bare_us']:.1f} us/step: "
          f"{extra:.1f} us/step of bookkeeping = {100 * extra / (1e3 * r['step_ms_bare']):.3f}% of this step")
