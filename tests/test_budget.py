"""Each budget kind stops exactly where it should."""

import math

import pytest

from bench.data import load_split
from bench.runner import RunOptions, Trainer
from bench.suite import load_suite
from tests.helpers import TINY_DIGITS, write_suite


def make_trainer(tmp_path, budget, batch_size=32, limit=None):
    text = TINY_DIGITS.replace("{ steps = 5 }", budget).replace("batch_size = 32", f"batch_size = {batch_size}")
    if limit:
        text = text.replace("channels = 1", f"channels = 1\n    limit_train = {limit}")
    suite = load_suite(str(write_suite(tmp_path / "s.toml", text)), "smoke")
    train = load_split(suite.data, "train")
    evald = load_split(suite.data, "test")
    tr = Trainer(suite, "reference", 0, RunOptions(checkpoint_dir=tmp_path / "ck"), train, evald)
    tr.build()
    return tr


def test_steps_budget(tmp_path):
    tr = make_trainer(tmp_path, "{ steps = 7 }")
    tr.train()
    assert tr.state.step == 7 and tr.state.images == 7 * 32


def test_images_budget_truncates_the_last_batch(tmp_path):
    tr = make_trainer(tmp_path, "{ images = 150 }", batch_size=64)
    tr.train()
    assert tr.state.images == 150 and tr.state.step == 3


def test_epochs_budget_visits_every_image_once_per_epoch(tmp_path):
    seen = []
    tr = make_trainer(tmp_path, "{ epochs = 2 }", batch_size=32, limit=100)
    original = tr.model.training_step

    def spy(batch, step):
        seen.append(batch.x.clone())
        return original(batch, step)

    tr.model.training_step = spy
    tr.train()
    assert tr.state.step == 2 * math.ceil(100 / 32) and tr.state.images == 200
    import torch
    first, second = torch.cat(seen[:4]), torch.cat(seen[4:])
    data = tr.train_data.x
    key = lambda t: sorted(map(bytes, t.flatten(1).numpy()))
    assert key(first) == key(data) == key(second)  # each epoch is a permutation of the split


def test_seconds_budget_stops_at_the_first_step_past_the_limit(tmp_path):
    tr = make_trainer(tmp_path, "{ seconds = 0.5 }")
    clock = []
    tr.train(on_step=lambda t, loss: clock.append(t.state.train_seconds))
    assert clock[-1] >= 0.5 > clock[-2]
    assert tr.state.eval_seconds == 0.0  # evaluation never counts against a time budget


def test_budget_fraction_evaluations_happen_once_each(tmp_path):
    tr = make_trainer(tmp_path, "{ steps = 8 }")
    tr.suite.train["eval_fractions"] = [0.25, 0.5, 1.0]
    tr.train()
    assert [(c["fraction"], c["step"]) for c in tr.state.curve] == [(0.25, 2), (0.5, 4)]
    assert all("bits_per_dim" in c["metrics"] for c in tr.state.curve)


def test_a_model_may_train_at_its_own_batch_size_under_the_shared_budget(tmp_path):
    text = TINY_DIGITS.replace("[models.reference]", "[models.reference]\n    batch_size = 8")
    suite = load_suite(str(write_suite(tmp_path / "s.toml", text.replace("{ steps = 5 }", "{ images = 40 }"))), "smoke")
    tr = Trainer(suite, "reference", 0, RunOptions(checkpoint_dir=tmp_path / "ck"),
                 load_split(suite.data, "train"), load_split(suite.data, "test"))
    tr.build()
    assert "batch_size" not in tr.model.config  # a harness key, never handed to the wrapper
    tr.train()
    assert tr.state.step == 5 and tr.state.images == 40


def test_a_bad_per_model_batch_size_is_a_one_line_error(tmp_path):
    from bench.errors import BenchError
    text = TINY_DIGITS.replace("[models.reference]", "[models.reference]\n    batch_size = 0")
    with pytest.raises(BenchError, match="models.reference.batch_size must be a positive integer"):
        load_suite(str(write_suite(tmp_path / "s.toml", text)), "smoke")


