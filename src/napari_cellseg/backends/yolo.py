"""YOLO11 (ultralytics) instance segmentation backend.

Ultralytics checkpoints are pickled Python objects, so loading one runs code
from the file: only files the user chose (or the shipped model) are loaded.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..core.io import sha256_of
from ..core.tiling import TileDetections
from .base import InferenceSettings, ModelInfo, ModelLoadError, resolve_device

NAME = "yolo"
STRIDE = 32  # YOLO11 input sides must be multiples of the largest stride


def probe(path: Path) -> bool:
    """True for a torch zip checkpoint whose pickle refers to ultralytics classes."""
    if path is None or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            return bool(pickles) and b"ultralytics" in archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


def load(path: Path, device: str = "auto") -> "YoloBackend":
    return YoloBackend(path, device)


class YoloBackend:
    """A loaded ultralytics segmentation model; predicts at the tile's full resolution."""

    def __init__(self, path: str | Path, device: str = "auto"):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such model file")
        if not probe(path):
            from . import describe_file

            raise ModelLoadError(f"{path}: {describe_file(path)}; expected an ultralytics YOLO checkpoint")
        self.device = resolve_device(device)
        try:
            from ultralytics import YOLO

            self._model = YOLO(str(path), task=None)
        except Exception as exc:  # corrupted pickles raise anything from EOFError to KeyError
            raise ModelLoadError(
                f"{path}: cannot load the ultralytics checkpoint ({type(exc).__name__}: {exc}); "
                "the file may be truncated or from an incompatible ultralytics version"
            ) from exc
        task = getattr(self._model, "task", None)
        if task != "segment":
            raise ModelLoadError(
                f"{path}: found an ultralytics '{task}' checkpoint; napari-cellseg needs a segmentation "
                "checkpoint (a '-seg' model, task 'segment')"
            )
        ckpt = getattr(self._model, "ckpt", None) or {}
        train_args = ckpt.get("train_args") or {}
        train_imgsz = train_args.get("imgsz")
        if isinstance(train_imgsz, (list, tuple)):
            train_imgsz = max(train_imgsz)
        extra = ckpt.get("napari_cellseg") or {}
        names = {int(k): str(v) for k, v in (self._model.names or {}).items()}
        self.info = ModelInfo(
            backend=NAME,
            path=str(path.resolve()),
            sha256=sha256_of(path),
            task="segment",
            class_names=names,
            train_imgsz=int(train_imgsz) if train_imgsz else None,
            zoom=float(extra.get("zoom", 1.0)),
            mask_erosion=int(extra.get("mask_erosion", 0)),
            extra={"ultralytics_version": ckpt.get("version"),
                   **{k: v for k, v in extra.items() if k not in ("zoom", "mask_erosion")}},
        )

    def predict_tile(self, tile: np.ndarray, settings: InferenceSettings) -> TileDetections:
        import cv2

        h, w = tile.shape[:2]
        # Resize by exactly `zoom` and pad to the network stride ourselves: handed a
        # small tile, ultralytics' letterbox would otherwise up-scale it to imgsz and
        # change the object scale the model was trained at.
        zh, zw = max(1, round(h * settings.zoom)), max(1, round(w * settings.zoom))
        net = tile if (zh, zw) == (h, w) else cv2.resize(tile, (zw, zh), interpolation=cv2.INTER_LINEAR)
        ph, pw = -(-zh // STRIDE) * STRIDE, -(-zw // STRIDE) * STRIDE
        padded = np.zeros((ph, pw, 3), np.uint8)
        padded[:zh, :zw] = net[..., ::-1]  # ultralytics takes numpy input as BGR (OpenCV order)
        result = self._model.predict(
            padded, imgsz=[ph, pw], conf=settings.conf, iou=settings.iou, max_det=settings.max_det,
            device=self.device, retina_masks=True, verbose=False,
        )[0]
        if result.masks is None or len(result.boxes) == 0:
            return TileDetections.empty((h, w))
        masks = result.masks.data[:, :zh, :zw]
        if (zh, zw) != (h, w):
            import torch

            masks = torch.nn.functional.interpolate(masks[None].float(), size=(h, w), mode="bilinear")[0]
        return TileDetections(
            masks=masks.cpu().numpy() > 0.5,
            scores=result.boxes.conf.cpu().numpy().astype(np.float32),
            class_ids=result.boxes.cls.cpu().numpy().astype(np.int64),
            boxes=result.boxes.xyxy.cpu().numpy() / settings.zoom,
        )
