"""The mutation check (scripts/mutation_check.py) stays alive: every mutation's line still occurs exactly once in its
target file and every test named to catch it still exists, so a line that moves breaks CI here instead of the
script breaking when someone next runs it. `.ci/run` runs the mutations themselves."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("mutation_check", REPO / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_check"] = module
    spec.loader.exec_module(module)
    return module


MUTATIONS = load_script().MUTATIONS


@pytest.mark.parametrize("m", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_each_mutation_targets_one_line_that_exists(m):
    text = (REPO / m.file).read_text()
    assert text.count(m.old) == 1, f"{m.name}: {m.old!r} occurs {text.count(m.old)} times in {m.file}"
    assert m.new != m.old


def test_every_named_test_exists():
    ids = sorted({t for m in MUTATIONS for t in m.tests})
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "", *ids], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    collected = {line.strip() for line in out.stdout.splitlines() if "::" in line}
    for t in ids:
        assert any(c == t or c.startswith(t + "[") for c in collected), f"{t} is not collected"


def test_the_check_covers_the_four_lines_issue_33_named():
    names = {m.name for m in MUTATIONS}
    assert {"fid-trace-term-dropped", "flow-dequantization-at-bin-centres", "coverage-kl-reversed",
            "ddim-sigma-without-the-step-ratio"} <= names
