"""Direction, kind and tolerance of every metric for ``bench compare``: ``bench/tolerances.toml`` (shipped), a
``tolerances.toml`` beside a baseline, and ``--tolerance FILE``, later tables overriding earlier ones, per metric
and per suite; direction and kind default to the metric's ``@metric`` declaration (see :func:`declared`)."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from bench.errors import BenchError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEFAULT_TOLERANCES = Path(__file__).with_name("tolerances.toml")
FALLBACK_DEFAULTS = {"direction": "none", "kind": "quality", "abs": 0.0, "rel": 0.05, "sigmas": 3.0,
                     "cross_hardware_rel": 3.0, "cross_hardware_sigmas": 3.0, "warned_seed_rate": 0.0}
FIELDS = set(FALLBACK_DEFAULTS)


def _exact_and_globs(section: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    out = [section[metric]] if metric in section else []
    out += [v for k, v in section.items() if k != metric and any(c in k for c in "*?[") and fnmatch.fnmatchcase(metric, k)]
    return out


class Tolerances:
    """Direction, kind and tolerance of each metric, per suite; see ``bench/tolerances.toml``."""

    def __init__(self, tables: list[dict[str, Any]], sources: list[str]):
        self.tables = tables  # later tables override earlier ones
        self.sources = sources

    @classmethod
    def load(cls, extra: str | Path | None = None, baseline_dir: Path | None = None) -> "Tolerances":
        paths: list[Path] = []
        if DEFAULT_TOLERANCES.is_file():
            paths.append(DEFAULT_TOLERANCES)
        if baseline_dir is not None and (Path(baseline_dir) / "tolerances.toml").is_file():
            paths.append(Path(baseline_dir) / "tolerances.toml")
        if extra is not None:
            if not Path(extra).is_file():
                raise BenchError(f"tolerance file {extra} not found; pass an existing TOML file (see bench/tolerances.toml)")
            paths.append(Path(extra))
        tables = []
        for p in dict.fromkeys(paths):
            try:
                with open(p, "rb") as f:
                    t = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise BenchError(f"malformed tolerance file {p}: {e}") from None
            except UnicodeDecodeError:
                raise BenchError(f"malformed tolerance file {p}: not UTF-8 text (a binary file?)") from None
            _validate(t, p)
            tables.append(t)
        return cls(tables, [str(p) for p in dict.fromkeys(paths)])

    @staticmethod
    def _match(section: dict[str, Any], metric: str) -> list[dict[str, Any]]:
        """Entries of a [metrics] table that apply to ``metric``: exact name first, then globs in order.
        A per-sampler metric (``fid@ddim-10``) also takes its base metric's entries (``fid``), after its own."""
        out = _exact_and_globs(section, metric)
        if "@" in metric:
            out += _exact_and_globs(section, metric.split("@", 1)[0])
        return out

    def rule(self, suite: str, metric: str) -> dict[str, Any]:
        """The resolved fields for (suite, metric): most specific wins, field by field: defaults, then the
        metric's declared direction and kind, then the tolerance tables' entries for it."""
        layers: list[dict[str, Any]] = [FALLBACK_DEFAULTS]
        for t in self.tables:
            layers.append(t.get("defaults", {}))
        layers.append(declared(metric))
        for t in self.tables:  # generic metric entries (least specific glob first)
            layers += list(reversed(self._match(t.get("metrics", {}), metric)))
        for t in self.tables:
            layers += list(reversed(self._match(t.get("suites", {}).get(suite, {}).get("metrics", {}), metric)))
        rule: dict[str, Any] = {}
        for layer in layers:
            rule.update(layer)
        return rule


def declared(metric: str) -> dict[str, str]:
    """Direction and kind from the metric's ``@metric`` declaration (empty when nothing declares the key).

    Imported here, not at the top: reading the declarations imports the metric modules (torch), which
    `bench compare` needs only once it compares."""
    from bench import metrics

    out = metrics.describe(metric)
    return {"direction": out.direction, "kind": out.kind} if out is not None else {}


def _validate(t: dict[str, Any], path: Path) -> None:
    def check(entry: Any, where: str) -> None:
        if not isinstance(entry, dict):
            raise BenchError(f"{path}: {where} must be a table")
        for k, v in entry.items():
            if k not in FIELDS:
                from bench.errors import did_you_mean
                raise BenchError(f"{path}: unknown key {where}.{k}{did_you_mean(k, FIELDS)}")
            if k == "direction" and v not in ("lower", "higher", "none"):
                raise BenchError(f"{path}: {where}.direction must be \"lower\", \"higher\" or \"none\", got {v!r}")
            if k == "kind" and v not in ("quality", "timing", "memory"):
                raise BenchError(f"{path}: {where}.kind must be \"quality\", \"timing\" or \"memory\", got {v!r}")
            if k not in ("direction", "kind") and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise BenchError(f"{path}: {where}.{k} must be a non-negative number, got {v!r}")

    for k in t:
        if k not in ("defaults", "metrics", "suites"):
            raise BenchError(f"{path}: unknown top-level key {k!r} (use [defaults], [metrics.NAME], [suites.SUITE.metrics.NAME])")
    check(t.get("defaults", {}), "defaults")
    for name, entry in t.get("metrics", {}).items():
        check(entry, f"metrics.{name}")
    for suite, body in t.get("suites", {}).items():
        for name, entry in (body.get("metrics", {}) if isinstance(body, dict) else {}).items():
            check(entry, f"suites.{suite}.metrics.{name}")
