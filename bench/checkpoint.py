"""Atomic, verified checkpoints so preempted or killed runs resume where they stopped.

Layout of a run's checkpoint folder::

    ckpt-<step>.pt      torch.save payload (model, optimizers, RNG states, loader position, timings)
    latest.json         {"files": [{"file", "sha256", "step"}, ...]} newest first, written atomically

A checkpoint file is written to a temp name, fsynced and renamed, and only then listed in
``latest.json``; loading verifies the sha256 and falls back to the previous good checkpoint
when the newest is truncated or corrupt. The two newest are kept.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from bench.records import atomic_write_bytes, atomic_write_text

KEEP = 2


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _index(folder: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((folder / "latest.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def save(folder: Path, state: dict[str, Any], step: int) -> Path:
    """Write ``state`` as the newest checkpoint of ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = atomic_write_bytes(folder / f"ckpt-{step}.pt", data)
    entries = [e for e in _index(folder) if e.get("file") != path.name]
    entries.insert(0, {"file": path.name, "sha256": _sha256(data), "step": step})
    atomic_write_text(folder / "latest.json", json.dumps({"files": entries[:KEEP]}, indent=1))
    for old in entries[KEEP:]:
        try:
            (folder / old["file"]).unlink()
        except OSError:
            pass
    return path


def _index_problem(folder: Path) -> str | None:
    """Why a run's checkpoints cannot be listed although some exist (None: nothing there, or a good index)."""
    index = folder / "latest.json"
    if not index.exists():
        stray = sorted(p.name for p in folder.glob("ckpt-*.pt")) if folder.is_dir() else []
        return f"latest.json missing next to {', '.join(stray)}" if stray else None
    try:
        files = json.loads(index.read_text())["files"]
        if not isinstance(files, list):
            raise TypeError("'files' is not a list")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"latest.json unreadable ({type(e).__name__})"
    return None


def load(folder: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any] | None, list[str]]:
    """(newest state that verifies, notes about skipped corrupt checkpoints); (None, notes) if none.

    Empty notes with None mean there was nothing to resume; notes with None mean checkpoints existed
    but none could be used, which the caller must say before starting over."""
    problem = _index_problem(folder)
    notes = [problem] if problem else []
    for entry in _index(folder):
        path = folder / entry["file"]
        try:
            data = path.read_bytes()
        except OSError:
            notes.append(f"{path.name} missing")
            continue
        if _sha256(data) != entry.get("sha256"):
            notes.append(f"{path.name} corrupt (checksum mismatch), used the previous checkpoint")
            continue
        try:
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False), notes
        except Exception as e:  # a checksum match makes this unlikely, but never crash a resume on it
            notes.append(f"{path.name} unreadable ({type(e).__name__})")
    return None, notes


def clear(folder: Path) -> None:
    """Remove a finished run's checkpoints."""
    for entry in _index(folder):
        try:
            (folder / entry["file"]).unlink()
        except OSError:
            pass
    try:
        (folder / "latest.json").unlink()
        folder.rmdir()
    except OSError:
        pass


def training_payload(model: Any, loader: Any, rng: dict[str, Any], state: dict[str, Any],
                     config_hash: str) -> dict[str, Any]:
    """What a run's checkpoint holds: the model, its optimizers, the loader's position, the RNG states
    (:func:`bench.seeding.capture_rng`), the trainer's progress and the config hash it belongs to."""
    return {"model": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in model.optimizers.items()},
            "loader": loader.state_dict(), **rng, "state": state, "config_hash": config_hash}


def restore_training(payload: dict[str, Any], model: Any, loader: Any, generator: torch.Generator,
                     device: torch.device) -> dict[str, Any]:
    """Put a :func:`training_payload` back into the model, optimizers, loader and RNGs; returns the trainer's
    progress to continue from."""
    from bench.seeding import restore_rng

    model.load_state_dict(payload["model"])
    for k, o in model.optimizers.items():
        o.load_state_dict(payload["optimizers"][k])
    loader.load_state_dict(payload["loader"])
    restore_rng(payload, generator, device)
    return payload["state"]
