"""One declaration per metric (``@metric(..., outputs=...)``): the runner, prefetch/preflight, the report and
``bench compare`` all read it, and a metric cannot write a value it did not declare."""

from __future__ import annotations

import types

import pytest

from bench import metrics
from bench.tolerances import Tolerances
from bench.errors import BenchError
from bench.metrics import Output, extractors
from bench.report import tables


@pytest.fixture
def toy_metric():
    """Registers metrics for one test and removes them after, so the registry other tests see is unchanged."""
    added: list[str] = []

    def register(name, fn, **declaration):
        metrics.metric(name, **declaration)(fn)
        added.append(name)

    yield register
    for name in added:
        metrics.METRICS.pop(name, None)


def no_stop():
    return types.SimpleNamespace(check_stop=lambda: None)


def test_a_value_the_metric_did_not_declare_is_an_error_in_the_record_not_a_silent_extra(toy_metric):
    toy_metric("toy_declared", lambda ctx: {"toy_a": metrics.value(1.0)}, outputs={"toy_a": Output("lower")})
    toy_metric("toy_sloppy", lambda ctx: {"toy_a2": metrics.value(2.0), "toy_b": metrics.value(3.0)},
               outputs={"toy_a2": Output("lower")})
    out = metrics.compute(["toy_declared", "toy_sloppy"], no_stop())
    assert out["toy_a"]["value"] == 1.0  # the other metric is kept
    assert "toy_a2" not in out and "toy_b" not in out
    assert out["toy_sloppy"]["value"] is None and "toy_b" in out["toy_sloppy"]["note"]


def test_patterns_declare_families_of_keys_and_exact_keys_win(toy_metric):
    toy_metric("toy_speed", lambda ctx: {}, outputs={"toy_seconds": Output("lower", "timing"), "toy_*": Output()})
    assert metrics.describe("toy_seconds") == Output("lower", "timing")
    assert metrics.describe("toy_seconds@ddim-10") == Output("lower", "timing")  # a sweep's key is its base key's
    assert metrics.describe("toy_eta").direction == "none"
    assert metrics.describe("never_declared") is None
    assert metrics.producer("toy_eta") == "toy_speed"


def test_bad_declarations_fail_where_they_are_written():
    with pytest.raises(ValueError, match="direction"):
        Output("smaller")
    with pytest.raises(ValueError, match="kind"):
        Output("lower", "latency")
    with pytest.raises(BenchError, match="did you mean 'fid'"):
        metrics.get("fidd")


def test_compare_judges_a_metric_by_its_declared_direction_unless_a_tolerance_file_says_otherwise(toy_metric, tmp_path):
    toy_metric("toy_sharpness", lambda ctx: {}, outputs={"toy_sharpness": Output("higher")})
    tol = Tolerances.load()
    assert tol.rule("any-suite", "toy_sharpness")["direction"] == "higher"
    assert tol.rule("any-suite", "toy_sharpness@ddim-5")["direction"] == "higher"
    assert tol.rule("any-suite", "never_declared")["direction"] == "none"  # informational, never judged
    assert tol.rule("any-suite", "peak_rss_mb")["kind"] == "memory"  # the harness's own timings are declared too
    override = tmp_path / "tol.toml"
    override.write_text('[metrics.toy_sharpness]\ndirection = "lower"\n')
    assert Tolerances.load(override).rule("any-suite", "toy_sharpness")["direction"] == "lower"


def test_the_default_tolerance_file_holds_tolerances_only():
    for table in Tolerances.load().tables:
        entries = [table.get("defaults", {}), *table.get("metrics", {}).values()]
        assert not any({"direction", "kind"} & set(e) for e in entries)


def test_a_declared_feature_space_metric_needs_the_extractors_weights_before_training(toy_metric, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("GENBENCH_WEIGHTS_DIR", str(empty))
    monkeypatch.setenv("TORCH_HOME", str(empty))
    eval_cfg = {"metrics": ["toy_fd"], "feature_extractor": "dinov2-vit-s-14"}
    toy_metric("toy_fd", lambda ctx: {}, outputs={"toy_fd": Output("lower", feature_space=True)})
    extractors.preflight(eval_cfg, "mnist", empty)  # not declared as needing the extractor: nothing to stage
    toy_metric("toy_fd", lambda ctx: {}, needs_extractor=True, reads_samples=True,
               outputs={"toy_fd": Output("lower", feature_space=True)})
    with pytest.raises(BenchError, match="dinov2_vits14_pretrain.pth"):
        extractors.preflight(eval_cfg, "mnist", empty)


def test_the_reports_columns_and_their_headers_come_from_the_declarations():
    cols = {key: header for header, key, _ in tables.metric_columns()}
    for key in ("fid", "is", "kid", "precision", "recall", "coverage_kl", "nfe", "train_mfu"):
        assert cols[key] == metrics.describe(key).column and cols[key]
    assert tables.in_feature_space("fid") and tables.in_feature_space("recall@ddim-5")
    assert not tables.in_feature_space("coverage_kl")  # its own domain classifier, whatever eval.feature_extractor is


def test_the_runner_sweeps_and_the_real_data_row_follow_the_declarations():
    from bench import real_data

    swept = {n for n in metrics.known_metrics() if metrics.get(n).sampler_dependent}
    assert {"fid", "is", "kid", "precision_recall", "class_coverage", "sampling_speed"} <= swept
    assert not swept & {"bits_per_dim", "bits_per_dim_exact", "cost"}  # nothing here depends on the sampler
    assert real_data.wanted(["bits_per_dim", "fid", "sampling_speed", "class_coverage", "cost"]) == ["fid", "class_coverage"]


def test_a_metric_declared_only_here_gets_its_report_column_with_no_list_to_edit(toy_metric):
    """The report's main table takes a column from the declaration alone (bench.metrics.columns)."""
    from collections import OrderedDict

    from tests.helpers import run_record

    toy_metric("toy_sharpness", lambda ctx: {}, reads_samples=True,
               outputs={"toy_sharpness": Output("higher", column="sharpness (toy)")})
    recs = [run_record(model="m", seed=s, family="flow", metrics={"toy_sharpness": {"value": v}})
            for s, v in ((0, 1.0), (1, 3.0))]
    headers, rows, _ = tables.model_table(OrderedDict(m=recs))
    assert "sharpness (toy)" in headers
    assert rows[0][headers.index("sharpness (toy)")] == tables.fmt_mean_std([1.0, 3.0])
