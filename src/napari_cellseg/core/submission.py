"""Instance exports for challenges and COCO tools: Kaggle Sartorius run-length CSV and COCO results JSON.

Sartorius format: columns ``id,predicted``, one row per instance; ``predicted`` is a space-separated
list of ``start length`` pairs, starts 1-indexed over the image flattened row by row (row-major),
as in the competition's ``train.csv``. An image without instances gets one row with an empty
``predicted``. Instances of one image never overlap (they come from one label image).

COCO: a dataset JSON (``images``, ``categories``, ``annotations``) whose annotations carry
compressed RLE masks (pycocotools) and the instance score, so it serves both as ground truth and
as a results file. Where a run's predicted instances are known (``SegmentationResult.instances``,
``<stem>_instances.json``), every instance is written as the model predicted it: its predicted box
(``bbox``, x, y, width, height), score, class and whole mask, before the label image's overlap
resolution, so overlapping instances keep their overlap and instances that lost every pixel of the
label image to higher-scoring ones are there too (``label`` 0; ``label`` otherwise names the object
in the label image). Without them (a label image alone), one annotation per label, box from the mask.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def rle_encode(mask: np.ndarray) -> str:
    """'start length ...' of a binary mask; starts 1-indexed, pixels in row-major order."""
    flat = np.concatenate([[0], np.asarray(mask, bool).ravel(order="C").astype(np.int8), [0]])
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # 1-indexed run starts and ends (exclusive)
    starts, ends = edges[::2], edges[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


def rle_decode(text: str, shape: tuple[int, int]) -> np.ndarray:
    values = np.asarray(str(text).split(), np.int64)
    if values.size % 2:
        raise ValueError(f"a run-length encoding needs start/length pairs, got {values.size} numbers")
    flat = np.zeros(int(np.prod(shape)), bool)
    for start, length in zip(values[::2], values[1::2]):
        if start < 1 or start - 1 + length > flat.size:
            raise ValueError(f"run {start} {length} lies outside an image of {shape[0]}x{shape[1]} pixels")
        flat[start - 1:start - 1 + length] = True
    return flat.reshape(shape)


def _frames(image_id: str, labels: np.ndarray):
    """(frame id, 2-D labels); a stack's frames are named as the dataset exports name them."""
    from .datasets import frames_of

    for frame_id, _, frame in frames_of(image_id, None, labels):
        yield frame_id, frame


def write_sartorius_csv(path: str | os.PathLike, items: Iterable[tuple[str, np.ndarray]]) -> int:
    """Write (image id, labels) pairs as a Sartorius submission; returns the number of instance rows."""
    from .io import atomic_path

    n_rows = 0
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "predicted"])
        for image_id, labels in items:
            for frame_id, frame in _frames(image_id, labels):
                ids = np.unique(frame[frame > 0])
                if ids.size == 0:
                    writer.writerow([frame_id, ""])
                for label in ids:
                    writer.writerow([frame_id, rle_encode(frame == label)])
                    n_rows += 1
    return n_rows


def read_sartorius_csv(path: str | os.PathLike, shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Label images (instances numbered in file order) from a Sartorius CSV; ``shapes`` by image id."""
    out: dict[str, np.ndarray] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            image_id = row["id"]
            if image_id not in shapes:
                raise ValueError(f"{path}: image id '{image_id}' has no known shape")
            labels = out.setdefault(image_id, np.zeros(shapes[image_id], np.int32))
            if row["predicted"].strip():
                mask = rle_decode(row["predicted"], shapes[image_id])
                labels[mask & (labels == 0)] = labels.max() + 1
    return out


def coco_instances(items: Iterable[tuple], class_names: dict[int, str] | None = None) -> dict:
    """COCO dict from (image id, labels, object table or None[, predicted instances or None]); the table
    gives scores and classes; predicted instances (``SegmentationResult.instances``), where given, are
    written as predicted instead of the labels (see the module's docstring)."""
    from pycocotools import mask as mask_utils

    class_names = class_names or {0: "cell"}
    coco = {"images": [], "annotations": [],
            "categories": [{"id": int(k) + 1, "name": str(v)} for k, v in sorted(class_names.items())]}
    next_ann = 1
    for item in items:
        image_id, labels, table = item[:3]
        predicted = item[3] if len(item) > 3 else None
        frames = list(_frames(image_id, labels))
        for frame_index, (frame_id, frame) in enumerate(frames):
            numeric_id = len(coco["images"]) + 1
            coco["images"].append({"id": numeric_id, "file_name": frame_id, "height": int(frame.shape[0]),
                                   "width": int(frame.shape[1])})
            if predicted is not None:
                for instance in predicted:
                    if int(instance["frame"]) != frame_index:
                        continue
                    x0, y0, x1, y1 = (float(v) for v in instance["box"])
                    rle = instance["segmentation"]
                    coco["annotations"].append({
                        "id": next_ann, "image_id": numeric_id, "category_id": int(instance["class_id"]) + 1,
                        "iscrowd": 0, "segmentation": {"size": list(rle["size"]), "counts": rle["counts"]},
                        "area": float(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()})),
                        "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(instance["score"]),
                        "label": int(instance["label"]),
                    })
                    next_ann += 1
                continue
            by_label = {}
            if table is not None:
                offset_rows = np.flatnonzero(np.asarray(table["frame"]) == frame_index)
                by_label = {int(table["label"][r]): r for r in offset_rows}
            for label in np.unique(frame[frame > 0]):
                rle = mask_utils.encode(np.asfortranarray((frame == label).astype(np.uint8)))
                row = by_label.get(int(label))
                score = float(table["score"][row]) if row is not None else 1.0
                cls = int(table["class_id"][row]) if row is not None else 0
                coco["annotations"].append({
                    "id": next_ann, "image_id": numeric_id, "category_id": cls + 1, "iscrowd": 0,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "score": score if np.isfinite(score) else 1.0,
                })
                next_ann += 1
    return coco


def write_coco_json(path: str | os.PathLike, items, class_names: dict[int, str] | None = None) -> int:
    from .io import write_json

    coco = coco_instances(items, class_names)
    write_json(Path(path), coco)
    return len(coco["annotations"])


def labels_from_coco(coco: dict) -> dict[str, np.ndarray]:
    """Label images by ``file_name`` from a COCO dict with RLE masks (instances in annotation order)."""
    from pycocotools import mask as mask_utils

    images = {info["id"]: info for info in coco["images"]}
    out = {info["file_name"]: np.zeros((info["height"], info["width"]), np.int32) for info in images.values()}
    for ann in coco["annotations"]:
        labels = out[images[ann["image_id"]]["file_name"]]
        mask = mask_utils.decode(ann["segmentation"]) > 0
        labels[mask & (labels == 0)] = labels.max() + 1
    return out
