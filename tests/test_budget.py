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
