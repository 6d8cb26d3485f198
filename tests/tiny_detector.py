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
