"""Scores of box detections against box ground truth: precision, recall and F1 at IoU 0.5, COCO mAP50 and
mAP50-95 (pycocotools, iouType "bbox"), the count error, and the confidence curves a detector is judged by
(F1-, precision- and recall-confidence, precision-recall) with the best-F1 confidence.

Matching at IoU 0.5 is COCO's: detections are taken in descending score and each takes the unmatched ground
truth box of the same class it overlaps most, if that IoU is at least 0.5. A detection's match then depends only
on higher-scoring ones, so the precision, recall and F1 at every threshold come from one matching.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .detection import box_iou

IOU_THRESHOLD = 0.5
CONF_GRID = np.linspace(0, 1, 1001)  # confidence thresholds of the curves (ultralytics uses 1000 points)


@dataclass
class BoxSample:
    """One image: predicted boxes (x0, y0, x1, y1 pixels), their scores and classes, and the true boxes."""

    name: str
    pred_boxes: np.ndarray
    scores: np.ndarray
    gt_boxes: np.ndarray
    pred_classes: np.ndarray | None = None
    gt_classes: np.ndarray | None = None

    def __post_init__(self):
        self.pred_boxes = np.asarray(self.pred_boxes, np.float64).reshape(-1, 4)
        self.gt_boxes = np.asarray(self.gt_boxes, np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        self.pred_classes = (np.zeros(len(self.scores), np.int64) if self.pred_classes is None
                             else np.asarray(self.pred_classes, np.int64).reshape(-1))
        self.gt_classes = (np.zeros(len(self.gt_boxes), np.int64) if self.gt_classes is None
                           else np.asarray(self.gt_classes, np.int64).reshape(-1))
        if not (len(self.pred_boxes) == len(self.scores) == len(self.pred_classes)):
            raise ValueError(f"{self.name}: {len(self.pred_boxes)} boxes but {len(self.scores)} scores")


def match_detections(sample: BoxSample, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """(N,) bool: which detections (in the sample's order) are true positives under COCO's greedy matching."""
    tp = np.zeros(len(sample.scores), bool)
    if not len(sample.scores) or not len(sample.gt_boxes):
        return tp
    iou = box_iou(sample.pred_boxes, sample.gt_boxes)
    iou[sample.pred_classes[:, None] != sample.gt_classes[None, :]] = 0
    taken = np.zeros(len(sample.gt_boxes), bool)
    for i in np.argsort(-sample.scores, kind="stable"):
        candidates = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            tp[i], taken[j] = True, True
    return tp


@dataclass
class BoxEvaluation:
    """Everything ``evaluate_boxes`` measured; ``rows`` holds one dict per image at the reported threshold."""

    conf: float  # the threshold P, R, F1 and the counts are reported at
    precision: float
    recall: float
    f1: float
    map50: float
    map50_95: float
    best_f1: float
    best_f1_conf: float
    count_mae: float
    relative_count_error: float
    n_pred: int
    n_gt: int
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # confidence, precision, recall, f1
    pr_curve: dict[str, np.ndarray] = field(default_factory=dict)  # recall, precision
    rows: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in SUMMARY_KEYS}

    def write(self, stem) -> list:
        """``<stem>_curves.csv`` (confidence, precision, recall, f1), ``<stem>_pr_curve.csv`` and, with matplotlib,
        ``<stem>_F1_curve.png``, ``_P_curve.png``, ``_R_curve.png``, ``_PR_curve.png``. Returns the paths."""
        from pathlib import Path

        from .io import write_csv

        stem = Path(stem)
        written = [stem.with_name(stem.name + "_curves.csv"), stem.with_name(stem.name + "_pr_curve.csv")]
        write_csv(written[0], self.curves)
        write_csv(written[1], self.pr_curve)
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            return written
        c = self.curves["confidence"]
        plots = [("F1", c, self.curves["f1"], "confidence", "F1"),
                 ("P", c, self.curves["precision"], "confidence", "precision"),
                 ("R", c, self.curves["recall"], "confidence", "recall"),
                 ("PR", self.pr_curve["recall"], self.pr_curve["precision"], "recall", "precision")]
        for key, x, y, xlabel, ylabel in plots:
            fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
            ax.plot(x, y)
            if key == "F1":
                ax.axvline(self.best_f1_conf, ls="--", c="grey")
                ax.set_title(f"best F1 {self.best_f1:.3f} at confidence {self.best_f1_conf:.3f}")
            elif key == "PR":
                ax.set_title(f"mAP50 {self.map50:.3f}")
            ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
            path = stem.with_name(f"{stem.name}_{key}_curve.png")
            fig.tight_layout()
            fig.savefig(path)
            plt.close(fig)
            written.append(path)
        return written


SUMMARY_KEYS = ("conf", "n_pred", "n_gt", "precision", "recall", "f1", "map50", "map50_95", "best_f1",
                "best_f1_conf", "count_mae", "relative_count_error")


def coco_box_map(samples: list[BoxSample]) -> tuple[float, float]:
    """(mAP50, mAP50-95) of COCOeval with iouType "bbox", all areas, as many detections per image as given."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        return _coco_box_map(samples)


def _coco_box_map(samples: list[BoxSample]) -> tuple[float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not sum(len(s.gt_boxes) for s in samples):
        return float("nan"), float("nan")
    classes = sorted({int(c) for s in samples for c in np.concatenate([s.gt_classes, s.pred_classes])})
    images, annotations, detections = [], [], []
    for image_id, s in enumerate(samples, start=1):
        images.append({"id": image_id})
        for box, cls in zip(s.gt_boxes, s.gt_classes):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        for box, score, cls in zip(s.pred_boxes, s.scores, s.pred_classes):
            detections.append({"image_id": image_id, "category_id": int(cls) + 1, "score": float(score),
                               "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c + 1, "name": str(c)} for c in classes]}
    gt.createIndex()
    if not detections:
        return 0.0, 0.0
    dt = gt.loadRes(detections)
    evaluator = COCOeval(gt, dt, iouType="bbox")
    evaluator.params.maxDets = [max(100, max(len(s.scores) for s in samples))]
    evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0, 1e10]], ["all"]
    evaluator.evaluate()
    evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (iou thresholds, recall points, classes)
    # classes without ground truth are -1 throughout and do not count
    def mean(p):
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else 0.0

    return mean(precision[0]), mean(precision)


def evaluate_boxes(samples: list[BoxSample], conf: float | None = None,
                   iou_threshold: float = IOU_THRESHOLD) -> BoxEvaluation:
    """Score detections (made at a low threshold, e.g. 0.001, for the curves and mAP to mean anything).

    ``conf``: the threshold precision, recall, F1 and the counts are reported at; ``None``: the best-F1 one (the
    highest threshold of the grid ``CONF_GRID`` that reaches the best F1; ultralytics reports the maximum of a
    smoothed curve instead).
    """
    samples = list(samples)
    if not samples:
        raise ValueError("no images to evaluate")
    tps = [match_detections(s, iou_threshold) for s in samples]
    scores = np.concatenate([s.scores for s in samples]) if samples else np.zeros(0)
    tp = np.concatenate(tps).astype(np.float64)
    n_gt = int(sum(len(s.gt_boxes) for s in samples))
    order = np.argsort(-scores, kind="stable")
    sorted_scores, cum_tp = scores[order], np.cumsum(tp[order])
    # detections scoring at least c: those before the first score below c in descending order
    kept = np.searchsorted(-sorted_scores, -CONF_GRID, side="right")
    tp_at = np.where(kept > 0, cum_tp[np.maximum(kept - 1, 0)] if len(cum_tp) else 0, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(kept > 0, tp_at / np.maximum(kept, 1), 1.0)  # no detections: precision 1 (as ultralytics)
        recall = tp_at / n_gt if n_gt else np.zeros_like(tp_at, np.float64)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = len(f1) - 1 - int(np.argmax(f1[::-1]))  # the highest threshold reaching the best F1
    report_conf = float(CONF_GRID[best]) if conf is None else float(conf)
    n = np.arange(1, len(order) + 1)
    pr_recall = cum_tp / n_gt if n_gt else np.zeros(len(order))
    pr_precision = cum_tp / n if len(order) else np.zeros(0)
    map50, map50_95 = coco_box_map(samples)
    rows, errors = [], []
    total_tp = total_pred = 0
    for s, t in zip(samples, tps):
        keep = s.scores >= report_conf
        n_pred, n_true, n_tp = int(keep.sum()), len(s.gt_boxes), int(t[keep].sum())
        p = n_tp / n_pred if n_pred else (1.0 if not n_true else 0.0)
        r = n_tp / n_true if n_true else 1.0
        rows.append({"name": s.name, "n_pred": n_pred, "n_gt": n_true, "precision_50": p, "recall_50": r,
                     "f1_50": 2 * p * r / (p + r) if p + r else 0.0, "count_error": n_pred - n_true,
                     "relative_count_error": (n_pred - n_true) / n_true if n_true else float("nan")})
        errors.append(abs(n_pred - n_true))
        total_tp += n_tp
        total_pred += n_pred
    p_all = total_tp / total_pred if total_pred else 0.0
    r_all = total_tp / n_gt if n_gt else 0.0
    return BoxEvaluation(
        conf=report_conf, precision=p_all, recall=r_all, f1=2 * p_all * r_all / (p_all + r_all) if p_all + r_all else 0.0,
        map50=map50, map50_95=map50_95, best_f1=float(f1[best]), best_f1_conf=float(CONF_GRID[best]),
        count_mae=float(np.mean(errors)), relative_count_error=float(np.sum(errors) / n_gt) if n_gt else float("nan"),
        n_pred=total_pred, n_gt=n_gt,
        curves={"confidence": CONF_GRID, "precision": precision, "recall": recall, "f1": f1},
        pr_curve={"recall": pr_recall, "precision": pr_precision}, rows=rows)
