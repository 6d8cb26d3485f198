"""Evaluating box detections on disk (``<stem>_objects.csv`` of a detection run) against box ground truth:
YOLO label files, a YOLO / Roboflow dataset (``data.yaml``), a COCO JSON with boxes, or instance masks (the
boxes of their objects). Matched by image name."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .box_metrics import BoxSample, evaluate_boxes
from .datasets import DatasetError, boxes_from_labels, parse_yolo_label_file, read_detection_dataset
from .evaluation import base_name
from .io import IMAGE_SUFFIXES, read_image

OBJECTS_SUFFIX = "_objects"


def is_box_prediction(path: Path) -> bool:
    """A detection run's output: an ``_objects.csv``, or a folder of them without label images."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if path.is_dir():
        tables = list(path.glob(f"*{OBJECTS_SUFFIX}.csv"))
        return bool(tables) and not any(path.glob("*_labels.tif"))
    return False


def read_box_predictions(pred: Path) -> dict[str, dict]:
    """name -> {"boxes", "scores", "classes", "shape"} from ``_objects.csv`` files (``shape``: the image's
    (height, width) from the provenance file beside it, needed to read normalised YOLO labels)."""
    pred = Path(pred)
    files = [pred] if pred.is_file() else sorted(pred.glob(f"*{OBJECTS_SUFFIX}.csv"))
    if not files:
        raise DatasetError(f"{pred}: no <name>_objects.csv files (the output of 'napari-cellseg segment' with a "
                           "detection model)")
    out = {}
    for path in files:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        needed = {"bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "score"}
        if rows and not needed <= set(rows[0]):
            raise DatasetError(f"{path}: expected the columns {', '.join(sorted(needed))} of an objects table")
        name = path.stem[: -len(OBJECTS_SUFFIX)] if path.stem.endswith(OBJECTS_SUFFIX) else path.stem
        provenance = path.with_name(f"{name}_provenance.json")
        shape = None
        if provenance.is_file():
            info = json.loads(provenance.read_text())
            if info.get("task") != "detect" and not pred.is_file():
                continue
            dims = (info.get("input") or {}).get("shape")
            if dims:
                rgb = len(dims) >= 3 and dims[-1] in (3, 4)
                shape = tuple(dims[-3:-1]) if rgb else tuple(dims[-2:])
        out[name] = {
            "boxes": np.array([[float(r["bbox_x0"]), float(r["bbox_y0"]), float(r["bbox_x1"]), float(r["bbox_y1"])]
                               for r in rows]).reshape(-1, 4),
            "scores": np.array([float(r["score"]) for r in rows]),
            "classes": np.array([int(float(r.get("class_id") or 0)) for r in rows], np.int64),
            "shape": shape,
        }
    return out


def read_box_truth(gt: Path, shapes: dict[str, tuple | None]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (boxes, classes) from a dataset (data.yaml, its folder, a COCO .json), a folder of YOLO ``.txt``
    labels, a folder of instance-mask images, or one such file."""
    gt = Path(gt)
    if not gt.exists():
        raise DatasetError(f"{gt}: no such file or folder")
    if gt.suffix.lower() in (".yaml", ".yml", ".json") or (gt.is_dir() and (gt / "data.yaml").is_file()):
        return {name: (boxes, classes) for name, _, boxes, classes in read_detection_dataset(gt)}
    files = [gt] if gt.is_file() else sorted(gt.iterdir())
    texts = [p for p in files if p.suffix.lower() == ".txt"]
    masks = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    truth = {}
    for path in texts:
        name = base_name(path)
        shape = shapes.get(name) or (shapes.get(next(iter(shapes))) if gt.is_file() and shapes else None)
        if shape is None:
            if name in shapes or gt.is_file():
                raise DatasetError(f"{path}: YOLO labels are normalised to the image size, and the provenance file "
                                   "of the prediction (which records it) is missing")
            continue
        truth[name] = parse_yolo_label_file(path, shape)
    for path in masks if not texts else []:
        labels = read_image(path, lazy=False)
        if labels.dtype.kind not in "iu":
            raise DatasetError(f"{path}: instance masks must hold integers, found {labels.dtype}")
        boxes = boxes_from_labels(np.asarray(labels))
        truth[base_name(path)] = (boxes, np.zeros(len(boxes), np.int64))
    if not truth:
        raise DatasetError(f"{gt}: no ground truth found (expected YOLO .txt label files, instance-mask images, a "
                           "data.yaml or a COCO .json)")
    return truth


def evaluate_box_files(pred: Path, gt: Path, conf: float | None = None):
    """The ``BoxEvaluation`` of the predictions in ``pred`` against the ground truth in ``gt`` (common names)."""
    predictions = read_box_predictions(pred)
    truth = read_box_truth(gt, {k: v["shape"] for k, v in predictions.items()})
    if Path(pred).is_file() and Path(gt).is_file() and len(truth) == 1 and len(predictions) == 1:
        truth = {next(iter(predictions)): next(iter(truth.values()))}
    common = sorted(set(predictions) & set(truth))
    if not common:
        raise DatasetError(f"no image names in {pred} ({', '.join(sorted(predictions)[:3])}...) match those in "
                           f"{gt} ({', '.join(sorted(truth)[:3])}...)")
    samples = [BoxSample(name, predictions[name]["boxes"], predictions[name]["scores"], truth[name][0],
                         predictions[name]["classes"], truth[name][1]) for name in common]
    return evaluate_boxes(samples, conf=conf)
