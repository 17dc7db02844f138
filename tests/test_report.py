"""Reports rendered from fixture result records: numbers, published-vs-measured rows, plots,
grids, partial results, and a self-contained, well-formed HTML file."""

from __future__ import annotations

import base64
import csv
import json
import math
import statistics
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bench.records import write_record
from bench.report import render
from bench.report import tables as T
from tests.helpers import run_record

REPO = Path(__file__).resolve().parents[1]
SUITE, PROFILE = "fixture", "smoke"
DATA = {"dataset": "digits", "image_size": 16, "channels": 1, "train": "digits/train@16", "eval": "digits/test@16",
        "train_size": 1437, "eval_size": 360}
HW = {"cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "device": "cpu", "gpu": None, "gpu_count": 0,
      "key": "Test CPU x2"}

# (model, registered, family, seed, status, has_likelihood, conditional)
RUNS = [
    ("resflow", "resflow", "flow", 0, "ok", True, False),
    ("resflow", "resflow", "flow", 1, "ok", True, False),
    ("resflow", "resflow", "flow", 2, "ok", True, False),
    ("ddpm", "ddpm", "diffusion", 0, "ok", True, True),
    ("ddpm", "ddpm", "diffusion", 1, "diverged", True, True),
    ("dcgan", "dcgan", "gan", 0, "ok", False, False),
    ("nsf", "nsf", "flow", 0, "failed", True, False),
    ("reference", "reference", "reference", 0, "ok", True, False),
]


def m(v, **protocol):
    return {"value": v, "protocol": protocol}


def fixture_metrics(model: str, seed: int, has_lik: bool) -> dict:
    rng = np.random.default_rng(zlib.crc32(f"{model}{seed}".encode()))
    out = {
        "fid": m(float(20 + 10 * rng.random()), feature_extractor="domain-classifier"),
        "is": m(float(1.5 + rng.random()), feature_extractor="domain-classifier"),
        "kid": m(float(0.01 * rng.random()), feature_extractor="domain-classifier"),
        "sample_seconds_per_batch": m(float(0.5 + rng.random()), batch=128),
        "nfe": m(1.0 if model != "ddpm" else 1000.0, batch=128),
    }
    out["sample_seconds_per_image"] = m(out["sample_seconds_per_batch"]["value"] / 128, batch=128)
    out["train_mfu"] = m(float(0.1 + 0.2 * rng.random()))  # as bench/metrics/cost.py records them
    out["sample_mfu"] = m(float(0.05 + 0.1 * rng.random()))
    if has_lik:
        kind = {"ddpm": "upper-bound", "resflow": "estimate"}.get(model, "exact")
        # std: the test-set mean's standard error; resflow's includes its log-det estimator's (recorded alone too)
        proto = {"kind": kind, "estimator_stderr": 0.005 if model == "resflow" else 0.0}
        out["bits_per_dim"] = {"value": float(3 + rng.random()), "std": 0.012 if model == "resflow" else 0.01,
                               "n": 360, "protocol": proto}
    else:
        out["bits_per_dim"] = {"value": None, "note": "not defined (implicit model, no likelihood)", "protocol": {}}
    if model == "ddpm":
        out["fid@ddim-10"] = m(out["fid"]["value"] + 8.0)
        out["nfe@ddim-10"] = m(10.0)
    if model == "dcgan":
        out["coverage_kl"] = {"value": 0.05, "protocol": {"histogram": [30, 25, 20, 26, 24, 25, 27, 23, 28, 28]}}
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for i, (model, registered, family, seed, status, has_lik, cond) in enumerate(RUNS):
        rec = {"suite": SUITE, "profile": PROFILE, "model": model, "registered": registered, "family": family,
               "seed": seed, "config": {}, "sampler": {}, "budget": {"kind": "steps", "value": 100.0},
               "data": DATA, "train_settings": {"precision": "fp32"}, "eval_settings": {"feature_extractor": "auto"},
               "has_likelihood": has_lik, "conditional": cond, "status": status, "hardware": HW,
               "git_commit": "abc", "parameters": 1000 + len(model), "finished": f"2026-01-01T00:00:{i:02d}.000000Z",
               "error": None, "metrics": {}, "curve": [],
               "timings": {"train_seconds": 10.0 + seed, "train_images_per_second": 600.0 + 10 * seed, "peak_rss_mb": 800.0},
               "train": {"steps": 100, "images": 6400, "loss_last": 1.0,
                         "loss_curve": [[s, 2.0 / s + 0.01 * seed] for s in range(1, 101, 10)]}}
        if status == "diverged":
            rec["error"] = "non-finite loss (nan) at step 42"
            rec["train"]["loss_curve"] = rec["train"]["loss_curve"][:4]
        elif status == "failed":
            rec["error"] = "RuntimeError: boom"
            rec["train"] = {"steps": 0, "images": 0, "loss_curve": []}
        else:
            rec["metrics"] = fixture_metrics(model, seed, has_lik)
            rec["curve"] = [{"fraction": 0.5, "step": 50, "images": 3200, "train_seconds": 5.0,
                             "metrics": {k: dict(v) for k, v in rec["metrics"].items() if k in ("fid", "bits_per_dim")}}]
            for c in rec["curve"]:
                for v in c["metrics"].values():
                    if v.get("value") is not None:
                        v["value"] = v["value"] + 5
            rel = Path("runs") / SUITE / PROFILE / "samples" / f"{model}__seed{seed}.npz"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(seed)
            arrays = {"images": rng.integers(0, 256, size=(64, 1, 16, 16), dtype=np.uint8)}
            if cond:
                arrays["labels"] = np.arange(64) % 10
            np.savez_compressed(root / rel, **arrays)
            rec["artifacts"] = {"samples": str(rel)}
        write_record(rec, root)
    return root


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    paths = render(SUITE, results, out, profile=PROFILE, mirrors=["seed000-table4.4", "seed001-table5.4"])
    folder = out / SUITE / PROFILE
    return {"paths": paths, "dir": folder, "md": (folder / "README.md").read_text(),
            "html": (folder / "report.html").read_text()}


