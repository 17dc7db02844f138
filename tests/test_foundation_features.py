"""FD-DINOv2 and FD-CLIP from staged weights files (bench/metrics/foundation.py).

The DINOv2 features are checked against Meta's own model code (a test-only copy in tests/peers/dinov2_peer, built
as torch.hub builds it) run through torch-fidelity's own DINOv2 extractor: what a user with internet would get.
Weights are random, of the right shapes, built here; nothing is downloaded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from bench.errors import BenchError
from bench.metrics import extractors, fidelity, foundation
from tests.helpers import TINY_DIGITS, run_cli, write_suite
from tests.metrics_helpers import Replay, digits_data, make_ctx

PEER = Path(__file__).parent / "peers" / "dinov2_peer"


def official_vits14(seed: int = 0) -> torch.nn.Module:
    """Meta's ViT-S/14 with the arguments of torch.hub's ``dinov2_vits14`` (518 px, LayerScale, offset 0.1, no
    antialiasing), every parameter moved off its initial value so a mis-mapped tensor shows in the features."""
    sys.path.insert(0, str(PEER))
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "xFormers is not available"
            from dinov2.models import vision_transformer as vits
    finally:
        sys.path.remove(str(PEER))
    torch.manual_seed(seed)
    model = vits.vit_small(patch_size=14, img_size=518, init_values=1.0, ffn_layer="mlp", block_chunks=0,
                           num_register_tokens=0, interpolate_antialias=False, interpolate_offset=0.1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def dinov2_weights(tmp_path_factory):
    """(official model, weights folder holding dinov2_vits14_pretrain.pth): the file torch.hub would download."""
    model = official_vits14()
    folder = tmp_path_factory.mktemp("weights")
    torch.save(model.state_dict(), folder / foundation.weights_file("dinov2-vit-s-14")[0])
    return model, folder


@pytest.fixture
def isolated(monkeypatch):
    """No staged weights anywhere but where a test puts them, and no download."""
    monkeypatch.delenv(foundation.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub-dir")

    def refuse(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load", refuse)


def test_dinov2_features_equal_torch_fidelity_around_the_official_model(dinov2_weights, isolated, monkeypatch):
    """The same checkpoint file through genbench (timm backbone, position embedding resampled once) and through
    torch-fidelity's DINOv2 extractor with Meta's model as torch.hub returns it: the same features."""
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

    official, folder = dinov2_weights
    ours = extractors.build_foundation("dinov2-vit-s-14", folder / "dinov2_vits14_pretrain.pth")
    monkeypatch.setattr(torch.hub, "load", lambda repo, name: official if name == "dinov2_vits14" else None)
    theirs = FeatureExtractorDinoV2("dinov2-vit-s-14", ["dinov2"])
    train, _ = digits_data(16)
    x = train.x[:6]
    got = ours.features(x, torch.device("cpu"))["dinov2"]
    with torch.no_grad():
        want = theirs(extractors.rgb(x))[0]
    assert got.shape == (6, 384) and ours.feature_layer == "dinov2" and ours.logits_layer is None
    assert float(want.std(0).mean()) > 0.05  # the images give different features, so equality means something
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), float((got - want).abs().max())


def test_dinov2_position_embedding_is_the_hub_formula_not_a_plain_resize(dinov2_weights):
    """torch.hub's model resamples 37x37 -> 16x16 by the scale factor (16 + 0.1)/37, which differs from resizing to
    16x16: the resampled table must be the former (a size-based resize would shift every feature)."""
    import torch.nn.functional as F

    official, _ = dinov2_weights
    pe = official.pos_embed.detach()
    ours = foundation.hub_position_embedding(pe, 16)
    with torch.no_grad():  # the official method itself, on a 224 px input's token count
        want = official.interpolate_pos_encoding(torch.zeros(1, 1 + 16 * 16, pe.shape[-1]), 224, 224)
    assert torch.equal(ours, want)
    grid = pe[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    plain = F.interpolate(grid, size=(16, 16), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 256, -1)
    assert (ours[:, 1:] - plain).abs().max() > 1e-3


def test_fd_dinov2_tells_clean_from_corrupted(dinov2_weights, isolated, monkeypatch, tmp_path):
    """FD as a suite computes it with eval.feature_extractor = "dinov2-vit-s-14" (weights found through
    $GENBENCH_WEIGHTS_DIR): held-out digits against others are much closer than noised digits; IS is not defined."""
    _, folder = dinov2_weights
    monkeypatch.setenv(foundation.WEIGHTS_DIR_ENV, str(folder))
    train, test = digits_data(16)
    cfg = {"feature_extractor": "dinov2-vit-s-14", "num_real": 16}
    same = make_ctx(Replay(test.x[16:40]), train, test, tmp_path, num_samples=24, **cfg)
    noised = make_ctx(Replay(test.x[:16], noise=0.3), train, test, tmp_path, num_samples=16, **cfg)
    fd_same, fd_noised = fidelity.fid(same)["fid"], fidelity.fid(noised)["fid"]
    assert 0 < fd_same["value"] < fd_noised["value"] / 2, (fd_same["value"], fd_noised["value"])
    p = fd_same["protocol"]
    assert p["extractor"] == "dinov2-vit-s-14" and p["feature_layer"] == "dinov2" and "224" in p["resize"]
    assert "DINOv2" in p["network"] and p["extractor_weights_sha256"] == extractors.file_sha256(
        folder / "dinov2_vits14_pretrain.pth")[:16]
    isc = fidelity.inception_score_metric(same)["is"]
    assert isc["value"] is None and isc["note"].startswith("not defined") and "dinov2-vit-s-14" in isc["note"]


def test_wrong_dinov2_file_is_a_one_line_error(dinov2_weights, isolated, tmp_path):
    _, folder = dinov2_weights
    state = torch.load(folder / "dinov2_vits14_pretrain.pth")
    bad = tmp_path / "dinov2_vitb14_pretrain.pth"  # ViT-S tensors under the ViT-B name
    torch.save(state, bad)
    with pytest.raises(BenchError) as e:
        extractors.build_foundation("dinov2-vit-b-14", bad)
    assert "\n" not in str(e.value) and "dinov2-vit-b-14" in str(e.value) and "fbaipublicfiles" in str(e.value)


def test_missing_weights_and_unknown_extractor_stop_bench_run_before_training(isolated, workdirs, capsys, tmp_path):
    body = TINY_DIGITS.replace('metrics = ["bits_per_dim"]', 'metrics = ["fid"]\n    feature_extractor = "dinov2-vit-l-14"')
    suite = write_suite(tmp_path / "tiny.toml", body)
    common = ["run", "--suite", str(suite), "--results", str(workdirs["results"]), "--checkpoints",
              str(workdirs["checkpoints"]), "--cache-dir", str(workdirs["cache"]), "--quiet", "--no-report"]
    code, out, err = run_cli(common, capsys)
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err + out, err
    assert "dinov2_vitl14_pretrain.pth" in err and "https://dl.fbaipublicfiles.com/dinov2/" in err, err
    assert str(workdirs["cache"] / "weights") in err and foundation.WEIGHTS_DIR_ENV in err and "prefetch" in err, err
    assert not any(workdirs["results"].rglob("*.json")) and not any(workdirs["checkpoints"].iterdir())
    suite.write_text(suite.read_text().replace("dinov2-vit-l-14", "dinov2-vit-l14"))
    code, out, err = run_cli(common, capsys)
    assert code != 0 and err.count("\n") == 1 and "did you mean 'dinov2-vit-l-14'" in err, err
    assert not any(workdirs["results"].rglob("*.json"))


def test_bench_run_records_and_reports_the_dinov2_space(dinov2_weights, isolated, monkeypatch, workdirs, capsys,
                                                         tmp_path):
    """End to end: the record's FID/KID name the DINOv2 space and the report's column headers carry it."""
    _, folder = dinov2_weights
    monkeypatch.setenv(foundation.WEIGHTS_DIR_ENV, str(folder))
    body = TINY_DIGITS.replace('metrics = ["bits_per_dim"]',
                               'metrics = ["fid", "kid", "is"]\n    feature_extractor = "dinov2-vit-s-14"')
    suite = write_suite(tmp_path / "tiny.toml", body)
    code, out, err = run_cli(["run", "--suite", str(suite), "--results", str(workdirs["results"]), "--checkpoints",
                              str(workdirs["checkpoints"]), "--cache-dir", str(workdirs["cache"]), "--reports",
                              str(workdirs["reports"]), "--quiet"], capsys)
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in workdirs["results"].rglob("*.json")]
    model = next(r for r in records if r["model"] == "reference")
    assert model["metrics"]["fid"]["protocol"]["extractor"] == "dinov2-vit-s-14"
    assert model["metrics"]["kid"]["protocol"]["extractor"] == "dinov2-vit-s-14"
    assert model["metrics"]["is"]["note"].startswith("not defined")
    md = next(workdirs["reports"].rglob("README.md")).read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model | family"))
    assert "FD (dinov2-vit-s-14)" in header and "KID (dinov2-vit-s-14)" in header, header


# ---- CLIP -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    """A TorchScript archive laid out as OpenAI's ViT-L-14.pt (visual tower + text projection) at toy size:
    width 64, 2 layers, patch 14, 28 px, 32-d embedding."""
    from torch_fidelity.feature_extractor_clip import CLIPVisual

    class Archive(CLIPVisual):
        def __init__(self):
            super().__init__(embed_dim=32, image_resolution=28, vision_layers=2, vision_width=64, vision_patch_size=14)
            self.text_projection = torch.nn.Parameter(torch.randn(64, 32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    torch.manual_seed(1)
    archive = Archive()
    with torch.no_grad():
        for p in archive.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("clip")
    torch.jit.save(torch.jit.script(archive), str(folder / "ViT-L-14.pt"))
    return folder


def test_clip_space_from_a_staged_archive(clip_weights, isolated, monkeypatch, tmp_path):
    """``clip-vit-l-14`` found in <cache>/weights, loaded by torch-fidelity from the path; its sha256 is checked
    against OpenAI's published one (a test archive does not match, and the protocol says so)."""
    staged = tmp_path / "weights"
    staged.mkdir()
    (staged / "ViT-L-14.pt").write_bytes((clip_weights / "ViT-L-14.pt").read_bytes())
    train, test = digits_data(16)
    cfg = {"feature_extractor": "clip-vit-l-14", "num_real": 16}
    same = make_ctx(Replay(test.x[16:40]), train, test, tmp_path, num_samples=24, **cfg)
    noised = make_ctx(Replay(test.x[:16], noise=0.3), train, test, tmp_path, num_samples=16, **cfg)
    fd_same, fd_noised = fidelity.fid(same)["fid"], fidelity.fid(noised)["fid"]
    assert 0 < fd_same["value"] < fd_noised["value"], (fd_same["value"], fd_noised["value"])
    p = fd_same["protocol"]
    assert p["extractor"] == "clip-vit-l-14" and p["feature_layer"] == "clip" and "28x28" in p["resize"]
    assert p["weights_match_published_sha256"] is False and "CLIP" in p["network"]


def test_prefetch_downloads_the_suites_feature_space_weights(isolated, monkeypatch, tmp_path):
    """`bench prefetch` on a suite whose feature space is CLIP stages OpenAI's file, checked against its published
    sha256 (passed to torch.hub's downloader), under <cache>/weights where `bench run` finds it."""
    from bench import prefetch

    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        Path(dst).write_bytes(b"archive")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    body = TINY_DIGITS.replace('metrics = ["bits_per_dim"]', 'metrics = ["kid"]\n    feature_extractor = "clip-vit-b-32"')
    suite = write_suite(tmp_path / "tiny.toml", body)
    prefetch.prefetch(str(suite), "all", None, tmp_path / "cache", None, False, log=lambda *_: None)
    file, url, digest = foundation.weights_file("clip-vit-b-32")
    assert calls == [(url, digest)] and file == "ViT-B-32.pt"
    assert foundation.find_weights("clip-vit-b-32", tmp_path / "cache") == tmp_path / "cache" / "weights" / file
    prefetch.prefetch(str(suite), "all", None, tmp_path / "cache", None, False, log=lambda *_: None)
    assert len(calls) == 1  # staged once
