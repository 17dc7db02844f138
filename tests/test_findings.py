"""The seeds' claims judged on records: ratios, their standard errors, verdicts, and the report's fences."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from bench.report import findings
from bench.report import tables as T
from tests.helpers import run_record

REPO = Path(__file__).resolve().parents[1]
LESS = {"id": "t", "statement": "a below b", "source": "test", "metric": "fid", "numerator": "ddpm",
        "denominator": "family:flow", "relation": "<"}


def rec(model, family, seed, profile="cpu", registered=None, **metrics):
    out = {"model": model, "registered": registered or model, "family": family, "seed": seed, "status": "ok",
           "profile": profile, "metrics": {}, "timings": {}}
    for k, v in metrics.items():
        if k == "train_images_per_second":
            out["timings"][k] = v
        else:
            out["metrics"][k.replace("__", "@").replace("ddim_", "ddim-")] = v if isinstance(v, dict) else {"value": v}
    return run_record(**out)


def groups(*records):
    return T.group_by_model(list(records))


def test_ratio_and_its_standard_error_come_from_the_seed_spread():
    g = groups(rec("ddpm", "diffusion", 0, fid=10.0), rec("ddpm", "diffusion", 1, fid=12.0),
               rec("ddpm", "diffusion", 2, fid=14.0), rec("glow", "flow", 0, fid=40.0), rec("glow", "flow", 1, fid=44.0))
    (v,) = findings.judge(LESS, g)
    se_a, se_b = 2.0 / math.sqrt(3), math.sqrt(8.0) / math.sqrt(2)  # sample sd / sqrt(n)
    assert v.pair == "ddpm / glow" and v.ratio == pytest.approx(12.0 / 42.0)
    assert v.stderr == pytest.approx(12.0 / 42.0 * math.hypot(se_a / 12.0, se_b / 42.0))
    assert v.verdict == findings.REPRODUCED


def test_a_less_than_claim_is_inconclusive_within_two_standard_errors_and_fails_beyond():
    close = groups(rec("ddpm", "diffusion", 0, fid={"value": 10.0, "std": 1.0}), rec("glow", "flow", 0, fid={"value": 10.5, "std": 1.0}))
    assert findings.judge(LESS, close)[0].verdict == findings.INCONCLUSIVE
    worse = groups(rec("ddpm", "diffusion", 0, fid={"value": 30.0, "std": 1.0}), rec("glow", "flow", 0, fid={"value": 10.0, "std": 1.0}))
    assert findings.judge(LESS, worse)[0].verdict == findings.NOT_REPRODUCED
    no_error = groups(rec("ddpm", "diffusion", 0, fid=30.0), rec("glow", "flow", 0, fid=10.0))
    v = findings.judge(LESS, no_error)[0]
    assert v.verdict == findings.NOT_REPRODUCED and v.stderr is None and "no error estimate" in v.why


def test_missing_runs_or_metrics_are_not_measurable_and_every_pair_is_judged():
    assert findings.judge(LESS, groups(rec("ddpm", "diffusion", 0, fid=1.0)))[0].verdict == findings.NOT_MEASURABLE
    g = groups(rec("ddpm", "diffusion", 0, fid=1.0), rec("glow", "flow", 0, fid=2.0), rec("nsf", "flow", 0))
    pairs = {v.pair: v.verdict for v in findings.judge(LESS, g)}
    assert pairs == {"ddpm / glow": findings.REPRODUCED, "ddpm / nsf": findings.NOT_MEASURABLE}


def test_an_approximate_ratio_claim_uses_its_factor_and_the_nfe_it_needs():
    claim = {"id": "t", "statement": "s", "source": "x", "metric": "sample_seconds_per_image", "numerator": "ddpm",
             "denominator": "family:flow", "relation": "~", "value": 240.0, "tolerance": 2.0, "nfe": 1000}
    ddim = rec("ddpm", "diffusion", 0, sample_seconds_per_image=0.02, nfe=20)
    flow = rec("glow", "flow", 0, sample_seconds_per_image=0.0001)
    v = findings.judge(claim, groups(ddim, flow))[0]
    assert v.verdict == findings.NOT_MEASURABLE and "NFE 1000" in v.why
    swept = rec("ddpm", "diffusion", 0, sample_seconds_per_image=0.02, nfe=20,
                sample_seconds_per_image__ddpm1000=0.03, nfe__ddpm1000=1000)
    v = findings.judge(claim, groups(swept, flow))[0]
    assert v.ratio == pytest.approx(300.0) and v.verdict == findings.REPRODUCED  # 300 within [120, 480]
    slow = rec("glow", "flow", 0, sample_seconds_per_image=0.00001)
    assert findings.judge(claim, groups(swept, slow))[0].verdict == findings.NOT_REPRODUCED  # 3000 > 480


def test_training_throughput_claims_read_the_records_timings():
    claim = {"id": "t", "statement": "s", "source": "x", "metric": "train_images_per_second", "numerator": "ddpm",
             "denominator": "resflow", "relation": "~", "value": 38.62, "tolerance": 2.0}
    g = groups(rec("ddpm", "diffusion", 0, train_images_per_second=400.0), rec("resflow", "flow", 0, train_images_per_second=20.0))
    v = findings.judge(claim, g)[0]
    assert v.ratio == pytest.approx(20.0) and v.verdict == findings.REPRODUCED


def test_the_shipped_claims_file_names_the_issue_claims_and_parses():
    claims = {c["id"]: c for c in findings.load_claims(REPO / "results" / "reference")}
    assert {"seed000-ddpm-fid-below-flow", "seed000-flow-samples-240x-faster", "seed001-nsf-samples-faster-than-daf",
            "seed001-daf-samples-faster-than-ddpm", "seed001-daf-half-ddpm-sampling", "seed001-daf-nll-below-nsf",
            "seed000-ddpm-trains-38x-faster"} <= set(claims)
    for c in claims.values():
        kind = c.get("kind", "ratio")
        assert kind in ("ratio", "trend", "nfe_at_quality") and c["source"] and c["published"]
        if kind == "ratio":
            assert c["relation"] in ("<", "~")
            if c["relation"] == "~":
                assert c["value"] > 0 and c["tolerance"] > 1
        elif kind == "trend":
            assert c["direction"] in ("increasing", "decreasing") and len(c["sweep"]) >= 2
        else:
            assert len(c["sweep"]) >= 2 and c["numerator"] != c["denominator"]
    assert len(claims) >= 15 and {c["source"][:9] for c in claims.values()} >= {
        "seeds/000", "seeds/001", "seeds/002", "seeds/003", "seeds/004"}


def test_fences_flag_worse_than_noise_and_worse_than_the_reference_floor_outside_smoke():
    g = groups(rec("reference", "reference", 0, bits_per_dim=5.0, fid=200.0),
               rec("daf", "hybrid", 0, bits_per_dim=9.5, fid=100.0), rec("ddpm", "diffusion", 0, bits_per_dim=5.5, fid=300.0),
               rec("glow", "flow", 0, bits_per_dim=4.0, fid=50.0), rec("real-data", "real-data", 0, fid=400.0))
    notes = " ".join(findings.fence_notes(g))
    assert "`daf`: 9.5 bits/dim is worse than uniform noise" in notes
    assert "`ddpm`: bits/dim 5.5 is worse" in notes and "`ddpm`: FID 300 is worse" in notes
    assert "`glow`" not in notes and "`real-data`" not in notes
    smoke = groups(*[dataclasses.replace(r, profile="smoke") for recs in g.values() for r in recs])
    assert "reference` floor" not in " ".join(findings.fence_notes(smoke))  # smoke runs are expected to be bad


def test_models_outside_the_sample_regime_are_named_with_the_reason_outside_smoke():
    """Issue 17's regime: coverage KL <= 0.1 and FID within 10x of the real-data row; each failed criterion named."""
    g = groups(rec("real-data", "real-data", 0, fid=6.0, coverage_kl=0.01),
               rec("ddpm", "diffusion", 0, fid=70.0, coverage_kl=0.15),  # 11.7x and KL above 0.1
               rec("nsf", "flow", 0, fid=50.0, coverage_kl=0.08), rec("nsf", "flow", 1, fid=60.0, coverage_kl=0.09),
               rec("glow", "flow", 0, fid=40.0, coverage_kl=0.3))
    notes = findings.regime_notes(g)
    ddpm = next(n for n in notes if n.startswith("`ddpm`"))
    assert "class-coverage KL 0.15 > 0.1" in ddpm and "FID 70 is 11.67x the real-data row's 6" in ddpm
    glow = next(n for n in notes if n.startswith("`glow`"))
    assert "KL 0.3" in glow and "FID" not in glow.split("(")[1].split(")")[0]
    assert not any(n.startswith(("`nsf`", "`real-data`")) for n in notes)  # 55 = 9.2x and KL 0.085: in the regime
    assert any(n.startswith("`ddpm`: its samples") for n in findings.fence_notes(g))
    smoke = groups(*[dataclasses.replace(r, profile="smoke") for recs in g.values() for r in recs])
    assert not any("regime" in n for n in findings.fence_notes(smoke))


