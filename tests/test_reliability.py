"""Shared folders, bad records, bad paths, full disks and unusable checkpoints (issue 20's defects)."""

import errno
import json
import os
import stat
import sys

import pytest

from bench import checkpoint, cli, records
from bench.launch import slurm
from tests.helpers import run_cli


def test_written_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = records.write_record({"suite": "s", "profile": "p", "model": "m", "seed": 0, "status": "ok"}, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp alone gives 0600: unreadable to the group


def test_a_malformed_or_truncated_record_is_skipped_with_one_warning(tmp_path, capsys):
    good = records.write_record({"suite": "s", "profile": "p", "model": "m", "seed": 0, "status": "ok"}, tmp_path)
    folder = good.parent
    (folder / "missing-keys.json").write_text(json.dumps({"suite": "s", "model": "x"}))
    (folder / "truncated.json").write_text('{"suite": "s", "prof')
    recs = records.load_records(tmp_path)
    assert [r.model for r in recs] == ["m"]
    err = capsys.readouterr().err
    assert "missing-keys.json: missing key(s) profile, seed, status" in err
    assert "truncated.json: unreadable" in err
    code, out, err = run_cli(["results", "--results", str(tmp_path)], capsys)
    assert code == 0 and " m " in out and "warning: skipping record" in err


@pytest.mark.parametrize("target, message", [
    ("folder", "is a folder"), ("missing/x.csv", "does not exist"),
])
def test_results_csv_to_a_bad_path_is_a_one_line_error(tmp_path, capsys, target, message):
    records.write_record({"suite": "s", "profile": "p", "model": "m", "seed": 0, "status": "ok"}, tmp_path / "r")
    (tmp_path / "folder").mkdir()
    code, out, err = run_cli(["results", "--results", str(tmp_path / "r"), "--csv", str(tmp_path / target)], capsys)
    assert code == cli.EXIT_USER_ERROR and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_full_disk_is_one_clear_error_not_a_failed_model():
    e = OSError(errno.ENOSPC, "No space left on device", "/data/results/x.json")
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = e
    msg = records.disk_full_message(wrapped)
    assert msg and "out of disk space writing /data/results/x.json" in msg and "--resume" in msg
    assert records.disk_full_message(OSError(errno.EACCES, "denied")) is None


def test_unusable_checkpoints_are_reported_not_silently_ignored(tmp_path):
    (tmp_path / "ckpt-10.pt").write_bytes(b"x")
    (tmp_path / "latest.json").write_text("{not json")
    payload, notes = checkpoint.load(tmp_path)
    assert payload is None and notes == ["latest.json unreadable (JSONDecodeError)"]
    (tmp_path / "latest.json").unlink()
    assert checkpoint.load(tmp_path)[1] == ["latest.json missing next to ckpt-10.pt"]
    assert checkpoint.load(tmp_path / "none") == (None, [])  # nothing to resume: nothing to say


def test_list_prints_full_names_when_piped(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "\nmnist-flow-vs-ddpm\t" in out and "celeba-daf-vs-ddpm-vs-nsf\t" in out
    models = [line.split("\t") for line in out.split("# suites")[0].splitlines()[1:]]
    assert models and all(row[-1].strip() for row in models)  # every model has a summary
    assert cli.main(["list", "--json"]) == 0
    assert {m["name"] for m in json.loads(capsys.readouterr().out)["models"]} >= {"ddpm", "glow", "reference"}


@pytest.mark.parametrize("profile", slurm.profile_names())
def test_dry_run_writes_the_sbatch_script_of_the_cluster_profile(tmp_path, capsys, profile):
    code, out, err = run_cli(["submit", "--dry-run", "--cluster-profile", profile, "--model", "reference",
                              "--results", str(tmp_path)], capsys)
    assert code == 0, err
    script = next(tmp_path.rglob("array.sbatch"))
    assert f"sbatch {script}" in out
    text = script.read_text()
    prof = slurm.load_profile(profile)
    assert "@@" not in text and "#SBATCH --array=0-0%" in text
    assert f"#SBATCH --cpus-per-task={int(prof['cpus_per_task'])}" in text
    assert f"#SBATCH --mem={float(prof['mem_gb']):g}G" in text
    assert f"#SBATCH --signal=B:USR2@{int(prof['signal_delay_s'])}" in text and "#SBATCH --requeue" in text
    for key in ("partition", "account", "qos"):
        assert (f"#SBATCH --{key}={prof.get(key)}" in text) == bool(prof.get(key))
    assert ("#SBATCH --gres=gpu:" in text) == bool(prof.get("gpus"))
    for line in prof["setup"]:
        assert line in text
    for key, value in prof["sbatch"].items():
        assert f"#SBATCH --{key.replace('_', '-')}" in text
    # the interpreter: the profile's, else the setup lines' environment's python3, never this machine's path behind
    # an activated venv
    expected = prof.get("python") or ("python3" if prof["setup"] else sys.executable)
    assert f"PYTHON=${{PYTHON:-{expected}}}" in text


def test_a_failed_write_names_the_file_it_was_writing(tmp_path, monkeypatch):
    """A full disk fails write()/fsync(), whose OSError names no file: the error still says which one."""
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.os, "fsync", full)
    with pytest.raises(OSError) as e:
        records.atomic_write_text(tmp_path / "runs" / "x.json", "{}")
    msg = records.disk_full_message(e.value)
    assert msg and f"out of disk space writing {tmp_path / 'runs' / 'x.json'}" in msg
    assert not list((tmp_path / "runs").iterdir())  # no temp file left behind


def test_plain_progress_prints_at_most_one_line_per_interval_and_the_last_step():
    from types import SimpleNamespace

    from bench.progress import PlainProgress

    now = [0.0]
    lines: list[str] = []
    progress = PlainProgress(lines.append, every=30.0, clock=lambda: now[0])
    state = SimpleNamespace(step=0)
    done = [False]
    tr = SimpleNamespace(state=state, budget="100 steps", finished=lambda: done[0],
                         progress=lambda: state.step / 100, throughput=lambda: 50.0)
    for step in range(1, 101):
        state.step, now[0] = step, step * 1.0  # one step per second
        done[0] = step == 100
        progress.update("glow seed 0", tr, 2.5)
    assert len(lines) == 4  # steps 31, 61, 91 (30 s after the first step each) and the final one, not one per step
    # ETA at step 31: 30 s elapsed for 31 % of the budget -> 30 * 0.69 / 0.31 = 66.8 s
    assert lines[0] == "glow seed 0: step 31, 31% of 100 steps, loss 2.5, 50 img/s, ETA 1m07s"
    assert lines[-1].startswith("glow seed 0: step 100, 100% of 100 steps") and lines[-1].endswith("ETA 0m00s")


def test_results_csv_to_a_read_only_place_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    # root ignores chmod, so the refusal the file system would give a user is injected where the CSV is written
    records.write_record({"suite": "s", "profile": "p", "model": "m", "seed": 0, "status": "ok"}, tmp_path / "r")

    def refuse(path, text):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(records, "atomic_write_text", refuse)
    code, out, err = run_cli(["results", "--results", str(tmp_path / "r"), "--csv", str(tmp_path / "x.csv")], capsys)
    assert code == cli.EXIT_USER_ERROR and err.count("\n") == 1
    assert err.startswith("error: cannot write --csv") and "Permission denied" in err and "writable path" in err


def test_bench_run_on_a_full_disk_stops_with_one_error_and_keeps_the_records_written(tmp_path, capsys, monkeypatch):
    from bench import run_record
    from tests.helpers import TINY_DIGITS, write_suite

    suite = write_suite(tmp_path / "s.toml", TINY_DIGITS.replace("[models.reference]",
                                                                 "[models.reference]\n    [models.second]\n    model = \"reference\""))
    real_write, calls = run_record.write_record, []

    def fill_up(record, folder):
        calls.append(record.model)
        if record.model == "second":
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "second.json"))
        return real_write(record, folder)

    monkeypatch.setattr(run_record, "write_record", fill_up)
    results = tmp_path / "results"
    code, out, err = run_cli(["run", "--suite", str(suite), "--results", str(results), "--checkpoints",
                              str(tmp_path / "ck"), "--no-report", "--quiet"], capsys)
    assert calls[-1] == "second"
    assert code == cli.EXIT_USER_ERROR and err.count("\n") == 1 and "out of disk space" in err and "--resume" in err
    written = records.load_records(results)
    assert [r.model for r in written] == ["reference"] and written[0].status == "ok"  # nothing recorded as failed


def test_a_held_out_split_is_named_in_the_record_and_the_report(tmp_path, capsys):
    import numpy as np

    from tests.helpers import TINY_DIGITS, write_suite

    x = np.random.default_rng(0).integers(0, 256, (50, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", x=x)
    body = TINY_DIGITS.replace('dataset = "digits"', f'dataset = "npz"\n    path = "{tmp_path / "mine.npz"}"')
    suite = write_suite(tmp_path / "s.toml", body)
    results, reports = tmp_path / "results", tmp_path / "reports"
    code, out, err = run_cli(["run", "--suite", str(suite), "--results", str(results), "--checkpoints",
                              str(tmp_path / "ck"), "--reports", str(reports), "--quiet"], capsys)
    assert code == 0, err
    (rec,) = records.load_records(results)
    assert rec.data["train_size"] == 45 and rec.data["eval_size"] == 5
    assert "held-out split: 10% of mine.npz ('x', no x_test), seed 0" in rec.data["eval"]
    report = next(reports.rglob("README.md")).read_text()
    assert "held-out split: 10% of mine.npz ('x', no x_test), seed 0" in report
