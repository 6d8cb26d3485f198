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
