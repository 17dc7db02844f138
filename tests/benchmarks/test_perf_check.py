"""scripts/perf_check.py's gates beyond the slowdown ratio (that one: tests/test_compare.py): a benchmark
missing from the baseline fails, and so does a harness overhead at or above the limit; bf16 benchmarks are
timed against the bf16 reference and gated only on the baseline's instruction tier. Plain tests (no
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


def bf16_report(path: Path, isa: str, ref_bf16_s: float, bench_bf16_s: float) -> Path:
    def b(name, t, extra=None):
        return {"name": name, "fullname": f"tests/benchmarks/x.py::{name}", "group": "g", "extra_info": extra or {},
                "stats": {"min": t, "median": t, "rounds": 3}}
    benches = [b("test_reference_matmul", 0.01, {"cpu_isa": isa}), b("test_reference_matmul_bf16", ref_bf16_s),
               b("test_step[fp32]", 0.1), b("test_step[bf16]", bench_bf16_s)]
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": benches}))
    return path


def test_bf16_benchmarks_use_the_bf16_reference_and_are_gated_only_on_the_same_instruction_tier(perf, tmp_path, capsys):
    base = tmp_path / "perf.json"
    # baseline: a CPU with bf16 units, bf16 matmul 4x faster than fp32
    assert perf.main(["--from-json", str(bf16_report(tmp_path / "a.json", "amx_bf16", 0.0025, 0.05)),
                      "--update", "--baseline", str(base)]) == 0
    data = json.loads(base.read_text())
    assert data["cpu_isa"] == "amx_bf16"
    assert data["benchmarks"]["tests/benchmarks/x.py::test_step[bf16]"]["ratio"] == pytest.approx(20)  # 0.05 / 0.0025
    assert data["benchmarks"]["tests/benchmarks/x.py::test_step[fp32]"]["ratio"] == pytest.approx(10)  # 0.1 / 0.01
    # a CPU without bf16 units: bf16 matmul 2x, the bf16 step 10x slower -> ratio 5x worse, but not comparable
    capsys.readouterr()
    assert perf.main(["--from-json", str(bf16_report(tmp_path / "b.json", "avx2", 0.005, 0.5)),
                      "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert "not gated" in out and "avx2" in out and "REGRESSED" not in out
    # the same slowdown on the baseline's tier is a regression
    assert perf.main(["--from-json", str(bf16_report(tmp_path / "c.json", "amx_bf16", 0.0025, 0.5)),
                      "--baseline", str(base)]) == 1
    assert "REGRESSED" in capsys.readouterr().out
    # a slower machine of the same tier, bf16 reference and step slowed alike: holds
    assert perf.main(["--from-json", str(bf16_report(tmp_path / "d.json", "amx_bf16", 0.01, 0.2)),
                      "--baseline", str(base)]) == 0
