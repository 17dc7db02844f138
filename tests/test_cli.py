"""The `bench` command as a user meets it: end to end, determinism, and every bad input."""

import subprocess
import sys

import pytest
import torch

from bench import cli, records
from bench.registry import GenerativeModel, register
from tests.helpers import TINY_DIGITS, run_cli, run_record, write_suite


@register
class NaNAtStep3(GenerativeModel):
    """Test model whose loss becomes NaN at step 3."""
    name = "test-nan"
    family = "diffusion"
    defaults = {"lr": 0.1}

    def __init__(self, config, data):
        super().__init__(config, data)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, step):
        loss = (self.w - 1).pow(2).sum() * (float("nan") if step >= 3 else 1.0)
        self.optimize(loss)
        return {"loss": float(loss.detach())}


@register
class Crashes(NaNAtStep3):
    """Test model that raises during training (after the step `bench run` tries before training: tests/test_preflight.py)."""
    name = "test-crash"

    def training_step(self, batch, step):
        if step >= 2:
            raise RuntimeError("boom: shapes do not match")
        return super().training_step(batch, step)


def args(workdirs, *extra):
    return ["run", "--results", str(workdirs["results"]), "--checkpoints", str(workdirs["checkpoints"]),
            "--reports", str(workdirs["reports"]), "--quiet", "--no-report", *extra]


def test_default_run_writes_a_record_per_model_and_prints_the_table(workdirs, capsys):
    code, out, err = run_cli(args(workdirs, "--budget", "steps=20"), capsys)
    assert code == 0, err
    recs = records.load_records(workdirs["results"], "digits", "smoke")
    assert {r.model for r in recs} >= {"reference"}
    ref = next(r for r in recs if r.model == "reference")
    assert ref.status == "ok" and ref.train["steps"] == 20 and ref.budget == {"kind": "steps", "value": 20.0}
    assert 0 < ref.metrics["bits_per_dim"]["value"] < 8
    assert ref.timings["train_images_per_second"] > 0 and ref.parameters == 16 * 16 * 256
    for key in ("config", "config_hash", "hardware", "versions", "git_commit", "started", "finished"):
        assert getattr(ref, key), key  # recorded, not left empty
    assert "reference" in out and "record(s) written" in out


def test_same_seed_same_machine_gives_identical_curves_and_metrics(workdirs, capsys, tmp_path):
    suite = write_suite(tmp_path / "s.toml", TINY_DIGITS.replace("{ steps = 5 }", "{ steps = 30 }"))
    for _ in range(2):
        assert run_cli(args(workdirs, "--suite", str(suite)), capsys)[0] == 0
    a, b = records.load_records(workdirs["results"], "tiny", "smoke")
    assert a.train["loss_curve"] == b.train["loss_curve"]
    assert a.metrics["bits_per_dim"]["value"] == b.metrics["bits_per_dim"]["value"]
    assert run_cli(args(workdirs, "--suite", str(suite), "--seed", "1"), capsys)[0] == 0
    c = [r for r in records.load_records(workdirs["results"], "tiny", "smoke") if r.seed == 1][0]
    assert c.train["loss_curve"] != a.train["loss_curve"]  # the seed changes the data order


def test_nan_loss_marks_the_run_diverged_and_the_suite_goes_on(workdirs, capsys, tmp_path):
    body = TINY_DIGITS.replace("[models.reference]", "[models.bad]\n    model = \"test-nan\"\n    [models.crash]\n    model = \"test-crash\"\n    [models.reference]")
    suite = write_suite(tmp_path / "s.toml", body.replace("{ steps = 5 }", "{ steps = 10 }"))
    code, out, err = run_cli(args(workdirs, "--suite", str(suite)), capsys)
    assert code == cli.EXIT_RUN_FAILED and "2 of 3 run(s) not ok" in err  # the suite went on; the exit says so
    by_model = {r.model: r for r in records.load_records(workdirs["results"], "tiny", "smoke")}
    assert by_model["bad"].status == "diverged" and "non-finite loss" in by_model["bad"].error
    assert by_model["bad"].train["steps"] == 3  # the NaN step is not counted
    assert by_model["crash"].status == "failed" and "boom" in by_model["crash"].error
    assert by_model["reference"].status == "ok"
    assert "bad seed 0: diverged" in out


