"""scripts/perf_check.py's gates beyond the slowdown ratio (that one: tests/test_compare.py): a benchmark
missing from the baseline fails, and so does a harness overhead at or above the limit. Plain tests (no
benchmark fixture), so ``--benchmark-only`` skips them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "perf_check.py"


@pytest.fixture(scope="module")
def perf():
    spec = importlib.util.spec_from_file_location("perf_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def report(path: Path, names: list[str], overhead: float | None = None) -> Path:
    def b(name, t, extra=None):
        return {"name": name, "fullname": f"tests/benchmarks/x.py::{name}", "group": "g", "extra_info": extra or {},
                "stats": {"min": t, "median": t, "rounds": 3}}
    benches = [b("test_reference_matmul", 0.01)] + [b(n, 0.1) for n in names]
    if overhead is not None:
        benches.append(b("test_bench_harness_overhead", 5.0, {"overhead": overhead}))
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": benches}))
    return path


def test_a_benchmark_missing_from_the_baseline_fails(perf, tmp_path, capsys):
    base = tmp_path / "perf.json"
    assert perf.main(["--from-json", str(report(tmp_path / "a.json", ["test_a"], 0.0)), "--update", "--baseline", str(base)]) == 0
    assert perf.main(["--from-json", str(report(tmp_path / "b.json", ["test_a"], 0.0)), "--baseline", str(base)]) == 0
    capsys.readouterr()
    assert perf.main(["--from-json", str(report(tmp_path / "c.json", ["test_a", "test_new"], 0.0)),
                      "--baseline", str(base)]) == 1
    out = capsys.readouterr()
    assert "test_new" in out.out and "MISSING" in out.out and "--short --update" in out.err


def test_the_harness_overhead_gate(perf, tmp_path, capsys):
    base = tmp_path / "perf.json"
    assert perf.main(["--from-json", str(report(tmp_path / "a.json", ["test_a"], 0.0)), "--update", "--baseline", str(base)]) == 0
    assert perf.main(["--from-json", str(report(tmp_path / "b.json", ["test_a"], 0.0199)), "--baseline", str(base)]) == 0
    capsys.readouterr()
    assert perf.main(["--from-json", str(report(tmp_path / "c.json", ["test_a"], 0.02)), "--baseline", str(base)]) == 1
    assert "2.00% over a bare PyTorch loop" in capsys.readouterr().err
    assert perf.main(["--from-json", str(report(tmp_path / "d.json", ["test_a"], 0.02)), "--baseline", str(base),
                      "--max-overhead", "3"]) == 0
    assert perf.overhead(json.loads(report(tmp_path / "e.json", ["test_a"]).read_text())) is None