def test_a_verdict_between_runs_that_have_not_learned_the_metric_carries_a_caveat():
    """A ✓ on a likelihood worse than the reference floor, or on samples out of the regime, is no finding: the
    verdict keeps its sign but is marked, naming the run and why; a run that learned gets no mark."""
    nll = {"id": "n", "statement": "a below b", "source": "test", "metric": "bits_per_dim", "numerator": "iddpm",
           "denominator": "ddpm", "relation": "<"}
    g = groups(rec("reference", "reference", 0, bits_per_dim=5.0), rec("iddpm", "diffusion", 0, bits_per_dim=7.5),
               rec("ddpm", "diffusion", 0, bits_per_dim=8.5), rec("glow", "flow", 0, bits_per_dim=4.0),
               rec("real-data", "real-data", 0, fid=6.0, coverage_kl=0.01),
               rec("cfm", "flow-matching", 0, fid=20.0, coverage_kl=0.02), rec("dcgan", "gan", 0, fid=90.0, coverage_kl=0.05))
    (v,) = findings.judge(nll, g)
    assert v.verdict == findings.REPRODUCED and v.shown_verdict() == findings.REPRODUCED + " ⚠"
    assert "iddpm: bits/dim 7.5 is worse than the independent-pixel `reference` floor (5)" in v.caveat
    assert "ddpm: 8.5 bits/dim is worse than uniform noise" in v.caveat and v.shown_why().startswith("⚠ ")
    (learned,) = findings.judge(dict(nll, numerator="glow", denominator="reference"), g)
    assert learned.caveat == "" and learned.shown_verdict() == findings.REPRODUCED
    (fid,) = findings.judge(dict(LESS, numerator="cfm", denominator="dcgan"), g)
    assert fid.caveat == "dcgan: not in the regime (FID 90 is 15x the real-data row's 6 (more than 10x))"
    (cov,) = findings.judge(dict(LESS, metric="coverage_kl", numerator="cfm", denominator="glow"),
                            groups(*[r for recs in g.values() for r in recs], rec("glow", "flow", 0, fid=30.0, coverage_kl=0.4)))
    assert cov.caveat == ""  # a coverage claim measures the KL itself: only FID out of the regime would mark it
    speed = dict(LESS, metric="train_images_per_second", numerator="iddpm", denominator="ddpm")
    g_speed = groups(*[dataclasses.replace(r, timings={"train_images_per_second": 1.0 + r.seed})
                       for recs in g.values() for r in recs])
    assert all(v.caveat == "" for v in findings.judge(speed, g_speed))  # speed needs no learning


