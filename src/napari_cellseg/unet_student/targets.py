"""Training targets from an instance label image, and instances from predictions.

Targets (float32, (3, H, W)):
    0 foreground: 1 inside any instance;
    1 boundary: the instance's own outermost pixel ring (``find_boundaries(mode="inner")``),
      which is where touching instances meet;
    2 distance: Euclidean distance to the instance's edge divided by the instance's maximum,
      so every instance peaks at 1 in its centre whatever its size.

Post-processing (seeded watershed):
    mask    = foreground probability > ``fg_threshold``;
    markers = connected components of (distance > ``marker_threshold``) & (boundary < 0.5) & mask,
              markers smaller than ``min_marker`` pixels dropped;
    labels  = watershed of -distance from the markers, restricted to the mask; instances smaller
              than ``min_size`` pixels dropped. A mask component without any marker keeps one
              instance of its own (small nuclei whose centre stays below the marker threshold).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PostProcess:
    fg_threshold: float = 0.5
    marker_threshold: float = 0.5
    min_marker: int = 4
    min_size: int = 8

    def as_dict(self) -> dict:
        return asdict(self)


def instance_distance(labels: np.ndarray) -> np.ndarray:
    """Distance of every pixel to its own instance's edge, normalised to 1 at the instance's peak."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    inside = (labels > 0) & ~find_boundaries(labels, mode="inner", background=0)
    # +1: the boundary ring itself is at distance 1 from the outside
    dist = np.where(labels > 0, ndimage.distance_transform_edt(inside) + 1.0, 0.0)
    n = int(labels.max())
    if n == 0:
        return dist.astype(np.float32)
    peaks = np.asarray(ndimage.maximum(dist, labels, index=np.arange(1, n + 1)), np.float64)
    peak_of = np.concatenate([[1.0], np.where(peaks > 0, peaks, 1.0)])
    return (dist / peak_of[labels]).astype(np.float32)


def make_targets(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels).astype(np.int64, copy=False)
    fg = (labels > 0).astype(np.float32)
    boundary = find_boundaries(labels, mode="inner", background=0).astype(np.float32)
    return np.stack([fg, boundary, instance_distance(labels)])


def instances_from_predictions(fg: np.ndarray, boundary: np.ndarray, distance: np.ndarray,
                               params: PostProcess = PostProcess()) -> np.ndarray:
    """Probability maps (H, W) in [0, 1] -> int32 instance labels (seeded watershed)."""
    from scipy import ndimage
    from skimage.segmentation import relabel_sequential, watershed

    mask = fg > params.fg_threshold
    if not mask.any():
        return np.zeros(fg.shape, np.int32)
    seeds = mask & (distance > params.marker_threshold) & (boundary < 0.5)
    markers, n = ndimage.label(seeds)
    if n and params.min_marker > 1:
        markers = _drop_small(markers, params.min_marker)
    # mask components without a marker get one seed (their distance peak region)
    components, n_comp = ndimage.label(mask)
    unseeded = np.setdiff1d(np.arange(1, n_comp + 1), np.unique(components[markers > 0]))
    if len(unseeded):
        extra = np.isin(components, unseeded)
        markers = np.where(extra, components + markers.max(), markers)
    labels = watershed(-distance, markers, mask=mask)
    if params.min_size > 1:
        labels = _drop_small(labels, params.min_size)
    return relabel_sequential(labels)[0].astype(np.int32)


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Labels with fewer than ``min_size`` pixels set to 0."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)
