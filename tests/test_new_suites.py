"""The suites that mirror seed 000's CIFAR-10 table, seed 002's DDPM and Ho et al.'s CIFAR-10 row, and the suite that
checks the claims of seeds 002-004: each loads, its smoke profile runs through `bench run` offline, and its report
holds the published table or the claims it exists for."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import records
from bench.report.findings import NOT_MEASURABLE, load_claims
from bench.suite import load_suite
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[1]


def run_suite(tmp_path, capsys, *args):
    results = tmp_path / "results"
    code, out, err = run_cli(["run", *args, "--profile", "smoke", "--results", str(results), "--checkpoints",
                              str(tmp_path / "ck"), "--cache-dir", str(tmp_path / "cache"), "--quiet"], capsys)
    assert code == 0, err[-2000:]
    return results, out


def test_every_reference_table_is_mirrored_by_a_suite():
    """Done when every published table genbench ships can be run: each CSV in results/reference/ is named in some
    suite's `mirrors`."""
    from bench.suite import read_toml, suite_names, suite_path

    mirrored = {m for name in suite_names() for m in read_toml(suite_path(name)).get("mirrors", [])}
    tables = {p.stem for p in (REPO / "results" / "reference").glob("*.csv")}
    assert tables <= mirrored, sorted(tables - mirrored)


def test_the_cifar10_suite_runs_its_smoke_profile_offline_from_the_jpeg_archive(tmp_path, capsys):
    from tests.test_data import _cifar10_jpeg_tarball

    _cifar10_jpeg_tarball(tmp_path)  # a tiny cifar10-jpeg.tar.gz under tmp_path
    results, _ = run_suite(tmp_path, capsys, "--suite", "cifar10-flow-vs-ddpm", "--data-root", str(tmp_path))
    recs = records.load_records(results)
    assert sorted(r.model for r in recs) == ["ddpm-ho", "ddpm-thesis", "resflow"]
    assert all(r.status == "ok" and "jpeg" in r.data["train"].lower() for r in recs)
    md = (results / "reports" / "cifar10-flow-vs-ddpm" / "smoke" / "README.md").read_text()
    assert "seed000-table4.5" in md and "ddpm-ho2020-cifar10" in md
    # each published row is read against its own run: the thesis DDPM's row never shows the Large DDPM's run
    thesis_rows = [line for line in md.splitlines() if "DDPM (thesis U-Net)" in line]
    assert thesis_rows and not any("ddpm-ho" in line for line in thesis_rows)


def test_the_cifar10_paper_profile_is_the_thesis_configuration():
    s = load_suite("cifar10-flow-vs-ddpm", "paper")
    assert s.eval["feature_extractor"] == "inception" and {"fid", "is"} <= set(s.eval["metrics"])
    assert str(s.budget) == "500 epochs" and str(s.budget_for("ddpm-ho")) == "800000 steps"  # Ho et al.'s 800k
    assert (s.models["resflow"]["preprocessing"], s.models["resflow"]["alpha"]) == ("logit", 0.05)
    assert (s.models["ddpm-ho"]["unet"], s.models["ddpm-ho"]["lr"]) == ("ddpm-ho", 2e-4)


def test_seed002s_unet_is_ho_et_als_shape_without_attention():
    """The suite says its U-Net builds 8,618,241 parameters against the printed 7,339,297: counted here."""
    from bench import registry
    from bench.registry import DataSpec
    from bench.suite import model_config

    cfg = load_suite("mnist-ddpm-seed002", "paper").models["ddpm"]
    model = registry.get("ddpm")(model_config(cfg), DataSpec(1, 32, 32, 10))
    assert sum(p.numel() for p in model.net.parameters()) == 8_618_241
    assert model.cfg.attn_resolutions == [] and (model.cfg.timesteps, model.cfg.lr) == (1000, 1e-4)


def test_seed002s_suite_runs_its_smoke_profile_and_reports_parameters_and_speed(tmp_path, capsys, shared_data):
    results, _ = run_suite(tmp_path, capsys, "--suite", "mnist-ddpm-seed002", "--data-root", str(shared_data))
    (rec,) = records.load_records(results)
    md = (results / "reports" / "mnist-ddpm-seed002" / "smoke" / "README.md").read_text()
    rows = {line.split("|")[4].strip().split(" ")[0]: line for line in md.splitlines()
            if line.startswith("| mnist | DDPM (U-Net without attention)")}
    assert set(rows) == {"parameters", "epoch_seconds", "sample_seconds_per_image"}
    cells = [c.strip() for c in rows["parameters"].split("|")]
    assert cells[5:8] == ["7,339,297", f"{rec.parameters:,}", "yes"]  # a count: comparable whatever the budget
    per_epoch = float([c.strip() for c in rows["epoch_seconds"].split("|")][6])
    ips = rec.timings["train_images_per_second"]
    assert per_epoch == pytest.approx(rec.data["train_size"] / ips, rel=1e-3)


@pytest.mark.slow
def test_the_claims_suite_measures_every_claim_of_seeds_002_to_004(tmp_path, capsys):
    """Its smoke profile's records give every claim of seeds 002-004 a verdict (✓, ✗ or ~, never 'not
    measurable'): the runs, sweep labels and metrics the claims name exist."""
    from bench.report import findings
    from bench.report import tables as T

    results, _ = run_suite(tmp_path, capsys, "--suite", "digits-claims")
    groups = T.group_by_model(records.load_records(results))
    claims = [c for c in load_claims(REPO / "results" / "reference") if c["source"].startswith(("seeds/002", "seeds/003",
                                                                                              "seeds/004"))]
    assert len(claims) == 8 and len(load_claims(REPO / "results" / "reference")) >= 15
    for claim in claims:
        verdicts = findings.judge(claim, groups)
        assert verdicts and all(v.verdict != NOT_MEASURABLE for v in verdicts), (claim["id"], verdicts[0].why)


def test_the_main_jobs_ladder_is_the_cpu_profile_at_eight_times_the_compute_and_the_flows_at_four():
    """One ladder run per model with the cpu profile's models, evaluated at x1, x2, x4 and x8 of its compute; the
    residual flow's own budget stops at x4 (its x8 takes longer than a working session), evaluated at x0.5-x4."""
    cpu, ladder = load_suite("mnist-flow-vs-ddpm", "cpu"), load_suite("mnist-flow-vs-ddpm", "ladder")
    flow = dict(ladder.models["resflow"])
    assert flow.pop("budget") == {"flops": 4 * cpu.budget.value} and flow == cpu.models["resflow"]
    assert {k: v for k, v in ladder.models.items() if k != "resflow"} == {k: v for k, v in cpu.models.items() if k != "resflow"}
    assert ladder.budget.kind == cpu.budget.kind == "flops" and ladder.budget.value == 8 * cpu.budget.value
    multiples = {run: [f * ladder.budget_for(run).value / cpu.budget.value for f in ladder.train["eval_fractions"]]
                 for run in ("ddpm", "resflow")}
    assert multiples == {"ddpm": [1, 2, 4, 8], "resflow": [0.5, 1, 2, 4]}