# ---- every claim kind: a ✓, a ✗ and a ~ each, on hand-made records --------------------------------------------

APPROX = {"id": "t", "statement": "a about half of b", "source": "test", "metric": "sample_seconds_per_image",
          "numerator": "daf", "denominator": "ddpm", "relation": "~", "value": 0.5, "tolerance": 1.5}


@pytest.mark.parametrize("a, err, verdict", [
    (0.5, 0.01, findings.REPRODUCED),       # 0.5 ± 0.02·2 inside [1/3, 3/4]
    (1.5, 0.01, findings.NOT_REPRODUCED),   # far outside
    (0.72, 0.05, findings.INCONCLUSIVE),    # 0.72 inside, but 0.72 + 2·0.05 crosses 0.75
])
def test_an_approximate_ratio_claim_has_all_three_verdicts(a, err, verdict):
    g = groups(rec("daf", "hybrid", 0, sample_seconds_per_image={"value": a, "stderr": err}),
               rec("ddpm", "diffusion", 0, sample_seconds_per_image={"value": 1.0, "stderr": 0.0}))
    (v,) = findings.judge(APPROX, g)
    assert v.verdict == verdict and v.ratio == pytest.approx(a)


def test_a_ratio_claim_reads_sweep_entries_of_one_run():
    """"DDIM-20 comes close to the full chain": the same run under two samplers (fid@ddim-20 / fid)."""
    claim = {**APPROX, "metric": "fid", "numerator": "ddpm", "numerator_sampler": "ddim-20", "denominator": "ddpm",
             "value": 1.0}
    g = groups(rec("ddpm", "diffusion", 0, fid=10.0, fid__ddim_20=12.0))
    (v,) = findings.judge(claim, g)
    assert v.pair == "ddpm@ddim-20 / ddpm" and v.ratio == pytest.approx(1.2) and v.verdict == findings.REPRODUCED
    assert findings.judge(claim, groups(rec("ddpm", "diffusion", 0, fid=10.0)))[0].verdict == findings.NOT_MEASURABLE


