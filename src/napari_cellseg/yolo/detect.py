"""YOLO (ultralytics) box detection backend: YOLO11/YOLOv8 detect checkpoints and YOLOv5 'u' models.

Loaded through ultralytics like the segmentation backend (``backend.py``), and fed the same way: each tile
is resized by exactly the plan's zoom and padded to the network stride, so objects keep the scale the model
was trained at whatever the image size (full-resolution tiled inference, the segmentation backends' rule).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.backend import DEFAULT_CONF, InferenceSettings, ModelInfo, ModelLoadError, checkpoint_pickle, resolve_device
from ..core.detection import TileBoxes, padded_to, stride_multiple, tile_boxes_from_network, zoomed
from ..core.io import sha256_of

NAME = "yolo-detect"
STRIDE = 32
# model classes of the other ultralytics tasks: a checkpoint's pickle names the class of its saved model
_OTHER_TASKS = (b"SegmentationModel", b"PoseModel", b"OBBModel", b"ClassificationModel", b"WorldModel",
                b"YOLOEModel", b"YOLOESegModel", b"RTDETRDetectionModel")


def probe(path: Path) -> bool:
    """True for a torch zip checkpoint of an ultralytics DetectionModel (task 'detect'), read without unpickling."""
    data = checkpoint_pickle(path)
    return (data is not None and b"ultralytics.nn" in data and b"DetectionModel" in data
            and not any(name in data for name in _OTHER_TASKS))


def load(path: Path, device: str = "auto") -> "YoloDetectBackend":
    return YoloDetectBackend(path, device)


class YoloDetectBackend:
    """A loaded ultralytics detection model; predicts boxes at the tile's full resolution."""

    def __init__(self, path: str | Path, device: str = "auto"):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such model file")
        self.device = resolve_device(device)
        try:
            from ultralytics import YOLO

            self._model = YOLO(str(path), task=None)
        except Exception as exc:  # corrupted pickles raise anything
            raise ModelLoadError(
                f"{path}: cannot load the ultralytics checkpoint ({type(exc).__name__}: {exc}); "
                "the file may be truncated or from an incompatible ultralytics version") from exc
        task = getattr(self._model, "task", None)
        if task != "detect":
            raise ModelLoadError(f"{path}: found an ultralytics '{task}' checkpoint; the detection backend needs "
                                 "a box detection checkpoint (task 'detect')")
        ckpt = getattr(self._model, "ckpt", None) or {}
        train_args = ckpt.get("train_args") or {}
        train_imgsz = train_args.get("imgsz")
        if isinstance(train_imgsz, (list, tuple)):
            train_imgsz = max(train_imgsz)
        extra = ckpt.get("napari_cellseg") or {}
        self.info = ModelInfo(
            backend=NAME, path=str(path.resolve()), sha256=sha256_of(path), task="detect",
            class_names={int(k): str(v) for k, v in (self._model.names or {}).items()},
            train_imgsz=int(train_imgsz) if train_imgsz else None,
            zoom=float(extra.get("zoom", 1.0)),
            conf=float(extra.get("conf", DEFAULT_CONF)),
            object_diameter=None if extra.get("object_diameter") is None else float(extra["object_diameter"]),
            extra={"ultralytics_version": ckpt.get("version"),
                   **{k: v for k, v in extra.items() if k not in ("zoom", "conf", "object_diameter")}},
        )

    def predict_boxes(self, tile: np.ndarray, settings: InferenceSettings) -> TileBoxes:
        """``tile``: (h, w, 3) uint8 RGB. Boxes in tile pixel coordinates."""
        net = zoomed(tile, settings.zoom)
        zh, zw = net.shape[:2]
        ph, pw = stride_multiple(zh, STRIDE), stride_multiple(zw, STRIDE)
        padded = padded_to(net[..., ::-1], ph, pw)  # numpy input is BGR for ultralytics
        result = self._model.predict(padded, imgsz=[ph, pw], conf=settings.conf, iou=settings.iou,
                                     max_det=settings.max_det, device=self.device, verbose=False)[0]
        found = result.boxes
        return tile_boxes_from_network(found.xyxy.cpu().numpy(), found.conf.cpu().numpy(), found.cls.cpu().numpy(),
                                       settings.zoom, tile.shape)
