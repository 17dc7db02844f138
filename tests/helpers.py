"""Small tools for tests: write a suite file, run the CLI in-process."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bench import cli


def write_suite(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


TINY_DIGITS = """
    name = "tiny"
    [data]
    dataset = "digits"
    image_size = 8
    channels = 1
    [train]
    batch_size = 32
    seeds = [0]
    [eval]
    metrics = ["bits_per_dim"]
    num_samples = 16
    [models.reference]
    [profiles.smoke]
    budget = { steps = 5 }
"""


def run_record(**fields):
    """A :class:`bench.records.RunRecord` from the fields a test cares about (suite, profile, model and seed filled
    in when not given), read the way records from disk are."""
    from bench.records import RunRecord

    return RunRecord.from_json({"suite": "s", "profile": "smoke", "model": "m", "seed": 0, **fields})