def test_resume_restores_every_random_state_the_run_draws_from(tmp_path):
    """The fast check of what the kill -9 tests show end to end: after a resume, the step generator and torch's,
    numpy's and Python's global generators continue exactly where the checkpointed run stood."""
    import random

    import numpy as np
    import torch

    tr = make_trainer(tmp_path, "{ steps = 7 }")
    tr.state.step = 3
    torch.manual_seed(11), np.random.seed(12), random.seed(13), tr.step_gen.manual_seed(14)
    tr.save_checkpoint()
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)],
                torch.rand(4, generator=tr.step_gen))
    torch.manual_seed(0), np.random.seed(0), random.seed(0)  # another run's draws in between
    again = make_trainer(tmp_path, "{ steps = 7 }")
    again.try_resume()
    assert again.state.step == 3
    got = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)],
           torch.rand(4, generator=again.step_gen))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    assert torch.equal(got[3], expected[3])


def test_budget_accounting_reads_its_own_unit_and_counts_whole_epochs():
    """Budget.fraction / reached / images_left: the suite's budget does its own accounting (the trainer only reports
    steps, images, seconds and the loader's fractional epoch)."""
    from bench.suite import Budget

    used = {"steps": 30, "images": 960, "seconds": 12.5, "epochs": 1.75}
    assert Budget("steps", 60).fraction(**used) == 0.5 and not Budget("steps", 60).reached(**used)
    assert Budget("images", 960).reached(**used) and Budget("images", 1000).images_left(960) == 40
    assert Budget("steps", 60).images_left(960) is None
    assert Budget("seconds", 10).fraction(**used) == 1.0  # capped: a step may overshoot a time budget
    # 1.75 epochs is 87.5 % of a 2-epoch budget, but only the second epoch's last image finishes it
    assert Budget("epochs", 2).fraction(**used) == 0.875 and not Budget("epochs", 2).reached(**used)
    assert Budget("epochs", 2).reached(**{**used, "epochs": 2.0})


# ---- the hardware-independent flops budget ------------------------------------------------------------------------

def test_a_flops_budget_is_spent_in_whole_steps_of_the_counted_cost():
    from bench.suite import Budget

    b = Budget.parse({"flops": 1e6}, "t")
    assert str(b) == "1e+06 flops" and b.steps_for(3e5) == 4  # ceil: 3 steps would leave it unspent
    used = {"steps": 3, "images": 0, "seconds": 0.0, "epochs": 0.0}
    assert not b.reached(**used, flops=9e5) and b.reached(**used, flops=1.2e6)
    assert b.fraction(**used, flops=5e5) == 0.5
    assert Budget.parse("flops=2.5e14", "t").value == 2.5e14  # the CLI form; need not be a whole number


def test_training_step_flops_matches_the_matmul_formula_and_scales_a_large_batch():
    """A wrapper whose training step is one matmul [N, D] @ [D, K]: 2NDK FLOPs forward and 2NDK for W's gradient
    (the input needs none), so 4DK per image, written out by hand rather than read from the counter."""
    from contextlib import nullcontext

    import torch

    from bench.flops import MAX_COUNT_BATCH, training_step_flops
    from bench.registry import DataSpec, GenerativeModel, Option, Samples

    class Linear(GenerativeModel):
        name, family = "test-linear", "flow"
        options = {"lr": Option(1e-3, "Adam learning rate", gt=0)}

        def __init__(self, config, data):
            super().__init__(config, data)
            self.w = torch.nn.Parameter(torch.randn(data.channels * data.height * data.width, 3))

        def loss(self, batch):
            return (batch.x.flatten(1).float() @ self.w).square().mean()

        def sample(self, n, *, labels=None, generator=None, **sampler):
            return Samples(torch.zeros(n, 1, 4, 4))

    model = Linear({}, DataSpec(1, 4, 4, 0))
    model.optimizers = model.configure_optimizers()
    x = torch.randint(0, 256, (200, 1, 4, 4), dtype=torch.uint8)
    d, k = 16, 3
    assert training_step_flops(model, x, None, 10, torch.device("cpu"), nullcontext) == 4 * d * k * 10
    big = 3 * MAX_COUNT_BATCH  # counted at MAX_COUNT_BATCH images and scaled: FLOPs are linear in the batch
    assert training_step_flops(model, x, None, big, torch.device("cpu"), nullcontext) == 4 * d * k * big


