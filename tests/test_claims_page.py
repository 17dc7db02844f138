"""The claims page: every claim judged on every suite of a profile, one row per suite that measures it."""

from __future__ import annotations

from pathlib import Path

from bench.cli import main
from bench.records import write_record
from bench.report import claims_page, findings
from bench.report import tables as T
from tests.test_findings import rec

CLAIMS = '''
[[claim]]
id = "a"
statement = "ddpm below the flow"
source = "test seed A"
metric = "fid"
numerator = "ddpm"
denominator = "family:flow"
relation = "<"

[[claim]]
id = "b"
statement = "cfm below dcgan"
source = "test seed B"
metric = "fid"
numerator = "cfm"
denominator = "dcgan"
relation = "<"
'''


def reference(tmp_path: Path) -> Path:
    ref = tmp_path / "reference"
    ref.mkdir()
    (ref / "claims.toml").write_text(CLAIMS)
    (ref / "some-table.csv").write_text("model,fid\nx,1\n")
    return ref


SUITES = {  # suite A: ddpm at a quarter of glow's FID; suite B: ddpm at three times nsf's
    "a": [rec("ddpm", "diffusion", 0, fid=10.0), rec("glow", "flow", 0, fid=40.0)],
    "b": [rec("ddpm", "diffusion", 0, fid=30.0), rec("nsf", "flow", 0, fid=10.0), rec("dcgan", "gan", 0, fid=5.0)],
}


def test_each_suite_that_measures_a_claim_gets_a_row_and_an_unmeasured_claim_one_row_with_the_reason(tmp_path):
    rows = claims_page.claim_rows(SUITES, reference(tmp_path))
    by = [dict(zip(claims_page.HEADERS, r)) for r in rows]
    assert [(r["claim"], r["suite"], r["runs (ratio = first / second)"], r["verdict"]) for r in by] == [
        ("ddpm below the flow", "a", "ddpm / glow", findings.REPRODUCED),
        ("ddpm below the flow", "b", "ddpm / nsf", findings.NOT_REPRODUCED),
        ("cfm below dcgan", "—", "—", findings.NOT_MEASURABLE)]
    assert by[0]["measured"] == T.fmt(10.0 / 40.0) and by[1]["measured"] == T.fmt(30.0 / 10.0)
    assert by[2]["how"] == "needs a run of cfm"


def write(results: Path, suite: str, profile: str, records) -> None:
    for i, r in enumerate(records):
        d = r.to_json()
        d.update(suite=suite, profile=profile, finished=f"2026-01-01T00:00:{i:02d}.000000Z")
        write_record(d, results)


def test_bench_report_of_every_suite_writes_the_claims_page_of_each_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENBENCH_REFERENCE_DIR", str(reference(tmp_path)))
    results, reports = tmp_path / "results", tmp_path / "reports"
    for name, recs in SUITES.items():
        write(results, name, "cpu", recs)
    write(results, "c", "smoke", [rec("cfm", "flow_matching", 0, fid=1.0), rec("dcgan", "gan", 0, fid=2.0)])

    assert main(["report", "--results", str(results), "--reports", str(reports), "--suite", "a"]) == 0
    assert not (reports / "claims").exists()  # one suite: its own report only
    assert main(["report", "--results", str(results), "--reports", str(reports), "--profile", "cpu"]) == 0
    md = (reports / "claims" / "cpu" / "README.md").read_text()
    assert (reports / "claims" / "cpu" / "report.html").is_file() and not (reports / "c" / "cpu").exists()
    assert "| ddpm below the flow | test seed A | a | ddpm / glow |" in md
    assert "| ddpm below the flow | test seed A | b | ddpm / nsf |" in md
    assert "| cfm below dcgan | test seed B | — |" in md  # suite c is a smoke run: not on the cpu page
    assert main(["report", "--results", str(results), "--reports", str(reports)]) == 0
    smoke = (reports / "claims" / "smoke" / "README.md").read_text()
    assert "| cfm below dcgan | test seed B | c | cfm / dcgan |" in smoke
