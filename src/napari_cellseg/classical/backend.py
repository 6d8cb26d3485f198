"""Classical baseline: Otsu threshold + distance-transform seeded watershed.

Needs no weights. It is the baseline the learned models are measured against,
and a deterministic backend for testing tiling and stitching.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.tiling import TileDetections
from ..core.backend import InferenceSettings, ModelInfo

NAME = "classical"


def probe(path: Path) -> bool:
    return False  # never claims a file


def load(path=None, device: str = "auto") -> "OtsuWatershedBackend":
    return OtsuWatershedBackend()


class OtsuWatershedBackend:
    """Bright objects on a dark background (fluorescence nuclei)."""

    def __init__(self, seed_height: float = 1.0, min_area: int = 8, threshold: float | None = None):
        self.device = "cpu"
        self.seed_height = seed_height
        self.min_area = min_area
        self.threshold = threshold  # None: Otsu per tile
        self.info = ModelInfo(
            backend=NAME, path="otsu-watershed", sha256=None, task="segment",
            class_names={0: "object"}, train_imgsz=None,
        )

    def begin_frame(self, frame: np.ndarray) -> None:
        """Otsu on the whole frame: a tile of pure background would otherwise split its noise."""
        from skimage.filters import threshold_otsu

        grey = frame.mean(axis=-1) if frame.ndim == 3 else frame
        self._frame_level = threshold_otsu(grey) if grey.max() > grey.min() else None

    def predict_tile(self, tile: np.ndarray, settings: InferenceSettings) -> TileDetections:
        from scipy import ndimage as ndi
        from skimage.filters import threshold_otsu
        from skimage.morphology import h_maxima
        from skimage.segmentation import watershed

        grey = tile.mean(axis=-1) if tile.ndim == 3 else tile
        h, w = grey.shape
        if grey.max() == grey.min():
            return TileDetections.empty((h, w))
        level = self.threshold
        if level is None:
            level = getattr(self, "_frame_level", None)
        if level is None:
            level = threshold_otsu(grey)
        foreground = ndi.binary_opening(grey > level, iterations=1)
        distance = ndi.distance_transform_edt(foreground)
        # h-maxima, not single peaks: an object cut by the tile edge has a ridge of
        # equal distances along the cut, which must stay one seed
        smoothed = ndi.gaussian_filter(distance, 1.0)
        markers, _ = ndi.label(h_maxima(smoothed, self.seed_height) & foreground)
        labels = watershed(-distance, markers, mask=foreground)
        ids, areas = np.unique(labels[labels > 0], return_counts=True)
        ids = ids[areas >= self.min_area]
        masks = labels[None] == ids[:, None, None] if len(ids) else np.zeros((0, h, w), bool)
        return TileDetections(
            masks=masks, scores=np.ones(len(ids), np.float32), class_ids=np.zeros(len(ids), np.int64), boxes=None
        )
