"""Overlapping tiles and stitching of per-tile instances into one label image.

Stitching rule (documented in the README): tiles are processed in order; each
detection is painted in descending score. A detection that overlaps an object
already painted by an *earlier tile* is merged into it when their IoU, measured
only inside the region both tiles saw, is at least ``match_iou``; the union of
the two masks becomes the object. Otherwise it becomes a new object and only
claims unclaimed pixels, so one pixel never belongs to two objects and an object
cut by a tile border comes back whole, once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Tile:
    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)  # last tile flush with the border
    return starts


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles of at most ``tile`` pixels covering the image, neighbours sharing ``overlap`` pixels."""
    if tile < 16:
        raise ValueError(f"tile size {tile} is too small (minimum 16 pixels)")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must be between 0 and the tile size {tile}")
    return [
        Tile(y, x, min(y + tile, height), min(x + tile, width))
        for y in _starts(height, tile, overlap)
        for x in _starts(width, tile, overlap)
    ]


@dataclass
class TileDetections:
    """Instances found in one tile, in tile coordinates."""

    masks: np.ndarray  # (N, h, w) bool
    scores: np.ndarray  # (N,) float
    class_ids: np.ndarray  # (N,) int
    boxes: np.ndarray | None = None  # (N, 4) x0, y0, x1, y1 (speeds up stitching)

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> "TileDetections":
        return cls(np.zeros((0, *shape), bool), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, 4)))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class InstanceStitcher:
    """Accumulates tile detections into one (H, W) instance label image."""

    height: int
    width: int
    match_iou: float = 0.5
    min_area: int = 4
    labels: np.ndarray = field(init=False)
    seen: np.ndarray = field(init=False)
    scores: dict[int, float] = field(init=False, default_factory=dict)
    class_ids: dict[int, int] = field(init=False, default_factory=dict)
    _next: int = field(init=False, default=1)

    def __post_init__(self):
        self.labels = np.zeros((self.height, self.width), np.int32)
        self.seen = np.zeros((self.height, self.width), bool)

    def add(self, tile: Tile, detections: TileDetections) -> None:
        order = np.argsort(-np.asarray(detections.scores), kind="stable")
        tile_labels = self.labels[tile.slices]
        tile_seen = self.seen[tile.slices]
        any_seen = bool(tile_seen.any())
        created_here: set[int] = set()
        for i in order:
            mask = np.asarray(detections.masks[i], bool)
            box = self._mask_box(mask, None if detections.boxes is None else detections.boxes[i])
            if box is None:
                continue
            by, bx = box
            sub_mask = mask[by, bx]
            sub_labels = tile_labels[by, bx]
            target = 0
            if any_seen:
                target = self._match(sub_mask, sub_labels, tile_seen[by, bx], tile_labels, created_here)
            free = sub_mask & (sub_labels == 0)
            if target:
                sub_labels[free] = target
                self.scores[target] = max(self.scores[target], float(detections.scores[i]))
                continue
            if free.sum() < self.min_area:
                continue
            new = self._next
            self._next += 1
            sub_labels[free] = new
            created_here.add(new)
            self.scores[new] = float(detections.scores[i])
            self.class_ids[new] = int(detections.class_ids[i])
        tile_seen[...] = True

    def _match(self, sub_mask, sub_labels, sub_seen, tile_labels, created_here) -> int:
        overlapping = sub_labels[sub_mask & sub_seen]
        candidates = np.unique(overlapping[overlapping > 0])
        best, best_iou = 0, self.match_iou
        new_in_seen = int((sub_mask & sub_seen).sum())
        for label in candidates:
            if label in created_here:
                continue
            intersection = int((overlapping == label).sum())
            old_in_tile = int((tile_labels == label).sum())  # earlier tiles only painted it where seen
            iou = intersection / max(1, new_in_seen + old_in_tile - intersection)
            if iou >= best_iou:
                best, best_iou = int(label), iou
        return best

    @staticmethod
    def _mask_box(mask: np.ndarray, box) -> tuple[slice, slice] | None:
        h, w = mask.shape
        if box is not None:
            x0, y0, x1, y1 = box
            # boxes and masks disagree by a pixel or two: pad, then clip
            y0, x0 = max(0, int(np.floor(y0)) - 2), max(0, int(np.floor(x0)) - 2)
            y1, x1 = min(h, int(np.ceil(y1)) + 2), min(w, int(np.ceil(x1)) + 2)
            if y1 > y0 and x1 > x0 and mask[y0:y1, x0:x1].sum() >= mask.sum() > 0:
                return slice(y0, y1), slice(x0, x1)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return None
        return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)

    def finish(self, erode: int = 0) -> tuple[np.ndarray, dict[int, float], dict[int, int]]:
        """Labels renumbered 1..N (objects that lost all pixels are dropped).

        ``erode``: peel that many boundary pixels off every object first.
        """
        from skimage.segmentation import find_boundaries, relabel_sequential

        for _ in range(erode):
            self.labels[find_boundaries(self.labels, mode="inner")] = 0
        relabelled, forward, _ = relabel_sequential(self.labels)
        present = np.unique(self.labels)
        present = present[present > 0]
        new_ids = forward[present]
        scores = {int(n): self.scores[int(o)] for o, n in zip(present, new_ids)}
        classes = {int(n): self.class_ids[int(o)] for o, n in zip(present, new_ids)}
        return relabelled.astype(np.int32, copy=False), scores, classes
