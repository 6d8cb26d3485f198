"""Single-cell crops, made and normalised the same way for training and for prediction.

A tracked cell's crop (``crop_mode="resize"``, the seed's way and the default) is the square
around the cell's bounding box, widened by ``MARGIN`` on each side and centred on its centroid,
resized to the classifier's crop size (40x40 by default). Crop image files are resized to that
size too. Older plugin checkpoints (``crop_mode="window"``) cut a fixed ``size`` window around
the centroid instead.

Normalisation: every crop channel is mapped to [0, 1] through its own 1st and 99.8th percentiles,
after cropping and resizing, whether it comes from a movie, a crop file or a point in the viewer.
Parts of the crop outside the frame are zero (the normalised background), never dropped.
"""
from __future__ import annotations

import numpy as np

from ..core.normalize import DEFAULT_PERCENTILES

CROP_MODES = ("resize", "window")
MARGIN = 0.15  # of the bounding box's longer side, added on each side
MIN_SIDE = 8


def normalise_crop(crop: np.ndarray) -> np.ndarray:
    """One 2-D crop channel to [0, 1] by its own percentiles; NaN (outside the frame) -> 0."""
    crop = np.asarray(crop, np.float32)
    finite = crop[np.isfinite(crop)]
    if finite.size == 0:
        return np.zeros(crop.shape, np.float32)
    lo, hi = np.percentile(finite, DEFAULT_PERCENTILES)
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.where(np.isfinite(crop), 0.0, 0.0).astype(np.float32)
    out = (crop - lo) / (hi - lo)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0, 1).astype(np.float32)


def normalise_frame(frame: np.ndarray) -> np.ndarray:
    """Kept for callers that want a whole frame in [0, 1] (1st/99.8th percentiles)."""
    return normalise_crop(frame)


def crop_at(frame: np.ndarray, cy: float, cx: float, size: int, fill: float = 0.0) -> np.ndarray:
    """A (size, size) window centred on (cy, cx); outside the frame: ``fill``."""
    h, w = frame.shape
    y0, x0 = int(round(cy)) - size // 2, int(round(cx)) - size // 2
    out = np.full((size, size), fill, np.float32)
    ys, xs = slice(max(0, y0), min(h, y0 + size)), slice(max(0, x0), min(w, x0 + size))
    if ys.stop > ys.start and xs.stop > xs.start:
        out[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0] = frame[ys, xs]
    return out


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """(H, W) -> (size, size), bilinear with anti-aliasing; NaN stays NaN where it dominates."""
    if crop.shape == (size, size):
        return np.asarray(crop, np.float32)
    from skimage.transform import resize

    crop = np.asarray(crop, np.float32)
    outside = ~np.isfinite(crop)
    filled = np.where(outside, 0, crop)
    out = resize(filled, (size, size), order=1, anti_aliasing=crop.shape[0] > size, preserve_range=True)
    if outside.any():
        out[resize(outside.astype(np.float32), (size, size), order=1, preserve_range=True) > 0.5] = np.nan
    return out.astype(np.float32)


def side_for_box(height: float, width: float) -> int:
    longer = max(height, width)
    return max(MIN_SIDE, int(round(longer * (1 + 2 * MARGIN))))


def cell_crop(channels: list[np.ndarray], cy: float, cx: float, size: int, box_side: float | None,
              crop_mode: str = "resize") -> np.ndarray:
    """(C, size, size) normalised crop of one cell from per-channel 2-D frames (raw values)."""
    if crop_mode not in CROP_MODES:
        raise ValueError(f"crop_mode must be one of {CROP_MODES}, got '{crop_mode}'")
    side = size if crop_mode == "window" or box_side is None else int(box_side)
    return np.stack([normalise_crop(resize_crop(crop_at(np.asarray(f, np.float32), cy, cx, side, np.nan), size))
                     for f in channels])


def crop_file(path, size: int | None = None, channels: list[int] | None = None) -> np.ndarray:
    """A saved crop image as (C, size, size): chosen channels, resized to ``size``, normalised.

    Grey images get one channel; a trailing axis of up to 4 values is taken as channels.
    """
    from ..core.io import read_image

    image = np.asarray(read_image(path), np.float32)
    image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0) if image.shape[-1] <= 4 else image
    if channels is not None:
        if max(channels) >= image.shape[0]:
            raise ValueError(f"{path}: channel {max(channels)} asked for, the crop has {image.shape[0]}")
        image = image[list(channels)]
    size = size or image.shape[-1]
    return np.stack([normalise_crop(resize_crop(c, size)) for c in image])


def _frame_channels(frame: np.ndarray, channels: list[int] | None) -> list[np.ndarray]:
    frame = frame[..., None] if frame.ndim == 2 else frame
    picked = list(range(frame.shape[-1])) if channels is None else list(channels)
    return [frame[..., c] for c in picked]


def cell_crops(image: np.ndarray, labels: np.ndarray, size: int = 40, channels: list[int] | None = None,
               crop_mode: str = "resize"):
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
    n_channels = image.shape[-1] if channels is None else len(channels)
    crops, rows = [], {"track_id": [], "frame": [], "centroid_y": [], "centroid_x": []}
    for t in range(labels.shape[0]):
        props = regionprops_table(labels[t], properties=("label", "centroid", "bbox"))
        if not len(props["label"]):
            continue
        frames = _frame_channels(image[t], channels)
        for i, label in enumerate(props["label"]):
            cy, cx = props["centroid-0"][i], props["centroid-1"][i]
            side = side_for_box(props["bbox-2"][i] - props["bbox-0"][i], props["bbox-3"][i] - props["bbox-1"][i])
            crops.append(cell_crop(frames, cy, cx, size, side, crop_mode))
            rows["track_id"].append(int(label))
            rows["frame"].append(t)
            rows["centroid_y"].append(float(cy))
            rows["centroid_x"].append(float(cx))
    crops = np.stack(crops) if crops else np.zeros((0, n_channels, size, size), np.float32)
    return crops, {k: np.asarray(v) for k, v in rows.items()}


def crops_at_points(stack: np.ndarray, coords: np.ndarray, size: int = 40, labels: np.ndarray | None = None,
                    channels: list[int] | None = None, crop_mode: str = "resize"):
    """Crops at (frame, y, x) points of a (T, H, W) or (T, H, W, C) ``stack``, made like ``cell_crops``:
    where ``labels`` (T, H, W) has a cell under the point, that cell's box and centroid set the crop;
    elsewhere a ``size`` window around the point. Returns (crops (N, C, size, size), cell id or 0)."""
    stack = np.asarray(stack)
    lab = None if labels is None else np.asarray(labels)
    crops, ids = [], []
    for t, y, x in np.asarray(coords, float):
        t = int(round(t))
        side, cy, cx, cell = None, y, x, 0
        if lab is not None:
            frame_labels = lab[t]
            iy, ix = int(round(y)), int(round(x))
            if 0 <= iy < frame_labels.shape[0] and 0 <= ix < frame_labels.shape[1] and frame_labels[iy, ix]:
                cell = int(frame_labels[iy, ix])
                ys, xs = np.nonzero(frame_labels == cell)
                cy, cx = ys.mean(), xs.mean()
                side = side_for_box(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        crops.append(cell_crop(_frame_channels(stack[t], channels), cy, cx, size, side, crop_mode))
        ids.append(cell)
    n_channels = len(channels) if channels else (stack.shape[-1] if stack.ndim == 4 else 1)
    out = np.stack(crops) if crops else np.zeros((0, n_channels, size, size), np.float32)
    return out, np.array(ids, int)
