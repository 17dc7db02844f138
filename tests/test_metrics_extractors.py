"""Feature extractors: the offline Inception weights path (with a weights file the test builds) and the domain classifier."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch_fidelity
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from bench.data import load_split
from bench.errors import BenchError
from bench.metrics import extractors, fidelity
from tests.helpers import TINY_DIGITS, run_cli, write_suite
from tests.metrics_helpers import Replay, digits_data, make_ctx, random_inception_state_dict


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """Seeded random weights with the shapes of torch-fidelity's Inception-v3 whose features vary from image
    to image (see random_inception_state_dict), calibrated on 8 digits training images, saved to a file."""
    train, _ = digits_data(16)
    calibration = train.x[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:8]]
    path = tmp_path_factory.mktemp("weights") / extractors.INCEPTION_FILE
    torch.save(random_inception_state_dict(calibration, seed=0), path)
    return path


@pytest.fixture
def no_download(monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    def refuse(*a, **k):
        raise AssertionError("torch-fidelity was asked to download weights")

    monkeypatch.setattr(tfi, "load_state_dict_from_url", refuse)
    monkeypatch.delenv(extractors.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub-dir")


def test_inception_from_env_var_without_network(random_inception_weights, no_download, monkeypatch, tmp_path):
    monkeypatch.setenv(extractors.INCEPTION_ENV, str(random_inception_weights))
    ext = extractors.build_inception(tmp_path)
    digest = hashlib.sha256(random_inception_weights.read_bytes()).hexdigest()
    assert ext.weights_sha256 == digest and ext.protocol()["extractor_weights_sha256"] == digest[:16]
    assert ext.feature_layer == "2048" and ext.logits_layer == "logits_unbiased" and "299" in ext.resize
    x = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    feats = ext.features(x, torch.device("cpu"))
    assert feats["2048"].shape == (2, 2048) and feats["logits_unbiased"].shape == (2, 1008)
    # the loaded weights are the file's (not a fresh random init)
    sd = torch.load(random_inception_weights)
    assert torch.equal(ext.module.fc.weight, sd["fc.weight"])


def test_inception_192d_uses_the_192_channel_layer(random_inception_weights, no_download, monkeypatch, tmp_path):
    """`inception-192d` (seed 001's CelebA/CIFAR FID space): the same weights, FID features = the spatial mean of the
    192-channel map after MaxPool_2, recomputed here layer by layer from the module's own convolutions."""
    import torch.nn.functional as F

    monkeypatch.setenv(extractors.INCEPTION_ENV, str(random_inception_weights))
    ext = extractors.build_inception(tmp_path, name="inception-192d")
    assert ext.name == "inception-192d" and ext.feature_layer == "192" and ext.logits_layer == "logits_unbiased"
    assert ext.protocol()["feature_precision"] == "fp32"
    x = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    feats = ext.features(x, torch.device("cpu"))
    assert feats["192"].shape == (2, 192) and feats["logits_unbiased"].shape == (2, 1008)
    m = ext.module
    with torch.no_grad():
        h = extractors.rgb(x).float()
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        h = interpolate_bilinear_2d_like_tensorflow1x(h, size=(299, 299), align_corners=False)
        h = (h - 128) / 128
        for layer in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                      "MaxPool_2"):
            h = getattr(m, layer)(h)
        expected = F.adaptive_avg_pool2d(h, 1).flatten(1)
    assert torch.allclose(feats["192"], expected, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16 run's evaluation: features stay fp32
        again = ext.features(x, torch.device("cpu"))
    assert again["192"].dtype == torch.float32 and torch.equal(again["192"], feats["192"])
    assert extractors.resolve_name("inception-192d", "celeba") == "inception-192d"


def test_fid_and_is_through_inception_tell_clean_from_corrupted(random_inception_weights, no_download, monkeypatch,
                                                                tmp_path):
    """FID/IS as a suite computes them with eval.feature_extractor = "inception": FID of 24 held-out digits
    against 16 others (same distribution) is far below FID of those 16 plus Gaussian noise (std 0.3) against
    themselves, and IS is well above 1. Flat features (all images alike) give FID ~ 0 for both and IS = 1."""
    monkeypatch.setenv(extractors.INCEPTION_ENV, str(random_inception_weights))
    train, test = digits_data(16)
    n_real = 16
    cfg = {"feature_extractor": "inception", "num_real": n_real}
    same = make_ctx(Replay(test.x[n_real:n_real + 24]), train, test, tmp_path, num_samples=24, **cfg)
    noised = make_ctx(Replay(test.x[:n_real], noise=0.3), train, test, tmp_path, num_samples=n_real, **cfg)
    fid_same, fid_noised = fidelity.fid(same)["fid"], fidelity.fid(noised)["fid"]
    digest = hashlib.sha256(random_inception_weights.read_bytes()).hexdigest()[:16]
    for v in (fid_same, fid_noised):
        assert v["protocol"]["extractor"] == "inception" and v["protocol"]["extractor_weights_sha256"] == digest
        assert v["protocol"]["real_count"] == n_real
    assert fid_noised["protocol"]["reference_cache"] == "hit"  # the same 16 real images as the first call
    assert fid_noised["value"] > 0.1, (fid_same, fid_noised)
    assert 0 < fid_same["value"] < fid_noised["value"] / 3, (fid_same, fid_noised)
    isc = fidelity.inception_score_metric(same)["is"]
    assert isc["protocol"]["extractor"] == "inception" and isc["value"] > 1.5, isc


def test_inception_found_in_cache_dir_and_explicit_path(random_inception_weights, no_download, tmp_path):
    staged = tmp_path / "weights" / extractors.INCEPTION_FILE
    staged.parent.mkdir()
    staged.write_bytes(random_inception_weights.read_bytes())
    assert extractors.find_inception_weights(tmp_path) == staged  # where `bench prefetch` puts it
    assert extractors.find_inception_weights(None, str(random_inception_weights)) == random_inception_weights


def test_inception_missing_is_one_line_error_naming_file(no_download, tmp_path, monkeypatch):
    with pytest.raises(BenchError) as e:
        extractors.find_inception_weights(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and extractors.INCEPTION_FILE in msg and str(tmp_path / "weights") in msg
    assert "--inception-weights" in msg and extractors.INCEPTION_ENV in msg
    monkeypatch.setenv(extractors.INCEPTION_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(BenchError, match="nope.pth"):
        extractors.find_inception_weights(tmp_path)


def test_bench_run_with_missing_inception_weights_is_a_one_line_error(workdirs, capsys, tmp_path, monkeypatch):
    """`bench run --inception-weights MISSING` on a suite with fid through Inception stops before training."""
    monkeypatch.delenv(extractors.INCEPTION_ENV, raising=False)
    body = TINY_DIGITS.replace('metrics = ["bits_per_dim"]', 'metrics = ["fid"]\n    feature_extractor = "inception"')
    assert 'feature_extractor = "inception"' in body
    suite = write_suite(tmp_path / "tiny.toml", body)
    missing = (tmp_path / "staged" / extractors.INCEPTION_FILE).resolve()
    common = ["run", "--suite", str(suite), "--results", str(workdirs["results"]), "--checkpoints",
              str(workdirs["checkpoints"]), "--cache-dir", str(workdirs["cache"]), "--quiet", "--no-report"]
    code, out, err = run_cli([*common, "--inception-weights", str(missing)], capsys)
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err + out, err
    assert str(missing) in err and "does not exist" in err and "stage" in err and "prefetch" in err, err
    assert not any(workdirs["results"].rglob("*.json")) and not any(workdirs["checkpoints"].iterdir())
    # the same file named through the environment variable: the same kind of error
    monkeypatch.setenv(extractors.INCEPTION_ENV, str(missing))
    code, out, err = run_cli(common, capsys)
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err + out, err
    assert str(missing) in err and extractors.INCEPTION_ENV in err and "prefetch" in err, err
    assert not any(workdirs["results"].rglob("*.json")) and not any(workdirs["checkpoints"].iterdir())  # before training


def test_corrupt_inception_weights_error(no_download, tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(BenchError, match="cannot load Inception weights"):
        extractors.build_inception(tmp_path, str(bad))


def test_domain_classifier_is_a_registered_torch_fidelity_extractor(tmp_path):
    cfg = {"dataset": "digits", "image_size": 8, "channels": 1}
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    path, info = extractors.domain_classifier(train, test, tmp_path, "digits", recipe={"min_steps": 5, "epochs": 1})
    assert issubclass(FEATURE_EXTRACTORS_REGISTRY[extractors.CLASSIFIER_NAME], torch_fidelity.FeatureExtractorBase)
    from torch_fidelity.utils import create_feature_extractor

    fe = create_feature_extractor(extractors.CLASSIFIER_NAME, ["192", "logits"], cuda=False,
                                  feature_extractor_weights_path=str(path), verbose=False)
    f192, logits = fe(test.x[:5].expand(-1, 3, -1, -1))
    assert f192.shape == (5, 192) and logits.shape == (5, 10)
    # cached: a second call returns the same file without retraining
    mtime = path.stat().st_mtime_ns
    again, info2 = extractors.domain_classifier(train, test, tmp_path, "digits", recipe={"min_steps": 5, "epochs": 1})
    assert again == path and path.stat().st_mtime_ns == mtime and info2 == info
    # a different image size is a different classifier
    cfg16 = {**cfg, "image_size": 16}
    other, _ = extractors.domain_classifier(load_split(cfg16, "train"), load_split(cfg16, "test"), tmp_path, "digits",
                                            recipe={"min_steps": 5, "epochs": 1})
    assert other != path


def test_domain_classifier_accuracy_on_digits(tmp_path):
    """The default recipe on scikit-learn digits (16 px), trained here: stated accuracy >= 98% on the 360
    held-out images."""
    cfg = {"dataset": "digits", "image_size": 16, "channels": 1}
    path, info = extractors.domain_classifier(load_split(cfg, "train"), load_split(cfg, "test"), tmp_path, "digits",
                                              bundled=False)
    assert path.parent == tmp_path / "classifiers" and not info.get("bundled")
    assert info["test_accuracy"] >= 0.98, info


def test_the_shipped_digits_classifier_is_used_as_is_and_recognises_the_test_digits(tmp_path):
    """Every machine measures FID/KID/IS in the same feature space: the default digits suite gets the weights
    shipped in the package (nothing trained, nothing written to the cache), their accuracy recomputed here."""
    cfg = {"dataset": "digits", "image_size": 16, "channels": 1}
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    path, info = extractors.domain_classifier(train, test, tmp_path, "digits")
    assert path == extractors.BUNDLED_CLASSIFIERS / "digits-16px.pt" and info["bundled"]
    assert not (tmp_path / "classifiers").exists()
    ext = extractors.build_digits_classifier(train, test, tmp_path, "digits")
    assert ext.weights_sha256 == extractors.file_sha256(path) and ext.info["classifier_source"] == "shipped with genbench"
    fe = extractors.FeatureExtractorDigitsClassifier(extractors.CLASSIFIER_NAME, ["logits"], str(path))
    acc = extractors.accuracy(fe.net, test.x, test.y)
    assert acc >= 0.98 and abs(acc - info["test_accuracy"]) < 1e-9, (acc, info)
    # a different recipe is a different classifier: trained and cached, not the shipped one
    other, other_info = extractors.domain_classifier(train, test, tmp_path, "digits", recipe={"min_steps": 5, "epochs": 1})
    assert other.parent == tmp_path / "classifiers" and not other_info.get("bundled")


@pytest.mark.slow
def test_domain_classifier_accuracy_on_mnist(shared_data):
    """The shipped path: `full_splits` of an MNIST smoke run (limit_train = 8192) give the FULL 60,000-image
    training split to `domain_classifier` with the default recipe, which returns the MNIST weights shipped with
    genbench (trained on all 60,000 images); they reach >= 98% on the 10,000 held-out test images (accuracy
    recomputed here from the weights file, not read from its json)."""
    from types import SimpleNamespace

    from bench.paths import cache_dir

    cfg = {"dataset": "mnist", "image_size": 32, "channels": 1, "limit_train": 8192, "limit_eval": 1000}
    limited_train = load_split(cfg, "train", str(shared_data))
    limited_test = load_split(cfg, "test", str(shared_data))
    ctx = SimpleNamespace(dataset=cfg, train=limited_train, real=limited_test, data_root=str(shared_data))
    train, test = extractors.full_splits(ctx)
    assert len(train) == 60000 and len(test) == 10000 and len(limited_train) == 8192
    path, info = extractors.domain_classifier(train, test, cache_dir(), "mnist")
    assert info["train_count"] == 60000 and info["recipe"] == extractors.CLASSIFIER_RECIPE, info
    fe = extractors.FeatureExtractorDigitsClassifier(extractors.CLASSIFIER_NAME, ["logits"], str(path))
    acc = extractors.accuracy(fe.net, test.x, test.y)
    assert acc >= 0.98, acc
    assert abs(acc - info["test_accuracy"]) < 1e-9, (acc, info)


def test_domain_classifier_ignores_the_runs_limit_train(tmp_path, monkeypatch):
    """A run on the first 100 digits training images (data.limit_train) still gets the classifier trained on all
    1,437 (and its accuracy measured on all 360 test images): the key and the protocol say so."""
    from tests.metrics_helpers import FAST_RECIPE, Replay, make_ctx

    monkeypatch.setattr(extractors, "CLASSIFIER_RECIPE", {**extractors.CLASSIFIER_RECIPE, **FAST_RECIPE})
    cfg = {"dataset": "digits", "image_size": 16, "channels": 1, "limit_train": 100, "limit_eval": 50}
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert len(train) == 100 and len(test) == 50
    ctx = make_ctx(Replay(test.x), train, test, tmp_path)
    ctx.dataset = cfg
    ext = extractors.get_extractor(ctx)
    assert ext.info["classifier_train_count"] == 1437 and ext.info["classifier_test_count"] == 360, ext.info
    full_train, _ = digits_data(16)
    files = list((tmp_path / "classifiers").glob("*.pt"))
    assert [f.name for f in files] == [f"digits-16px-{extractors.classifier_key('digits', full_train.x, extractors.CLASSIFIER_RECIPE)}.pt"]