TREND = {"id": "t", "statement": "precision rises with w", "source": "test", "kind": "trend", "run": "cfm-cfg",
         "metric": "precision", "sweep": ["w0", "w1", "w3"], "direction": "increasing", "parameter": "guidance w"}


def trend_records(values, err):
    metrics = {f"precision__{label}": {"value": v, "stderr": err} for label, v in zip(("w0", "w1", "w3"), values)}
    return groups(rec("cfm-cfg", "flow-matching", 0, **metrics))


@pytest.mark.parametrize("values, err, verdict", [
    ((0.5, 0.6, 0.7), 0.01, findings.REPRODUCED),
    ((0.7, 0.6, 0.5), 0.01, findings.NOT_REPRODUCED),
    ((0.5, 0.8, 0.7), 0.01, findings.NOT_REPRODUCED),   # up overall, but one step falls by far more than its noise
    ((0.50, 0.51, 0.52), 0.02, findings.INCONCLUSIVE),  # 0.02 up end to end, 2 SE of the difference is 0.057
])
def test_a_trend_claim_has_all_three_verdicts(values, err, verdict):
    (v,) = findings.judge(TREND, trend_records(values, err))
    assert v.verdict == verdict, v.why
    assert v.shown().startswith(" → ".join(T.fmt(x) for x in values))


def test_a_trend_over_seeds_uses_their_spread_and_a_missing_entry_is_not_measurable():
    two = [rec("cfm-cfg", "flow-matching", s, precision__w0=0.5 + d, precision__w1=0.6 + d, precision__w3=0.7 + d)
           for s, d in ((0, 0.0), (1, 0.01))]
    assert findings.judge(TREND, groups(*two))[0].verdict == findings.REPRODUCED
    short = groups(rec("cfm-cfg", "flow-matching", 0, precision__w0=0.5, precision__w1=0.6))
    v = findings.judge(TREND, short)[0]
    assert v.verdict == findings.NOT_MEASURABLE and "w3" in v.why