def md_row(md: str, first_cell: str, header_startswith: str) -> dict[str, str]:
    """The row of the Markdown table whose header row starts with ``header_startswith``."""
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| " + header_startswith):
            headers = [c.strip() for c in line.strip("|").split(" | ")]
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip().strip("|").split(" | ")]
                if cells[0] == first_cell:
                    return dict(zip(headers, cells))
    raise AssertionError(f"no row {first_cell!r} in a table starting with {header_startswith!r}")


def rows_where(md: str, header_startswith: str, **match) -> list[dict[str, str]]:
    lines, out = md.splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith("| " + header_startswith):
            headers = [c.strip() for c in line.strip("|").split(" | ")]
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                d = dict(zip(headers, [c.strip() for c in row.strip().strip("|").split(" | ")]))
                if all(d.get(k) == v for k, v in match.items()):
                    out.append(d)
    return out


def expected(model: str, metric: str, results: Path) -> str:
    """mean ± std over the ok seeds, computed here from the fixture values."""
    vals = [fixture_metrics(model, seed, has)[metric]["value"]
            for (mo, _, _, seed, st, has, _) in RUNS if mo == model and st == "ok"]
    if len(vals) == 1:
        return f"{vals[0]:.4g}"
    return f"{statistics.fmean(vals):.4g} ± {statistics.stdev(vals):.2g}"


def test_files_written(report):
    assert {p.name for p in report["paths"]} == {"README.md", "report.html"}


def test_model_table_numbers(report, results):
    md = report["md"]
    row = md_row(md, "resflow", "model | family | status")
    assert row["status"] == "ok (3/3)" and row["seeds"] == "0, 1, 2"
    # mean ± sd over seeds, then the SE of the seed-averaged mean sqrt(3 x 0.012^2)/3 and the estimator's sqrt(3 x 0.005^2)/3
    assert row["bits/dim"] == "≈ " + expected("resflow", "bits_per_dim", results) + " (SE 0.0069, estimator 0.0029)"
    assert "(SE …) is the standard error of the test-set mean" in md and "estimator's standard error alone" in md
    assert row["FD (domain-classifier)"] == expected("resflow", "fid", results)
    assert row["IS (domain-classifier)"] == expected("resflow", "is", results)
    assert row["KID (domain-classifier)"] == expected("resflow", "kid", results)
    assert row["sample s / img"] == expected("resflow", "sample_seconds_per_image", results)
    assert row["sample s / 128 img"] == expected("resflow", "sample_seconds_per_batch", results)
    assert "`sample s / 128 img`: timed directly on one batch of 128 images." in md  # the fixture timed 128
    ips = [600.0, 610.0, 620.0]
    assert row["train img/s"] == f"{statistics.fmean(ips):.4g} ± {statistics.stdev(ips):.2g}"
    assert row["parameters"] == f"{1000 + len('resflow'):,}"
    assert row["peak mem (MB)"] == "800 ± 0"  # identical over seeds
    assert row["train MFU"] == expected("resflow", "train_mfu", results)
    assert row["sample MFU"] == expected("resflow", "sample_mfu", results)


def test_partial_results_and_not_defined(report, results):
    md = report["md"]
    gan = md_row(md, "dcgan", "model | family | status")
    assert gan["bits/dim"] == "not defined"
    ddpm = md_row(md, "ddpm", "model | family | status")
    assert "seed 1 diverged: non-finite loss" in ddpm["status"] and ddpm["status"].startswith("ok 1/2")
    # upper bound, the ok seed only; its SE (no estimator part: an exact bound computation)
    assert ddpm["bits/dim"] == "≤ " + expected("ddpm", "bits_per_dim", results) + " (SE 0.01)"
    assert ddpm["FD (domain-classifier)"] == expected("ddpm", "fid", results)
    nsf = md_row(md, "nsf", "model | family | status")
    assert "failed: RuntimeError: boom" in nsf["status"]
    assert nsf["bits/dim"] == "n/a (failed)" and nsf["FD (domain-classifier)"] == "n/a (failed)"
    # no cell of the models table is blank
    for model in ("resflow", "ddpm", "dcgan", "nsf", "reference"):
        assert all(v for v in md_row(md, model, "model | family | status").values())
    runs = rows_where(md, "model | seed | status")
    assert len(runs) == len(RUNS)
    assert {r["status"] for r in runs} == {"ok", "diverged", "failed"}


def test_published_vs_measured(report, results):
    md = report["md"]
    ref = {(r["genbench_model"], r["metric"]): r for r in csv.DictReader(
        (REPO / "results" / "reference" / "seed000-table4.4.csv").open())}
    rows = rows_where(md, "dataset | published model", **{"genbench run": "resflow"})
    fid = next(r for r in rows if r["metric [unit]"].startswith("fid"))
    assert fid["published"] == f"{float(ref[('resflow', 'fid')]['value']):.4g}" == "20.55"
    assert fid["measured"] == expected("resflow", "fid", results)
    assert fid["comparable?"].startswith("no:")
    assert "smoke budget (100 steps)" in fid["comparable?"]
    assert "dataset digits vs published mnist" in fid["comparable?"]
    assert "feature space: measured domain-classifier vs published inception" in fid["comparable?"]
    real = rows_where(md, "dataset | published model", **{"genbench run": "real data"})
    assert real and all(r["measured"].startswith("not measured") for r in real)
    # seed 001 Table 5.4: NSF failed, DAF absent, NLL without unit, sampling time for 25 images
    nsf = rows_where(md, "dataset | published model", **{"genbench run": "nsf"})
    nll = next(r for r in nsf if r["metric [unit]"].startswith("nll"))
    assert nll["published"] == "1.03" and nll["measured"] == "n/a (failed)"
    assert "no stated unit" in nll["comparable?"]
    daf = [r for r in rows_where(md, "dataset | published model") if r["published model"].startswith("DAF")]
    assert daf and all(r["measured"] == "not run" for r in daf)
    ddpm_t = next(r for r in rows_where(md, "dataset | published model", **{"genbench run": "ddpm"})
                  if r["metric [unit]"].startswith("sample_seconds_per_batch"))
    per_image = fixture_metrics("ddpm", 0, True)["sample_seconds_per_image"]["value"]
    assert ddpm_t["measured"] == f"{per_image * 25:.4g}"
    assert "hardware: measured Test CPU" in ddpm_t["comparable?"]
    assert "extrapolated to 25 images (seconds per image × 25) from one timed batch of 128 images" in ddpm_t["notes"]
    assert "Measured: profile `smoke`, budget 100 steps" in md
    # the fixture suite has no `paper` profile: the note must not promise a like-for-like run
    assert "No `paper` profile of suite `fixture` was found" in md and "like-for-like" not in md


