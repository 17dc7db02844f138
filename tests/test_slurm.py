"""`bench submit` against a REAL single-node SLURM cluster on localhost (tests/slurm_localhost.py).

One array submission (through submitit, throttled to 2 tasks at once) of four tasks of the
digits suite's reference model. Both seeds are interrupted while they train, each through one of
SLURM's two paths: seed 0 by ``scontrol requeue`` (SIGTERM; SLURM restarts the job), seed 1 by a
preemption notice (``scancel --signal=USR2``; submitit's handler checkpoints the task and requeues it).
Each must resume from its checkpoint to the same metrics as an uninterrupted run. A second run
name with an invalid learning rate fails. Skipped with the reason when
the SLURM packages are missing (scripts/install_slurm.sh) or the daemons do not start.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm_localhost import ClusterUnavailable, LocalSlurm

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
# About 13 s of training per task (6 ms a step at batch 4096, one thread): time for a signal to land
# mid-training even on a slow, loaded machine.
STEPS = 2000
COMMON = ["--budget", f"steps={STEPS}", "--set", "train.checkpoint_every_s=0.3", "--set",
          'eval.metrics=["bits_per_dim"]', "--device", "cpu"]


# The digits data with two run names only: the embedded default's reference model and a broken copy (a finite
# learning rate, so `bench submit` accepts it, that overflows float32 in the optimizer's first step inside the task).
SUITE = """
name = "digits"
[data]
dataset = "digits"
image_size = 16
channels = 1
[train]
batch_size = 4096
eval_fractions = [0.5, 1.0]
[eval]
metrics = ["bits_per_dim"]
[models.reference]
lr = 0.05
[models.broken]
model = "reference"
lr = 1e39
[profiles.smoke]
budget = { steps = 100 }
"""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


def bench(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, env=env(), capture_output=True,
                       text=True, timeout=300)
    if check:
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except ClusterUnavailable as e:
        pytest.skip(f"no local SLURM cluster: {e}")
    yield c
    c.stop()


@pytest.fixture(scope="module")
def submission(cluster, tmp_path_factory):
    """Submit the array, interrupt both reference seeds mid-training, run the uninterrupted runs meanwhile."""
    root = tmp_path_factory.mktemp("submit")
    suite = root / "suite.toml"
    suite.write_text(SUITE)
    out = bench("submit", "--suite", str(suite), "--cluster-profile", "localhost", "--seed", "0", "--seed", "1",
                *COMMON, "--results", str(root / "results"), cwd=root)
    folder = Path(out.stdout.split("submission ", 1)[1].split(": ", 1)[1].splitlines()[0])
    data = json.loads((folder / "submission.json").read_text())
    # the uninterrupted runs of both seeds, locally, while the cluster works
    ref = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "--suite", str(suite), "--model", "reference",
                            "--seed", "0", "--seed", "1", *COMMON, "--quiet", "--no-report",
                            "--results", str(root / "ref"), "--checkpoints", str(root / "ref-ckpt")],
                           cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tasks = {t["seed"]: t for t in data["tasks"] if t["model"] == "reference"}
    how = {0: ["scontrol", "requeue", tasks[0]["job_id"]],  # SIGTERM, SLURM requeues
           # preemption notice to the task's step (srun's step 0) as SLURM sends it before a time limit; submitit
           # requeues. Signalling the job instead can answer "transitional state" and make scancel retry
           # for seconds, re-signalling the requeued task.
           1: ["scancel", "--signal=USR2", f"{tasks[1]['job_id']}.0"]}
    ckpts = folder / "checkpoints" / "digits" / "smoke"
    interrupted_after, answers = {}, {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    t_end = time.monotonic() + 150
    while time.monotonic() < t_end and len(interrupted_after) < 2:
        for seed in set(how) - set(interrupted_after):
            found = list(ckpts.glob(f"reference__seed{seed}__*/latest.json"))
            if found:
                step = json.loads(found[0].read_text())["files"][0]["step"]
                if step >= 10:
                    # Too late to land inside training (the runner also checkpoints when training ends):
                    # the test cannot show a resume, so it says so rather than passing or failing by chance.
                    assert step <= STEPS // 4, f"task {seed} was first seen at step {step} of {STEPS}: too fast to interrupt"
                    interrupted_after[seed] = step
                    # in a thread: scancel can block for seconds ("transitional state"), and polling must go on
                    # meanwhile, or the other task trains to its end unseen
                    answers[seed] = pool.submit(cluster.run, *how[seed], check=False)
        time.sleep(0.05)
    answers = {seed: future.result() for seed, future in answers.items()}
    pool.shutdown()
    assert len(interrupted_after) == 2, "a task never checkpointed: " + cluster.run("squeue", check=False).stdout
    collected = bench("collect", "--results", str(root / "results"), "--wait", "200", "--no-report", cwd=root,
                      check=False)
    assert ref.wait(300) == 0, ref.stderr.read().decode()[-2000:]
    return {"root": root, "folder": folder, "data": data, "answers": answers, "interrupted_after": interrupted_after,
            "collect": collected, "status": bench("status", "--results", str(root / "results"), cwd=root)}


def records(sub) -> dict[tuple[str, int], dict]:
    out = {}
    for p in (sub["root"] / "results" / "runs").rglob("*.json"):
        r = json.loads(p.read_text())
        out[(r["model"], r["seed"])] = r
    return out


def task_logs(sub, index: int) -> str:
    """The tail of one array task's submitit logs, for failure messages."""
    out = ""
    for log in sorted(sub["folder"].glob(f"submitit/*_{index}/*_log.*")):
        out += f"\n--- {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
    return out


