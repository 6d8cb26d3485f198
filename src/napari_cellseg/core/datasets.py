"""Instance labels to training datasets (ultralytics YOLO segmentation format)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .io import write_image


def label_polygons(labels: np.ndarray, min_area: int = 3) -> list[tuple[int, np.ndarray]]:
    """One outline polygon per instance, as (label, (N, 2) array of x, y pixel coordinates).

    The contour runs along pixel edges' midpoints (marching squares at 0.5) and is
    padded so objects touching the image border close properly. Objects split in
    several pieces keep their largest piece (YOLO stores one polygon per object).
    """
    from skimage.measure import find_contours, regionprops

    polygons = []
    for region in regionprops(np.asarray(labels)):
        if region.area < min_area:
            continue
        y0, x0, y1, x1 = region.bbox
        mask = np.pad(region.image, 1).astype(np.float32)
        contours = find_contours(mask, 0.5)
        if not contours:
            continue
        contour = max(contours, key=len)
        yx = contour - 1 + np.array([y0, x0])
        # marching squares passes through pixel-edge midpoints; widen by half a
        # pixel outward so rasterising the polygon gives back the same pixels
        centre = yx.mean(axis=0)
        direction = yx - centre
        norm = np.linalg.norm(direction, axis=1, keepdims=True)
        yx = yx + 0.5 * direction / np.maximum(norm, 1e-6) + 0.5
        polygons.append((int(region.label), yx[:, ::-1].astype(np.float32)))
    return polygons


def yolo_label_lines(labels: np.ndarray, class_of: dict[int, int] | None = None) -> list[str]:
    """Lines of an ultralytics segmentation label file for one image."""
    height, width = labels.shape
    lines = []
    for label, polygon in label_polygons(labels):
        cls = 0 if class_of is None else class_of.get(label, 0)
        xs = np.clip(polygon[:, 0] / width, 0, 1)
        ys = np.clip(polygon[:, 1] / height, 0, 1)
        coords = " ".join(f"{x:.6f} {y:.6f}" for x, y in zip(xs, ys))
        lines.append(f"{cls} {coords}")
    return lines


def write_yolo_dataset(
    samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
    out_dir: str | os.PathLike,
    *,
    val_names: Sequence[str] = (),
    class_names: Sequence[str] = ("cell",),
) -> Path:
    """Write (name, uint8 image, instance labels) samples as a YOLO segmentation dataset.

    Returns the path of ``data.yaml``. Samples whose name is in ``val_names`` go to
    the validation split; if none do, the training images double as validation.
    """
    out = Path(out_dir)
    val_names = set(val_names)
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    n_val = 0
    for name, image, labels in samples:
        split = "val" if name in val_names else "train"
        n_val += split == "val"
        write_image(out / "images" / split / f"{name}.png", image)
        (out / "labels" / split / f"{name}.txt").write_text("\n".join(yolo_label_lines(labels)) + "\n")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(class_names))
    val_dir = "images/val" if n_val else "images/train"
    data_yaml = out / "data.yaml"
    data_yaml.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: {val_dir}\nnames:\n{names}\n")
    return data_yaml