def test_a_flops_budget_trains_the_same_steps_whatever_the_clock_and_records_its_compute(tmp_path, monkeypatch):
    """The step count follows from the counted FLOPs alone: a machine twice as slow (a scripted clock) trains the
    same steps; the record states the FLOPs, steps and images spent."""
    import time as time_module

    from bench import runner
    from bench.data import load_split

    text = TINY_DIGITS.replace("[models.reference]", "[models.glow]\n    levels = 1\n    steps_per_level = 1\n"
                               "    hidden_channels = 4\n    [models.reference]\n    budget = { steps = 3 }")
    suite = load_suite(str(write_suite(tmp_path / "s.toml", text.replace("{ steps = 5 }", "{ flops = 2e7 }"))),
                       "smoke")
    train, evald = load_split(suite.data, "train"), load_split(suite.data, "test")
    steps = []
    for slowdown in (1.0, 2.0):
        real = time_module.perf_counter
        monkeypatch.setattr(runner.time, "perf_counter", lambda s=slowdown, real=real: real() * s)
        rec = runner.run_one(suite, "glow", 0, RunOptions(checkpoint_dir=tmp_path / f"ck{slowdown}"), train, evald)
        fps = rec.train["flops_per_step"]
        assert rec.status == "ok" and fps > 0
        assert rec.train["steps"] == math.ceil(2e7 / fps) and rec.train["flops"] == rec.train["steps"] * fps >= 2e7
        assert rec.budget == {"kind": "flops", "value": 2e7}
        steps.append(rec.train["steps"])
    assert steps[0] == steps[1] > 1
    ref = runner.run_one(suite, "reference", 0, RunOptions(checkpoint_dir=tmp_path / "ckr"), train, evald)
    assert ref.train["steps"] == 3 and ref.budget == {"kind": "steps", "value": 3}  # its own budget, recorded


def test_a_flops_budget_for_a_model_that_counts_no_flops_is_a_one_line_error(tmp_path):
    from bench.errors import BenchError

    tr = make_trainer(tmp_path, "{ flops = 1e9 }")
    with pytest.raises(BenchError, match=r"counts no FLOPs.*models.reference.budget = \{ steps"):
        tr.resolve_budget()


@pytest.mark.parametrize("name", sorted(n for n in __import__("bench.registry", fromlist=["available"]).available()
                                         if not n.startswith("test-")))
def test_every_registered_model_but_the_reference_counts_its_training_step(name):
    """A flops budget needs every model's step counted; the counter's module tracker once broke the residual flow's
    autograd.grad inside its log-det Function, so resflow had no count (and no cost metric)."""
    from contextlib import nullcontext

    import torch

    from bench import registry
    from bench.flops import training_step_flops
    from bench.registry import DataSpec

    cls = registry.get(name)
    torch.manual_seed(0)
    model = cls(dict(cls.tiny), DataSpec(1, 16, 16, 10))
    model.optimizers = model.configure_optimizers()
    x = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8)
    fps = training_step_flops(model, x, torch.arange(4) % 10, 4, torch.device("cpu"), nullcontext)
    assert (fps == 0) if name == "reference" else (fps > 0 and math.isfinite(fps))


def test_the_command_lines_budget_overrides_a_runs_own_budget_too(tmp_path):
    text = TINY_DIGITS.replace("[models.reference]", "[models.reference]\n    budget = { steps = 9 }")
    path = str(write_suite(tmp_path / "s.toml", text))
    assert load_suite(path, "smoke").budget_for("reference").value == 9
    assert str(load_suite(path, "smoke", budget="steps=2").budget_for("reference")) == "2 steps"
