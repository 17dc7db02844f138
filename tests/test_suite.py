import pytest

from bench.errors import BenchError
from bench.suite import Budget, load_suite, model_config, suite_names
from tests.helpers import TINY_DIGITS, write_suite


def test_every_shipped_suite_loads_every_profile():
    from bench.suite import read_toml, suite_path
    names = suite_names()
    assert "digits" in names
    for name in names:
        profiles = read_toml(suite_path(name))["profiles"]
        assert "smoke" in profiles, name
        for profile in profiles:
            s = load_suite(name, profile)
            assert s.budget.value > 0 and s.models


def test_every_mirrored_table_exists_and_maps_to_a_run_of_the_suite():
    """A suite's `mirrors` names reference tables in results/reference/ with at least one row for its models."""
    from bench.report import published

    ids = set(published.table_ids())
    for name in suite_names():
        s = load_suite(name, "smoke")
        runs = set(s.models) | {str(cfg.get("model")) for cfg in s.models.values()}
        for tid in s.mirrors:
            assert tid in ids, (name, tid)
            models = {m.strip().removeprefix("run:") for row in published.load_table(tid)
                      for m in row["genbench_model"].split("|")}
            assert models & runs, (name, tid)
    assert "seed000-speed" in load_suite("mnist-flow-vs-ddpm", "smoke").mirrors
    assert "seed001-table5.2" in load_suite("mnist-daf-vs-ddpm-vs-nsf", "smoke").mirrors


def test_profile_is_deep_merged_and_overrides_are_applied_and_recorded(tmp_path):
    path = write_suite(tmp_path / "s.toml", TINY_DIGITS.replace("[models.reference]", "[models.reference]\nlr = 0.1") + """
    [profiles.paper]
    budget = { epochs = 3 }
    [profiles.paper.train]
    batch_size = 128
    [profiles.paper.models.reference]
    lr = 0.2
    """)
    smoke = load_suite(str(path), "smoke")
    paper = load_suite(str(path), "paper", ["models.reference.lr=1e-4", "train.seeds=[1, 2]", "data.dataset=digits"])
    assert smoke.models["reference"]["lr"] == 0.1 and smoke.train["batch_size"] == 32
    assert paper.budget == Budget("epochs", 3.0) and paper.train["batch_size"] == 128
    assert paper.models["reference"]["lr"] == 1e-4  # override beats profile beats base
    assert paper.train["seeds"] == [1, 2] and paper.data["dataset"] == "digits"
    assert paper.overrides == ["models.reference.lr=1e-4", "train.seeds=[1, 2]", "data.dataset=digits"]
    assert smoke.config_hash("reference") != paper.config_hash("reference")


def test_config_hash_ignores_seeds_but_not_model_config(tmp_path):
    path = write_suite(tmp_path / "s.toml", TINY_DIGITS)
    a = load_suite(str(path), "smoke", ["train.seeds=[5]"])
    b = load_suite(str(path), "smoke")
    c = load_suite(str(path), "smoke", ["models.reference.lr=0.3"])
    assert a.config_hash("reference") == b.config_hash("reference") != c.config_hash("reference")


def test_cli_budget_replaces_the_profile_budget(tmp_path):
    path = write_suite(tmp_path / "s.toml", TINY_DIGITS)
    assert load_suite(str(path), "smoke", budget="images=1000").budget == Budget("images", 1000.0)


@pytest.mark.parametrize("old, new, message", [
    ("batch_size = 32", "batch_sise = 32", "train.batch_sise.*did you mean 'batch_size'"),
    ("[models.reference]", "[models.reference]\nlrr = 1", "models.reference.lrr.*did you mean 'lr'"),
    ("[models.reference]", "[models.ddmp]", "unknown model 'ddmp'"),
    ('name = "tiny"', 'name = "tiny"\nwibble = 1', "unknown top-level key 'wibble'"),
])
def test_unknown_keys_are_named_with_the_file(tmp_path, old, new, message):
    path = write_suite(tmp_path / "bad.toml", TINY_DIGITS.replace(old, new))
    with pytest.raises(BenchError, match=message) as e:
        load_suite(str(path), "smoke")
    assert str(path) in str(e.value)


