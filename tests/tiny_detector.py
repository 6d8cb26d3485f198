"""Train a tiny YOLO11n detector on generated disc images in a Roboflow-layout dataset (no downloads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_cellseg.core.datasets import boxes_from_labels, write_yolo_box_dataset
from napari_cellseg.core.normalize import normalize_to_uint8

from synthetic import disc_image

IMGSZ = 128


def disc_samples(n_images: int, imgsz: int = IMGSZ, seed: int = 300):
    """(name, RGB uint8 image, boxes, classes, labels) of generated disc images."""
    for i in range(n_images):
        image, labels = disc_image((imgsz, imgsz), n=6, radius=(7, 12), seed=seed + i)
        rgb = np.repeat(normalize_to_uint8(image)[..., None], 3, axis=-1)
        boxes = boxes_from_labels(labels)
        yield f"disc{i:03d}", rgb, boxes, np.zeros(len(boxes), np.int64), labels


def write_disc_dataset(root: Path, n_train: int = 20, n_val: int = 4, n_test: int = 2) -> Path:
    """A Roboflow-style export (train/valid/test, ../train/images paths, no path:)."""
    samples = list(disc_samples(n_train + n_val + n_test))
    split_of = {s[0]: "train" if i < n_train else "val" if i < n_train + n_val else "test"
                for i, s in enumerate(samples)}
    return write_yolo_box_dataset([s[:4] for s in samples], root, split_of=split_of, class_names=["nucleus"])


def train_tiny_detector(workdir: Path, epochs: int = 60, batch: int = 4,
                        model_yaml: str = "yolo11n.yaml") -> tuple[Path, Path]:
    """(checkpoint, data.yaml)."""
    from ultralytics import YOLO

    data = write_disc_dataset(workdir / "data")
    model = YOLO(model_yaml)
    model.train(
        data=str(data), imgsz=IMGSZ, epochs=epochs, batch=batch, device="cpu", workers=0, plots=False,
        project=str(workdir), name="run", exist_ok=True, pretrained=False, amp=False, verbose=False,
        mosaic=0.0, val=False, seed=0, deterministic=True, lr0=0.01, warmup_epochs=0,
    )
    return workdir / "run" / "weights" / "last.pt", data


def match_boxes(boxes_a, boxes_b, min_iou=0.9):
    """Pairs (i, j) of boxes matched one to one at IoU >= min_iou (greedy on IoU)."""
    from napari_cellseg.core.detection import box_iou

    iou = box_iou(boxes_a, boxes_b)
    pairs = []
    while iou.size and iou.max() >= min_iou:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        pairs.append((int(i), int(j)))
        iou[i, :], iou[:, j] = -1, -1
    return pairs


def max_overlap_of_smaller(boxes) -> float:
    """The largest intersection over the smaller box of any two boxes (0 for fewer than two)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    inter = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None) * \
        np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    ios = inter / np.maximum(np.minimum(area[:, None], area[None, :]), 1e-12)
    np.fill_diagonal(ios, 0)
    return float(ios.max(initial=0))


def segment_cli_detections(image_path: Path, model_path: Path, out: Path, expected) -> list[dict]:
    """Run 'napari-cellseg segment' on one image with a detector in a fresh process and check it wrote
    ``expected``'s detections (a DetectionResult) as boxes, no label image; the rows of its objects CSV."""
    import csv
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[1] / "src"
    env = {"PYTHONPATH": str(src), "YOLO_VERBOSE": "False", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "napari_cellseg.cli", "segment", str(image_path), "--model",
                           str(model_path), "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{expected.n_objects} detections" in done.stdout
    assert not (out / f"{image_path.stem}_labels.tif").exists()
    with open(out / f"{image_path.stem}_objects.csv") as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == expected.n_objects
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected.scores, atol=1e-4)  # 4 decimals
    return rows
