"""Every wrapper's config schema (``options``): what it accepts, what it refuses, and that docs and CLI show it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from bench import registry
from bench.errors import BenchError
from bench.registry import DataSpec, Option
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(registry.available())


@pytest.mark.parametrize("name", MODELS)
def test_every_key_has_a_type_a_meaning_and_a_default_that_fits(name):
    cls = registry.get(name)
    assert cls.defaults == {k: o.default for k, o in cls.options.items()}
    for key, opt in cls.options.items():
        assert opt.help.strip() and "\n" not in opt.help, key
        assert opt.kind in (bool, int, float, str, list, dict), key
        assert opt.problem(opt.default) is None, (key, opt.default)
    for key, value in cls.tiny.items():
        assert cls.options[key].problem(value) is None, (key, value)


@pytest.mark.parametrize("opt, good, bad", [
    (Option(1e-3, "rate", gt=0), [1, 2.5, 1e-9], [0, -1, math.nan, math.inf, True, "fast", None]),
    (Option(3, "count", ge=1), [1, 7], [0, -2, 2.5, True, "3"]),
    (Option(0.9, "decay", ge=0, lt=1), [0, 0.5, 0.9999], [1, 1.0, -0.1]),
    (Option(True, "flag"), [True, False], [1, 0, "true"]),
    (Option("linear", "schedule", choices=("linear", "cosine")), ["linear", "cosine"], ["cosin", "", 1]),
    (Option([1, 2], "mults", items=int, ge=1), [[], [1], [4, 8]], [[0], [1.5], 2, "1,2"]),
    (Option(None, "preset's", type=int, ge=1), [None, 4], [0, 2.5]),
])
def test_option_accepts_and_refuses(opt, good, bad):
    for value in good:
        assert opt.problem(value) is None, value
    for value in bad:
        assert opt.problem(value) is not None, value


def test_a_wrapper_built_directly_checks_its_config_too():
    ddpm = registry.get("ddpm")
    with pytest.raises(BenchError, match=r"ddpm.lr must be a finite number > 0 .*got -1"):
        ddpm({"lr": -1}, DataSpec(1, 8, 8))
    with pytest.raises(BenchError, match=r"unknown key ddpm.timestep .*did you mean 'timesteps'"):
        ddpm({"timestep": 10}, DataSpec(1, 8, 8))


def test_bench_list_model_prints_the_schema(capsys):
    code, out, _ = run_cli(["list", "--model", "resflow", "--json"], capsys)
    rows = json.loads(out)
    cls = registry.get("resflow")
    opts = {**cls.options, **{f"sampler.{k}": o for k, o in cls.sampler_options.items()}}
    assert code == 0 and [r["key"] for r in rows] == list(opts) and "sampler.temperature" in opts
    for r in rows:
        assert r["meaning"] == opts[r["key"]].help and r["default"] == opts[r["key"]].default
    assert next(r for r in rows if r["key"] == "lipschitz_coeff")["allowed"] == "a finite number > 0 and < 1"
    code, out, _ = run_cli(["list", "--model", "ddpm"], capsys)  # piped: one tab-separated line per key
    lines = [ln for ln in out.splitlines() if not ln.startswith("#")]
    ddpm = registry.get("ddpm")
    assert code == 0 and [ln.split("\t")[0] for ln in lines] == [*ddpm.options,
                                                                  *(f"sampler.{k}" for k in ddpm.sampler_options)]
    code, _, err = run_cli(["list", "--model", "ddmp"], capsys)
    assert code == 2 and "did you mean 'ddpm'" in err


# docs/<family>.md that document their wrappers' keys in "| key | default | meaning |" tables: they name real keys
# (`bench list --model NAME` prints the full, current schema)
DOCS = {"daf.md": ["daf"], "diffusion.md": ["ddpm", "iddpm", "ncsn"]}


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_docs_key_tables_name_only_keys_the_schema_has(doc):
    text = (ROOT / "docs" / doc).read_text()
    known = set().union(*(registry.get(m).options for m in DOCS[doc]))
    documented = set()
    for table in re.findall(r"^\| key \|.*?\n((?:\|.*\n)+)", text, flags=re.M):
        for row in table.splitlines()[1:]:
            cell = re.sub(r"\([^)]*\)", "", row.split("|")[1])  # "(`adagn`/`add`)" names values, not keys
            documented |= set(re.findall(r"`([a-z_0-9]+)`", cell))
    assert documented, f"docs/{doc} has no key table"
    assert documented <= known, sorted(documented - known)


# ---- sampler options ------------------------------------------------------------------------------------------------

def test_ddpm_iddpm_and_daf_share_one_diffusion_chain():
    from baselines.nn.samplers import CHAIN_OPTIONS, DiffusionChain

    for name in ("ddpm", "iddpm", "daf"):
        assert set(CHAIN_OPTIONS) <= set(registry.get(name).sampler_options), name
    assert registry.get("daf").sampler_options["clip"].default is False  # a latent is not clipped to [-1, 1]
    chain, _ = DiffusionChain.parse({"name": "ddpm", "steps": 10, "spacing": "quadratic"}, 1000, "ddpm",
                                    DiffusionChain.schema())
    assert chain.name == "ancestral" and chain.steps == 10  # one set of names: "ddpm" is the ancestral sampler
    for bad, needle in (({"name": "ddmi"}, "one of 'ancestral', 'ddim'"), ({"steps": 1001}, "1..1000"),
                        ({"stpes": 5}, "did you mean 'steps'"), ({"eta": -1.0}, ">= 0")):
        with pytest.raises(BenchError, match=re.escape(needle)):
            DiffusionChain.parse(bad, 1000, "ddpm", DiffusionChain.schema())


def test_the_ddpm_alias_samples_exactly_the_ancestral_chain():
    import torch

    model = registry.get("ddpm")({**registry.get("ddpm").tiny}, DataSpec(1, 8, 8))
    draws = [model.sample(3, generator=torch.Generator().manual_seed(0), name=name, steps=5)
             for name in ("ddpm", "ancestral")]
    assert torch.equal(draws[0].images, draws[1].images) and draws[0].info["sampler"] == "ancestral"
    assert draws[0].info["steps"] == 5 and draws[0].nfe == 5


def test_the_ode_solve_integrates_a_linear_field_to_its_closed_form_and_records_what_ran():
    """ODESolve (flow matching's sampler object) on dx/dt = a x, whose solution is x0 e^a; the suite's options
    override the wrapper's config key by key; resolved() names what ran; cfm records it with its samples."""
    import torch

    from baselines.nn.samplers import ODESolve

    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    from types import SimpleNamespace

    config = {"solver": "euler", "steps": 50, "rtol": 1e-5, "atol": 1e-5}  # a wrapper config object's fields
    rk4 = ODESolve.parse({"solver": "rk4", "steps": 20, "rtol": None, "atol": None}, SimpleNamespace(**config))
    res = rk4.run(lambda t, x: -0.7 * x, x0)
    torch.testing.assert_close(res.x, x0 * math.exp(-0.7), rtol=1e-6, atol=1e-7)
    assert res.nfe == 20 * 4 and rk4.resolved() == {"sampler": "ode", "solver": "rk4", "steps": 20}
    assert ODESolve.parse({}, SimpleNamespace(**{**config, "solver": "dopri5"})).resolved() == {
        "sampler": "ode", "solver": "dopri5", "rtol": 1e-5, "atol": 1e-5}
    model = registry.get("cfm")({**registry.get("cfm").tiny}, DataSpec(1, 8, 8))
    out = model.sample(2, generator=torch.Generator().manual_seed(0), solver="midpoint", steps=3)
    assert (out.info["solver"], out.info["steps"], out.info["solver_evals"]) == ("midpoint", 3, 6)


def test_annealed_langevin_takes_the_steps_of_its_formula():
    """AnnealedLangevin (ncsn's sampler object) against the update written out by hand for a Gaussian score
    s(x) = -x: x <- x - alpha_i/2 x + sqrt(alpha_i) z per step, alpha_i = step_lr sigma_i^2 / sigma_L^2, then
    Tweedie's x + sigma_L^2 s(x)."""
    import torch

    from baselines.nn.samplers import AnnealedLangevin

    sigmas = torch.tensor([1.0, 0.5, 0.1])
    sampler = AnnealedLangevin.parse({"steps_each": 2, "step_lr": 0.01}, "ncsn")
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    x, nfe = sampler.run(lambda x, idx: -x, sigmas, x0, torch.Generator().manual_seed(2))
    g, ref = torch.Generator().manual_seed(2), x0.clone()
    for sigma in (1.0, 0.5, 0.1):
        alpha = 0.01 * (sigma / 0.1) ** 2
        for _ in range(2):
            ref = ref - 0.5 * alpha * ref + math.sqrt(alpha) * torch.randn(ref.shape, generator=g)
    ref = ref + 0.1 ** 2 * -ref
    torch.testing.assert_close(x, ref)
    assert nfe == 3 * 2 + 1 and sampler.resolved(3)["denoise"] is True


@pytest.mark.parametrize("name, options, needle", [
    ("glow", {"name": "ddim"}, "one of 'default'"),
    ("ncsn", {"steps_each": 0}, "steps_each must be a whole number >= 1"),
    ("cfm", {"solver": "rk5"}, "one of 'euler'"),
    ("dcgan", {"steps": 5}, "unknown sampler option 'steps'"),
])
def test_a_sampler_or_option_a_model_does_not_support_is_refused(name, options, needle):
    cls = registry.get(name)
    model = cls(dict(cls.tiny), DataSpec(1, 16, 16, 10))
    with pytest.raises(BenchError, match=re.escape(needle)):
        model.check_sampler(options)