def test_sample_time_column_says_it_is_scaled_from_the_timed_batch(results, tmp_path):
    """Timed on 16 images: the 128-image column is seconds per image × 128, and the report says so."""
    from bench.records import load_records

    root = tmp_path / "results"
    for rec in load_records(results, SUITE):
        rec = rec.to_json()  # edited as the JSON a user would edit
        rec["eval_settings"] = {**rec["eval_settings"], "speed_batch": 16}
        for key in ("sample_seconds_per_batch", "sample_seconds_per_image", "nfe"):
            if key in rec["metrics"]:
                rec["metrics"][key]["protocol"] = {**rec["metrics"][key]["protocol"], "batch": 16}
        if "sample_seconds_per_batch" in rec["metrics"]:
            rec["metrics"]["sample_seconds_per_batch"]["value"] = rec["metrics"]["sample_seconds_per_image"]["value"] * 16
        write_record(rec, root)
    render(SUITE, root, tmp_path / "rep", formats=["md"], mirrors=["seed000-speed"])
    md = (tmp_path / "rep" / SUITE / PROFILE / "README.md").read_text()
    row = md_row(md, "reference", "model | family | status")
    per_image = fixture_metrics("reference", 0, True)["sample_seconds_per_image"]["value"]
    assert row["sample s / 128 img"] == f"{per_image * 128:.4g}"
    note = next(line for line in md.splitlines() if "`sample s / 128 img`" in line)
    assert "extrapolated, not measured at 128" in note and "timed one batch of `eval.speed_batch` images (16 for" in note
    assert "seconds per image × 128" in note and "timed directly" not in note
    flow = next(r for r in rows_where(md, "dataset | published model", **{"genbench run": "resflow"})
                if r["metric [unit]"].startswith("sample_seconds_per_batch"))
    assert "extrapolated to 128 images (seconds per image × 128) from one timed batch of 16 images" in flow["notes"]


def test_a_sampler_warning_is_shown_with_the_seeds_it_concerns(results, report, tmp_path):
    """A model's samples' ``info["warning"]`` (kept in the metrics' protocols) becomes a note in the Models section,
    once per run and warning, naming its seeds; reports without one have no such note."""
    from bench.records import load_records

    warning = "1 of 6 residual block inverse(s) stopped at the 500-iteration cap"
    assert warning not in report["md"]
    root = tmp_path / "results"
    for rec in load_records(results, SUITE):
        rec = rec.to_json()
        if rec["model"] == "resflow" and rec["seed"] in (0, 1) and rec["status"] == "ok":
            for key in ("nfe", "sample_seconds_per_batch"):
                rec["metrics"][key]["protocol"]["sampler_resolved"] = {"warning": warning}
        write_record(rec, root)
    render(SUITE, root, tmp_path / "rep", formats=["md"])
    md = (tmp_path / "rep" / SUITE / PROFILE / "README.md").read_text()
    models = md.split("## Models", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in models.splitlines() if warning in line]
    assert len(lines) == 1 and f"`resflow` (seed 0, 1): {warning}." in lines[0]


def _mnist_suite(tmp_path, name: str, metrics: list[str], extractor: str, models: list[str]):
    """A minimal MNIST suite file with a 1-step smoke and a 500-epoch paper profile."""
    path = tmp_path / f"{name}.toml"
    tables = "".join(f"[models.{m}]\n" for m in models)
    path.write_text(f'name = "{name}"\n[data]\ndataset = "mnist"\n[eval]\nmetrics = {json.dumps(metrics)}\n'
                    f'feature_extractor = "{extractor}"\n{tables}[profiles.smoke]\nbudget = {{ steps = 1 }}\n'
                    '[profiles.paper]\nbudget = { epochs = 500 }\n')
    return path


def test_paper_profile_note_names_what_the_paper_profile_does_not_measure(tmp_path):
    from bench.report import published
    from bench.report.document import _paper_profile_text

    # the shipped main job: its paper profile computes FID, IS and KID through Inception, as the table
    gaps = published.profile_gaps("mnist-flow-vs-ddpm", "seed000-table4.4")
    assert gaps["missing"] == [] and gaps["feature_spaces"] == []
    assert "computes every evaluation metric" in _paper_profile_text("mnist-flow-vs-ddpm", "seed000-table4.4", None)
    # a paper profile that measures FID/IS in the domain classifier's space: the note names the feature space
    dom = _mnist_suite(tmp_path, "dom", ["fid", "is"], "digits-classifier", ["resflow"])
    gaps = published.profile_gaps(str(dom), "seed000-table4.4")
    assert gaps["missing"] == [] and gaps["feature_spaces"] == [("digits-classifier", "inception")]
    text = _paper_profile_text(str(dom), "seed000-table4.4", None)
    assert "`paper` profile (500 epochs) still differs" in text and "digits-classifier feature space" in text
    # a suite whose paper profile leaves IS out: the note says so, read from the suite file
    path = _mnist_suite(tmp_path, "s", ["fid"], "inception", ["ddpm", "resflow"])
    gaps = published.profile_gaps(str(path), "seed000-table4.4")
    assert gaps["missing"] == ["is"] and gaps["feature_spaces"] == []
    assert "does not compute is" in _paper_profile_text(str(path), "seed000-table4.4", None)


