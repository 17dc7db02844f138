import json
import os

import pytest

from bench import records


def rec(**kw):
    base = {"suite": "s", "profile": "smoke", "model": "m", "seed": 0, "status": "ok", "finished": "2026-01-01T00:00:00.000000Z",
            "metrics": {"fid": {"value": 3.0, "protocol": {}}, "bits_per_dim": {"value": float("nan")}},
            "timings": {"train_images_per_second": 10.0}}
    base.update(kw)
    return base


def test_records_are_never_overwritten(tmp_path):
    a = records.write_record(rec(), tmp_path)
    b = records.write_record(rec(metrics={"fid": {"value": 4.0}}), tmp_path)
    assert a != b and a.exists() and b.exists()
    assert json.loads(a.read_text())["metrics"]["fid"]["value"] == 3.0
    assert json.loads(a.read_text())["metrics"]["bits_per_dim"]["value"] is None  # NaN -> null: strict JSON


def test_a_crash_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        records.write_record(rec(), tmp_path)
    folder = records.record_dir(tmp_path, "s", "smoke")
    assert list(folder.iterdir()) == []  # neither the final file nor the temp file


def test_load_skips_corrupt_files_and_tables_metrics(tmp_path):
    records.write_record(rec(seed=0), tmp_path)
    records.write_record(rec(seed=1, finished="2026-01-02T00:00:00.000000Z"), tmp_path)
    (records.record_dir(tmp_path, "s", "smoke") / "junk.json").write_text("{not json")
    recs = records.load_records(tmp_path)
    assert [r.seed for r in recs] == [0, 1]
    df = records.records_table(recs)
    assert list(df["fid"]) == [3.0, 3.0] and list(df["train_images_per_second"]) == [10.0, 10.0]


def test_latest_per_run_keeps_the_newest(tmp_path):
    records.write_record(rec(finished="2026-01-01T00:00:00.000000Z"), tmp_path)
    records.write_record(rec(finished="2026-01-03T00:00:00.000000Z", metrics={"fid": {"value": 1.0}}), tmp_path)
    latest = records.latest_per_run(records.load_records(tmp_path))
    assert len(latest) == 1 and latest[0].metrics["fid"]["value"] == 1.0


def test_a_run_record_reads_old_and_odd_files_and_writes_back_what_it_does_not_know(tmp_path):
    """RunRecord.from_json: a missing or mistyped section reads as empty (readers never guard against None), a key
    this version does not know survives a rewrite, and what the runner hands to the writer is never written."""
    odd = {**rec(), "timings": None, "curve": {"not": "a list"}, "user_note": "rerun on the A100", "schema": 1}
    r = records.RunRecord.from_json(odd)  # no "train" section at all
    assert r.timings == {} and r.curve == [] and r.train == {} and r.extra == {"user_note": "rerun on the A100"}
    assert r.metric_value("fid") == 3.0 and r.metric("nfe") is None
    r.samples, r.clear_checkpoints = object(), "/tmp/ck"
    path = records.write_record(r, tmp_path)
    on_disk = json.loads(path.read_text())
    assert on_disk["user_note"] == "rerun on the A100" and next(iter(on_disk)) == "schema"
    assert not {"samples", "clear_checkpoints", "path", "extra"} & set(on_disk)
    (back,) = records.load_records(tmp_path)
    assert back.path == str(path) and back.extra == {"user_note": "rerun on the A100"}
    assert back.to_json() == on_disk  # a second rewrite changes nothing


def test_a_metric_value_of_the_wrong_type_is_a_warning_naming_record_and_key(tmp_path):
    """A hand edit that wrote "0.5" (a string) or [0.5] as a value used to become a silently blank cell."""
    path = records.write_record(rec(metrics={"fid": {"value": "12.5"}, "is": [3.0], "kid": {"value": 0.1},
                                             "bits_per_dim": {"value": None}}), tmp_path)
    warnings = []
    (loaded,) = records.load_records(tmp_path, warn=warnings.append)
    assert len(warnings) == 2
    assert any(str(path) in w and "'fid'" in w and "'12.5'" in w and "not a number" in w for w in warnings)
    assert any(str(path) in w and "'is'" in w and "not an object" in w for w in warnings)
    assert loaded.metric_value("kid") == 0.1  # the rest of the record stays usable
