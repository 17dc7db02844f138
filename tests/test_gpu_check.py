"""scripts/gpu_check.py, the prepared GPU run (issue 18), exercised on this CPU with --dry: every family builds,
trains and samples through it, the MFU it reports is the FLOP count over the time over the measured peak, and the
DDPM it trains learns (no GPU is needed, none is assumed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dry_run_covers_every_family_and_reports_consistent_figures(tmp_path, capsys):
    gpu_check = load_script()
    assert gpu_check.main(["--dry", "--out", str(tmp_path), "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = result["rows"]
    expected = {label for label, _, _ in gpu_check.SEED_CASES} | {f"{n} (defaults)" for n in gpu_check.DEFAULT_CASES}
    assert {r["model"] for r in rows} == expected
    for r in rows:
        assert "error" not in r, r
        assert r["train_images_per_s"] > 0 and r["sample_seconds_per_batch"] > 0
        if r["train_flops_per_step"]:  # MFU = FLOPs per step x steps per second / the measured matmul peak
            steps_per_s = r["train_images_per_s"] / r["batch"]
            expected_mfu = r["train_flops_per_step"] * steps_per_s / result["peaks"][r["precision"]]
            assert abs(r["train_mfu"] - expected_mfu) <= 1e-9 * expected_mfu
    training = result["training"]
    assert training["steps"] > 10 and training["loss_last"] < 0.5 * training["loss_first"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| ddpm (seed 000) | fp32 | no |" in md and "loss every 5 %" in md
