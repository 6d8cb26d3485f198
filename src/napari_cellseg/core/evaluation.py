"""Evaluating label images on disk against ground truth, matched by file name."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .io import IMAGE_SUFFIXES, read_image
from .metrics import evaluate

NAME_SUFFIXES = ("_labels", "_label", "_masks", "_mask", "_pred", "_prediction", "_gt", "_groundtruth")
SUMMARY_COLUMNS = ("name", "n_pred", "n_gt", "precision_50", "recall_50", "f1_50", "dsb_score", "coco_map",
                   "dice", "count_error", "relative_count_error")


def base_name(path: Path) -> str:
    stem = path.stem
    for suffix in NAME_SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def pair_files(pred: Path, gt: Path) -> list[tuple[str, Path, Path]]:
    """(name, prediction, ground truth) pairs: two files, or two folders matched by base name."""
    pred, gt = Path(pred), Path(gt)
    if pred.is_file() and gt.is_file():
        return [(base_name(gt), pred, gt)]
    if pred.is_dir() and gt.is_dir():
        def index(folder):
            return {base_name(p): p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}

        preds, gts = index(pred), index(gt)
        common = sorted(set(preds) & set(gts))
        if not common:
            raise ValueError(f"no file names in {pred} match those in {gt}")
        return [(name, preds[name], gts[name]) for name in common]
    for p in (pred, gt):
        if not p.exists():
            raise ValueError(f"{p}: no such file or folder")
    raise ValueError("give two label files or two folders")


def _scores_beside(pred: Path) -> dict[int, float] | None:
    table = pred.with_name(base_name(pred) + "_objects.csv")
    if not table.is_file():
        return None
    with open(table, newline="") as fh:
        return {int(r["label"]): float(r["score"]) for r in csv.DictReader(fh) if r.get("score") not in ("", "nan")}


def evaluate_files(pred: Path, gt: Path):
    """Yield one metrics row per pair (a generator, so callers can show progress)."""
    for name, p, g in pair_files(pred, gt):
        pred_labels, gt_labels = read_image(p), read_image(g)
        if pred_labels.dtype.kind not in "iu" or gt_labels.dtype.kind not in "iu":
            raise ValueError(f"{name}: label images must hold integers")
        row = evaluate(pred_labels, gt_labels, scores=_scores_beside(p))
        yield {"name": name, **row}


def summary_row(rows: list[dict]) -> dict:
    """Mean of each metric over images (the DSB score is a mean over images by definition)."""
    mean = {"name": "mean"}
    for column in SUMMARY_COLUMNS[1:]:
        values = np.array([r[column] for r in rows], dtype=float)
        mean[column] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return mean