def test_malformed_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = \n[data\n")
    with pytest.raises(BenchError, match="malformed suite file .*broken.toml"):
        load_suite(str(path), "smoke")


@pytest.mark.parametrize("budget, message", [
    ("{ steps = 0 }", "positive"), ("{ steps = -5 }", "positive"), ("{ epochs = 1.5 }", "whole number"),
    ("{ seconds = inf }", "finite positive number, got inf"), ("{ seconds = nan }", "finite positive number, got nan"),
    ("{ hours = 1 }", "unknown budget kind"), ("{ steps = 1, epochs = 1 }", "exactly one"),
])
def test_bad_budgets_are_rejected(tmp_path, budget, message):
    path = write_suite(tmp_path / "s.toml", TINY_DIGITS.replace("{ steps = 5 }", budget))
    with pytest.raises(BenchError, match=message):
        load_suite(str(path), "smoke")


def test_unknown_suite_and_profile_suggest_names():
    with pytest.raises(BenchError, match="did you mean 'digits'"):
        load_suite("digit")
    with pytest.raises(BenchError, match="no profile 'smok'.*did you mean 'smoke'"):
        load_suite("digits", "smok")


@pytest.mark.parametrize("override, message", [
    ('models.reference.lr="fast"', r"models.reference.lr must be a finite number .*got 'fast'"),
    ("models.reference.lr=", r"models.reference.lr must be a finite number .*got ''"),
    ("models.reference.lr=true", r"models.reference.lr must be a finite number .*got True"),
    ("models.reference.lr=nan", r"models.reference.lr must be a finite number .*got nan"),
    ("models.glow.levels=-2", r"models.glow.levels must be a whole number >= 1 .*got -2"),
    ("models.glow.levels=2.5", r"models.glow.levels must be a whole number >= 1 .*got 2.5"),
    ("models.glow.hidden_channels=0", r"models.glow.hidden_channels must be a whole number >= 1 .*got 0"),
    ("models.ddpm.beta_schedule=\"cosin\"", r"models.ddpm.beta_schedule must be one of 'linear', 'cosine' .*got 'cosin'"),
    ("models.ddpm.ema_decay=1.0", r"models.ddpm.ema_decay must be a finite number >= 0 and < 1 .*got 1.0"),
    ("models.resflow.blocks_per_scale=[4, -1]", r"models.resflow.blocks_per_scale must be a list of whole numbers >= 0"),
    ("models.ddpm.class_conditional=1", r"models.ddpm.class_conditional must be true or false .*got 1"),
    ('models.ddpm.unet=""', r"models.ddpm.unet must be one of 'ddpm-thesis', 'ddpm-ho', 'tiny' .*got ''"),
    ("models.daf.unet_channel_mults=2", r"models.daf.unet_channel_mults must be a list .*got 2"),
])
def test_model_values_of_the_wrong_type_are_named_with_flag_key_and_value(tmp_path, override, message):
    """The value came from --set, so the error names that flag (the suite file never held it), key and value."""
    body = TINY_DIGITS.replace("[models.reference]", "[models.reference]\n[models.glow]\n[models.ddpm]\n[models.daf]")
    path = write_suite(tmp_path / "s.toml", body)
    with pytest.raises(BenchError, match=message) as e:
        load_suite(str(path), "smoke", [override])
    assert str(e.value).startswith(f"--set {override}: ") and "default" in str(e.value)


def test_model_values_of_the_default_type_or_a_none_default_pass(tmp_path):
    path = write_suite(tmp_path / "s.toml", TINY_DIGITS.replace("[models.reference]", "[models.reference]\n[models.ddpm]"))
    s = load_suite(str(path), "smoke", ["models.reference.lr=1", "models.ddpm.vlb_weight=0",  # ints for floats
                                        "models.ddpm.channel_mults=[1, 2]", "models.ddpm.dropout=0.1"])  # None defaults
    assert s.models["reference"]["lr"] == 1 and s.models["ddpm"]["channel_mults"] == [1, 2]


EXTENDING = TINY_DIGITS.replace("[models.reference]", "[models.reference]\nlr = 0.1") + """
    [profiles.cpu]
    budget = { steps = 7 }
    train = { batch_size = 16, eval_fractions = [0.5, 1.0] }
    models.reference = { lr = 0.2 }
    [profiles.long]
    extends = "cpu"
    budget = { steps = 70 }
    train = { eval_fractions = [0.25, 1.0] }
    [profiles.longer]
    extends = "long"
    models.reference = { lr = 0.3 }
    """


def test_a_profile_extends_another_which_may_extend_a_third(tmp_path):
    path = write_suite(tmp_path / "s.toml", EXTENDING)
    long, longer = load_suite(str(path), "long"), load_suite(str(path), "longer")
    assert long.budget == Budget("steps", 70.0) == longer.budget  # its own beats the parent's
    assert long.train["batch_size"] == 16 == longer.train["batch_size"]  # the parent's where it says nothing
    assert long.train["eval_fractions"] == [0.25, 1.0] and long.models["reference"]["lr"] == 0.2
    assert longer.models["reference"]["lr"] == 0.3
    assert load_suite(str(path), "long").config_hash("reference") == load_suite(
        str(path), "cpu", ["budget={ steps = 70 }", "train.eval_fractions=[0.25, 1.0]"]).config_hash("reference")


@pytest.mark.parametrize("old, new, message", [
    ('extends = "cpu"', 'extends = "cpuu"', "profile 'long' extends unknown profile 'cpuu'.*did you mean 'cpu'"),
    ("train = { batch_size = 16", 'extends = "longer"\n    train = { batch_size = 16',
     "cycle: cpu -> long -> cpu|cycle: .*longer -> long -> cpu -> longer"),
])
def test_a_bad_extends_is_one_line(tmp_path, old, new, message):
    path = write_suite(tmp_path / "s.toml", EXTENDING.replace(old, new))
    with pytest.raises(BenchError, match=message):
        load_suite(str(path), "longer")


SEARCHED = TINY_DIGITS.replace("[models.reference]", """[models.reference]
    lr = 0.1
    [models.also]
    model = "reference"
    [models.last]
    model = "reference"
    """)


def test_a_search_replaces_each_searched_run_by_its_grid_in_place(tmp_path):
    path = write_suite(tmp_path / "s.toml", SEARCHED + """
    [search]
    reference = { lr = [0.01, 0.3], batch_size = [8, 16] }
    last = { lr = [0.5, 1, 2, 3] }
    """)
    s = load_suite(str(path), "smoke")
    assert list(s.models) == ["reference-lr0.01-batch_size8", "reference-lr0.01-batch_size16",
                              "reference-lr0.3-batch_size8", "reference-lr0.3-batch_size16", "also",
                              "last-lr0.5", "last-lr1", "last-lr2", "last-lr3"]
    assert s.models["reference-lr0.3-batch_size16"] == {
        "model": "reference", "lr": 0.3, "batch_size": 16,
        "search": {"of": "reference", "point": {"lr": 0.3, "batch_size": 16}}}
    assert s.models["last-lr2"] == {"model": "reference", "lr": 2, "search": {"of": "last", "point": {"lr": 2}}}
    assert "search" not in model_config(s.models["last-lr2"])  # the harness's, not the wrapper's
    hashes = {s.config_hash(run) for run in s.models}
    assert len(hashes) == len(s.models)  # every point is its own configuration


def test_the_name_of_a_searched_run_picks_its_whole_grid(tmp_path):
    path = write_suite(tmp_path / "s.toml", SEARCHED + """
    [search]
    last = { lr = [0.5, 1] }
    """)
    s = load_suite(str(path), "smoke")
    assert s.select(["last"])[0] == ["last-lr0.5", "last-lr1"]
    assert s.select(["last-lr1", "also"])[0] == ["also", "last-lr1"]  # one point still picks itself
    with pytest.raises(BenchError, match="no model 'lst'"):
        s.select(["lst"])


@pytest.mark.parametrize("search, message", [
    ("reference = { lr = [0.01, 0.3] }\nlast = { lr = [1.0] }", "same number of configurations.*reference 2, last 1"),
    ("refrence = { lr = [0.01] }", "search.refrence: the suite has no run 'refrence'.*did you mean 'reference'"),
    ("reference = { lr = 0.01 }", "search.reference must map config keys to non-empty lists"),
    ("reference = { lr = [] }", "search.reference must map config keys to non-empty lists"),
    ("reference = { lrr = [0.01] }", "models.reference-lrr0.01.lrr.*did you mean 'lr'"),
])
def test_a_bad_search_is_one_line(tmp_path, search, message):
    path = write_suite(tmp_path / "s.toml", SEARCHED + "\n    [search]\n    " + search.replace("\n", "\n    ") + "\n")
    with pytest.raises(BenchError, match=message):
        load_suite(str(path), "smoke")


def test_the_main_jobs_tuning_grids_the_cpu_profiles_models_with_equal_effort():
    cpu, tune = (load_suite("mnist-flow-vs-ddpm", p) for p in ("cpu", "tune"))
    grids = {}
    for run, cfg in tune.models.items():
        if run != "reference":
            grids.setdefault(cfg["model"], []).append(cfg)
    assert set(grids) == {"ddpm", "resflow"} and len(grids["ddpm"]) == len(grids["resflow"]) == 6
    assert {c["lr"] for c in grids["ddpm"]} == {c["lr"] for c in grids["resflow"]} and tune.budget == cpu.budget
    assert all(c["unet"] == "tiny" for c in grids["ddpm"])  # the cpu profile's model, not the paper's
    # the second axis doubles the width for both families (the tiny U-Net's preset is 16 base channels)
    assert {c["base_channels"] for c in grids["ddpm"]} == {16, 32}
    assert {c["hidden_channels"] for c in grids["resflow"]} == {2 * cpu.models["resflow"]["hidden_channels"],
                                                                 cpu.models["resflow"]["hidden_channels"]}


def test_an_ema_decay_axis_would_be_void_at_the_main_jobs_cpu_budget():
    """Why the tune grid has no EMA axis: over the cpu budget's steps the warm-up caps the decay, so 0.995 and
    0.9995 average the same weights at every update (the first grid's two EMA points gave identical records)."""
    from baselines.nn.ema import warmed_up_decay

    steps = 556  # ddpm's steps at the cpu profile's 1.3e13 counted FLOPs (its tune records' train.steps)
    assert all(warmed_up_decay(0.995, n) == warmed_up_decay(0.9995, n) for n in range(1, steps + 1))
    assert warmed_up_decay(0.995, 8 * steps) != warmed_up_decay(0.9995, 8 * steps)  # the ladder's x8 would differ
