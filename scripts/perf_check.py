#!/usr/bin/env python
"""Performance-regression check over the pytest-benchmark suite (``tests/benchmarks``).

Runs ``pytest tests/benchmarks --benchmark-only --benchmark-json=...`` and expresses every
benchmark's time as a multiple of the reference operation of its precision (``test_reference_matmul``: a
fixed fp32 matmul; ``test_reference_matmul_bf16`` for benchmarks whose id says bf16) measured in the same
session. Those ratios, not absolute times, are compared with the committed ``results/baseline/perf.json``,
so the check means the same on a fast or a slow machine. bf16 rows are gated only where this CPU has the
baseline machine's bf16 instruction tier (``bench.environment.cpu_isa``): without bf16 units a conv net
in bf16 slows down far more than a matmul does, so the ratio is not comparable and is shown ungated.
It fails (exit 1) when a benchmark's ratio grew by more than ``--max-slowdown`` (default 3x), when a
benchmark that ran is missing from the baseline (refresh it with ``--update``), or when the harness overhead
(issue 2) is ``--max-overhead`` (default 2 %) or more.

    python scripts/perf_check.py --short            # what .ci/run does (about a minute)
    python scripts/perf_check.py --short --update   # re-measure and rewrite the baseline
    python scripts/perf_check.py -- -k harness      # extra pytest arguments after --

The harness overhead is ``extra_info["overhead"]`` of ``test_bench_harness_overhead``: ``Trainer.train`` and a
bare PyTorch step of the same model run in lockstep, median of paired per-step ratios - 1
(tests/benchmarks/test_bench_harness.py says why lockstep and why one model).
For history across commits use pytest-benchmark itself: ``pytest tests/benchmarks --benchmark-only
--benchmark-enable --benchmark-autosave`` then ``--benchmark-compare`` (see docs/ci.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "test_reference_matmul"
REFERENCE_BF16 = "test_reference_matmul_bf16"
DEFAULT_BASELINE = ROOT / "results" / "baseline" / "perf.json"
KIND = "genbench-perf-baseline"


def run_benchmarks(json_out: Path, short: bool, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "benchmarks"), "--benchmark-only", "--benchmark-enable",
           f"--benchmark-json={json_out}", "-q", "-p", "no:cacheprovider"]
    if short:
        cmd += ["--benchmark-min-rounds=3", "--benchmark-max-time=0.2", "--benchmark-warmup=off"]
    cmd += extra
    print("$ " + " ".join(cmd), flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def is_bf16(bench: dict) -> bool:
    return "bf16" in bench["fullname"]


def ratios(report: dict) -> tuple[dict[str, dict], float]:
    """{benchmark fullname: {ratio, min_s, group, extra}} and the fp32 reference's time (seconds).
    bf16 benchmarks are divided by the bf16 reference when it ran (older reports: the fp32 one)."""
    benches = report.get("benchmarks", [])
    refs = {b["name"]: float(b["stats"]["min"]) for b in benches if b["name"] in (REFERENCE, REFERENCE_BF16)}
    if REFERENCE not in refs:
        raise SystemExit(f"error: the reference benchmark {REFERENCE} did not run; it must be part of every perf check "
                         "(tests/benchmarks/test_bench_reference.py)")
    ref_s = refs[REFERENCE]
    out = {}
    for b in benches:
        t = float(b["stats"]["min"])
        ref = refs.get(REFERENCE_BF16, ref_s) if is_bf16(b) else ref_s
        out[b["fullname"]] = {"ratio": t / ref, "min_s": t, "median_s": float(b["stats"]["median"]),
                              "rounds": int(b["stats"]["rounds"]), "group": b.get("group"), "name": b["name"],
                              "bf16": is_bf16(b)}
    return out, ref_s


def cpu_isa(report: dict) -> str | None:
    """The CPU's instruction tier recorded by the fp32 reference benchmark (None in older reports)."""
    for b in report.get("benchmarks", []):
        if b["name"] == REFERENCE:
            return (b.get("extra_info") or {}).get("cpu_isa")
    return None


OVERHEAD_BENCH = "test_bench_harness_overhead"


def overhead(report: dict) -> float | None:
    """The harness overhead (a fraction) measured by OVERHEAD_BENCH in this run, or None if it did not run."""
    for b in report.get("benchmarks", []):
        if b["name"] == OVERHEAD_BENCH:
            return float(b["extra_info"]["overhead"])
    return None


