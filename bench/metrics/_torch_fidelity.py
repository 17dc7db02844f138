"""Registering genbench's feature extractors with torch-fidelity, once per process (shared by every feature space)."""

from __future__ import annotations


def register_extractor(name: str, cls: type) -> None:
    """Make ``name`` a torch-fidelity ``feature_extractor`` (a no-op when it already is, e.g. on re-import)."""
    import torch_fidelity
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(name, cls)
