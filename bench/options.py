"""Typed configuration: a wrapper's config keys and its sampler options as :class:`Option` schemas, the one check of
a value against them, and the frozen config object a wrapper reads (``self.cfg.timesteps``). No torch here: the
suite loader and `bench list` use these through :mod:`bench.catalog` without importing the wrappers."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bench.errors import BenchError, did_you_mean


@dataclasses.dataclass(frozen=True)
class Option:
    """One config key of a wrapper: default, type, allowed values and a one-line meaning.

    A wrapper's ``options`` table is its config schema (what torch-fidelity's one defaults table and
    diffusers' typed ``__init__`` give): the suite loader checks every value against it before anything
    trains, the wrapper's ``__init__`` checks it again for direct use, and ``bench list --model NAME``
    prints it, so the documented keys cannot drift from the code. ``type`` is inferred from the default
    (give it where the default is None, which means "the preset's value"); ``items`` types a list's
    elements; ``choices`` is the Literal set; ``ge``/``gt``/``le``/``lt`` bound numbers (and list items).
    """

    default: Any
    help: str
    type: type | None = None
    items: type | None = None
    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    @property
    def kind(self) -> type:
        if self.type is not None:
            return self.type
        if self.default is None:
            raise TypeError(f"Option {self.help!r}: a None default needs an explicit type")
        return type(self.default)

    def with_default(self, default: Any) -> "Option":
        """The same key with another default (a subclass's preset)."""
        return dataclasses.replace(self, default=default)

    def describe(self) -> str:
        """What a valid value is, in words: 'a number > 0', 'one of 'linear', 'cosine''."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind, bounds = self.kind, self._bounds()
        if kind is bool:
            return "true or false"
        if kind is str:
            return "a non-empty string"
        if kind is dict:
            return "a table"
        if kind is list:
            item = {int: "whole numbers", float: "numbers", str: "strings"}.get(self.items, "values")
            return f"a list of {item}{bounds}"
        return ("a whole number" if kind is int else "a finite number") + bounds

    def _bounds(self) -> str:
        parts = [f"{op} {v:g}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                 if v is not None]
        return (" " + " and ".join(parts)) if parts else ""

    def problem(self, value: Any) -> str | None:
        """None when ``value`` fits; else what it should be (see :meth:`describe`)."""
        if value is None and self.default is None:
            return None
        if self.choices is not None:
            return None if value in self.choices and type(value) is type(self.choices[0]) else self.describe()
        if self.kind is list:
            ok = isinstance(value, list) and (self.items is None or all(self._scalar_ok(self.items, v) for v in value))
        else:
            ok = self._scalar_ok(self.kind, value)
        return None if ok else self.describe()

    def _scalar_ok(self, kind: type, value: Any) -> bool:
        if kind is bool:
            return isinstance(value, bool)
        if kind is str:
            return isinstance(value, str) and bool(value.strip())
        if kind is dict:
            return isinstance(value, dict)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))


def _misfit(values: dict[str, Any], schema: dict[str, Option]) -> tuple[str, str | None] | None:
    """The first key of ``values`` that ``schema`` lacks (problem None) or whose value does not fit it, with what
    the value should be; None when all fit."""
    for key, value in values.items():
        if key not in schema:
            return key, None
        problem = schema[key].problem(value)
        if problem:
            return key, problem
    return None


def check_config(name: str, options: dict[str, Option], config: dict[str, Any], path: str, where: str = "") -> None:
    """Every key of ``config`` is one of model ``name``'s ``options`` and every value fits it; a one-line BenchError
    otherwise, naming ``where`` (a suite file) and the key as ``path.key`` (e.g. ``models.ddpm.lr``)."""
    misfit = _misfit(config, options)
    if misfit is None:
        return
    prefix, (key, problem) = (f"{where}: " if where else ""), misfit
    if problem is None:
        raise BenchError(f"{prefix}unknown key {path}.{key} for model {name!r}{did_you_mean(key, options)};"
                         f" `bench list --model {name}` shows its keys")
    raise BenchError(f"{prefix}{path}.{key} must be {problem} for model {name!r} "
                     f"(default {options[key].default!r}), got {config[key]!r}")


def parse_options(options: dict[str, Any], schema: dict[str, Option], what: str) -> dict[str, Any]:
    """``options`` checked against ``schema`` and completed with its defaults: the one parser of sampler options
    (unknown names with "did you mean", values by type, choices and bounds), a one-line BenchError naming ``what``."""
    misfit = _misfit(options, schema)
    if misfit is not None:
        key, problem = misfit
        if problem is None:
            raise BenchError(f"{what}: unknown sampler option {key!r}{did_you_mean(key, schema)}; "
                             f"known: {', '.join(schema) or 'none'}")
        raise BenchError(f"{what}: sampler option {key} must be {problem}, got {options[key]!r}")
    return {key: options.get(key, opt.default) for key, opt in schema.items()}


def config_class(name: str, options: dict[str, Option]) -> type:
    """A frozen dataclass with one typed field per option (default included): a wrapper's config object."""
    fields = []
    for key, opt in options.items():
        annotation = opt.kind if opt.default is not None else (opt.kind | None)
        default = dataclasses.field(default_factory=lambda d=opt.default: list(d)) if isinstance(opt.default, list) \
            else dataclasses.field(default=opt.default)
        fields.append((key, annotation, default))
    return dataclasses.make_dataclass(name, fields, frozen=True)


def build_config(config_cls: type, options: dict[str, Option], config: dict[str, Any]) -> Any:
    """The config object of checked ``config`` values over the defaults; a whole number given for a float option
    becomes a float (``lr = 1`` in TOML), so no wrapper casts."""
    values = {}
    for key, opt in options.items():
        value = config.get(key, opt.default)
        whole = isinstance(value, int) and not isinstance(value, bool)
        values[key] = float(value) if whole and value is not None and opt.kind is float else value
    return config_cls(**values)


KINDS = {k.__name__: k for k in (int, float, str, bool, list, dict)}


def to_json(opt: Option) -> dict[str, Any]:
    """An option as plain data (the catalog keeps it, so a suite is checked without importing the wrappers)."""
    d = dataclasses.asdict(opt)
    d["type"], d["items"] = opt.kind.__name__, (opt.items.__name__ if opt.items else None)
    d["choices"] = list(opt.choices) if opt.choices is not None else None
    return d


def from_json(d: dict[str, Any]) -> Option:
    return Option(**{**d, "type": KINDS[d["type"]], "items": KINDS[d["items"]] if d["items"] else None,
                     "choices": tuple(d["choices"]) if d["choices"] is not None else None})


