import sys
import textwrap

import pytest
import torch

from bench import registry
from bench.errors import BenchError
from bench.registry import DataSpec, GenerativeModel, register


def test_discovery_finds_reference_and_every_family_is_known():
    models = registry.available()
    assert models["reference"].family == "reference"
    for cls in models.values():
        assert cls.family in registry.FAMILIES
        assert cls.name and isinstance(cls.defaults, dict)


def test_plugin_package_is_discovered_without_touching_bench(tmp_path, monkeypatch):
    pkg = tmp_path / "myplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "toy.py").write_text(textwrap.dedent("""
        from bench.registry import GenerativeModel, register
        @register
        class Toy(GenerativeModel):
            'A plugin model.'
            name = "toy-plugin"
            family = "gan"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GENBENCH_PLUGINS", "myplugins")
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    try:
        assert registry.get("toy-plugin").family == "gan"
    finally:
        registry._REGISTRY.pop("toy-plugin", None)
        sys.modules.pop("myplugins.toy", None)


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(BenchError, match="did you mean 'reference'"):
        registry.get("refrence")


def test_register_rejects_unknown_family_and_missing_name():
    with pytest.raises(TypeError, match="family"):
        @register
        class Bad(GenerativeModel):
            name = "bad-family"
            family = "vae"
    with pytest.raises(TypeError, match="name"):
        @register
        class NoName(GenerativeModel):
            family = "flow"
    with pytest.raises(TypeError, match="docstring"):
        @register
        class NoSummary(GenerativeModel):
            name, family = "no-summary", "flow"


def test_every_registered_model_has_a_one_line_summary():
    for name, cls in registry.available().items():
        assert registry.summary(cls), name


def test_optimize_outside_the_harness_takes_a_real_step():
    cls = registry.get("reference")
    model = cls({}, DataSpec(1, 4, 4))
    before = model.logits.detach().clone()
    x = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8)
    from bench.registry import Batch

    out = model.training_step(Batch(x), 0)
    assert out["loss"] == pytest.approx(torch.log(torch.tensor(256.0)).item(), rel=1e-5)  # uniform init
    assert not torch.equal(before, model.logits.detach())
