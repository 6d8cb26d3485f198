"""Generated single-cell crops of three clearly different phenotypes, for tests and benchmarks.

Each crop is a 40x40 uint16 camera-like image of one round cell (random size, position jitter,
brightness and noise) whose signal is either a bright nucleus, three small aggregates or a
diffuse cytoplasm. The classes differ visibly; a classifier that cannot tell them apart is broken.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

THREE_CLASSES = ("nucleus", "aggregates", "cytoplasm")


def phenotype_crop(kind: int, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """One (size, size) uint16 crop of class ``kind`` (index into ``THREE_CLASSES``)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-2, 2, 2)
    radius = rng.uniform(0.3, 0.4) * size
    cell = np.clip((radius - np.hypot(yy - cy, xx - cx)) / 1.5, 0, 1)  # soft-edged disc
    signal = np.zeros_like(cell)
    if kind == 0:  # bright nucleus: one large blob near the centre
        ny, nx = cy + rng.uniform(-2, 2), cx + rng.uniform(-2, 2)
        signal = np.exp(-((yy - ny) ** 2 + (xx - nx) ** 2) / (2 * (0.25 * radius) ** 2))
    elif kind == 1:  # three small aggregates scattered in the cell
        for _ in range(3):
            angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.7) * radius
            py, px = cy + dist * np.sin(angle), cx + dist * np.cos(angle)
            signal += np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * 1.2 ** 2))
        signal *= cell
    else:  # diffuse cytoplasm: the whole cell, slightly uneven
        signal = cell * rng.uniform(0.35, 0.5) * (1 + 0.15 * rng.standard_normal(cell.shape))
    background = rng.uniform(80, 150)
    gain = rng.uniform(1500, 3500)
    image = background + 0.1 * gain * cell + gain * signal
    image = rng.poisson(np.clip(image, 0, None)).astype(np.float64) + rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 65535).astype(np.uint16)


def three_class_crops(per_class: int, seed: int = 0, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(crops (N, size, size) uint16, class index per crop), ``per_class`` of each class, interleaved."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(len(THREE_CLASSES)), per_class)
    return np.stack([phenotype_crop(int(k), rng, size) for k in labels]), labels


def write_crop_folders(root: str | Path, per_class: int, seed: int = 0, size: int = 40) -> Path:
    """One sub-folder of 16-bit TIFF crops per class under ``root`` (the layout train-classifier reads)."""
    import tifffile

    root = Path(root)
    crops, labels = three_class_crops(per_class, seed, size)
    for i, (crop, k) in enumerate(zip(crops, labels)):
        folder = root / THREE_CLASSES[k]
        folder.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / f"{i:04d}.tif", crop)
    return root
