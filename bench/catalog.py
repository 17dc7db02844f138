"""What `bench list` shows about the registered models and what the suite loader checks configs against, without
importing torch.

Listing the registry means importing every wrapper, hence torch (about 2 s). The catalog keeps each model's name,
family, likelihood, conditional flag, summary and its config and sampler schemas (:mod:`bench.options`) in the
cache folder under
a hash of the sources that define it: every ``.py`` file of ``baselines`` and ``bench/registry.py``. An edited or
new wrapper changes the hash, so a stale catalog is never read; the first `bench list` after a change imports the
registry and writes the catalog again. With ``GENBENCH_PLUGINS`` set the registry is always imported (a plugin's
sources are not hashed).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import baselines
from bench import options, paths

REGISTRY_SOURCE = Path(__file__).with_name("registry.py")


def sources_key() -> str | None:
    """Hash of the sources the catalog describes; None when plugins are in use."""
    if os.environ.get("GENBENCH_PLUGINS"):
        return None
    h = hashlib.sha256()
    root = Path(baselines.__file__).parent
    for path in [REGISTRY_SOURCE, *sorted(root.rglob("*.py"))]:
        h.update(str(path.relative_to(root.parent)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def build() -> dict[str, Any]:
    """The catalog from the registry itself (imports every wrapper)."""
    from bench import registry

    models, schemas = [], {}
    for name, cls in registry.available().items():
        models.append({"name": name, "family": cls.family, "likelihood": bool(cls.has_likelihood),
                       "conditional": bool(cls.conditional), "summary": registry.summary(cls)})
        schemas[name] = {table: {key: options.to_json(opt) for key, opt in getattr(cls, table).items()}
                         for table in ("options", "sampler_options")}
    return {"models": models, "schemas": schemas}


def load(cache_dir: Path | None = None) -> dict[str, Any]:
    """The catalog: from the live registry when this process has imported it already (it then costs nothing, and
    wrappers registered at run time, a test's or a notebook's, are included); else read from the cache when its
    sources are unchanged, else built (and cached)."""
    if "bench.registry" in sys.modules:
        return build()
    key = sources_key()
    path = Path(cache_dir or paths.cache_dir()) / "catalog" / f"{key}.json"
    if key is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # unreadable: rebuilt below
    catalog = build()
    if key is not None:
        try:
            from bench.records import atomic_write_text

            atomic_write_text(path, json.dumps(catalog))
        except OSError:
            pass  # a read-only cache only costs the next call its speed
    return catalog


def schema(name: str, table: str = "options", cache_dir: Path | None = None) -> dict[str, options.Option] | None:
    """Model ``name``'s config (``options``) or sampler (``sampler_options``) schema; None when not registered."""
    entry = load(cache_dir)["schemas"].get(name)
    return None if entry is None else {key: options.from_json(d) for key, d in entry[table].items()}
