"""The contract every registered wrapper keeps, run over the whole registry from each wrapper's own ``tiny`` config
(as diffusers' SchedulerCommonTest runs over its schedulers). A plugin author runs it on a new wrapper with
``GENBENCH_PLUGINS=mypackage pytest tests/test_contract.py``: it builds; two training steps move its parameters and
leave nothing non-finite; samples have the data's shape and lie in [0, 1]; sampling is a function of the generator;
an unknown sampler option is an error; and a ``state_dict`` round trip gives back the same model, bit for bit."""

from __future__ import annotations

import pytest
import torch

from bench import registry
from bench.data import load_split
from bench.errors import BenchError
from bench.registry import Batch, DataSpec

pytestmark = pytest.mark.usefixtures("one_thread")

# every registered wrapper but the throwaway models other test modules register (test-nan, test-crash, ...)
MODELS = sorted(n for n, cls in registry.available().items() if not cls.__module__.startswith("tests."))


@pytest.fixture(scope="module")
def digits():
    """16 px scikit-learn digits with labels: real images, so every family sees the data it is built for."""
    data = load_split({"dataset": "digits", "image_size": 16, "channels": 1}, "train")
    return data.x[:16], data.y[:16], DataSpec(1, 16, 16, 10)


def build(name: str, spec: DataSpec, seed: int = 0):
    cls = registry.get(name)
    torch.manual_seed(seed)
    return cls(dict(cls.tiny), spec)


def train_two_steps(model, x, y):
    model.optimizers = model.configure_optimizers()
    losses = []
    for step in range(2):
        batch = Batch(x, y if model.conditional or getattr(model, "num_classes", 0) else None,
                      torch.Generator().manual_seed(step))
        losses.append(model.training_step(batch, step)["loss"])
    return losses


def draw(model, n=4, seed=7, **options):
    model.eval()
    return model.sample(n, generator=torch.Generator().manual_seed(seed), **options)


@pytest.mark.parametrize("name", MODELS)
def test_tiny_config_names_only_keys_the_wrapper_declares(name):
    cls = registry.get(name)
    assert set(cls.tiny) <= set(cls.defaults), sorted(set(cls.tiny) - set(cls.defaults))


@pytest.mark.parametrize("name", MODELS)
def test_two_training_steps_move_parameters_and_stay_finite(name, digits):
    x, y, spec = digits
    model = build(name, spec)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    losses = train_two_steps(model, x, y)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses), losses
    moved = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert moved, f"{name}: no parameter changed in two steps"
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, f"{name}: non-finite state after two steps: {bad[:5]}"


@pytest.mark.parametrize("name", MODELS)
def test_samples_have_the_data_shape_lie_in_unit_range_and_follow_the_generator(name, digits):
    x, y, spec = digits
    model = build(name, spec)
    train_two_steps(model, x, y)
    first, again, other = draw(model), draw(model), draw(model, seed=8)
    assert first.images.shape == (4, *spec.shape)
    assert torch.isfinite(first.images).all() and first.images.min() >= 0 and first.images.max() <= 1
    assert torch.equal(first.images, again.images), f"{name}: the same generator gave different samples"
    assert not torch.equal(first.images, other.images), f"{name}: samples ignore the generator"


@pytest.mark.parametrize("name", MODELS)
def test_an_unknown_sampler_option_is_an_error(name, digits):
    _, _, spec = digits
    model = build(name, spec)
    with pytest.raises(BenchError, match="no_such_option"):
        draw(model, no_such_option=1)


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip_is_exact(name, digits):
    """A model built from another seed and loaded with a trained model's state dict holds the same tensors and
    samples the same images (what checkpoint/resume relies on)."""
    x, y, spec = digits
    trained = build(name, spec)
    train_two_steps(trained, x, y)
    restored = build(name, spec, seed=1)
    restored.load_state_dict(trained.state_dict())
    for k, v in trained.state_dict().items():
        assert torch.equal(v, restored.state_dict()[k]), f"{name}: {k} differs after the round trip"
    assert torch.equal(draw(trained).images, draw(restored).images)