def test_array_submission_through_submitit(submission, cluster):
    data, folder = submission["data"], submission["folder"]
    assert data["executor"] == "slurm" and data["array_job_id"]
    assert [t["job_id"] for t in data["tasks"]] == [f"{data['array_job_id']}_{i}" for i in range(4)]
    assert data["suite"]["budget"] == {"steps": float(STEPS)}  # the resolved config is stored
    script = next(folder.glob("submitit/*/*_submission.sh")).read_text()
    assert "--array=0-3%2" in script  # array throttling from the cluster profile
    done, deadline = f"{data['array_job_id']}_1|COMPLETED", time.monotonic() + 60
    while True:  # accounting (slurmdbd) can show a requeued task RUNNING for a while after it completed
        acct = cluster.run("sacct", "-n", "-X", "-P", "-j", data["array_job_id"], "--format=JobID,State").stdout
        if done in acct or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert done in acct, acct + task_logs(submission, 1)
    assert "COMPLETED" in submission["status"].stdout


def test_records_collected_and_separate(submission):
    recs = records(submission)
    assert set(recs) == {("reference", 0), ("reference", 1), ("broken", 0), ("broken", 1)}
    assert recs[("reference", 1)]["status"] == "ok"
    assert recs[("reference", 1)]["submission"]["id"] == submission["data"]["id"]
    paths = list((submission["root"] / "results" / "runs").rglob("*.json"))
    assert len(paths) == len(set(paths)) == 4  # one file per task, nothing overwritten
    assert "4/4 task record(s)" in submission["collect"].stdout, submission["collect"].stdout


def test_failing_task_leaves_the_others_intact(submission):
    recs = records(submission)
    for seed in (0, 1):
        bad = recs[("broken", seed)]
        assert bad["status"] == "failed" and "overflow" in bad["error"], bad["error"]
    assert recs[("reference", 0)]["status"] == recs[("reference", 1)]["status"] == "ok"
    assert "failed" in submission["status"].stdout


@pytest.mark.parametrize("seed, signal_name", [(0, "SIGTERM"), (1, "SIGUSR2")],
                         ids=["scontrol-requeue", "preemption-usr2"])
def test_interrupted_task_resumes_with_identical_metrics(submission, seed, signal_name):
    answer = submission["answers"][seed]
    assert answer.returncode == 0, answer.stderr
    recs = records(submission)
    assert ("reference", seed) in recs, f"no record for seed {seed}" + task_logs(submission, seed)
    rec = recs[("reference", seed)]
    ref = next(r for r in map(json.loads, (p.read_text() for p in (submission["root"] / "ref").rglob("*.json")))
               if r["seed"] == seed)
    signals = [i.get("signal") for i in rec["interruptions"] if "signal" in i]
    resumed = [i["resumed_at_step"] for i in rec["interruptions"] if "resumed_at_step" in i]
    if not resumed:
        pytest.fail(f"task {seed} was not resumed (finished before the signal?): {rec['interruptions']}")
    # the runner checkpointed at the step boundary after this signal. scancel may deliver the notice again
    # to the requeued task while SLURM still reports the job in transition: each delivery must resume too.
    assert signals and set(signals) == {signal_name}, rec["interruptions"]
    assert len(resumed) == len(signals), rec["interruptions"]
    assert resumed[0] >= submission["interrupted_after"][seed]
    assert rec["train"]["steps"] == ref["train"]["steps"] == STEPS
    assert rec["metrics"]["bits_per_dim"]["value"] == ref["metrics"]["bits_per_dim"]["value"]
    assert rec["train"]["loss_curve"] == ref["train"]["loss_curve"]
    assert [c["metrics"] for c in rec["curve"]] == [c["metrics"] for c in ref["curve"]]
