"""Mutation check of genbench's numerical code: does a fast test catch each plausible one-line mistake?

Each mutation below is a mistake that once passed every test (issue 21) or a close sibling of one. For each,
the repository's tracked files are copied to a temporary folder, the one line is changed there, and the tests
named for it run against the copy (``python -m pytest`` from the copy, so the copy's ``bench`` and
``baselines`` are imported, not the installed ones). A mutation is *caught* when those tests fail.

    python scripts/mutation_check.py            # every mutation; exit 1 if any is missed
    python scripts/mutation_check.py mfu-3x     # just the named ones
    python scripts/mutation_check.py --tests-passed   # skip the run on unmutated code (CI: the test stage just ran it)

It is a check of the tests, not part of them: run it before claiming a numerical fix is covered.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids that must fail


MUTATIONS = (
    Mutation("ddpm-nats-per-dim", "baselines/diffusion.py",
             'bits_per_dim(out["total"].double(), d).float()', '(out["total"].double() / d).float()',
             ("tests/test_diffusion.py::test_vlb_of_uniform_pixels_is_never_below_their_entropy",
              "tests/test_diffusion.py::test_bits_per_dim_of_the_exact_eps_of_gaussian_pixels_is_their_bin_mass")),
    Mutation("mfu-3x", "bench/metrics/cost.py",
             "seconds = (time.perf_counter() - t0) / k", "seconds = (time.perf_counter() - t0)",
             ("tests/test_scripted_clock.py::test_mfu_is_flops_over_seconds_per_step_over_peak",)),
    Mutation("hutchinson-stderr-without-sqrt-k", "baselines/nn/ode.py",
             "/ math.sqrt(k) if k >= 2 else None", "if k >= 2 else None",
             ("tests/test_ode.py::test_hutchinson_standard_error_is_calibrated_both_ways",)),
    Mutation("resflow-stderr-without-sqrt-draws", "baselines/flows.py",
             "stderr=d.std(0) / math.sqrt(d.shape[0])", "stderr=d.std(0)",
             ("tests/test_flows.py::test_resflow_standard_errors_are_calibrated_both_ways",)),
    Mutation("resflow-batch-stderr-without-sqrt-draws", "baselines/flows.py",
             "batch_stderr=float(d.mean(1).std() / math.sqrt(d.shape[0]))", "batch_stderr=float(d.mean(1).std())",
             ("tests/test_flows.py::test_resflow_standard_errors_are_calibrated_both_ways",)),
    Mutation("precision-recall-swapped", "bench/metrics/fidelity.py",
             "prc_features_to_metric(gen, real,", "prc_features_to_metric(real, gen,",
             ("tests/test_metrics_independent.py::test_precision_and_recall_match_a_direct_knn_computation_on_different_sets",
              "tests/test_metrics_independent.py::test_a_generated_strict_subset_of_the_real_set_has_precision_1_and_recall_below_1")),
    Mutation("throughput-counts-warm-up", "bench/runner.py",
             "if steps_this_process > warmup:", "if steps_this_process > 0:",
             ("tests/test_scripted_clock.py::test_throughput_counts_steady_steps_only",)),
    Mutation("roulette-weight-off-by-one", "baselines/nn/residual_layers.py",
             "** -(k - n_exact - 1)", "** -(k - n_exact)",
             ("tests/test_flow_layers.py::test_residual_block_estimator_is_unbiased",
              "tests/test_flows.py::test_resflow_whole_model_estimate_is_unbiased")),
    Mutation("resume-forgets-torch-rng", "bench/seeding.py",
             'torch.set_rng_state(payload["torch_rng"].cpu())', "pass",
             ("tests/test_budget.py::test_resume_restores_every_random_state_the_run_draws_from",)),
    Mutation("ode-solver-error-dropped", "baselines/flow_matching.py",
             'kind = "upper-bound" if solver_error is None else "estimate"', 'kind = "upper-bound"',
             ("tests/test_flow_matching.py::test_a_fixed_step_likelihood_is_an_estimate_with_its_measured_solver_error",)),
    Mutation("likelihood-fence-removed", "bench/metrics/builtin.py",
             "if not math.isfinite(mean) or mean < -3 * est_se:", "if not math.isfinite(mean):",
             ("tests/test_flow_matching.py::test_the_fence_catches_a_coarse_solve_of_a_sharp_field",
              "tests/test_metrics_coverage_cost.py::test_a_negative_likelihood_is_an_error_not_a_number")),
    # FID = |mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^1/2): comparing against the generated covariance
    # zeroes the trace term, leaving only the means
    Mutation("fid-trace-term-dropped", "bench/metrics/fidelity.py",
             'real = {"mu": ref["mu"].numpy(), "sigma": ref["sigma"].numpy()}',
             'real = {"mu": ref["mu"].numpy(), "sigma": stats["sigma"]}',
             ("tests/test_metrics_fidelity.py::test_fid_matches_scipy_frechet_distance",)),
    # bin centres instead of uniform noise: not a dequantization bound, and it inflates a flow's likelihood
    Mutation("flow-dequantization-at-bin-centres", "baselines/nn/flow_layers.py",
             "y = conventions.dequantize(x, generator) if noise else conventions.to_unit(x)",
             "y = conventions.to_unit(x)",
             ("tests/test_flow_layers.py::test_preprocess_logdet_matches_brute_force",)),
    Mutation("coverage-kl-reversed", "bench/metrics/coverage.py",
             "return float((nz * torch.log(nz * k)).sum())", "return float((-torch.log(nz * k) / k).sum())",
             ("tests/test_metrics_coverage_cost.py::test_kl_from_uniform_closed_forms",)),
    Mutation("ddim-sigma-without-the-step-ratio", "baselines/nn/schedule.py",
             "sigma = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))", "sigma = eta * math.sqrt((1 - ap) / (1 - a))",
             ("tests/test_schedule.py::test_ddim_sample_matches_the_update_written_out",)),
)


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [f for f in out.split("\0") if f]


def copy_repo(dest: Path) -> None:
    for rel in tracked_files():
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def apply(root: Path, m: Mutation) -> None:
    path = root / m.file
    text = path.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"error: mutation {m.name}: {m.old!r} occurs {text.count(m.old)} times in {m.file}, "
                         "not once; update scripts/mutation_check.py to the current code")
    path.write_text(text.replace(m.old, m.new))


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[bool, float]:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "", *tests],
                       cwd=root, env=env, capture_output=True, text=True)
    return r.returncode == 0, time.monotonic() - t0


def main(argv: list[str]) -> int:
    tests_passed = "--tests-passed" in argv
    argv = [a for a in argv if a != "--tests-passed"]
    chosen = [m for m in MUTATIONS if not argv or m.name in argv]
    unknown = set(argv) - {m.name for m in MUTATIONS}
    if unknown:
        print(f"error: unknown mutation(s) {sorted(unknown)}; known: {', '.join(m.name for m in MUTATIONS)}")
        return 2
    with tempfile.TemporaryDirectory(prefix="genbench-mutation-") as tmp:
        clean = Path(tmp) / "clean"
        copy_repo(clean)
        passed = tests_passed or run_tests(clean, tuple(dict.fromkeys(t for m in chosen for t in m.tests)))[0]
        if not passed:
            print("error: the named tests fail on the unmutated code; fix them first")
            return 2
        missed = []
        for m in chosen:
            root = Path(tmp) / m.name
            shutil.copytree(clean, root)
            apply(root, m)
            survived, seconds = run_tests(root, m.tests)
            print(f"{'MISSED' if survived else 'caught'}  {m.name:42s} {seconds:5.1f} s  {m.file}")
            if survived:
                missed.append(m.name)
            shutil.rmtree(root)
    print(f"{len(chosen) - len(missed)}/{len(chosen)} mutations caught" + (f"; missed: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
