"""`bench prefetch`: stages data and weights into the given folders (no network needed for digits)."""

from __future__ import annotations

import torch

from bench.metrics import extractors
from tests.helpers import TINY_DIGITS, run_cli, write_suite


def test_prefetch_digits_with_classifier(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(extractors, "CLASSIFIER_RECIPE", {**extractors.CLASSIFIER_RECIPE, "min_steps": 5, "epochs": 1})
    cache = tmp_path / "cache"
    code, out, err = run_cli(["prefetch", "--suite", "digits", "--cache-dir", str(cache), "--data-root",
                              str(tmp_path / "data"), "--classifier"], capsys)
    assert code == 0, err
    assert "digits/train" in out and "classifier:" in out
    assert list((cache / "classifiers").glob("digits-16px-*.pt"))


def test_prefetch_rejects_wrong_inception_file(tmp_path, capsys):
    bogus = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, bogus)
    code, _, err = run_cli(["prefetch", "--suite", "digits", "--cache-dir", str(tmp_path / "c"),
                            "--inception-weights", str(bogus)], capsys)
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["prefetch", "--suite", "digits", "--cache-dir", str(tmp_path / "c"),
                            "--inception-weights", str(tmp_path / "missing.pth")], capsys)
    assert code == 2 and "missing.pth" in err


def test_prefetch_stages_the_union_of_all_profiles(tmp_path, capsys, monkeypatch):
    """Only the `paper` profile computes FID through Inception: the default (`--profile all`) stages the weights,
    `--profile smoke` does not; data of every profile is staged either way (limits do not cut the download)."""
    from bench import prefetch

    staged = []
    monkeypatch.setattr(prefetch, "download_inception", lambda cache, source=None, log=print: staged.append(cache)
                        or cache / "weights" / extractors.INCEPTION_FILE)
    body = TINY_DIGITS + """
    [profiles.smoke.data]
    limit_train = 100
    [profiles.paper]
    budget = { steps = 5 }
    eval = { metrics = ["fid"], feature_extractor = "inception" }
    """
    suite = write_suite(tmp_path / "two.toml", body)
    common = ["prefetch", "--suite", str(suite), "--cache-dir", str(tmp_path / "c"), "--data-root", str(tmp_path / "d")]
    code, out, err = run_cli([*common, "--profile", "smoke"], capsys)
    assert code == 0, err
    assert staged == [] and "digits/train@8: 1437 images" in out and "profiles: smoke" in out
    code, out, err = run_cli(common, capsys)
    assert code == 0, err
    assert staged == [tmp_path / "c"] and "profiles: paper, smoke" in out and "weights:" in out