def test_plots_and_grids_present(report):
    img = report["dir"] / "img"
    for name in ("quality_vs_compute", "speed_quality", "nfe_vs_quality", "loss_curves", "bits_per_dim",
                 "class_coverage", "grid_resflow", "grid_ddpm", "grid_ddpm_by_class", "grid_dcgan",
                 "grid_reference", "grid_real"):
        p = img / f"{name}.png"
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"](img/{name}.png)" in report["md"]
    assert not (img / "grid_nsf.png").exists()
    assert "nsf: no samples saved" in report["md"]


def test_class_grid_has_one_row_per_class(report):
    from PIL import Image

    from bench.report.grids import MIN_CELL, PAD

    h = Image.open(report["dir"] / "img" / "grid_ddpm_by_class.png").size[1]
    assert h == 10 * (MIN_CELL + PAD) + PAD  # 16 px images scaled ×3 = 48, ten classes


class TagBalance(HTMLParser):
    VOID = {"img", "meta", "br", "hr", "link", "input", "source", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.urls, self.images = [], [], [], []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.urls.append(v)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def test_html_self_contained_and_well_formed(report):
    html = report["html"]
    p = TagBalance()
    p.feed(html)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert "http://" not in html and "https://" not in html
    assert all(u.startswith("data:image/png;base64,") for u in p.urls)
    pngs = sorted((report["dir"] / "img").glob("*.png"))
    assert len(p.images) == len(pngs)
    embedded = {base64.b64decode(u.split(",", 1)[1]) for u in p.images}
    assert embedded == {f.read_bytes() for f in pngs}
    assert "<table>" in html and "20.55" in html and "not defined" in html


def test_missing_data_and_absent_sections_give_notes(results, tmp_path):
    # the same records with a dataset that is not available here: the real grid is skipped with a note
    from bench.records import load_records

    root = tmp_path / "results"
    for rec in load_records(results, SUITE):
        rec = rec.to_json()  # edited as the JSON a user would edit
        rec["data"] = {**rec["data"], "dataset": "npz", "path": str(tmp_path / "missing.npz")}
        rec["curve"], rec["train"]["loss_curve"] = [], []
        rec["metrics"].pop("coverage_kl", None)
        art = (rec.get("artifacts") or {}).get("samples")
        if art:
            rec["artifacts"]["samples"] = str(results / art)
        write_record(rec, root)
    render(SUITE, root, tmp_path / "rep", formats=["md"])
    md = (tmp_path / "rep" / SUITE / PROFILE / "README.md").read_text()
    assert "real-data grid skipped" in md
    assert "skipped — quality vs training compute" in md
    assert "skipped — training loss curves" in md
    assert "skipped — class-coverage histograms" in md
    assert not (tmp_path / "rep" / SUITE / PROFILE / "report.html").exists()


def test_cli_report_and_bad_input(results, tmp_path, capsys):
    from bench.cli import main

    assert main(["report", "--results", str(results), "--reports", str(tmp_path / "r"), "--suite", SUITE]) == 0
    assert (tmp_path / "r" / SUITE / PROFILE / "report.html").is_file()
    assert main(["report", "--results", str(results), "--reports", str(tmp_path / "r"), "--format", "pdf"]) == 2
    assert "unknown report format 'pdf'" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path / "none"), "--suite", "digits"]) == 2
    assert "no result records" in capsys.readouterr().err


def test_reference_tables_are_complete():
    ref = REPO / "results" / "reference"
    need = {"seed000-table4.4", "seed000-table4.5", "seed001-table5.2", "seed001-table5.3", "seed001-table5.4",
            "ddpm-ho2020-cifar10", "seed000-speed"}
    assert need <= {p.stem for p in ref.glob("*.csv")}
    for p in ref.glob("*.csv"):
        rows = list(csv.DictReader(p.open()))
        assert rows, p
        for r in rows:
            assert r["table_id"] == p.stem and r["source"] and r["unit"] and r["genbench_model"], (p, r)
            float(r["value"])
    ho = {r["metric"]: r for r in csv.DictReader((ref / "ddpm-ho2020-cifar10.csv").open())}
    assert (float(ho["fid"]["value"]), float(ho["is"]["value"]), float(ho["bits_per_dim"]["value"])) == (3.17, 9.46, 3.75)
    assert ho["bits_per_dim"]["bound"] == "<="
    nll = [r for r in csv.DictReader((ref / "seed001-table5.2.csv").open()) if r["metric"] == "nll"]
    assert nll and all("not stated" in r["unit"] for r in nll)


def test_minimal_and_odd_records_still_render(tmp_path):
    """Records with only the required keys, odd metric values and a missing samples file: a report, not a crash."""
    root = tmp_path / "results"
    write_record({"suite": "odd", "profile": "smoke", "model": "a", "seed": 0, "status": "failed",
                  "error": "ValueError: x", "finished": "2026-01-01T00:00:00.000000Z"}, root)
    write_record({"suite": "odd", "profile": "smoke", "model": "b", "seed": 0, "status": "ok", "family": "flow",
                  "metrics": {"fid": "oops", "bits_per_dim": {"value": float("nan")}, "is": {"value": 2.5}},
                  "curve": [{"images": None, "metrics": None}], "train": {"loss_curve": [[1, None], [2]]},
                  "artifacts": {"samples": "runs/odd/smoke/samples/missing.npz"},
                  "finished": "2026-01-01T00:00:01.000000Z"}, root)
    paths = render("odd", root, tmp_path / "rep", mirrors=["seed000-table4.4", "no-such-table"])
    md = paths[0].read_text()
    assert md_row(md, "b", "model | family | status")["IS"] == "2.5"
    assert md_row(md, "a", "model | family | status")["status"].startswith("seed 0 failed: ValueError: x")
    assert "reference table no-such-table: unknown reference table" in md
    assert "b: samples unreadable" in md