@pytest.mark.parametrize("extra, message", [
    (["--suite", "mnist-flow-vs-dpm"], "unknown suite 'mnist-flow-vs-dpm' (did you mean 'mnist-flow-vs-ddpm'?)"),
    (["--model", "refrence"], "has no model 'refrence' (did you mean 'reference'?)"),
    (["--budget", "steps=0"], "must be a finite positive number"),
    (["--budget", "steps=-3"], "must be a finite positive number"),
    (["--budget", "seconds=inf"], "budget seconds must be a finite positive number, got inf"),
    (["--budget", "seconds=nan"], "budget seconds must be a finite positive number, got nan"),
    (["--set", 'models.reference.lr="fast"'], "models.reference.lr must be a finite number"),
    (["--set", "models.ddpm.lr="], "models.ddpm.lr must be a finite number > 0 for model 'ddpm' (default 0.0002), got ''"),
    (["--set", "models.glow.levels=-1"], "models.glow.levels must be a whole number >= 1"),
    (["--budget", "fortnights=2"], "unknown budget kind"),
    (["--set", "train.precision=fp8"], "train.precision must be 'fp32' or 'bf16'"),
    (["--set", "eval.num_samples=0"], "eval.num_samples must be a positive integer, got 0"),
    (["--set", "data.image_size=0"], "data.image_size must be a positive integer, got 0"),
    (["--set", "eval.bpd_batches=-1"], "eval.bpd_batches must be an integer >= 0"),
    (["--set", "eval.metrics=\"fid\""], "eval.metrics must be a list of metric names"),
    (["--set", "foo.bar=1"], "unknown top-level key 'foo'"),
    (["--profile", "pape"], "no profile 'pape'"),
    (["--set", "train.device=tpu"], "device 'tpu'"),
])
def test_bad_input_is_one_line_and_nonzero(workdirs, capsys, extra, message):
    if "mnist-flow-vs-dpm" in extra[-1]:
        from bench.suite import suite_names
        if "mnist-flow-vs-ddpm" not in suite_names():
            pytest.skip("main suite not shipped yet")
    records.write_record({"suite": "digits", "profile": "smoke", "model": "kept", "seed": 0, "status": "ok"},
                         workdirs["results"])
    code, out, err = run_cli(args(workdirs, *extra), capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert [r.model for r in records.load_records(workdirs["results"])] == ["kept"]  # nothing lost


def test_missing_data_names_the_file_and_the_fix(workdirs, capsys, tmp_path):
    from bench.suite import suite_names
    if "mnist-flow-vs-ddpm" not in suite_names():
        pytest.skip("main suite not shipped yet")
    code, out, err = run_cli(args(workdirs, "--suite", "mnist-flow-vs-ddpm", "--data-root", str(tmp_path)), capsys)
    assert code == 2 and "train-images-idx3-ubyte is missing" in err and "--data-root" in err


def test_no_traceback_reaches_the_user_from_the_console_script(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n")
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--suite", str(bad), "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: malformed suite file") and "Traceback" not in proc.stderr


def test_results_command_exports_csv(workdirs, capsys, tmp_path):
    assert run_cli(args(workdirs, "--budget", "steps=3", "--model", "reference"), capsys)[0] == 0
    csv = tmp_path / "r.csv"
    code, out, err = run_cli(["results", "--results", str(workdirs["results"]), "--csv", str(csv)], capsys)
    assert code == 0
    import pandas as pd
    df = pd.read_csv(csv)
    assert list(df["model"]) == ["reference"] and df["bits_per_dim"].iloc[0] > 0
    code, out, err = run_cli(["results", "--results", str(workdirs["results"])], capsys)
    header = next(line for line in out.splitlines() if "model" in line)
    assert code == 0 and header.index("suite") < header.index("profile") < header.index("model")
    row = next(line for line in out.splitlines() if "reference" in line)
    assert df["suite"].iloc[0] in row and df["profile"].iloc[0] in row  # the record's suite and profile


@register
class OddInfo(GenerativeModel):
    """Test model whose likelihood/sample info carries keys the harness also sets."""
    name = "test-odd-info"
    family = "flow"
    has_likelihood = True

    def __init__(self, config, data):
        super().__init__(config, data)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def loss(self, batch):
        return (self.w - 1).pow(2).sum()

    def nll_bits_per_dim(self, batch):
        from bench.registry import Likelihood
        return Likelihood(torch.full((len(batch),), 7.5), kind="upper-bound", info={"dequantization": "variational"})

    def sample(self, n, *, labels=None, generator=None, **sampler):
        from bench.registry import Samples
        return Samples(torch.rand(n, *self.data.shape, generator=generator), nfe=3, info={"labels": "none"})


def test_model_info_keys_are_recorded_not_clashing(workdirs, capsys, tmp_path):
    suite = write_suite(tmp_path / "s.toml", TINY_DIGITS.replace("[models.reference]", "[models.odd]\n    model = \"test-odd-info\""))
    assert run_cli(args(workdirs, "--suite", str(suite)), capsys)[0] == 0
    rec, = records.load_records(workdirs["results"], "tiny", "smoke")
    assert rec.status == "ok", rec.error
    bpd = rec.metrics["bits_per_dim"]
    assert bpd["value"] == 7.5 and bpd["protocol"]["dequantization"] == "variational" and bpd["protocol"]["kind"] == "upper-bound"


def test_a_sampler_sweep_records_each_samplers_metrics(workdirs, capsys, tmp_path):
    body = TINY_DIGITS.replace("[models.reference]", """[models.ddpm]
    unet = "tiny"
    timesteps = 10
    ema_decay = 0.0
    sampler = { name = "ddim", steps = 5 }
    samplers = { ddim-2 = { steps = 2 }, ancestral = { name = "ddpm", steps = 10 } }""").replace(
        'metrics = ["bits_per_dim"]', 'metrics = ["bits_per_dim", "sampling_speed"]\n    bpd_batches = 1\n    speed_batch = 4')
    suite = write_suite(tmp_path / "s.toml", body)
    code, out, err = run_cli(args(workdirs, "--suite", str(suite)), capsys)
    assert code == 0, err
    (r,) = records.load_records(workdirs["results"], "tiny", "smoke")
    m = r.metrics
    assert (m["nfe"]["value"], m["nfe@ddim-2"]["value"], m["nfe@ancestral"]["value"]) == (5, 2, 10)
    assert "bits_per_dim@ddim-2" not in m  # the likelihood does not depend on the sampler
    assert r.samplers["ddim-2"] == {"steps": 2}


def test_a_malformed_sampler_sweep_is_a_one_line_error(workdirs, capsys, tmp_path):
    body = TINY_DIGITS.replace("[models.reference]", "[models.reference]\n    samplers = { fast = 3 }")
    code, out, err = run_cli(args(workdirs, "--suite", str(write_suite(tmp_path / "s.toml", body))), capsys)
    assert code == 2 and "models.reference.samplers.fast must be a table" in err and "Traceback" not in err


def test_results_table_says_not_defined_for_every_model_without_a_likelihood(capsys):
    from bench.console import print_table
    base = {"suite": "s", "profile": "smoke", "family": "diffusion", "status": "ok", "parameters": 1,
            "metrics": {"bits_per_dim": {"value": None, "note": "not defined"}}}
    print_table([run_record(**base, model="ncsn", has_likelihood=False),   # not a GAN, still no likelihood
                 run_record(**base, model="ddpm", has_likelihood=True)])   # has one, not measured here
    out = capsys.readouterr().out
    row = lambda name: next(line for line in out.splitlines() if f" {name} " in line)
    assert "not defined" in row("ncsn") and "not defined" not in row("ddpm") and "n/a" in row("ddpm")


def test_results_for_a_misspelt_suite_or_profile_names_the_ones_with_records(workdirs, capsys):
    for suite, profile in (("digits", "smoke"), ("digits-flows", "paper")):
        records.write_record({"suite": suite, "profile": profile, "model": "reference", "seed": 0, "status": "ok"},
                             workdirs["results"])
    res = ["results", "--results", str(workdirs["results"])]
    code, out, err = run_cli([*res, "--suite", "digts"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no records for suite 'digts'" in err and "did you mean 'digits'?" in err
    assert "suites with records: digits, digits-flows" in err
    code, out, err = run_cli([*res, "--suite", "digits", "--profile", "paper"], capsys)
    assert code == 2 and "no records for profile 'paper' of suite 'digits'" in err and "profiles with records: smoke" in err
    code, out, err = run_cli([*res, "--profile", "paper"], capsys)  # --profile alone filters too
    assert code == 0 and "digits-flows" in out and " smoke " not in out
    code, out, err = run_cli(["results", "--results", str(workdirs["results"] / "none")], capsys)
    assert code == 2 and "no result records under" in err and "bench run" in err


FAMILY_SUITE = """
    name = "tiny-families"
    [data]
    dataset = "digits"
    image_size = 8
    channels = 1
    limit_eval = 16
    [train]
    batch_size = 8
    seeds = [0]
    eval_batch_size = 8
    warmup_steps = 0
    [eval]
    metrics = ["bits_per_dim"]
    num_samples = 8
    bpd_batches = 1
    [models.glow]
    levels = 1
    steps_per_level = 2
    hidden_channels = 8
    [models.ddpm]
    unet = "tiny"
    base_channels = 8
    timesteps = 10
    ema_decay = 0.9
    sampler = { name = "ddim", steps = 3 }
    [models.cfm]
    unet = "tiny"
    base_channels = 8
    ema_decay = 0.9
    nll_solver = "euler"
    nll_steps = 2
    divergence = "hutchinson"
    hutchinson_probes = 1
    sampler = { name = "euler", steps = 3 }
    [models.dcgan]
    g_channels = 8
    d_channels = 8
    latent_dim = 8
    [models.daf]
    levels = 1
    steps_per_level = 1
    hidden_channels = 8
    num_blocks = 1
    unet_channels = 8
    unet_channel_mults = [1, 2]
    unet_res_blocks = 1
    unet_attn_resolutions = []
    timesteps = 10
    [profiles.smoke]
    budget = { steps = 3 }
"""


@pytest.fixture
def single_thread():
    """One intra-op thread: tiny models on a shared 2-core machine ran 10x slower with OpenMP workers contending."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_every_family_is_deterministic_on_cpu(workdirs, capsys, tmp_path, single_thread):
    """Two runs of one tiny model per family (flow, diffusion, flow matching, GAN, hybrid): identical loss
    curves, bits/dim (where defined) and saved sample grids."""
    import numpy as np

    suite = write_suite(tmp_path / "s.toml", FAMILY_SUITE)
    runs, grids = [], []
    for i in range(2):
        res = workdirs["results"] / str(i)
        code, out, err = run_cli(args(workdirs, "--suite", str(suite), "--results", str(res), "--device", "cpu"), capsys)
        assert code == 0, err
        runs.append({r.model: r for r in records.load_records(res, "tiny-families", "smoke")})
        grids.append({m: np.load(res / r.artifacts["samples"])["images"] for m, r in runs[-1].items()})
    a, b = runs
    assert {a[m].family for m in a} == {"flow", "diffusion", "flow-matching", "gan", "hybrid"}
    for model in a:
        assert a[model].status == "ok", a[model].error
        assert len(a[model].train["loss_curve"]) == 3
        assert a[model].train["loss_curve"] == b[model].train["loss_curve"], model
        bpd_a, bpd_b = (r.metrics["bits_per_dim"].get("value") for r in (a[model], b[model]))
        assert (bpd_a is None) == (model == "dcgan") and bpd_a == bpd_b, model
        assert grids[0][model].size > 0 and np.array_equal(grids[0][model], grids[1][model]), model


def test_a_reader_that_stops_early_is_not_an_error():
    """`bench list --model daf | head`: the reader closes the pipe before bench writes; bench stops quietly with
    the status of a writer killed by SIGPIPE, not an 'unexpected BrokenPipeError' line."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "list", "--model", "daf"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # long before the child has imported torch and printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "unexpected" not in err and "Traceback" not in err, err


def test_a_run_pointed_at_other_results_leaves_the_checkout_untouched(tmp_path, capsys, monkeypatch):
    """`bench run --results /tmp/x` (no --reports) renders its report beside the records, never into the committed
    reports/ or results/: `git status` is the same before and after."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    monkeypatch.chdir(repo)

    def status() -> str:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo,
                              capture_output=True, text=True, check=True).stdout

    before = status()
    code, out, err = run_cli(["run", "--results", str(tmp_path / "x"), "--model", "reference", "--model", "glow",
                              "--budget", "steps=3", "--quiet", "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 0, err
    assert (tmp_path / "x" / "reports" / "digits" / "smoke" / "README.md").is_file()
    assert f"report: {tmp_path / 'x' / 'reports'}" in out
    assert status() == before


def test_like_repeats_a_recorded_run_step_for_step(workdirs, capsys, tmp_path):
    """A wall-clock run trains however many steps its machine managed; --like RECORD repeats exactly those steps,
    with the record's config and seed, and (same machine, same threads) the same numbers."""
    code, _, err = run_cli(args(workdirs, "--model", "glow", "--seed", "1", "--budget", "seconds=1.5",
                                "--set", "models.glow.lr=0.002"), capsys)
    assert code == 0, err
    first = records.load_records(workdirs["results"])[0]
    again_dir = tmp_path / "again"
    code, out, err = run_cli(["run", "--like", first.path, "--results", str(again_dir), "--checkpoints",
                              str(tmp_path / "ck2"), "--quiet", "--no-report"], capsys)
    assert code == 0, err
    second = records.load_records(again_dir)[0]
    assert (second.model, second.seed, second.config) == (first.model, 1, first.config)
    assert second.config["lr"] == 0.002
    assert second.budget == {"kind": "steps", "value": first.train["steps"]}
    assert second.train["steps"] == first.train["steps"] and second.train["loss_curve"] == first.train["loss_curve"]
    assert second.metric_value("bits_per_dim") == first.metric_value("bits_per_dim")
    assert any(o.startswith("--like ") for o in second.overrides)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "none.json", "no such record file"),
    (lambda p: (p / "bad.json").write_text("{") and p / "bad.json", "unreadable record"),
    (lambda p: (p / "obj.json").write_text('{"a": 1}') and p / "obj.json", "not a run record"),
])
def test_like_with_a_bad_record_is_one_line(workdirs, capsys, tmp_path, make, message):
    code, _, err = run_cli(args(workdirs, "--like", str(make(tmp_path))), capsys)
    assert code == cli.EXIT_USER_ERROR and message in err and len(err.strip().splitlines()) == 1


def test_like_refuses_model_seed_and_budget_flags(workdirs, capsys, tmp_path):
    rec = tmp_path / "r.json"
    rec.write_text('{"suite": "digits", "profile": "smoke", "model": "glow", "seed": 0, "status": "ok"}')
    code, _, err = run_cli(args(workdirs, "--like", str(rec), "--seed", "2"), capsys)
    assert code == cli.EXIT_USER_ERROR and "drop --model, --seed and --budget" in err


def test_list_and_suite_errors_do_not_import_torch_once_the_catalog_is_cached(tmp_path):
    """`bench list` and the errors of a bad suite answer from bench.catalog (start-up ~0.1 s instead of ~2-4 s for
    importing torch); the cached catalog says what the live registry says."""
    import json
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "GENBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(repo)}
    env.pop("GENBENCH_PLUGINS", None)
    probe = ("import sys, contextlib, io\nfrom bench import cli\nbuf = io.StringIO()\n"
             "with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):\n"
             "    code = cli.main(sys.argv[1:])\n"
             "print(repr((code, 'torch' in sys.modules, buf.getvalue())))")

    def run(*argv):
        out = subprocess.run([sys.executable, "-c", probe, *argv], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return eval(out.stdout.strip().splitlines()[-1])

    first = run("list", "--json")  # builds the catalog (imports the registry)
    second = run("list", "--json")
    assert second[:2] == (0, False) and json.loads(second[2]) == json.loads(first[2])
    live = {m: sorted(cls.options) for m, cls in __import__("bench.registry", fromlist=["x"]).available().items()
            if not m.startswith("test-")}
    assert {m["name"] for m in json.loads(second[2])["models"]} == set(live)
    code, torch_loaded, text = run("run", "--set", "models.ddpm.lr=-1")
    assert (code, torch_loaded) == (cli.EXIT_USER_ERROR, False) and "--set models.ddpm.lr=-1" in text
    code, torch_loaded, text = run("list", "--model", "ddpm")
    assert (code, torch_loaded) == (0, False) and "timesteps" in text


def test_a_search_runs_one_record_per_grid_point_and_each_can_be_picked(workdirs, capsys, tmp_path):
    body = TINY_DIGITS + "\n    [search]\n    reference = { lr = [0.01, 0.3] }\n"
    suite = write_suite(tmp_path / "s.toml", body)
    code, out, err = run_cli(args(workdirs, "--suite", str(suite)), capsys)
    assert code == 0, err
    recs = {r.model: r for r in records.load_records(workdirs["results"], "tiny", "smoke")}
    assert set(recs) == {"reference-lr0.01", "reference-lr0.3"}
    assert recs["reference-lr0.3"].config["lr"] == 0.3 and recs["reference-lr0.01"].config["lr"] == 0.01
    assert recs["reference-lr0.3"].search == {"of": "reference", "point": {"lr": 0.3}}
    assert recs["reference-lr0.3"].metrics["bits_per_dim"]["value"] != recs["reference-lr0.01"].metrics["bits_per_dim"]["value"]
    code, out, err = run_cli(args(workdirs, "--suite", str(suite), "--model", "reference-lr0.3", "--rerun", "--resume"), capsys)
    assert code == 0, err
    assert [r.model for r in records.load_records(workdirs["results"], "tiny", "smoke")].count("reference-lr0.3") == 2
