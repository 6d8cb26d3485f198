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


def coco_segm_stats(shapes, truths, predictions, *, num_classes: int = 1, max_dets=None):
    """pycocotools' COCOeval ("segm") summary statistics (``stats``: mAP50-95, AP50, AP75, ...).

    ``shapes[i]`` is image i's (height, width); ``truths[i]`` yields its (mask, class index) pairs and
    ``predictions[i]`` its (mask, class index, score) triples, masks encoded one at a time (they may
    overlap). ``max_dets``: COCOeval's maxDets (its default, 1/10/100, when None).
    """
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle_of(mask):
        rle = mask_utils.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8)))
        return {"size": rle["size"], "counts": rle["counts"].decode()}

    images, annotations, detections = [], [], []
    for image_id, (shape, image_truths, image_predictions) in enumerate(zip(shapes, truths, predictions), start=1):
        images.append({"id": image_id, "height": int(shape[0]), "width": int(shape[1])})
        for mask, cls in image_truths:
            rle = rle_of(mask)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                                "iscrowd": 0, "segmentation": rle, "area": float(mask_utils.area(rle)),
                                "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
        for mask, cls, score in image_predictions:
            detections.append({"image_id": image_id, "category_id": int(cls) + 1, "score": float(score),
                               "segmentation": rle_of(mask)})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summary
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations,
                           "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(detections), iouType="segm")
        if max_dets is not None:
            evaluator.params.maxDets = list(max_dets)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def coco_mask_map(pred: np.ndarray, gt: np.ndarray, scores: dict[int, float] | None = None) -> dict:
    """COCO mask AP (pycocotools): mAP over IoU 0.50:0.95, AP50 and AP75.

    A stack is treated as one COCO image per frame. Without scores every
    prediction counts as equally confident.
    """
    pred = np.asarray(pred).reshape((-1,) + np.shape(pred)[-2:])
    gt = np.asarray(gt).reshape((-1,) + np.shape(gt)[-2:])
    scores = scores or {}
    gt_ids = [np.unique(g[g > 0]) for g in gt]
    pred_ids = [np.unique(p[p > 0]) for p in pred]
    n_gt, n_pred = sum(len(i) for i in gt_ids), sum(len(i) for i in pred_ids)
    if not n_gt or not n_pred:
        return {"map": 0.0 if n_gt or n_pred else 1.0, "ap50": float("nan"), "ap75": float("nan")}
    stats = coco_segm_stats(
        [g.shape for g in gt],
        [((g == label, 0) for label in ids) for g, ids in zip(gt, gt_ids)],
        [((p == label, 0, scores.get(int(label), 1.0)) for label in ids) for p, ids in zip(pred, pred_ids)],
        max_dets=[1, 100, max(1000, n_pred)])  # dense images: no 100-object cap
    return {"map": float(stats[0]), "ap50": float(stats[1]), "ap75": float(stats[2])}


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
