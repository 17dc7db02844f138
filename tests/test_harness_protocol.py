"""What the harness reads from the built model and records about sampling (issues 2 and 6).

- ``conditional`` is the built *instance's* (wrappers decide per configuration and data: cfm on
  unlabelled data is unconditional, ddpm with classifier guidance is conditional), for the runner's
  label check, the labels passed to ``sample()`` and the record.
- The record and the sampling metrics' protocol carry the sampler settings the model actually used,
  defaults included (DDIM's default timestep spacing), not only what the suite wrote.
- Sampling latency is the minimum over repeated timed batches of the same samples (warm-up excluded).
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from bench.data import ImageData, load_split
from bench.registry import Samples
from bench.runner import RunOptions, run_one
from bench.suite import load_suite

SMALL = ["train.batch_size=8", "train.eval_fractions=[1.0]", "train.warmup_steps=0", 'train.device="cpu"',
         'eval.metrics=["sampling_speed"]', "eval.speed_batch=4"]


def _run(tmp_path, model: str, extra: list[str], labelled: bool = True):
    suite = load_suite("digits", "smoke", SMALL + extra, "steps=2")
    train, test = (load_split(suite.data, split, None, None) for split in ("train", "test"))
    if not labelled:
        train, test = (ImageData(d.x, None, 0, d.name) for d in (train, test))
    rec = run_one(suite, model, 0, RunOptions(checkpoint_dir=tmp_path / "ckpt", cache_dir=tmp_path / "cache",
                                              progress=False), train, test)
    assert rec.status == "ok", rec.traceback or rec.error
    return rec


def test_cfm_runs_unconditionally_on_unlabelled_data(tmp_path):
    from bench import registry

    assert registry.get("cfm").conditional  # the class says True: the runner used to reject unlabelled data
    rec = _run(tmp_path, "cfm", ["models.cfm.sampler={ name = \"euler\", steps = 2 }"], labelled=False)
    assert rec.conditional is False
    assert "labels" not in rec.samples.info  # no labels were asked of sample()
    labelled = _run(tmp_path, "cfm", ["models.cfm.sampler={ name = \"euler\", steps = 2 }"])
    assert labelled.conditional is True
    assert labelled.samples.info["labels"][:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]  # balanced


def test_guided_ddpm_is_recorded_conditional_and_its_default_spacing_is_recorded(tmp_path):
    from bench import registry

    assert not registry.get("ddpm").conditional
    # the suite asks for DDIM with 5 steps and says nothing about timestep spacing or eta
    rec = _run(tmp_path, "ddpm", ["models.ddpm.classifier=true",
                                  "models.ddpm.sampler={ name = \"ddim\", steps = 5 }"])
    assert rec.conditional is True  # classifier guidance: labelled samples
    assert rec.sampler == {"name": "ddim", "steps": 5}  # what the suite wrote
    resolved = rec.sampler_resolved
    assert resolved["sampler"] == "ddim" and resolved["steps"] == 5
    assert resolved["spacing"] == "linspace" and resolved["eta"] == 0.0  # DDPM.sample's defaults
    proto = rec.metrics["sample_seconds_per_batch"]["protocol"]
    assert proto["sampler"] == {"name": "ddim", "steps": 5} and proto["sampler_resolved"] == resolved
    plain = _run(tmp_path, "ddpm", ["models.ddpm.sampler={ name = \"ddim\", steps = 5, spacing = \"trailing\" }"])
    assert plain.conditional is False and plain.sampler_resolved["spacing"] == "trailing"


def test_a_conditional_instance_on_unlabelled_data_is_a_clear_error(tmp_path):
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="label"):
        _run(tmp_path, "ddpm", ["models.ddpm.class_conditional=true"], labelled=False)


class _ScriptedClock:
    """An evaluation context whose ``timed_sample`` returns scripted durations (first: the warm-up)."""

    def __init__(self, durations: list[float], speed_batch: int = 8):
        self.eval_cfg, self.sampler, self.precision = {"speed_batch": speed_batch}, {}, "fp32"
        self.device = torch.device("cpu")
        self.durations, self.calls = list(durations), []

    def sampling(self):
        return nullcontext()

    def check_stop(self):
        pass

    def timed_sample(self, n, offset):
        self.calls.append((n, offset))
        return Samples(torch.zeros(n, 1, 2, 2), nfe=3), self.durations.pop(0)


@pytest.mark.parametrize("timed, expected_batches", [
    ([0.4, 0.1, 0.3, 0.5, 9.0], 4),        # stops once 1 s is spent: 0.4 + 0.1 + 0.3 + 0.5
    ([0.05] * 4 + [0.02] + [9.0] * 3, 5),  # fast batches: at most 5 are timed
    ([2.0, 0.01], 1),                      # one slow batch is already enough time
])
def test_sampling_latency_is_the_minimum_over_repeated_timed_batches(timed, expected_batches):
    from bench.metrics.builtin import sampling_speed

    ctx = _ScriptedClock([123.0] + timed)  # a huge warm-up must never count
    out = sampling_speed(ctx)
    best = min(timed[:expected_batches])
    assert out["sample_seconds_per_batch"]["value"] == best
    assert out["sample_seconds_per_image"]["value"] == best / 8
    proto = out["sample_seconds_per_batch"]["protocol"]
    assert proto["timed_batches"] == expected_batches and proto["statistic"] == "min"
    # a small warm-up batch, then the same full batch (same generator offset) every time
    assert ctx.calls == [(4, 2)] + [(8, 3)] * expected_batches
