"""`bench prefetch`: stages data and weights into the given folders (no network needed for digits)."""

from __future__ import annotations

import torch

from bench.metrics import extractors
from tests.helpers import run_cli


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
