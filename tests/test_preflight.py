"""Mistakes in a suite or on the command line stop `bench run` before anything trains: a one-line error, exit 2,
no record and no checkpoint written (bench.runner.preflight and the suite loader)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import EXIT_USER_ERROR
from tests.helpers import TINY_DIGITS, run_cli, write_suite

DDPM = """
    [models.ddpm]
    unet = "tiny"
    attn_resolutions = []
    timesteps = 20
"""


def run_tiny(tmp_path, workdirs, capsys, body: str, *extra: str, results=None, checkpoints=None):
    suite = write_suite(tmp_path / "tiny.toml", body)
    args = ["run", "--suite", str(suite), "--results", str(results or workdirs["results"]), "--checkpoints",
            str(checkpoints or workdirs["checkpoints"]), "--cache-dir", str(workdirs["cache"]), "--quiet",
            "--no-report", *extra]
    return run_cli(args, capsys)


def assert_stopped_before_training(code, out, err, workdirs, *needles):
    assert code == EXIT_USER_ERROR, (code, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err + out, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not any(workdirs["results"].rglob("*.json")) and not any(workdirs["checkpoints"].rglob("*"))


def test_unknown_metric(tmp_path, workdirs, capsys):
    body = TINY_DIGITS.replace('metrics = ["bits_per_dim"]', 'metrics = ["bits_per_dim", "fidd"]')
    assert_stopped_before_training(*run_tiny(tmp_path, workdirs, capsys, body), workdirs,
                                   "'fidd'", "did you mean 'fid'")


@pytest.mark.parametrize("sampler, needles", [
    ('sampler = { name = "ddimm" }', ("models.ddpm.sampler", "'ddimm'")),
    ('sampler = { name = "ddim", etaa = 0.0 }', ("models.ddpm.sampler", "etaa")),
    ('sampler = { name = "ddim", spacing = "trailng" }', ("trailng", "trailing")),
    ('samplers = { ddim-5 = { name = "ddim", steps = 500 } }', ("models.ddpm.samplers.ddim-5", "steps", "got 500")),
])
def test_bad_sampler_or_sweep_option(tmp_path, workdirs, capsys, sampler, needles):
    body = TINY_DIGITS + DDPM + f"    {sampler}\n"
    assert_stopped_before_training(*run_tiny(tmp_path, workdirs, capsys, body), workdirs, *needles)


def test_reference_refuses_sampler_options(tmp_path, workdirs, capsys):
    body = TINY_DIGITS.replace("[models.reference]", '[models.reference]\n    sampler = { temperature = 0.5 }')
    assert_stopped_before_training(*run_tiny(tmp_path, workdirs, capsys, body), workdirs,
                                   "models.reference.sampler", "temperature")


@pytest.mark.parametrize("flag", ["--results", "--checkpoints", "--cache-dir"])
def test_output_location_that_is_a_file(tmp_path, workdirs, capsys, flag):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    suite = write_suite(tmp_path / "tiny.toml", TINY_DIGITS)
    dirs = {"--results": workdirs["results"], "--checkpoints": workdirs["checkpoints"], "--cache-dir": workdirs["cache"]}
    dirs[flag] = a_file
    args = ["run", "--suite", str(suite), "--quiet", "--no-report"]
    for k, v in dirs.items():
        args += [k, str(v)]
    assert_stopped_before_training(*run_cli(args, capsys), workdirs, flag, str(a_file), "writable folder")


@pytest.mark.parametrize("setting, needles", [
    ("models.reference.lr=-1", ("models.reference.lr", "a finite number > 0")),
    ("models.glow.hidden_channels=0", ("models.glow.hidden_channels", "a whole number >= 1")),
    ("models.ddpm.beta_schedule=\"cosin\"", ("models.ddpm.beta_schedule", "one of 'linear', 'cosine'")),
    ("train.checkpoint_every_s=nan", ("train.checkpoint_every_s", ">= 0")),
])
def test_out_of_range_values(tmp_path, workdirs, capsys, setting, needles):
    """A value given with --set is blamed on the flag, not on the suite file that never held it."""
    assert_stopped_before_training(*run_tiny(tmp_path, workdirs, capsys, TINY_DIGITS, "--set", setting), workdirs,
                                   f"error: --set {setting}: ", *needles)


def test_a_bad_value_in_the_suite_file_is_still_blamed_on_the_file(tmp_path, workdirs, capsys):
    body = TINY_DIGITS.replace("[models.reference]", "[models.reference]\n    lr = -1")
    code, out, err = run_tiny(tmp_path, workdirs, capsys, body, "--set", "train.log_every=5")
    assert_stopped_before_training(code, out, err, workdirs, "tiny.toml", "models.reference.lr")
    assert "--set" not in err


@pytest.mark.parametrize("where", ["read-only", "under a file"])
def test_reports_that_cannot_be_written_stop_before_training(tmp_path, workdirs, capsys, where):
    """--reports is checked like --results before anything trains (it used to fail after training). A chmod'ed
    folder does not stop root, which CI runs as, so the read-only case is a read-only filesystem (sysfs)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    target = Path("/sys/genbench-reports") if where == "read-only" else a_file / "reports"
    suite = write_suite(tmp_path / "tiny.toml", TINY_DIGITS)
    args = ["run", "--suite", str(suite), "--results", str(workdirs["results"]), "--checkpoints",
            str(workdirs["checkpoints"]), "--cache-dir", str(workdirs["cache"]), "--quiet", "--reports", str(target)]
    assert_stopped_before_training(*run_cli(args, capsys), workdirs, f"--reports {target}", "writable folder")
