"""Box detections (object detectors such as YOLO detect models): the result of a run, the per-tile type, and
the rule that merges boxes cut by tile borders.

A detector gives boxes, not outlines, so a detection run has no label image: its result holds the boxes,
scores and classes, and its object table has the same columns as a segmentation's (``OBJECT_COLUMNS``) with
the box's centre as the centroid and the box's area as the area.

Merging across tiles (``merge_tile_boxes``, documented in docs/yolo.md, "Counting with detectors"): each tile's
boxes come out of the model's own non-maximum suppression. A box is *cut* when it touches a border of its tile
that lies inside the image. Boxes of different tiles are pooled and taken in descending score; a box joins an
already kept box of the same class from another tile when their intersection covers at least ``cut_overlap``
(0.5) of the smaller box (SAHI's default match: intersection over smaller, 0.5). A whole box that joins a cut
one replaces its coordinates; two cut boxes give their union; otherwise the kept (higher-scoring) box stays.
The kept box keeps the higher score. So an object seen by two tiles, whole by one and cut by the other, or
whole by both with slightly different boxes, is counted once. Boxes of one tile are never merged here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .result import OBJECT_COLUMNS, RunSummary

CUT_OVERLAP = 0.5  # intersection over the smaller box from which boxes of two tiles are one object
BORDER_MARGIN = 1.0  # pixels from an inner tile border within which a box counts as cut


@dataclass
class TileBoxes:
    """Boxes found in one tile, in tile pixel coordinates (x0, y0, x1, y1; pixel edges)."""

    boxes: np.ndarray  # (N, 4) float
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64

    @classmethod
    def empty(cls) -> "TileBoxes":
        return cls(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)


def zoomed(tile: np.ndarray, zoom: float) -> np.ndarray:
    """``tile`` resized by ``zoom`` (bilinear, as the detectors were trained); the tile itself at zoom 1."""
    h, w = tile.shape[:2]
    zh, zw = max(1, round(h * zoom)), max(1, round(w * zoom))
    if (zh, zw) == (h, w):
        return tile
    import cv2

    return cv2.resize(tile, (zw, zh), interpolation=cv2.INTER_LINEAR)


def padded_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` padded bottom and right to (height, width) with YOLO's grey 114, so coordinates stay put
    (ultralytics' letterbox centres instead; a detector's boxes are the same either way)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return np.ascontiguousarray(image)
    padded = np.full((height, width, *image.shape[2:]), 114, np.uint8)
    padded[:h, :w] = image
    return padded


def stride_multiple(size: int, stride: int) -> int:
    """The smallest multiple of ``stride`` at least ``size``."""
    return -(-size // stride) * stride


def tile_boxes_from_network(boxes, scores, classes, zoom: float, tile_shape) -> TileBoxes:
    """Network-pixel boxes of a tile resized by ``zoom``, back in tile pixels and clipped to the tile."""
    if not len(scores):
        return TileBoxes.empty()
    h, w = tile_shape[:2]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) / zoom
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return TileBoxes(boxes, np.asarray(scores, np.float32), np.asarray(classes, np.int64))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x0, y0, x1, y1 boxes."""
    inter = _intersection(a, b)
    area_a, area_b = _areas(a), _areas(b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _areas(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    return w * h


def cut_by_tile(boxes: np.ndarray, tile, height: int, width: int, margin: float = BORDER_MARGIN) -> np.ndarray:
    """Which boxes (image coordinates) touch a border of ``tile`` (a core.tiling.Tile) inside the image."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cut = np.zeros(len(boxes), bool)
    if tile.x0 > 0:
        cut |= boxes[:, 0] <= tile.x0 + margin
    if tile.y0 > 0:
        cut |= boxes[:, 1] <= tile.y0 + margin
    if tile.x1 < width:
        cut |= boxes[:, 2] >= tile.x1 - margin
    if tile.y1 < height:
        cut |= boxes[:, 3] >= tile.y1 - margin
    return cut


def merge_tile_boxes(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, tile_index: np.ndarray,
                     cut: np.ndarray, iou: float = 0.7,
                     cut_overlap: float = CUT_OVERLAP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pooled boxes of all tiles of a frame with each object kept once (the rule in the module docstring).
    Boxes of the same tile are never merged (the model's NMS already judged them)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept_boxes, kept_scores, kept_classes, kept_cut, kept_tiles = [], [], [], [], []
    areas = _areas(boxes)
    for i in order:
        joined = False
        if kept_boxes:
            others = np.asarray(kept_boxes)
            inter = _intersection(boxes[i:i + 1], others)[0]
            other_areas = _areas(others)
            union = areas[i] + other_areas - inter
            ious = np.where(union > 0, inter / np.maximum(union, 1e-12), 0)
            smaller = np.minimum(areas[i], other_areas)
            ios = np.where(smaller > 0, inter / np.maximum(smaller, 1e-12), 0)
            foreign = np.array([tile_index[i] not in t for t in kept_tiles])
            same = (np.asarray(kept_classes) == class_ids[i]) & foreign & ((ios >= cut_overlap) | (ious >= iou))
            if same.any():
                k = int(np.flatnonzero(same)[np.argmax(ios[same])])
                joined = True
                if kept_cut[k] and not cut[i]:
                    kept_boxes[k], kept_cut[k] = boxes[i].copy(), False
                elif kept_cut[k] and cut[i]:
                    a = kept_boxes[k]
                    kept_boxes[k] = np.array([min(a[0], boxes[i, 0]), min(a[1], boxes[i, 1]),
                                              max(a[2], boxes[i, 2]), max(a[3], boxes[i, 3])])
                kept_tiles[k].add(int(tile_index[i]))
        if not joined:
            kept_boxes.append(boxes[i].copy())
            kept_scores.append(float(scores[i]))
            kept_classes.append(int(class_ids[i]))
            kept_cut.append(bool(cut[i]))
            kept_tiles.append({int(tile_index[i])})
    return (np.asarray(kept_boxes, np.float64).reshape(-1, 4), np.asarray(kept_scores, np.float32),
            np.asarray(kept_classes, np.int64))


def merge_tiles(found_per_tile, tiles, height: int, width: int,
                iou: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, scores, classes) in image coordinates, best score first, of the ``TileBoxes`` found in each of
    ``tiles`` (core.tiling.Tile, of an image of ``height`` x ``width``): each object once (``merge_tile_boxes``,
    boxes cut by a tile border marked by ``cut_by_tile``)."""
    shifted = [np.asarray(f.boxes, np.float64).reshape(-1, 4) + np.array([t.x0, t.y0, t.x0, t.y0], np.float64)
               for f, t in zip(found_per_tile, tiles)]
    boxes = np.concatenate(shifted) if shifted else np.zeros((0, 4))
    scores = np.concatenate([np.asarray(f.scores, np.float32) for f in found_per_tile] or [np.zeros(0, np.float32)])
    classes = np.concatenate([np.asarray(f.class_ids, np.int64) for f in found_per_tile] or [np.zeros(0, np.int64)])
    if len(shifted) > 1:
        tile_index = np.concatenate([np.full(len(b), i) for i, b in enumerate(shifted)])
        cut = np.concatenate([cut_by_tile(b, t, height, width) for b, t in zip(shifted, tiles)])
        boxes, scores, classes = merge_tile_boxes(boxes, scores, classes, tile_index, cut, iou=iou)
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order], classes[order]


@dataclass
class DetectionResult:
    """The boxes of a detection run over a 2-D image or a stack (no label image: a detector draws no outlines).

    ``boxes``: (N, 4) x0, y0, x1, y1 in image pixels (pixel edges); ``frame``: the flat index of each box's frame
    in the stack (0 for a 2-D image); ``image_shape``: the stack and spatial shape of the input (no channels).
    The run keeps every box scoring at least its threshold (``metadata['parameters']['conf']``);
    ``scoring_at_least`` gives what a run at a higher threshold keeps, without running the model again.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    frame: np.ndarray
    image_shape: tuple[int, ...]
    class_names: dict[int, str] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    summary: RunSummary = field(default_factory=RunSummary)

    task = "detect"

    @property
    def n_objects(self) -> int:
        return len(self.scores)

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return tuple(self.image_shape[:-2])

    @property
    def n_frames(self) -> int:
        return int(np.prod(self.stack_shape)) if self.stack_shape else 1

    def describe(self) -> str:
        return self.summary.describe(self.n_objects, self.warnings).replace(" objects", " detections", 1)

    def counts_per_frame(self, conf: float | None = None) -> np.ndarray:
        """Boxes in each frame (scoring at least ``conf`` when given)."""
        keep = np.ones(self.n_objects, bool) if conf is None else self.scores >= conf
        return np.bincount(self.frame[keep].astype(np.int64), minlength=self.n_frames)

    def scoring_at_least(self, conf: float) -> "DetectionResult":
        """The boxes scoring at least ``conf``: what a run at that threshold keeps (NMS and the tile merge rank
        by score, so a box a higher threshold keeps was never suppressed by one it drops)."""
        keep = self.scores >= conf
        return DetectionResult(self.boxes[keep], self.scores[keep], self.class_ids[keep], self.frame[keep],
                               self.image_shape, self.class_names, self.metadata, list(self.warnings), self.summary)

    @property
    def objects(self) -> dict[str, np.ndarray]:
        """One row per box, the columns of a segmentation's table: centroid = box centre, area = box area."""
        b = self.boxes.reshape(-1, 4)
        cls = self.class_ids.astype(np.int64)
        return {
            "label": np.arange(1, self.n_objects + 1, dtype=np.int64),
            "frame": self.frame.astype(np.int64),
            "centroid_y": (b[:, 1] + b[:, 3]) / 2,
            "centroid_x": (b[:, 0] + b[:, 2]) / 2,
            "bbox_y0": b[:, 1].copy(), "bbox_x0": b[:, 0].copy(), "bbox_y1": b[:, 3].copy(), "bbox_x1": b[:, 2].copy(),
            "area": _areas(b),
            "score": self.scores.astype(np.float32),
            "class_id": cls,
            "class_name": np.array([self.class_names.get(int(c), str(int(c))) for c in cls], dtype=object),
        }

    def centre_coordinates(self) -> np.ndarray:
        """(N, ndim) box centres in layer coordinates: stack indices, then y, x."""
        objects = self.objects
        yx = np.stack([objects["centroid_y"], objects["centroid_x"]], axis=1).reshape(-1, 2)
        return self._with_stack_index(yx)

    def rectangles(self) -> list[np.ndarray]:
        """One (4, ndim) corner array per box for a napari Shapes layer of rectangles."""
        b = self.boxes.reshape(-1, 4)
        corners = np.stack([np.stack([b[:, 1], b[:, 0]], 1), np.stack([b[:, 1], b[:, 2]], 1),
                            np.stack([b[:, 3], b[:, 2]], 1), np.stack([b[:, 3], b[:, 0]], 1)], axis=1)
        if not self.stack_shape:
            return list(corners)
        index = np.stack(np.unravel_index(self.frame.astype(np.int64), self.stack_shape), axis=1).astype(float)
        return [np.concatenate([np.repeat(i[None], 4, 0), c], axis=1) for i, c in zip(index, corners)]

    def _with_stack_index(self, yx: np.ndarray) -> np.ndarray:
        if not self.stack_shape:
            return yx
        index = np.stack(np.unravel_index(self.frame.astype(np.int64), self.stack_shape), axis=1)
        return np.concatenate([index.astype(float).reshape(-1, len(self.stack_shape)), yx], axis=1)

    def save(self, out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
        """Write ``<stem>_objects.csv`` (one row per box), ``_counts.csv`` and ``_provenance.json``; no label
        image (a detector draws no outlines)."""
        from .io import write_csv, write_json

        out = Path(out_dir)
        paths = {
            "objects": out / f"{stem}_objects.csv",
            "counts": out / f"{stem}_counts.csv",
            "provenance": out / f"{stem}_provenance.json",
        }
        write_csv(paths["objects"], {k: self.objects[k] for k in OBJECT_COLUMNS})
        counts = self.counts_per_frame()
        write_csv(paths["counts"], {"frame": np.arange(len(counts)), "count": counts})
        provenance = dict(self.metadata)
        provenance["task"] = "detect"
        provenance["n_objects"] = self.n_objects
        provenance["counts_per_frame"] = counts.tolist()
        provenance["warnings"] = list(self.warnings)
        write_json(paths["provenance"], provenance)
        return paths