def machine(report: dict) -> str:
    info = report.get("machine_info", {})
    cpu = info.get("cpu", {})
    return f"{cpu.get('brand_raw') or info.get('processor') or '?'} x{cpu.get('count', '?')}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", action="store_true", help="few rounds per benchmark (CI mode)")
    p.add_argument("--update", action="store_true", help="write the measured ratios as the new baseline")
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="ratio baseline (default: results/baseline/perf.json)")
    p.add_argument("--max-slowdown", type=float, default=3.0, help="fail when a ratio grows by more than this factor (default 3)")
    p.add_argument("--max-overhead", type=float, default=2.0,
                   help="fail when the harness overhead over a bare loop is this many percent or more (default 2)")
    p.add_argument("--json", type=Path, default=None, help="keep pytest-benchmark's JSON here (default: a temp file)")
    p.add_argument("--from-json", type=Path, default=None, help="skip running; read an existing pytest-benchmark JSON")
    p.add_argument("--markdown", type=Path, default=None, help="also write the comparison as Markdown")
    args = p.parse_args(argv)

    if args.from_json:
        report_path = args.from_json
    else:
        report_path = args.json or Path(tempfile.mkdtemp(prefix="genbench-perf-")) / "benchmarks.json"
        rc = run_benchmarks(report_path, args.short, extra)
        if rc != 0:
            print(f"error: the benchmark run failed (pytest exit code {rc})", file=sys.stderr)
            return 2
    report = json.loads(Path(report_path).read_text())
    current, ref_s = ratios(report)
    oh = overhead(report)
    isa = cpu_isa(report)
    print(f"reference {REFERENCE}: {ref_s * 1e3:.2f} ms on {machine(report)} (instruction tier {isa or 'unknown'})")
    if oh is not None:
        print(f"harness overhead (Trainer.train vs a bare loop, same model and batches, lockstep, median of paired "
              f"per-step CPU-time ratios): {100 * oh:+.2f}% (limit {args.max_overhead:g}%)")

    if args.update:
        data = {"kind": KIND, "reference": REFERENCE, "reference_seconds": ref_s, "machine": machine(report),
                "cpu_isa": isa, "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "short": args.short, "note": "produced by scripts/perf_check.py --update; times are ratios to the reference",
                "benchmarks": {k: {"ratio": v["ratio"], "group": v["group"]} for k, v in sorted(current.items())}}
        args.baseline.parent.mkdir(parents=True, exist_ok=True)
        args.baseline.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {len(current)} benchmark ratios to {args.baseline}")
        return 0

    if not args.baseline.is_file():
        print(f"error: no perf baseline at {args.baseline}; create it with `python scripts/perf_check.py --short --update`",
              file=sys.stderr)
        return 2
    base = json.loads(args.baseline.read_text())
    if base.get("kind") != KIND:
        print(f"error: {args.baseline} is not a perf baseline (kind {KIND!r})", file=sys.stderr)
        return 2
    rows, bad, missing, ungated = [], 0, 0, 0
    base_isa = base.get("cpu_isa")
    for name, cur in sorted(current.items()):
        old = base["benchmarks"].get(name)
        if cur["name"] in (REFERENCE, REFERENCE_BF16):
            continue
        if old is None:
            rows.append((name, "", f"{cur['ratio']:.3g}", "", "MISSING from the baseline"))
            missing += 1
            continue
        slow = cur["ratio"] / old["ratio"]
        status = "REGRESSED" if slow > args.max_slowdown else ("faster" if slow < 1 / args.max_slowdown else "ok")
        if cur["bf16"] and (isa is None or isa != base_isa):
            status = f"not gated (bf16 on {isa or 'an unknown'} tier; baseline {base_isa or 'unknown'})"
            ungated += 1
        bad += status == "REGRESSED"
        rows.append((name, f"{old['ratio']:.3g}", f"{cur['ratio']:.3g}", f"{slow:.2f}x", status))
    for name in sorted(set(base["benchmarks"]) - set(current)):
        rows.append((name, f"{base['benchmarks'][name]['ratio']:.3g}", "", "", "not run"))
    width = max((len(r[0]) for r in rows), default=10)
    print(f"{'benchmark':<{width}}  {'base ratio':>10}  {'ratio':>10}  {'change':>8}  status")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:>10}  {r[2]:>10}  {r[3]:>8}  {r[4]}")
    too_slow_harness = oh is not None and 100 * oh >= args.max_overhead
    failed = bad or missing or too_slow_harness
    verdict = "FAIL" if failed else "PASS"
    print(f"perf check {verdict}: {bad} benchmark(s) slower than {args.max_slowdown:g}x their baseline ratio "
          f"(ratios to {REFERENCE} or {REFERENCE_BF16} measured in the same run)")
    if ungated:
        print(f"note: {ungated} bf16 benchmark(s) shown, not gated: this CPU's instruction tier ({isa or 'unknown'}) "
              f"differs from the baseline machine's ({base_isa or 'unknown'}), and bf16 speed depends on its bf16 units")
    if missing:
        print(f"error: {missing} benchmark(s) not in {args.baseline}; measure them into it with "
              f"`python scripts/perf_check.py --short --update` on an idle machine and commit the file", file=sys.stderr)
    if too_slow_harness:
        print(f"error: the harness loop adds {100 * oh:.2f}% over a bare PyTorch loop (limit {args.max_overhead:g}%); "
              "see tests/benchmarks/test_bench_harness.py", file=sys.stderr)
    if args.markdown:
        lines = [f"### perf check: {verdict}", "", f"times as multiples of `{REFERENCE}` ({ref_s * 1e3:.2f} ms here; bf16 rows: `{REFERENCE_BF16}`); "
                 f"fails above {args.max_slowdown:g}x, on a benchmark missing from the baseline" +
                 (f"; harness overhead {100 * oh:+.2f}% (fails at {args.max_overhead:g}%)" if oh is not None else ""), "",
                 "| benchmark | baseline ratio | ratio | change | status |", "|---|--:|--:|--:|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        args.markdown.write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
