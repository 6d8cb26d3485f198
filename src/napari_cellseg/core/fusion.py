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


def fuse_labels(label_images: list[np.ndarray], scores: list[dict[int, float]], classes: list[dict[int, int]],
                match_iou: float = 0.5, min_votes: int | None = None, mask_threshold: float = 0.5,
                ) -> tuple[np.ndarray, dict[int, float], dict[int, int]]:
    """The rule of :func:`fuse_detections` on whole label images (one per run, e.g. ensemble members that
    each ran at their own scale and tiling): objects in descending score join the cluster whose first
    object they overlap best (mask IoU >= ``match_iou``, one object per run), clusters found by at least
    ``min_votes`` runs (default: a majority) are kept, their mask the pixel-wise mean of their members'
    at >= ``mask_threshold``, their score the sum of member scores over the number of runs.
    Returns (labels 1..N painted in descending score, each pixel to the first object claiming it,
    {label: score}, {label: class})."""
    from scipy import ndimage

    n_runs = len(label_images)
    if n_runs == 0:
        raise ValueError("nothing to fuse")
    shape = label_images[0].shape
    min_votes = n_runs // 2 + 1 if min_votes is None else int(min_votes)
    items = []  # (score, run, box, crop mask)
    for r, labels in enumerate(label_images):
        for index, box in enumerate(ndimage.find_objects(labels)):
            if box is None:
                continue
            corners = (box[0].start, box[1].start, box[0].stop, box[1].stop)
            items.append((float(scores[r].get(index + 1, 0.0)), r, corners, labels[box] == index + 1,
                          int(classes[r].get(index + 1, 0))))
    items.sort(key=lambda item: -item[0])
    clusters: list[dict] = []
    boxes = np.zeros((0, 4), np.int64)
    for score, r, box, mask, cls in items:
        candidates = np.flatnonzero((boxes[:, 0] < box[2]) & (box[0] < boxes[:, 2])
                                    & (boxes[:, 1] < box[3]) & (box[1] < boxes[:, 3])) if len(boxes) else []
        best, best_iou = None, match_iou
        for c in candidates:
            cluster = clusters[c]
            if r in cluster["runs"]:
                continue
            iou = _crop_iou(mask, box, cluster["mask"], cluster["box"])
            if iou >= best_iou:
                best, best_iou = cluster, iou
        if best is None:
            clusters.append({"mask": mask, "box": box, "runs": {r}, "members": [(box, mask)], "scores": [score],
                             "classes": [cls]})
            boxes = np.vstack([boxes, np.asarray(box, np.int64)[None]])
        else:
            best["runs"].add(r)
            best["members"].append((box, mask))
            best["scores"].append(score)
            best["classes"].append(cls)
    kept = sorted((c for c in clusters if len(c["runs"]) >= min_votes), key=lambda c: -sum(c["scores"]))
    out = np.zeros(shape, np.int32)
    fused_scores, fused_classes = {}, {}
    label = 0
    for cluster in kept:
        y0 = min(b[0] for b, _ in cluster["members"])
        x0 = min(b[1] for b, _ in cluster["members"])
        y1 = max(b[2] for b, _ in cluster["members"])
        x1 = max(b[3] for b, _ in cluster["members"])
        total = np.zeros((y1 - y0, x1 - x0), np.float32)
        for (by0, bx0, by1, bx1), mask in cluster["members"]:
            total[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] += mask
        fused = (total / len(cluster["runs"]) >= mask_threshold) & (out[y0:y1, x0:x1] == 0)
        if not fused.any():
            continue
        label += 1
        out[y0:y1, x0:x1][fused] = label
        fused_scores[label] = sum(cluster["scores"]) / n_runs
        fused_classes[label] = Counter(cluster["classes"]).most_common(1)[0][0]
    return out, fused_scores, fused_classes


def _crop_iou(a: np.ndarray, box_a, b: np.ndarray, box_b) -> float:
    """Mask IoU of two box-cropped masks in image coordinates (boxes y0, x0, y1, x1)."""
    y0, x0 = max(box_a[0], box_b[0]), max(box_a[1], box_b[1])
    y1, x1 = min(box_a[2], box_b[2]), min(box_a[3], box_b[3])
    if y1 <= y0 or x1 <= x0:
        return 0.0
    inter = np.logical_and(a[y0 - box_a[0]:y1 - box_a[0], x0 - box_a[1]:x1 - box_a[1]],
                           b[y0 - box_b[0]:y1 - box_b[0], x0 - box_b[1]:x1 - box_b[1]]).sum()
    union = a.sum() + b.sum() - inter
    return float(inter / union) if union else 0.0