def test_bpd_cell_without_stderr_has_no_se_and_exact_estimators_no_estimator_part():
    from bench.report import tables as T
    rec = lambda v, **e: run_record(status="ok", family="flow", metrics={"bits_per_dim": {"value": v, **e}})
    assert T.bpd_cell([rec(3.5, protocol={"kind": "exact"})]) == "3.5"  # old records: no std recorded
    assert T.bpd_cell([rec(3.5, std=0.02, protocol={"kind": "exact", "estimator_stderr": 0.0})]) == "3.5 (SE 0.02)"
    assert T.bpd_cell([rec(3.5, std=0.02, protocol={"kind": "estimate", "estimator_stderr": 0.01})]) == \
        "≈ 3.5 (SE 0.02, estimator 0.01)"
    # records since the rename carry ``stderr``; it wins over an old ``std``
    assert T.bpd_cell([rec(3.5, stderr=0.03, protocol={"kind": "exact", "estimator_stderr": 0.0})]) == "3.5 (SE 0.03)"
    assert T.bpd_cell([rec(3.5, stderr=0.03, std=9.0, protocol={"kind": "exact"})]) == "3.5 (SE 0.03)"


def test_html_report_renders_in_headless_chromium(report, tmp_path):
    """scripts/screenshot_report.sh opens the fixture report offline; the screenshot shows rendered content."""
    import shutil
    import subprocess

    import matplotlib.image as mpimg

    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")
    out = tmp_path / "shot.png"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "screenshot_report.sh"), str(report["dir"] / "report.html"),
                           str(out), "1000x1200"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    img = mpimg.imread(out)  # float RGB(A) in [0, 1]
    assert img.shape[:2] == (1200, 1000)
    rgb = (img[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 100  # text, table borders and plots, not a blank page
    dark = (rgb.max(1) < 100).mean()
    assert 0.002 < dark < 0.5, dark  # some dark text/lines on a light page


def test_runs_on_two_cpus_name_both_with_their_runs():
    from bench.report import tables as T

    xeon = {"cpu": "Intel Xeon", "cpu_count": 2, "torch_threads": 2, "device": "cpu"}
    epyc = {**xeon, "cpu": "AMD EPYC"}
    recs = [run_record(model="ddpm", seed=0, hardware=xeon), run_record(model="ddpm", seed=2, hardware=epyc),
            run_record(model="resflow", seed=0, hardware=xeon)]
    text = T.describe_hardware_of(recs)
    assert "Intel Xeon" in text and "AMD EPYC" in text and "[ddpm seed 2]" in text
    assert "[ddpm seed 0, resflow seed 0]" in text
    assert T.describe_hardware_of(recs[:1]) == T.describe_hardware(recs[0])


def test_feature_space_columns_name_their_space():
    """FID/IS/KID/precision/recall headers carry the feature space of the records' values; FID's formula outside
    Inception's space is headed FD, and two spaces in one column are both named."""
    from collections import OrderedDict

    from bench.report.tables import model_table

    def rec(model, fe, **extra):
        proto = {"extractor": fe}
        return run_record(model=model, family="flow", status="ok", seed=0,
                          metrics={"fid": {"value": 1.0, "protocol": proto}, "kid": {"value": 0.1, "protocol": proto},
                                   "precision": {"value": 0.5, "protocol": proto}, **extra})

    headers, _, _ = model_table(OrderedDict(a=[rec("a", "inception")]))
    assert "FID (inception)" in headers and "KID (inception)" in headers and "precision (inception)" in headers
    headers, _, _ = model_table(OrderedDict(a=[rec("a", "dinov2-vit-l-14")]))
    assert "FD (dinov2-vit-l-14)" in headers and "KID (dinov2-vit-l-14)" in headers
    headers, _, _ = model_table(OrderedDict(a=[rec("a", "inception")], b=[rec("b", "digits-classifier")]))
    assert "FD (digits-classifier, inception)" in headers
    headers, _, _ = model_table(OrderedDict(a=[rec("a", "inception", bits_per_dim={"value": 1.0})]))
    assert "bits/dim" in headers  # not a feature-space column


def test_quality_vs_compute_averages_seeds_per_budget_fraction_and_keeps_flat_rows_off_the_x_axis():
    """Seeds that stop at different image counts (wall-clock budgets) are averaged per budget fraction, mean and sd
    computed here by hand; training FLOPs come from the cost metric's per-image count; the reference and real-data
    rows are not curves."""
    from bench.report import plots
    from tests.helpers import run_record

    def rec(model, family, seed, images, fids, per_image=None):
        curve = [{"fraction": f, "images": i, "train_seconds": 10.0 * f, "metrics": {"fid": {"value": v}}}
                 for f, i, v in zip((0.25, 0.5), images[:2], fids[:2])]
        metrics = {"fid": {"value": fids[2]}}
        if per_image:
            metrics["train_flops_per_image"] = {"value": per_image}
        return run_record(model=model, family=family, seed=seed, curve=curve, metrics=metrics,
                          train={"images": images[2]}, timings={"train_seconds": 40.0})

    recs = [rec("ddpm", "diffusion", 0, (100, 200, 400), (90.0, 60.0, 30.0), 1e6),
            rec("ddpm", "diffusion", 1, (120, 240, 480), (80.0, 50.0, 20.0), 1e6),
            rec("reference", "reference", 0, (10 ** 6, 2 * 10 ** 6, 4 * 10 ** 6), (250.0, 250.0, 245.0))]
    df = plots.compute_curve(recs, "fid")
    ddpm = df[df.model == "ddpm"].groupby("fraction").agg(x=("flops", "mean"), m=("quality", "mean"),
                                                            sd=("quality", "std"))
    assert ddpm.loc[1.0, "x"] == 440 * 1e6 and ddpm.loc[1.0, "m"] == 25.0
    assert ddpm.loc[0.25, "sd"] == pytest.approx(((90 - 85) ** 2 * 2 / 1) ** 0.5)
    assert df[df.model == "reference"]["flops"].isna().all()


def test_html_tables_fit_a_1400px_page_in_headless_chromium(tmp_path):
    """Every table of a wide report (19 columns, long findings) lays out within the page at a 1400 px window: no
    table wider than the body, no inner scroll bar. Measured by the browser's layout: a script in a copy of the
    report writes the widths into the DOM that --dump-dom prints."""
    import re
    import shutil
    import subprocess

    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")
    from bench.report import render

    render("digits", REPO / "results" / "cpu", tmp_path / "rep", profile="cpu", formats=["html"])
    html = (tmp_path / "rep" / "digits" / "cpu" / "report.html").read_text()
    probe = ("<script>window.addEventListener('load', () => { const b = document.body.clientWidth;"
             " const w = [...document.querySelectorAll('table')].map(t => t.scrollWidth);"
             " document.body.setAttribute('data-widths', b + ':' + Math.max(...w) + ':' + w.length); });</script>")
    (tmp_path / "probe.html").write_text(html.replace("</body>", probe + "</body>"))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                           "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           (tmp_path / "probe.html").as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-widths="(\d+):(\d+):(\d+)"', proc.stdout)
    assert found, proc.stderr[-1000:]
    body, widest, tables = map(int, found.groups())
    assert tables >= 3 and 1000 < body <= 1400 and widest <= body, (body, widest)


def test_the_runs_table_states_the_compute_spent_and_the_wall_time():
    """Issue 31: budget, steps, images, counted training FLOPs and training seconds side by side, per run."""
    from bench.report import tables as T

    r = run_record(model="ddpm", seed=1, budget={"kind": "flops", "value": 7e12},
                   train={"steps": 2993, "images": 191552, "flops": 7.0001e12, "loss_last": 0.05},
                   timings={"train_seconds": 212.5})
    headers, rows = T.runs_table([r])
    row = dict(zip(headers, rows[0]))
    assert row["budget"] == "7e+12 flops" and row["steps"] == "2,993" and row["images seen"] == "191,552"
    assert row["training FLOPs"] == "7e+12" and row["train s"] == T.fmt(212.5)


def test_a_search_grid_is_ranked_by_mean_fid_and_its_lowest_point_named(tmp_path):
    from bench.report import search

    def point(run, lr, ema, seed, fid, status="ok"):
        return run_record(model=run, registered="ddpm", family="diffusion", seed=seed, status=status,
                          search={"of": "ddpm", "point": {"lr": lr, "ema_decay": ema}},
                          metrics={} if fid is None else {"fid": {"value": fid}, "coverage_kl": {"value": fid / 100}})

    recs = [point("ddpm-lr0.001", 1e-3, 0.99, 0, 30.0), point("ddpm-lr0.001", 1e-3, 0.99, 1, 50.0),  # mean 40
            point("ddpm-lr0.003", 3e-3, 0.99, 0, 35.0), point("ddpm-lr0.003", 3e-3, 0.99, 1, 39.0),  # mean 37
            point("ddpm-lr0.01", 1e-2, 0.99, 0, None, status="diverged"),
            run_record(model="resflow", registered="resflow", family="flow", seed=0, metrics={"fid": {"value": 1.0}})]
    (caption, headers, rows), = search.search_tables(T.group_by_model(recs))
    assert headers == ["run", "lr", "ema_decay", "FID", "class-coverage KL", "seeds"]
    assert [r[0] for r in rows] == ["**ddpm-lr0.003**", "ddpm-lr0.001", "ddpm-lr0.01"]  # resflow is not a point
    assert rows[0][1:4] == ["0.003", "0.99", T.fmt(37.0)] and rows[2][-1] == "none ok"
    assert caption.endswith("lowest: ddpm-lr0.003") and "3 points" in caption


def test_nfe_plot_draws_one_line_per_trained_model_not_per_wrapper(tmp_path):
    """Two runs of one wrapper trained differently (cfm vs cfm-cfg) are two models: one NFE each draws no line.
    Two runs of the same training config with different sampler tables are one model seen at two NFEs."""
    from bench.report import plots
    from tests.helpers import run_record

    def rec(model, config, nfe, fid):
        return run_record(model=model, registered="cfm", family="flow-matching", status="ok", config=config,
                          metrics={"fid": {"value": fid}, "nfe": {"value": nfe}})

    different = [rec("cfm", {"cond_drop": 0.0}, 16, 10.0), rec("cfm-cfg", {"cond_drop": 0.1}, 20, 60.0)]
    path, why = plots.nfe_vs_quality(different, tmp_path / "a.png")
    assert path is None and "two or more" in why
    same = [rec("cfm-euler8", {"cond_drop": 0.0}, 8, 12.0), rec("cfm-euler16", {"cond_drop": 0.0}, 16, 10.0)]
    path, why = plots.nfe_vs_quality(same, tmp_path / "b.png")
    assert path is not None and path.is_file() and why == ""
    # a guidance sweep (w = 5 doubles the evaluations) is not a point on the steps-vs-quality line
    guided = run_record(model="cfm-cfg", registered="cfm", family="flow-matching", status="ok", config={},
                        sampler={"name": "euler", "steps": 10, "guidance": 1.0},
                        samplers={"w1": {"guidance": 1.0}, "w5": {"guidance": 5.0}},
                        metrics={"fid": {"value": 6.0}, "nfe": {"value": 10}, "fid@w1": {"value": 6.0},
                                 "nfe@w1": {"value": 10}, "fid@w5": {"value": 60.0}, "nfe@w5": {"value": 20}})
    assert [(tag, nfe) for tag, nfe, _ in plots.nfe_points(guided, "fid")] == [("euler", 10), ("w1", 10)]


def test_nfe_plot_points_are_samplers_with_their_seeds_averaged_not_seeds(tmp_path):
    """An adaptive solver's NFE differs by seed (resflow: 36, 36, 31): three seeds of one sampler are one point,
    not a line; a run evaluated with two samplers is two points, each the mean over its seeds."""
    from bench.report import plots
    from tests.helpers import run_record

    def rec(model, seed, nfe, fid, **extra):
        return run_record(model=model, registered=model, family="x", status="ok", seed=seed, config={},
                          metrics={"fid": {"value": fid}, "nfe": {"value": nfe}, **extra})

    adaptive = [rec("resflow", 0, 36, 234.3), rec("resflow", 1, 36, 198.8), rec("resflow", 2, 31, 203.6)]
    assert plots.nfe_quality_points(adaptive, "fid").empty
    path, why = plots.nfe_vs_quality(adaptive, tmp_path / "a.png")
    assert path is None and "two or more" in why
    swept = [rec("ddpm", s, 200, fid, **{"fid@ddim-10": {"value": fid + d}, "nfe@ddim-10": {"value": 10}})
             for s, fid, d in ((0, 70.0, 30.0), (1, 74.0, 34.0))]
    points = plots.nfe_quality_points(swept + adaptive, "fid").set_index("point")
    assert sorted(points.index) == ["ddpm@ddim-10", "ddpm@default"]
    assert points.loc["ddpm@default", "mean"] == 72.0 and points.loc["ddpm@ddim-10", "mean"] == 104.0
    assert points.loc["ddpm@default", "sd"] == statistics.stdev([70.0, 74.0]) and points.loc["ddpm@ddim-10", "seeds"] == 2
    path, why = plots.nfe_vs_quality(swept + adaptive, tmp_path / "b.png")
    assert path is not None and path.is_file()


def _ladder_run(model, family, fids, kls=None, bpds=None, flops=(1e9, 2e9, 4e9), profile="ladder", seed=0):
    """A run evaluated at 1/4, 1/2 and all of its budget, its values given per evaluation (the last = the final)."""
    from tests.helpers import run_record

    def metrics(i):
        out = {"fid": {"value": fids[i]}}
        if kls:
            out["coverage_kl"] = {"value": kls[i]}
        if bpds:
            out["bits_per_dim"] = {"value": bpds[i]}
        return out

    fractions = (0.25, 0.5, 1.0)[-len(fids):]
    curve = [{"fraction": f, "flops": c, "images": 1, "metrics": metrics(i)}
             for i, (f, c) in enumerate(zip(fractions[:-1], flops[:-1]))]
    return run_record(model=model, family=family, seed=seed, profile=profile, curve=curve,
                      metrics=metrics(len(fids) - 1), train={"flops": flops[len(fids) - 1], "images": 1},
                      has_likelihood=bpds is not None)


def test_the_regime_table_reads_the_crossing_off_the_evaluations_or_extrapolates_the_trend():
    """Issue 31: FID = 1000 (C / 1e9)^-1/2 reaches 10x the real-data row's 1.0 at C = 1e13 (closed form); bits/dim =
    6 - log10(C / 1e9) reaches the reference floor 3.0 at C = 1e12; a model within every limit at its second
    evaluation entered there; a rising curve has no crossing; two evaluations are too few for a trend."""
    from bench.report import regime

    power = [1000 * (c / 1e9) ** -0.5 for c in (1e9, 2e9, 4e9)]
    recs = [_ladder_run("real-data", "real-data", [1.0]),
            _ladder_run("reference", "reference", [300.0], bpds=[3.0]),
            _ladder_run("gan", "gan", power, kls=[0.05, 0.05, 0.05]),
            _ladder_run("flow", "flow", [5.0, 5.0, 5.0], kls=[0.01] * 3, bpds=[6 - math.log10(c / 1e9) for c in (1e9, 2e9, 4e9)]),
            _ladder_run("good", "diffusion", [50.0, 9.0, 8.0], kls=[0.5, 0.08, 0.05], bpds=[2.9, 2.8, 2.7]),
            _ladder_run("worse", "diffusion", [50.0, 60.0, 70.0], kls=[0.2, 0.3, 0.4], bpds=[2.0, 2.0, 2.0]),
            _ladder_run("short", "diffusion", [50.0, 40.0], kls=[0.2, 0.1], bpds=[2.0, 2.0])]
    caption, headers, rows = regime.regime_table(recs)
    verdict = {row[0]: row[-1] for row in rows}
    assert set(verdict) == {"gan", "flow", "good", "worse", "short"}  # the floors are not rows
    assert verdict["gan"] == f"no; trend crosses at ≈ {1e13:.2g} ({1e13 / 4e9:.2g}× the last; FID last)"
    assert verdict["flow"] == f"no; trend crosses at ≈ {1e12:.2g} ({1e12 / 4e9:.2g}× the last; bits/dim last)"
    assert verdict["good"] == f"yes, from {T.fmt(2e9)}"
    assert "not improving" in verdict["worse"] and "FID" in verdict["worse"] and "KL" in verdict["worse"]
    assert "too few" in verdict["short"]
    row = dict(zip(headers, rows[[r[0] for r in rows].index("gan")]))
    assert row["FID (limit)"] == f"{T.fmt(power[-1])} (≤ {T.fmt(10.0)})" and row["bits/dim (limit)"] == "not defined"
    smoke = [_ladder_run(r.model, r.family, [1.0], profile="smoke") for r in recs[:1]] + \
        [_ladder_run("gan", "gan", power, kls=[0.05] * 3, profile="smoke")]
    assert regime.regime_table(smoke) is None  # nothing is expected to have learned in a smoke run


def test_the_regime_averages_seeds_per_evaluation_before_it_judges():
    """Seed 0 alone would be in the regime at its second evaluation, seed 1 alone never; their mean (FID 10.5 > 10)
    is not, and the trend is fitted to the means."""
    from bench.report import regime

    recs = [_ladder_run("real-data", "real-data", [1.0]),
            _ladder_run("m", "gan", [40.0, 9.0, 8.0], kls=[0.01] * 3, seed=0),
            _ladder_run("m", "gan", [40.0, 12.0, 11.0], kls=[0.01] * 3, seed=1)]
    points, unit = regime.evaluations([r for r in recs if r.model == "m"], ["fid"])
    assert unit == "flops" and [p["fid"] for p in points] == [40.0, 10.5, 9.5]
    _, _, rows = regime.regime_table(recs)
    assert rows[0][-1] == f"yes, from {T.fmt(4e9)}"


def test_a_search_report_judges_no_claims_across_its_grid_points(tmp_path):
    """A tune report holds 6 points per family on one seed: judging DDPM vs the flow on every pair of points would
    fill Findings with verdicts on configurations nobody adopted. The same two runs outside a search are judged."""
    def write(root, searched: bool):
        for run, family, fid in (("ddpm-lr0.003", "diffusion", 290.0), ("resflow-lr0.003", "flow", 205.0)):
            registered = run.split("-")[0]
            write_record({"suite": "s", "profile": "tune", "model": run if searched else registered, "seed": 0,
                          "status": "ok", "registered": registered, "family": family,
                          "search": {"of": registered, "point": {"lr": 3e-3}} if searched else {},
                          "metrics": {"fid": {"value": fid}}, "finished": "2026-01-01T00:00:00.000000Z"}, root)
        return render("s", root, tmp_path / ("rep-searched" if searched else "rep-plain"), formats=["md"])[0].read_text()

    def findings(md):
        return md.split("## Findings", 1)[1].split("## Models", 1)[0]

    plain, searched = findings(write(tmp_path / "plain", False)), findings(write(tmp_path / "searched", True))
    claim = "DDPM reaches a lower FID than the flow on MNIST"
    assert claim in plain and "ddpm / resflow" in plain  # judged on the same records outside a search
    assert claim not in searched and "a search: its points rank configurations" in searched


def test_a_ladder_report_names_each_runs_budget_and_judges_claims_at_equal_compute(tmp_path):
    """The main job's ladder: DDPM to x8, the flow to x4. The intro names the flow's own budget, and Findings
    reads DDPM at its x4 evaluation, where its FID (300) is worse than the flow's, not at x8 (70), where it is not."""
    ddpm_x4 = {"fraction": 0.5, "step": 2224, "flops": 5.2e13, "metrics": {"fid": {"value": 300.0}}}
    for run, family, budget, fid, curve in (("ddpm", "diffusion", 1.04e14, 70.0, [ddpm_x4]),
                                            ("resflow", "flow", 5.2e13, 150.0, [])):
        write_record({"suite": "s", "profile": "ladder", "model": run, "seed": 0, "status": "ok", "registered": run,
                      "family": family, "budget": {"kind": "flops", "value": budget}, "curve": curve,
                      "metrics": {"fid": {"value": fid}}, "finished": "2026-01-01T00:00:00.000000Z"}, tmp_path / "res")
    md = render("s", tmp_path / "res", tmp_path / "rep", formats=["md"])[0].read_text()
    intro, rest = md.split("## Findings", 1)
    findings = rest.split("## Models", 1)[0]
    assert "1.04e+14 flops per run (resflow: 5.2e+13 flops)" in intro
    row = next(line for line in findings.splitlines() if "ddpm / resflow" in line and "lower FID" in line)
    assert "✗ not reproduced" in row  # 300 / 150; at x8 (70 / 150) it would read ✓
    assert "claims judged at 5.2e+13 flops" in findings and "ddpm at its evaluation at 0.5" in findings


def test_rerender_removes_pngs_the_report_no_longer_links(results, tmp_path):
    """A re-render after a model left the records drops that model's sample grid and any other orphan PNG,
    and keeps every PNG the new README links to."""
    import re
    import shutil

    root = tmp_path / "results"
    shutil.copytree(results, root)
    out = tmp_path / "rep"
    render(SUITE, root, out, profile=PROFILE)
    img = out / SUITE / PROFILE / "img"
    assert (img / "grid_dcgan.png").exists()
    (img / "old_plot.png").write_bytes(b"\x89PNG old")  # a plot an earlier version drew
    for f in root.rglob("dcgan__seed0*.json"):
        f.unlink()
    md = render(SUITE, root, out, profile=PROFILE)[0].read_text()
    linked = set(re.findall(r"\(img/([^)]+\.png)\)", md))
    assert "grid_resflow.png" in linked
    assert {p.name for p in img.glob("*.png")} == linked
    assert not (img / "grid_dcgan.png").exists() and not (img / "old_plot.png").exists()


def test_bits_per_dim_bars_leave_off_a_model_worse_than_uniform_noise_and_the_report_says_so(tmp_path, monkeypatch):
    """A diverged likelihood (daf's inflated bound: thousands of bits/dim) must not squeeze the models that learned
    against zero: it is left off the bars, the axis stays below uniform noise's 8 bits/dim, and a note under the
    plot names it with its mean ((100 + 300) / 2 = 200)."""
    from bench.report import document, plots
    from bench.report.doc import Image, Note, Section
    from tests.helpers import run_record

    def rec(model, family, seed, bpd):
        return run_record(model=model, family=family, seed=seed, status="ok",
                          metrics={"bits_per_dim": {"value": bpd}})

    groups = {"daf": [rec("daf", "hybrid", 0, 100.0), rec("daf", "hybrid", 1, 300.0)],
              "nsf": [rec("nsf", "flow", 0, 1.7), rec("nsf", "flow", 1, 1.8)],
              "reference": [rec("reference", "reference", 0, 2.3)]}
    seen = {}
    save = plots._save

    def spy(fig, path):
        ax = fig.axes[0]
        seen["ymax"], seen["bars"] = ax.get_ylim()[1], [t.get_text() for t in ax.get_xticklabels()]
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    path, note = plots.bpd_bars(groups, tmp_path / "img" / "bpd.png")
    assert path.is_file() and seen["bars"] == ["nsf", "reference"] and seen["ymax"] < 8
    assert "daf (200)" in note and "uniform noise" in note
    section = Section("plots")
    document._add_image(section, tmp_path, (path, note), "bits/dim")
    assert isinstance(section.blocks[0], Image) and isinstance(section.blocks[1], Note) and "daf" in section.blocks[1].text
