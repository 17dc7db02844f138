"""Sample grids (PNG, via Pillow): generated images per model, per class for conditional models,
and the real evaluation images beside them, as seed 000's figures show them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.records import RunRecord

MIN_CELL = 48  # small images (16x16 digits) are upscaled (nearest) so they stay visible
PAD = 2


def to_hwc(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) uint8 -> (N, H, W, 3) uint8."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.dtype != np.uint8:
        x = np.clip(np.round(x.astype(np.float64) * (255 if x.max() <= 1.0 else 1)), 0, 255).astype(np.uint8)
    x = x.transpose(0, 2, 3, 1)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x[..., :3]


def grid_array(rows: list[np.ndarray], ncol: int) -> np.ndarray:
    """Tile rows of (k, H, W, 3) images into one image; rows may be shorter than ncol."""
    h, w = rows[0].shape[1:3]
    scale = max(1, -(-MIN_CELL // max(h, w)))
    ch, cw = h * scale + PAD, w * scale + PAD
    out = np.full((len(rows) * ch + PAD, ncol * cw + PAD, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row[:ncol]):
            big = img.repeat(scale, 0).repeat(scale, 1)
            out[PAD + i * ch: PAD + i * ch + h * scale, PAD + j * cw: PAD + j * cw + w * scale] = big
    return out


def save_png(arr: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, optimize=True)
    return path


def sample_grid(images: np.ndarray, path: Path, ncol: int = 8, max_images: int = 64) -> Path:
    x = to_hwc(images)[:max_images]
    rows = [x[i:i + ncol] for i in range(0, len(x), ncol)]
    return save_png(grid_array(rows, ncol), path)


def class_grid(images: np.ndarray, labels: np.ndarray, path: Path, per_class: int = 8) -> Path:
    """One row per class (classes in label order), up to ``per_class`` images each."""
    x = to_hwc(images)
    labels = np.asarray(labels).reshape(-1)
    rows = [x[labels == k][:per_class] for k in sorted(set(labels.tolist()))]
    rows = [r for r in rows if len(r)]
    return save_png(grid_array(rows, per_class), path)


def load_samples(record: RunRecord, results_dir: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The record's saved sample grid (artifacts.samples, relative to the results folder)."""
    rel = record.artifacts.get("samples")
    if not rel:
        raise FileNotFoundError("the record has no saved samples")
    path = Path(rel) if Path(rel).is_absolute() else Path(results_dir) / rel
    with np.load(path) as z:
        return z["images"], (z["labels"] if "labels" in z.files else None)


def load_real(record: RunRecord, n: int = 64, data_root: str | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The first ``n`` images of the run's evaluation split, exactly as the models saw it."""
    from bench.data import load_split

    data = dict(record.data)
    split = data.get("eval_split", "test")
    real = load_split(data, split, data_root)
    y = real.y[:n].numpy() if real.y is not None else None
    return real.x[:n].numpy(), y, real.name
