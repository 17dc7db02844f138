"""A busy neighbour (issue 18): training time on a loaded machine against the idle one, with torch's default thread
count ("before": every CPU the process may use) and with genbench's load-aware choice ("after", bench.threads).

The neighbour is one single-threaded busy loop, as a browser tab or another user's job on a shared node is. Each
configuration trains the digits smoke suite's glow (the model of the issue's report) for the same steps in a fresh
`bench run` process, so OpenMP starts as a user's run does; the figure is the record's training time (evaluation
and start-up excluded). Print the README's table with

    python -m tests.benchmarks.test_bench_threads [STEPS] [REPEATS]

It takes a few minutes; run it on an otherwise idle machine. The plain test run checks the choice itself with a
real busy process (cheap); the timings are this script's, not a test's, because a shared machine's timings are noise.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from bench import threads

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def busy_neighbour():
    """One single-threaded process spinning on a core until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_busy_neighbour_takes_a_cpu_out_of_the_thread_choice():
    allowed = threads.affinity_cpus()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE")}
    with busy_neighbour():
        busy = threads.busy_cpus(window=0.5)
        n, why = threads.choose(env=env, busy=busy)
    assert busy is not None and busy >= 0.7, busy  # the spinning process shows as (about) one busy CPU
    assert n <= max(1, allowed - 1) and (allowed == 1 or "busy with other work" in why), (n, why)


def train_seconds(steps: int, threads_arg: str | None, folder: Path) -> tuple[float, int, float]:
    """(training seconds, torch threads, bits/dim) of the digits glow trained ``steps`` steps in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [sys.executable, "-m", "bench.cli", "run", "--suite", "digits", "--model", "glow", "--budget",
           f"steps={steps}", "--no-report", "--quiet", "--results", str(folder / "r"), "--checkpoints", str(folder / "c"),
           "--set", 'eval.metrics=["bits_per_dim"]']
    if threads_arg:
        cmd += ["--threads", threads_arg]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    (path,) = [p for p in (folder / "r").rglob("*.json")]
    record = json.loads(path.read_text())
    path.unlink()
    return (record["timings"]["train_seconds"], record["hardware"]["torch_threads"],
            record["metrics"]["bits_per_dim"]["value"])


def measure(steps: int = 150, repeats: int = 2) -> dict[str, dict]:
    """Median training seconds of each (machine state, thread policy), repeats alternating."""
    allowed = str(threads.affinity_cpus())
    out: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for label, arg in (("idle, before", allowed), ("idle, after", None)):
                out.setdefault(label, []).append(train_seconds(steps, arg, Path(tmp)))
            with busy_neighbour():
                for label, arg in (("loaded, before", allowed), ("loaded, after", None)):
                    out.setdefault(label, []).append(train_seconds(steps, arg, Path(tmp)))
    return {k: {"seconds": statistics.median(s for s, _, _ in v), "threads": sorted({t for _, t, _ in v}),
                "bits_per_dim": sorted({round(b, 5) for _, _, b in v})} for k, v in out.items()}


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    res = measure(steps, repeats)
    idle = res["idle, before"]["seconds"]
    print(f"digits glow, {steps} steps, median of {repeats}; loaded = one busy single-threaded neighbour")
    print("| machine, threads | torch threads | train s | / idle (before) | bits/dim |")
    print("| --- | --- | --- | --- | --- |")
    for label, r in res.items():
        print(f"| {label} | {', '.join(map(str, r['threads']))} | {r['seconds']:.2f} | {r['seconds'] / idle:.2f}x | "
              f"{', '.join(map(str, r['bits_per_dim']))} |")
