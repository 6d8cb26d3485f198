"""Single-cell crops centred on each tracked cell in each frame.

Normalisation (documented in the README): each frame's channel is mapped to [0, 1]
through its 1st and 99.8th percentiles (the same ranges segmentation uses), then
the crop is cut around the cell's centroid. Cells near the border are padded with
zeros (the normalised background), never dropped.
"""
from __future__ import annotations

import numpy as np

from ..core.normalize import percentile_range


def normalise_frame(frame: np.ndarray) -> np.ndarray:
    lo, hi = percentile_range(frame)
    if hi <= lo:
        return np.zeros(frame.shape, np.float32)
    out = (np.asarray(frame, np.float32) - lo) / (hi - lo)
    return np.clip(np.nan_to_num(out, nan=0.0), 0, 1)


def crop_at(frame: np.ndarray, cy: float, cx: float, size: int) -> np.ndarray:
    """A (size, size) window centred on (cy, cx), zero-padded outside the frame."""
    h, w = frame.shape
    y0, x0 = int(round(cy)) - size // 2, int(round(cx)) - size // 2
    out = np.zeros((size, size), np.float32)
    ys, xs = slice(max(0, y0), min(h, y0 + size)), slice(max(0, x0), min(w, x0 + size))
    out[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0] = frame[ys, xs]
    return out


def crop_file(path, size: int | None = None) -> np.ndarray:
    """A saved crop image as (C, size, size): each channel normalised, centred, padded or cut to ``size``.

    Grey images get one channel; a trailing axis of up to 4 values is taken as channels.
    """
    from ..core.io import read_image

    image = np.asarray(read_image(path), np.float32)
    image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0) if image.shape[-1] <= 4 else image
    size = size or image.shape[-1]
    return np.stack([crop_at(normalise_frame(c), c.shape[0] / 2 - 0.5, c.shape[1] / 2 - 0.5, size) for c in image])


def cell_crops(image: np.ndarray, labels: np.ndarray, size: int = 40, channels: list[int] | None = None):
    """Crops of every cell of a (T, H, W) label stack: (crops (N, C, size, size), rows dict).

    ``image``: (T, H, W) or (T, H, W, C); ``channels`` picks channels of the latter.
    """
    from skimage.measure import regionprops_table

    image, labels = np.asarray(image), np.asarray(labels)
    if labels.ndim == 2:
        image, labels = image[None], labels[None]
    if image.ndim == labels.ndim:
        image = image[..., None]
    if image.shape[:3] != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} do not match")
    channels = list(range(image.shape[-1])) if channels is None else list(channels)
    crops, rows = [], {"track_id": [], "frame": [], "centroid_y": [], "centroid_x": []}
    for t in range(labels.shape[0]):
        props = regionprops_table(labels[t], properties=("label", "centroid"))
        if not len(props["label"]):
            continue
        frames = [normalise_frame(image[t, ..., c]) for c in channels]
        for label, cy, cx in zip(props["label"], props["centroid-0"], props["centroid-1"]):
            crops.append(np.stack([crop_at(f, cy, cx, size) for f in frames]))
            rows["track_id"].append(int(label))
            rows["frame"].append(t)
            rows["centroid_y"].append(float(cy))
            rows["centroid_x"].append(float(cx))
    crops = np.stack(crops) if crops else np.zeros((0, len(channels), size, size), np.float32)
    return crops, {k: np.asarray(v) for k, v in rows.items()}
