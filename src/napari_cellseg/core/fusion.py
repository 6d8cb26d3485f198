"""Fusing instance sets that describe the same image (test-time augmentation, model ensembles).

Rule: detections from all runs are taken in descending score; each joins the
cluster whose first (highest-score) mask it overlaps best, at mask IoU >=
``match_iou``, provided that cluster has no detection from the same run yet;
otherwise it starts a new cluster. A cluster is kept when at least
``min_votes`` runs contributed (default: a majority). Its mask is the pixel-wise
mean of the member masks thresholded at ``mask_threshold`` (0.5), its score the sum of member scores
divided by the number of runs (a run that missed the object counts as 0), and
its class the members' most frequent class. Runs may carry mask probabilities
(float masks, e.g. Mask R-CNN) instead of binary masks: they are matched at
``mask_threshold`` and their probabilities are what gets averaged.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from .tiling import TileDetections


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return rows[0], cols[0], rows[-1] + 1, cols[-1] + 1


def _iou(a: np.ndarray, box_a, b: np.ndarray, box_b) -> float:
    y0, x0 = min(box_a[0], box_b[0]), min(box_a[1], box_b[1])
    y1, x1 = max(box_a[2], box_b[2]), max(box_a[3], box_b[3])
    sa, sb = a[y0:y1, x0:x1], b[y0:y1, x0:x1]
    union = np.logical_or(sa, sb).sum()
    return float(np.logical_and(sa, sb).sum() / union) if union else 0.0


def _overlaps(box_a, box_b) -> bool:
    return box_a[0] < box_b[2] and box_b[0] < box_a[2] and box_a[1] < box_b[3] and box_b[1] < box_a[3]


def fuse_detections(runs: list[TileDetections], match_iou: float = 0.5, min_votes: int | None = None,
                    mask_threshold: float = 0.5) -> TileDetections:
    n_runs = len(runs)
    if n_runs == 0:
        raise ValueError("nothing to fuse")
    shape = runs[0].masks.shape[1:]
    if n_runs == 1:
        only = runs[0]
        if only.masks.dtype.kind == "f":
            return TileDetections(only.masks >= mask_threshold, only.scores, only.class_ids, only.boxes)
        return only
    min_votes = n_runs // 2 + 1 if min_votes is None else min_votes
    items = [(float(d.scores[i]), r, i) for r, d in enumerate(runs) for i in range(len(d))]
    items.sort(key=lambda item: -item[0])
    clusters: list[dict] = []
    for score, r, i in items:
        values = np.asarray(runs[r].masks[i])
        soft = values.dtype.kind == "f"
        if soft:
            values = values.astype(np.float32, copy=False)  # numpy's float16 arithmetic is slow
        mask = values >= mask_threshold if soft else values.astype(bool, copy=False)
        box = _box(mask)
        if box is None:
            continue
        best, best_iou = None, match_iou
        for cluster in clusters:
            if r in cluster["runs"] or not _overlaps(box, cluster["box"]):
                continue
            iou = _iou(mask, box, cluster["mask"], cluster["box"])
            if iou >= best_iou:
                best, best_iou = cluster, iou
        if best is None:
            clusters.append({"mask": mask, "box": box, "runs": {r}, "sum": values.astype(np.float32),
                             "scores": [score], "classes": [int(runs[r].class_ids[i])]})
        else:
            best["runs"].add(r)
            best["sum"] += values
            best["scores"].append(score)
            best["classes"].append(int(runs[r].class_ids[i]))
    kept = [c for c in clusters if len(c["runs"]) >= min_votes]
    masks = [c["sum"] / len(c["runs"]) >= mask_threshold for c in kept]
    if not masks:
        return TileDetections.empty(shape)
    return TileDetections(
        masks=np.stack(masks),
        scores=np.array([sum(c["scores"]) / n_runs for c in kept], np.float32),
        class_ids=np.array([Counter(c["classes"]).most_common(1)[0][0] for c in kept], np.int64),
        boxes=None,
    )


FLIPS = {"none": (), "h": (1,), "v": (0,), "hv": (0, 1)}


def predict_with_flips(predict, tile: np.ndarray, settings, flips=("none", "h", "v", "hv")) -> list[TileDetections]:
    """Run ``predict`` on flipped copies of a tile and flip the masks back."""
    runs = []
    for name in flips:
        axes = FLIPS[name]
        flipped = np.ascontiguousarray(np.flip(tile, axis=axes)) if axes else tile
        detections = predict(flipped, settings)
        if axes and len(detections):
            detections = TileDetections(
                masks=np.ascontiguousarray(np.flip(detections.masks, axis=tuple(a + 1 for a in axes))),
                scores=detections.scores, class_ids=detections.class_ids, boxes=None,
            )
        runs.append(detections)
    return runs
