"""Instance matching and the usual segmentation scores.

Matching is one-to-one, maximising total IoU (Hungarian) among pairs whose IoU
reaches the threshold. The DSB2018/Sartorius image score is the mean over IoU
thresholds 0.50, 0.55, ..., 0.95 of TP / (TP + FP + FN).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


@dataclass(frozen=True)
class MatchStats:
    threshold: float
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float(self.fn == 0)

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float(self.fp == 0)

    @property
    def f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 1.0

    @property
    def score(self) -> float:
        """TP / (TP + FP + FN): the per-threshold term of the DSB2018 score."""
        denominator = self.tp + self.fp + self.fn
        return self.tp / denominator if denominator else 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1, "score": self.score}


def iou_matrix(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IoU of every predicted x ground-truth object, predicted ids, ground-truth ids)."""
    pred = np.asarray(pred).ravel().astype(np.int64)
    gt = np.asarray(gt).ravel().astype(np.int64)
    if pred.shape != gt.shape:
        raise ValueError("prediction and ground truth must have the same shape")
    pred_ids = np.unique(pred[pred > 0])
    gt_ids = np.unique(gt[gt > 0])
    # dense indices 1..n for each side (labels need not be sequential)
    p = np.searchsorted(pred_ids, pred) + 1
    p[pred == 0] = 0
    g = np.searchsorted(gt_ids, gt) + 1
    g[gt == 0] = 0
    n_p, n_g = len(pred_ids) + 1, len(gt_ids) + 1
    joint = np.bincount(p * n_g + g, minlength=n_p * n_g).reshape(n_p, n_g)
    intersection = joint[1:, 1:].astype(np.float64)
    pred_area = joint[1:, :].sum(axis=1, keepdims=True)
    gt_area = joint[:, 1:].sum(axis=0, keepdims=True)
    union = pred_area + gt_area - intersection
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    return iou, pred_ids, gt_ids


def match_pairs(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of one-to-one matches with IoU >= threshold."""
    from scipy.optimize import linear_sum_assignment

    if iou.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    candidate = iou >= threshold
    rows_any, cols_any = np.flatnonzero(candidate.any(1)), np.flatnonzero(candidate.any(0))
    if rows_any.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sub = np.where(candidate[np.ix_(rows_any, cols_any)], iou[np.ix_(rows_any, cols_any)], 0.0)
    r, c = linear_sum_assignment(-sub)
    keep = sub[r, c] >= threshold
    return rows_any[r[keep]], cols_any[c[keep]]


def matching_stats(pred: np.ndarray, gt: np.ndarray, thresholds=DSB_THRESHOLDS) -> list[MatchStats]:
    iou, pred_ids, gt_ids = iou_matrix(pred, gt)
    stats = []
    for threshold in thresholds:
        rows, _ = match_pairs(iou, float(threshold))
        tp = len(rows)
        stats.append(MatchStats(float(threshold), tp, len(pred_ids) - tp, len(gt_ids) - tp))
    return stats


def dsb_score(stats: list[MatchStats]) -> float:
    return float(np.mean([s.score for s in stats]))


def unmatched(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Ids of false-positive predictions and false-negative ground-truth objects."""
    iou, pred_ids, gt_ids = iou_matrix(pred, gt)
    rows, cols = match_pairs(iou, threshold)
    return np.setdiff1d(pred_ids, pred_ids[rows]), np.setdiff1d(gt_ids, gt_ids[cols])


def agreement(labels_a: np.ndarray, labels_b: np.ndarray, threshold: float = 0.5) -> dict:
    """How two segmentations of one image agree: matched objects and F1 at ``threshold``."""
    stats = matching_stats(labels_a, labels_b, thresholds=(threshold,))[0]
    return {
        "threshold": threshold,
        "matched": stats.tp,
        "only_a": stats.fp,
        "only_b": stats.fn,
        "f1": stats.f1,
    }


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of the foreground masks (semantic agreement, ignores instance ids)."""
    p, g = np.asarray(pred) > 0, np.asarray(gt) > 0
    total = p.sum() + g.sum()
    return float(2 * np.logical_and(p, g).sum() / total) if total else 1.0


def coco_mask_map(pred: np.ndarray, gt: np.ndarray, scores: dict[int, float] | None = None) -> dict:
    """COCO mask AP (pycocotools): mAP over IoU 0.50:0.95, AP50 and AP75.

    A stack is treated as one COCO image per frame. Without scores every
    prediction counts as equally confident.
    """
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    pred = np.asarray(pred).reshape((-1,) + np.shape(pred)[-2:])
    gt = np.asarray(gt).reshape((-1,) + np.shape(gt)[-2:])
    scores = scores or {}
    images, annotations, detections = [], [], []
    for index, (p, g) in enumerate(zip(pred, gt)):
        images.append({"id": index, "height": g.shape[0], "width": g.shape[1]})
        for label in np.unique(g[g > 0]):
            rle = mask_utils.encode(np.asfortranarray((g == label).astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1, "image_id": index, "category_id": 1, "iscrowd": 0,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                "area": float(mask_utils.area(rle)), "bbox": list(mask_utils.toBbox(rle)),
            })
        for label in np.unique(p[p > 0]):
            rle = mask_utils.encode(np.asfortranarray((p == label).astype(np.uint8)))
            detections.append({
                "image_id": index, "category_id": 1, "score": float(scores.get(int(label), 1.0)),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
            })
    if not annotations or not detections:
        return {"map": 0.0 if annotations or detections else 1.0, "ap50": float("nan"), "ap75": float("nan")}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summary
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.maxDets = [1, 100, max(1000, len(detections))]  # dense images: no 100-object cap
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map": float(evaluator.stats[0]), "ap50": float(evaluator.stats[1]), "ap75": float(evaluator.stats[2])}


def evaluate(pred: np.ndarray, gt: np.ndarray, scores: dict[int, float] | None = None,
             with_coco: bool = True) -> dict:
    """Every metric for one prediction against its ground truth."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    stats = matching_stats(pred, gt)
    at50 = stats[0]
    n_pred, n_gt = at50.tp + at50.fp, at50.tp + at50.fn
    row = {
        "n_pred": n_pred,
        "n_gt": n_gt,
        "precision_50": at50.precision,
        "recall_50": at50.recall,
        "f1_50": at50.f1,
        "dsb_score": dsb_score(stats),
        "dice": dice(pred, gt),
        "count_error": n_pred - n_gt,
        "relative_count_error": (n_pred - n_gt) / n_gt if n_gt else float("nan"),
    }
    if with_coco:
        coco = coco_mask_map(pred, gt, scores)
        row.update({"coco_map": coco["map"], "coco_ap50": coco["ap50"], "coco_ap75": coco["ap75"]})
    row["per_threshold"] = [s.as_dict() for s in stats]
    return row
