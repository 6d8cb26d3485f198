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
class PredictedInstance:
    """One instance as the model predicted it, before the label image's overlap resolution.

    ``mask`` is the predicted mask cropped to the rows/columns from ``y0``, ``x0`` (frame pixels), whole:
    pixels that a higher-scoring object claims in the label image are kept here. ``box`` is the
    predicted box (x0, y0, x1, y1, frame pixels; the mask's extent where the backend gives none).
    ``label``: the object's id in the label image (0: it lost every pixel there, e.g. a nested duplicate).
    An object that stitching joined over tiles holds the union of its parts' masks and boxes.
    """

    label: int
    box: tuple[float, float, float, float]
    score: float
    class_id: int
    y0: int
    x0: int
    mask: np.ndarray

    def union(self, other: "PredictedInstance") -> "PredictedInstance":
        boxes = np.array([self.box, other.box])
        box = (*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist())
        parts = [p for p in (self, other) if p.mask.size]
        if not parts:
            return PredictedInstance(self.label, box, max(self.score, other.score), self.class_id, self.y0, self.x0,
                                     self.mask)
        y0, x0 = min(p.y0 for p in parts), min(p.x0 for p in parts)
        y1 = max(p.y0 + p.mask.shape[0] for p in parts)
        x1 = max(p.x0 + p.mask.shape[1] for p in parts)
        mask = np.zeros((y1 - y0, x1 - x0), bool)
        for p in parts:
            mask[p.y0 - y0:p.y0 - y0 + p.mask.shape[0], p.x0 - x0:p.x0 - x0 + p.mask.shape[1]] |= p.mask
        return PredictedInstance(self.label, box, max(self.score, other.score), self.class_id, y0, x0, mask)

    def rle(self, height: int, width: int) -> dict:
        """The mask in the (height, width) frame as a compressed COCO RLE (pycocotools), counts as str."""
        return crop_rle(self.mask, self.y0, self.x0, height, width)


def crop_rle(mask: np.ndarray, y0: int, x0: int, height: int, width: int) -> dict:
    """COCO compressed RLE of a cropped mask placed at (y0, x0) in a (height, width) frame, without
    building the full frame: equals ``pycocotools.mask.encode`` of the full-frame mask."""
    from pycocotools import mask as mask_utils

    cols, rows = np.nonzero(np.asarray(mask, bool).T)  # column-major order, as COCO counts runs
    index = (cols.astype(np.int64) + x0) * height + rows + y0
    counts = []
    if index.size:
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        starts = index[np.concatenate([[0], breaks])]
        ends = index[np.concatenate([breaks - 1, [index.size - 1]])] + 1
        position = 0
        for start, end in zip(starts.tolist(), ends.tolist()):
            counts += [start - position, end - start]
            position = end
        if position < height * width:
            counts.append(height * width - position)
    else:
        counts = [height * width]
    rle = mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


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
    # every detection as the model predicted it, before overlap resolution (see PredictedInstance)
    instances: list["PredictedInstance"] = field(init=False, default_factory=list)
    _next: int = field(init=False, default=1)
    _instance_of: dict[int, int] = field(init=False, default_factory=dict)  # label -> its index in instances

    def __post_init__(self):
        self.labels = np.zeros((self.height, self.width), np.int32)
        self.seen = np.zeros((self.height, self.width), bool)

    def add(self, tile: Tile, detections: TileDetections) -> None:
        order = np.argsort(-np.asarray(detections.scores), kind="stable")
        tile_labels = self.labels[tile.slices]
        tile_seen = self.seen[tile.slices]
        any_seen = bool(tile_seen.any())
        # pixels of each label inside this tile, kept current as detections are painted (the IoU's denominator)
        in_tile = np.bincount(tile_labels.ravel()) if any_seen else None
        created_here: set[int] = set()
        for i in order:
            mask = np.asarray(detections.masks[i], bool)
            predicted_box = None if detections.boxes is None else detections.boxes[i]
            box = self._mask_box(mask, predicted_box)
            if box is None:  # no pixel: kept as predicted (box, score), with an empty mask
                if predicted_box is not None:
                    self._record(tile, detections, i, None, np.zeros((0, 0), bool), 0)
                continue
            by, bx = box
            sub_mask = mask[by, bx]
            sub_labels = tile_labels[by, bx]
            target = 0
            if any_seen:
                target = self._match(sub_mask, sub_labels, tile_seen[by, bx], in_tile, created_here)
            free = sub_mask & (sub_labels == 0)
            if target:
                sub_labels[free] = target
                in_tile[target] += int(free.sum())
                self.scores[target] = max(self.scores[target], float(detections.scores[i]))
                self._merge(target, tile, detections, i, box, sub_mask)
                continue
            if free.sum() < self.min_area:  # covered by higher-scoring objects: in no label, still predicted
                self._record(tile, detections, i, box, sub_mask, 0)
                continue
            new = self._next
            self._next += 1
            sub_labels[free] = new
            created_here.add(new)
            self.scores[new] = float(detections.scores[i])
            self.class_ids[new] = int(detections.class_ids[i])
            self._record(tile, detections, i, box, sub_mask, new)
        tile_seen[...] = True

    def _record(self, tile: Tile, detections: TileDetections, i: int, box, sub_mask: np.ndarray, label: int) -> None:
        y0 = tile.y0 + (box[0].start if box else 0)
        x0 = tile.x0 + (box[1].start if box else 0)
        if detections.boxes is not None:
            bx0, by0, bx1, by1 = (float(v) for v in detections.boxes[i])
            xyxy = (bx0 + tile.x0, by0 + tile.y0, bx1 + tile.x0, by1 + tile.y0)
        else:  # the mask's own extent
            xyxy = (float(x0), float(y0), float(x0 + sub_mask.shape[1]), float(y0 + sub_mask.shape[0]))
        if label:
            self._instance_of[label] = len(self.instances)
        self.instances.append(PredictedInstance(label, xyxy, float(detections.scores[i]), int(detections.class_ids[i]),
                                                y0, x0, np.array(sub_mask, bool)))

    def _merge(self, label: int, tile: Tile, detections: TileDetections, i: int, box, sub_mask) -> None:
        """A detection that continues an object of an earlier tile: the object's predicted mask and box
        become the unions, its score the higher one."""
        before = len(self.instances)
        self._record(tile, detections, i, box, sub_mask, 0)
        part = self.instances.pop(before)
        index = self._instance_of.get(label)
        if index is None:
            return
        self.instances[index] = self.instances[index].union(part)

    def _match(self, sub_mask, sub_labels, sub_seen, in_tile, created_here) -> int:
        overlapping = sub_labels[sub_mask & sub_seen]
        intersections = np.bincount(overlapping)
        best, best_iou = 0, self.match_iou
        new_in_seen = int(overlapping.size)
        for label in np.flatnonzero(intersections[1:]) + 1:
            if label in created_here:
                continue
            intersection = int(intersections[label])
            old_in_tile = int(in_tile[label])  # earlier tiles only painted it where seen
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
        renumber = dict(zip(present.tolist(), new_ids.tolist()))
        for instance in self.instances:  # ids of the label image; 0 where the object lost every pixel
            instance.label = int(renumber.get(instance.label, 0))
        scores = {int(n): self.scores[int(o)] for o, n in zip(present, new_ids)}
        classes = {int(n): self.class_ids[int(o)] for o, n in zip(present, new_ids)}
        return relabelled.astype(np.int32, copy=False), scores, classes
