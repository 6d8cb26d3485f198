"""Train a tiny YOLO11-seg model on generated disc images (no downloads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_cellseg.core.datasets import write_yolo_dataset
from napari_cellseg.core.normalize import normalize_to_uint8

from synthetic import disc_image


def train_tiny_yolo(workdir: Path, epochs: int = 12, n_images: int = 24, imgsz: int = 128) -> Path:
    samples = []
    for i in range(n_images):
        image, labels = disc_image((imgsz, imgsz), n=6, radius=(7, 12), seed=100 + i)
        rgb = np.repeat(normalize_to_uint8(image)[..., None], 3, axis=-1)
        samples.append((f"disc{i:03d}", rgb, labels))
    data = write_yolo_dataset(samples, workdir / "data", val_names=[f"disc{i:03d}" for i in range(4)],
                              class_names=["nucleus"])
    from ultralytics import YOLO

    model = YOLO("yolo11n-seg.yaml")
    model.train(
        data=str(data), imgsz=imgsz, epochs=epochs, batch=8, device="cpu", workers=0, plots=False,
        project=str(workdir), name="run", exist_ok=True, pretrained=False, amp=False, verbose=False,
        mosaic=0.0, val=False, seed=0, deterministic=True, lr0=0.01, warmup_epochs=0,
    )
    return workdir / "run" / "weights" / "last.pt"


def with_calibration(checkpoint: Path, out: Path, **calibration) -> Path:
    """A copy of a YOLO checkpoint whose napari_cellseg entry carries these calibrated values."""
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    ckpt["napari_cellseg"] = {**(ckpt.get("napari_cellseg") or {}), **calibration}
    torch.save(ckpt, out)
    return out


FOREIGN_SIZES = ((192, 256), (320, 240))  # mixed image sizes, as a user's own data set has


def foreign_disc_image(shape, seed: int):
    """(raw 8-bit RGB image, labels): discs 16-28 px across, the images a foreign checkpoint is trained on."""
    image, labels = disc_image(shape, n=10, radius=(8, 14), seed=seed, dtype=np.uint8)
    return np.repeat(image[..., None], 3, axis=-1), labels


def train_foreign_yolo(workdir: Path, imgsz: int = 160, epochs: int = 15, n_images: int = 24, seed: int = 500) -> Path:
    """A YOLO11n-seg trained by ultralytics as a user would, each image letterboxed to imgsz (its geometry;
    no mosaic, to learn in few steps), on raw 8-bit images of mixed sizes; a checkpoint with no
    napari-cellseg entry (a foreign one).

    Built from ``yolo11n-seg.yaml`` and started from the shipped nuclei weights (as a user starts from
    ultralytics' pretrained ones; nothing is downloaded): from random weights a few CPU epochs leave every
    score below 0.02, and at ultralytics' default threshold (0.25) nothing would be found to compare."""
    from napari_cellseg.backends import MODELS_DIR, NAMED_MODELS

    samples = []
    for i in range(n_images):
        rgb, labels = foreign_disc_image(FOREIGN_SIZES[i % 2], seed=seed + i)
        samples.append((f"mixed{i:03d}", rgb, labels))
    data = write_yolo_dataset(samples, workdir / "data", val_names=[f"mixed{i:03d}" for i in range(2)],
                              class_names=["nucleus"])
    from ultralytics import YOLO

    model = YOLO("yolo11n-seg.yaml").load(str(MODELS_DIR / NAMED_MODELS["nuclei"]))
    model.train(
        data=str(data), imgsz=imgsz, epochs=epochs, batch=4, device="cpu", workers=0, plots=False,
        project=str(workdir), name="run", exist_ok=True, pretrained=True, amp=False, verbose=False,
        mosaic=0.0, val=False, seed=0, deterministic=True, warmup_epochs=0,
    )
    return workdir / "run" / "weights" / "last.pt"
