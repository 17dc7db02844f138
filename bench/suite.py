"""Declarative suites: one TOML file per suite, a budget profile chosen at run time, overrides.

A suite file (``bench/suites/<name>.toml``) holds the shared settings at top level and named
profiles under ``[profiles.<name>]``. A profile is a partial suite deep-merged over the base
(so ``[profiles.paper.models.ddpm]`` can swap the tiny smoke U-Net for the thesis one) and must
give a ``budget``; ``extends = "<profile>"`` merges it over another profile instead of repeating it.
``--set key.path=value`` overrides (TOML literals) are applied last and recorded. A ``[search.<run>]``
table (``lr = [3e-4, 1e-3]``) replaces that run by one run per point of the grid, the same number of
points for every searched run (equal tuning effort). See ``bench/suites/digits.toml`` for a commented
example.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path
from typing import Any

from bench.errors import BenchError, did_you_mean

SUITES_DIR = Path(__file__).parent / "suites"
DEFAULT_SUITE = "digits"
BUDGET_KINDS = ("epochs", "steps", "images", "seconds", "flops")
WHOLE_BUDGETS = ("epochs", "steps", "images")

TOP_KEYS = {"name", "description", "mirrors", "data", "train", "eval", "models", "profiles", "budget", "search"}
DATA_KEYS = {"dataset", "train_split", "eval_split", "image_size", "channels", "root", "path", "limit_train", "limit_eval",
             "eval_fraction", "split_seed"}
# Keys of a [models.<run>] table that the harness reads itself (never passed to the wrapper): the
# registered wrapper, its sampler options, and a per-model batch size where the seeds train the models
# of one comparison at different batch sizes (seed 000: flow 64, DDPM 128). The budget stays shared.
# `samplers` = {label = {options}}: extra samplers the final evaluation also measures (a sweep, e.g. NFE vs FID),
# each merged over `sampler`, recorded as <metric>@<label>.
# `budget`: a run's own budget, for a row that cannot be held to the shared one (the `reference` floor counts no
# FLOPs, so a flops budget cannot be turned into its steps); recorded like the shared one.
# `search`: {of, point} of a run that a [search] grid made (set by expand_search, recorded for the report).
HARNESS_MODEL_KEYS = ("model", "sampler", "samplers", "batch_size", "budget", "search")
TRAIN_KEYS = {"batch_size", "seeds", "precision", "device", "eval_fractions", "warmup_steps", "log_every",
              "checkpoint_every_s", "grad_clip", "eval_batch_size", "threads"}
EVAL_KEYS = {"metrics", "num_samples", "repeats", "feature_extractor", "sample_batch_size", "speed_batch",
             "num_real", "bpd_batches", "exact_bpd_images"}

TRAIN_DEFAULTS = {"batch_size": 64, "seeds": [0], "precision": "fp32", "device": "auto", "eval_fractions": [1.0],
                  "warmup_steps": 3, "log_every": 10, "checkpoint_every_s": 300.0, "grad_clip": 0.0,
                  "eval_batch_size": 256}
EVAL_DEFAULTS = {"metrics": ["bits_per_dim", "sampling_speed"], "num_samples": 256, "repeats": 1,
                 "feature_extractor": "auto", "sample_batch_size": 256, "speed_batch": 128,
                 "num_real": 0, "bpd_batches": 0, "exact_bpd_images": 8}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long every model of a suite trains: ``value`` units of ``kind``.

    ``seconds`` is wall clock (what fits in an hour on *this* machine); ``steps``, ``images``, ``epochs`` and
    ``flops`` train the same steps on every machine. ``flops`` is the compute-matched one: each model trains
    ``ceil(value / FLOPs per step)`` steps, its step counted once before training (:mod:`bench.flops`), so models
    of different cost get the same training compute and a run elsewhere repeats the same steps."""

    kind: str
    value: float

    def __str__(self) -> str:
        if self.kind == "flops":
            return f"{self.value:.3g} flops"
        v = int(self.value) if float(self.value).is_integer() else self.value
        return f"{v} {self.kind}"

    def spent(self, steps: int, images: int, seconds: float, epochs: float, flops: float = 0.0) -> float:
        """How much of this budget's unit a run has used (epochs may be fractional: the loader's position)."""
        return {"steps": steps, "images": images, "seconds": seconds, "epochs": epochs, "flops": flops}[self.kind]

    def fraction(self, steps: int, images: int, seconds: float, epochs: float, flops: float = 0.0) -> float:
        """The share of the budget used, in [0, 1]: what evaluations at budget fractions and progress bars read."""
        return min(1.0, self.spent(steps, images, seconds, epochs, flops) / self.value)

    def reached(self, steps: int, images: int, seconds: float, epochs: float, flops: float = 0.0) -> bool:
        """Whether training is done; an epochs budget counts whole epochs only, so the last one is never cut short."""
        whole = math.floor(epochs) if self.kind == "epochs" else epochs
        return self.spent(steps, images, seconds, whole, flops) >= self.value

    def images_left(self, images: int) -> int | None:
        """For an images budget, how many more images the next batch may hold (the last batch is cut to fit)."""
        return int(self.value) - images if self.kind == "images" else None

    def steps_for(self, flops_per_step: float) -> int:
        """The steps a flops budget buys at ``flops_per_step`` (the last step may overshoot by less than one step)."""
        return max(1, math.ceil(self.value / flops_per_step))

    @classmethod
    def parse(cls, spec: Any, where: str) -> "Budget":
        """From ``{steps = 200}`` or the CLI string ``"steps=200"``."""
        if isinstance(spec, str):
            if "=" not in spec:
                raise BenchError(f"{where}: budget {spec!r} must look like 'steps=200' (one of {', '.join(BUDGET_KINDS)})")
            k, v = spec.split("=", 1)
            try:
                spec = {k.strip(): float(v)}
            except ValueError:
                raise BenchError(f"{where}: budget value {v!r} is not a number") from None
        if not isinstance(spec, dict) or len(spec) != 1:
            raise BenchError(f"{where}: budget must name exactly one of {', '.join(BUDGET_KINDS)}, e.g. budget = {{ steps = 200 }}")
        (kind, value), = spec.items()
        if kind not in BUDGET_KINDS:
            raise BenchError(f"{where}: unknown budget kind {kind!r}{did_you_mean(kind, BUDGET_KINDS)}; use one of {', '.join(BUDGET_KINDS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
            raise BenchError(f"{where}: budget {kind} must be a finite positive number, got {value!r}")
        if kind in WHOLE_BUDGETS and not float(value).is_integer():
            raise BenchError(f"{where}: budget {kind} must be a whole number, got {value!r}")
        return cls(kind, float(value))


@dataclasses.dataclass
class Suite:
    """A resolved suite: base merged with one profile and the overrides."""

    name: str
    profile: str
    budget: Budget
    data: dict[str, Any]
    train: dict[str, Any]
    eval: dict[str, Any]
    models: dict[str, dict[str, Any]]  # run name -> {"model": registered name, **config}
    description: str = ""
    mirrors: list[str] = dataclasses.field(default_factory=list)
    overrides: list[str] = dataclasses.field(default_factory=list)
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["budget"] = {self.budget.kind: self.budget.value}
        return d

    def select(self, models: list[str] | None = None, seeds: list[int] | None = None,
               also: tuple[str, ...] = ()) -> tuple[list[str], list[int]]:
        """The runs (in suite order) and seeds a command asks for: ``models`` picks among the suite's runs (names in
        ``also``, rows that are not models such as the real-data row, are accepted too), ``seeds`` replaces
        ``train.seeds``; the name of a searched run picks every point of its grid. One place for `bench run`, an
        array task and `bench submit`'s plan."""
        runs = list(self.models)
        if models:
            of = {run: (cfg.get("search") or {}).get("of") if isinstance(cfg, dict) else None
                  for run, cfg in self.models.items()}
            searched = set(of.values()) - {None}
            unknown = [m for m in models if m not in self.models and m not in also and m not in searched]
            if unknown:
                raise BenchError(f"suite {self.name} has no model {unknown[0]!r}{did_you_mean(unknown[0], runs)}; "
                                 f"it has: {', '.join(runs)}")
            runs = [m for m in runs if m in models or of[m] in models]
        return runs, [int(s) for s in (seeds or self.train["seeds"])]

    def budget_for(self, run_name: str) -> Budget:
        """The run's own budget (``models.<run>.budget``) where it has one, else the suite's (also for rows that are
        not models, such as the real-data row)."""
        spec = self.models.get(run_name, {}).get("budget")
        return Budget.parse(spec, f"models.{run_name}.budget") if spec is not None else self.budget

    def config_hash(self, model: str) -> str:
        """Hash of everything that determines a run of ``model`` except the seed."""
        # seeds and threads are how the runs are executed, not what they are (threads is recorded per run)
        payload = {"data": self.data, "train": {k: v for k, v in self.train.items() if k not in ("seeds", "threads")},
                   "eval": self.eval, "budget": str(self.budget), "model": self.models[model]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def suite_path(name_or_path: str) -> Path:
    """A suite name (shipped with genbench) or a path to a user's TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise BenchError(f"suite file {name_or_path} not found")
        return p
    candidate = SUITES_DIR / f"{name_or_path}.toml"
    if not candidate.is_file():
        raise BenchError(f"unknown suite {name_or_path!r}{did_you_mean(name_or_path, suite_names())}; "
                         "`bench list` shows the suites, or pass a path to your own .toml")
    return candidate


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"malformed suite file {path}: {e}") from None
    except UnicodeDecodeError:
        raise BenchError(f"malformed suite file {path}: not UTF-8 text (a binary file?); pass a TOML suite file") from None


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``models.ddpm.lr=1e-4`` -> (["models", "ddpm", "lr"], 1e-4). Values are TOML literals; bare words are strings."""
    if "=" not in text:
        raise BenchError(f"--set {text!r} must look like key.path=value, e.g. --set models.ddpm.lr=1e-4")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise BenchError(f"--set {text!r}: empty key component")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_override(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BenchError(f"--set {'.'.join(path)}: {part!r} is not a table")
    node[path[-1]] = value


def load_suite(name_or_path: str = DEFAULT_SUITE, profile: str = "smoke", overrides: list[str] | None = None,
               budget: str | None = None, check_models: bool = True) -> Suite:
    """Load, merge, override and validate a suite. Every problem is a one-line :class:`BenchError`."""
    path = suite_path(name_or_path)
    raw = read_toml(path)
    where = str(path)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise BenchError(f"{where}: unknown top-level key {k!r}{did_you_mean(k, TOP_KEYS)}")
    profiles = raw.get("profiles", {})
    if profile not in profiles:
        raise BenchError(f"{where}: no profile {profile!r}{did_you_mean(profile, profiles)}; "
                         f"this suite has: {', '.join(sorted(profiles)) or 'none'}")
    merged = deep_merge({k: v for k, v in raw.items() if k != "profiles"}, profile_table(profiles, profile, where))
    overrides = list(overrides or [])
    for text in overrides:
        keypath, value = parse_override(text)
        apply_override(merged, keypath, value)
    try:
        return _resolve(raw, merged, path, profile, overrides, budget, check_models)
    except BenchError as e:
        raise blame_flag(e, str(path), overrides) from None


def profile_table(profiles: dict[str, Any], name: str, where: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The profile's table with what it ``extends`` merged under it (a chain of profiles, no cycles)."""
    table = profiles[name]
    if not isinstance(table, dict):
        raise BenchError(f"{where}: [profiles.{name}] must be a table")
    own = {k: v for k, v in table.items() if k != "extends"}
    parent = table.get("extends")
    if parent is None:
        return own
    if not isinstance(parent, str) or parent not in profiles:
        raise BenchError(f"{where}: profile {name!r} extends unknown profile {parent!r}"
                         f"{did_you_mean(str(parent), profiles)}; this suite has: {', '.join(sorted(profiles))}")
    if parent in chain + (name,):
        raise BenchError(f"{where}: profiles extend each other in a cycle: {' -> '.join(chain + (name, parent))}")
    return deep_merge(profile_table(profiles, parent, where, chain + (name,)), own)


def _label(value: Any) -> str:
    """A grid value as it appears in a run name: ``0.001`` -> ``0.001``, ``[2, 2]`` -> ``2x2``."""
    if isinstance(value, list):
        return "x".join(_label(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value).lower()


def expand_search(models: dict[str, Any], search: Any, where: str) -> dict[str, Any]:
    """Each searched run replaced, in place, by one run per point of its grid (``<run>-<key><value>...``).

    Every searched run gets the same number of points: a comparison is fair only with equal tuning effort
    (Lucic et al. 2018, "Are GANs Created Equal?")."""
    if not isinstance(search, dict):
        raise BenchError(f"{where}: [search] must hold one table per run, e.g. [search.ddpm] lr = [3e-4, 1e-3]")
    sizes = {}
    for run, grid in search.items():
        if run not in models:
            raise BenchError(f"{where}: search.{run}: the suite has no run {run!r}{did_you_mean(run, models)}; "
                             f"it has: {', '.join(models)}")
        if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
            raise BenchError(f"{where}: search.{run} must map config keys to non-empty lists of values, "
                             f"e.g. lr = [3e-4, 1e-3, 3e-3]")
        sizes[run] = math.prod(len(v) for v in grid.values())
    if len(set(sizes.values())) > 1:
        raise BenchError(f"{where}: search: every searched run needs the same number of configurations (equal tuning "
                         f"effort), got " + ", ".join(f"{run} {n}" for run, n in sizes.items()))
    out: dict[str, Any] = {}
    for run, cfg in models.items():
        if run not in search or not isinstance(cfg, dict):
            out[run] = cfg
            continue
        keys = list(search[run])
        for point in itertools.product(*(search[run][k] for k in keys)):
            name = run + "".join(f"-{k}{_label(v)}" for k, v in zip(keys, point))
            out[name] = {"model": run, **cfg, **dict(zip(keys, point)), "search": {"of": run, "point": dict(zip(keys, point))}}
    return out


def blame_flag(error: BenchError, where: str, overrides: list[str]) -> BenchError:
    """An error about a key that a ``--set`` gave names that flag, not the suite file, which never held the value."""
    message = str(error)
    for text in reversed(overrides):
        key = text.split("=", 1)[0].strip()
        if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message):
            rest = message[len(where) + 2:] if message.startswith(where + ": ") else message
            return BenchError(f"--set {text}: {rest}")
    return error


def _resolve(raw: dict[str, Any], merged: dict[str, Any], path: Path, profile: str, overrides: list[str],
             budget: str | None, check_models: bool) -> Suite:
    """Validate the merged suite (every problem a one-line :class:`BenchError`) and build it."""
    where = str(path)
    unknown = set(merged) - TOP_KEYS  # again after the profile and --set: they can add keys too
    if unknown:
        k = sorted(unknown)[0]
        raise BenchError(f"{where}: unknown top-level key {k!r}{did_you_mean(k, TOP_KEYS)} (from profile {profile!r} "
                         f"or --set)")
    for section, allowed in (("data", DATA_KEYS), ("train", TRAIN_KEYS), ("eval", EVAL_KEYS)):
        table = merged.get(section, {})
        if not isinstance(table, dict):
            raise BenchError(f"{where}: [{section}] must be a table")
        for k in table:
            if k not in allowed:
                raise BenchError(f"{where}: unknown key {section}.{k}{did_you_mean(k, allowed)}")
    data = dict(merged.get("data", {}))
    if "dataset" not in data:
        raise BenchError(f"{where}: missing key data.dataset (e.g. dataset = \"digits\")")
    train = {**TRAIN_DEFAULTS, **merged.get("train", {})}
    evaluation = {**EVAL_DEFAULTS, **merged.get("eval", {})}
    _check_train(train, where)
    _check_counts(data, train, evaluation, where)

    budget_spec = budget if budget is not None else merged.get("budget")
    if budget_spec is None:
        raise BenchError(f"{where}: profile {profile!r} has no budget (e.g. budget = {{ steps = 200 }})")
    parsed_budget = Budget.parse(budget_spec, where if budget is None else "--budget")

    models = merged.get("models", {})
    if "search" in merged and isinstance(models, dict):
        models = expand_search(models, merged["search"], where)
    if not isinstance(models, dict) or not models:
        raise BenchError(f"{where}: the suite lists no models (add a [models.<name>] table)")
    resolved: dict[str, dict[str, Any]] = {}
    for run_name, cfg in models.items():
        if not isinstance(cfg, dict):
            raise BenchError(f"{where}: models.{run_name} must be a table")
        cfg = dict(cfg)
        cfg.setdefault("model", run_name)
        for key in ("sampler", "samplers"):
            if not isinstance(cfg.get(key, {}), dict):
                raise BenchError(f"{where}: models.{run_name}.{key} must be a table, e.g. {{ name = \"ddim\", steps = 10 }}")
        for label, options in cfg.get("samplers", {}).items():
            if not isinstance(options, dict) or "@" in label:
                raise BenchError(f"{where}: models.{run_name}.samplers.{label} must be a table of sampler options "
                                 f"under a label without '@' (e.g. ddim-10 = {{ steps = 10 }})")
        if budget is not None:  # --budget: every run trains to it, its own budget included
            cfg.pop("budget", None)
        if "budget" in cfg:
            Budget.parse(cfg["budget"], f"{where}: models.{run_name}.budget")
        bs = cfg.get("batch_size", 1)
        if isinstance(bs, bool) or not isinstance(bs, int) or bs <= 0:
            raise BenchError(f"{where}: models.{run_name}.batch_size must be a positive integer, got {bs!r}")
        resolved[run_name] = cfg
    if check_models:
        validate_models(resolved, where)
    return Suite(name=raw.get("name", path.stem), profile=profile, budget=parsed_budget, data=data, train=train,
                 eval=evaluation, models=resolved, description=raw.get("description", ""),
                 mirrors=list(raw.get("mirrors", [])), overrides=overrides, path=str(path))


def validate_models(models: dict[str, dict[str, Any]], where: str) -> None:
    """Every model is registered and its config fits the wrapper's schema (``options``: known keys, types,
    choices, bounds; see :class:`bench.options.Option`), so a typo is a one-line error before training
    rather than a ``failed`` record after it. The schemas come from :mod:`bench.catalog`, so a mistake costs no
    torch import."""
    from bench import catalog, options

    names = [m["name"] for m in catalog.load()["models"]]
    for run_name, cfg in models.items():
        schema = catalog.schema(cfg["model"]) if isinstance(cfg["model"], str) else None
        if schema is None:
            raise BenchError(f"{where}: models.{run_name}: unknown model {cfg['model']!r}"
                             f"{did_you_mean(str(cfg['model']), names)}; `bench list` shows the registered models")
        options.check_config(cfg["model"], schema, model_config(cfg), f"models.{run_name}", where)


def model_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config handed to the wrapper (harness-level keys removed)."""
    return {k: v for k, v in cfg.items() if k not in HARNESS_MODEL_KEYS}


# settings that count things: (section, key) -> smallest allowed value (absent keys are not checked)
COUNTS = {("data", "image_size"): 1, ("data", "channels"): 1, ("data", "limit_train"): 1, ("data", "limit_eval"): 1,
          ("train", "eval_batch_size"): 1, ("train", "log_every"): 1, ("train", "threads"): 1, ("train", "warmup_steps"): 0,
          ("eval", "num_samples"): 1, ("eval", "repeats"): 1, ("eval", "sample_batch_size"): 1,
          ("eval", "speed_batch"): 1, ("eval", "num_real"): 0, ("eval", "bpd_batches"): 0,
          ("eval", "exact_bpd_images"): 1}


def _check_counts(data: dict[str, Any], train: dict[str, Any], evaluation: dict[str, Any], where: str) -> None:
    """Whole-number settings in range, non-negative durations, and a list of metric names."""
    tables = {"data": data, "train": train, "eval": evaluation}
    for (section, key), low in COUNTS.items():
        v = tables[section].get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            what = "a positive integer" if low == 1 else "an integer >= 0"
            raise BenchError(f"{where}: {section}.{key} must be {what}, got {v!r}")
    for key in ("checkpoint_every_s", "grad_clip"):
        v = train.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise BenchError(f"{where}: train.{key} must be a number >= 0, got {v!r}")
    m = evaluation.get("metrics")
    if not isinstance(m, list) or not all(isinstance(x, str) for x in m):
        raise BenchError(f"{where}: eval.metrics must be a list of metric names, e.g. [\"bits_per_dim\", \"fid\"]")


def _check_train(train: dict[str, Any], where: str) -> None:
    bs = train["batch_size"]
    if isinstance(bs, bool) or not isinstance(bs, int) or bs <= 0:
        raise BenchError(f"{where}: train.batch_size must be a positive integer, got {bs!r}")
    seeds = train["seeds"]
    if isinstance(seeds, int):
        train["seeds"] = seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise BenchError(f"{where}: train.seeds must be a list of integers, got {seeds!r}")
    if train["precision"] not in ("fp32", "bf16"):
        raise BenchError(f"{where}: train.precision must be 'fp32' or 'bf16', got {train['precision']!r}")
    fr = train["eval_fractions"]
    if not isinstance(fr, list) or not fr or not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in fr):
        raise BenchError(f"{where}: train.eval_fractions must be fractions in (0, 1], got {fr!r}")
    train["eval_fractions"] = sorted(set(float(f) for f in fr) | {1.0})