FEWER = {"id": "t", "statement": "OT needs fewer steps", "source": "test", "kind": "nfe_at_quality",
         "numerator": "ot-cfm", "denominator": "cfm", "metric": "fid", "sweep": ["euler-2", "euler-4", "euler-8"]}


def nfe_run(model, fids, err):
    metrics = {}
    for label, nfe, fid in zip(("euler_2", "euler_4", "euler_8"), (2, 4, 8), fids):
        metrics[f"fid__{label.replace('_', '-')}"] = {"value": fid, "stderr": err}
        metrics[f"nfe__{label.replace('_', '-')}"] = nfe
    return rec(model, "flow-matching", 0, **metrics)


@pytest.mark.parametrize("ot, ind, err, verdict, shown", [
    # OT reaches FID 10 (the best both reach) at 4 NFE even at +2 SE, the independent path only at 8 even at -2 SE
    ((20.0, 8.0, 7.0), (40.0, 25.0, 10.0), 0.5, findings.REPRODUCED, "4 vs 8 NFE"),
    ((40.0, 25.0, 10.0), (20.0, 8.0, 7.0), 0.5, findings.NOT_REPRODUCED, "8 vs 4 NFE"),
    # at 4 NFE both sit within 2 SE of the level 10 (10.4 and 10.6, SE 0.5): either could reach it first
    ((20.0, 10.4, 7.0), (40.0, 10.6, 10.0), 0.5, findings.INCONCLUSIVE, "8 vs 8 NFE"),
])
def test_an_nfe_at_quality_claim_has_all_three_verdicts(ot, ind, err, verdict, shown):
    """The level is the best FID both runs reach; with per-point standard errors a difference of one sweep step
    whose values are within noise is inconclusive."""
    (v,) = findings.judge(FEWER, groups(nfe_run("ot-cfm", ot, err), nfe_run("cfm", ind, err)))
    assert v.verdict == verdict and v.shown().startswith(shown), (v.verdict, v.shown())


def test_runs_of_different_budgets_are_judged_at_the_compute_both_reached():
    """A ladder whose flow stops at x4 while DDPM goes on to x8: DDPM is read at its x4 evaluation (the curve point
    at half its budget), so "DDPM's FID below the flow's" compares equal compute; the floor's steps budget stays."""
    def with_budget(r, value, kind="flops", curve=()):
        return dataclasses.replace(r, budget={"kind": kind, "value": value}, curve=list(curve))

    ddpm_x4 = {"fraction": 0.5, "metrics": {"fid": {"value": 90.0}}}
    ddpm = [with_budget(rec("ddpm", "diffusion", s, fid=20.0 + s), 8e13, curve=[ddpm_x4]) for s in (0, 1)]
    flow = [with_budget(rec("resflow", "flow", s, fid=60.0 + s), 4e13) for s in (0, 1)]
    floor = with_budget(rec("reference", "reference", 0, fid=400.0), 370000, kind="steps")
    real = with_budget(rec("real-data", "real-data", 0, fid=5.0), 8e13)  # trains nothing: no curve, kept as it is
    g = groups(*ddpm, *flow, floor, real)
    assert findings.judge(LESS, g)[0].verdict == findings.REPRODUCED  # final records: 8e13 against 4e13 FLOPs
    common, note = findings.at_common_compute(g)
    assert [findings.run_mean(common[run], "fid") for run in ("ddpm", "resflow", "reference", "real-data")] == \
        [90.0, 60.5, 400.0, 5.0]
    (v,) = findings.judge(LESS, common)
    assert v.verdict == findings.NOT_REPRODUCED and v.ratio == pytest.approx(90.0 / 60.5)
    assert "4e+13 flops" in note and "ddpm at its evaluation at 0.5" in note and "left out" not in note
    # a longer run without an evaluation at that compute is left out, not judged on its extra training
    bare = groups(*[dataclasses.replace(r, curve=[]) for r in ddpm], *flow)
    left, note = findings.at_common_compute(bare)
    assert set(left) == {"resflow"} and "left out" in note
    assert findings.at_common_compute(groups(*flow)) == (groups(*flow), "")
