"""The real-data row: real training images through the models' sample metrics, as one record per seed."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from bench import records, real_data
from bench.data import ImageData
from bench.metrics import compute, extractors
from tests.helpers import TINY_DIGITS, run_cli, write_suite
from tests.metrics_helpers import FAST_RECIPE, digits_data, make_ctx


def _numbered_pool(n: int) -> ImageData:
    """Images whose pixel value is their index, so a draw's indices can be read back."""
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageData(x, None, 0, "numbered")


def _indices(samples) -> list[int]:
    return [round(float(v) * 255) for v in samples.images[:, 0, 0, 0]]


def test_one_draw_is_without_replacement_across_batches(tmp_path):
    pool = _numbered_pool(50)
    model = real_data.RealImages(pool)
    ctx = make_ctx(model, pool, pool, tmp_path, num_samples=40, sample_batch_size=16)
    first = _indices(ctx.draw(40))
    assert len(set(first)) == 40 and set(first) <= set(range(50))
    again = _indices(ctx.draw(40))
    assert again == first  # the same generator offset: the same images (seeded)
    other = _indices(ctx.draw(40, offset=1000 + 1))  # the next FID repeat draws another subset
    assert other != first and len(set(other)) == 40
    big = ctx.draw(70)
    assert big.info["with_replacement"] and len(set(_indices(big))) == 50  # the whole pool, then wraps


def test_real_data_fid_is_the_frechet_distance_of_real_training_features(tmp_path, monkeypatch):
    monkeypatch.setattr(extractors, "CLASSIFIER_RECIPE", {**extractors.CLASSIFIER_RECIPE, **FAST_RECIPE})
    train, test = digits_data(16)
    n = 200

    def context(model):
        return make_ctx(model, train, test, tmp_path, metrics=["fid", "class_coverage"], num_samples=n,
                        sample_batch_size=64)

    out = real_data.evaluate(context, train, compute)
    assert set(out) >= {"fid", "coverage_kl"}
    assert "real training images" in out["fid"]["protocol"]["samples"]
    # independently: the same n training images (the draw's seeded permutation), features, scipy's sqrtm
    ctx = context(real_data.RealImages(train))
    chosen = torch.randperm(len(train), generator=ctx.generator(0))[:n]
    ext = extractors.get_extractor(ctx)
    cpu = torch.device("cpu")
    f_gen = ext.features(train.x[chosen], cpu)[ext.feature_layer].double().numpy()
    f_real = ext.features(test.x, cpu)[ext.feature_layer].double().numpy()
    mu1, mu2 = f_gen.mean(0), f_real.mean(0)
    s1, s2 = np.cov(f_gen, rowvar=False), np.cov(f_real, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    fd = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert abs(out["fid"]["value"] - fd) <= 1e-3 * max(1.0, fd)
    assert out["coverage_kl"]["value"] < 0.05  # real digits cover the ten classes evenly


def test_bench_run_writes_the_real_data_row_first_and_records_threads(tmp_path, capsys):
    body = TINY_DIGITS.replace('metrics = ["bits_per_dim"]', 'metrics = ["bits_per_dim", "class_coverage"]')
    suite = write_suite(tmp_path / "s.toml", body)
    base = ["run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--checkpoints", str(tmp_path / "c"),
            "--quiet", "--no-report", "--cache-dir", str(tmp_path / "cache")]
    code, _, err = run_cli(base + ["--threads", "1"], capsys)
    assert code == 0, err
    recs = records.load_records(tmp_path / "r", "tiny", "smoke")
    real = [r for r in recs if r.model == "real-data"]
    assert len(real) == 1 and real[0].family == "real-data" and real[0].status == "ok"
    assert "coverage_kl" in real[0].metrics and "bits_per_dim" not in real[0].metrics
    assert real[0].started <= min(r.started for r in recs if r.model != "real-data")
    for r in recs:
        assert r.hardware["torch_threads"] == 1 and r.hardware["threads_chosen_by"].startswith("requested")
    # --model X runs X only; --model real-data runs the real-data row only
    code, _, err = run_cli(base + ["--model", "real-data"], capsys)
    assert code == 0, err
    assert [r.model for r in records.load_records(tmp_path / "r", "tiny", "smoke")].count("real-data") == 2
    code, _, err = run_cli(base + ["--threads", "0"], capsys)
    assert code == 2 and "--threads must be a positive integer" in err
