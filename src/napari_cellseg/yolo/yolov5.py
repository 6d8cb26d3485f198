"""Checkpoints of the original YOLOv5 repository (``ultralytics/yolov5``: pickles of ``models.yolo.DetectionModel``
or ``models.yolo.Model``), through the ``yolov5`` pip distribution: the optional extra
``pip install "napari-cellseg[yolov5]"``.

The ``ultralytics`` package cannot open these files (their pickles name the repository's own modules).
``yolov5.load`` does; the network it returns is then fed exactly as the other detection backends feed theirs
(``detect.py``): each tile resized by the plan's zoom, RGB, padded bottom and right to the stride with grey 114,
scaled to [0, 1]. Its raw output (1, N, 5 + nc: cx, cy, w, h, objectness, class scores) is suppressed as YOLOv5's
own ``non_max_suppression`` does (score = objectness x class score above ``conf``, class-aware NMS, ``max_det``),
by the numpy code the ONNX backends share (``onnx_detect.decode``).

YOLOv5 'u' models (``yolov5nu.pt``) are ultralytics checkpoints and load with ``detect.py``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

import numpy as np

from ..core.backend import (DEFAULT_CONF, InferenceSettings, ModelInfo, ModelLoadError, checkpoint_pickle,
                            names_yolov5_repository, resolve_device)
from ..core.detection import TileBoxes, padded_to, stride_multiple, tile_boxes_from_network, zoomed
from ..core.io import sha256_of

NAME = "yolov5"
INSTALL = 'pip install "napari-cellseg[yolov5]"'
_NOT_DETECTION = (b"SegmentationModel", b"ClassificationModel")


def probe(path: Path) -> bool:
    """True for a torch zip checkpoint whose pickle names the YOLOv5 repository's ``models.yolo`` classes and no
    ultralytics model class (read without unpickling)."""
    data = checkpoint_pickle(path)
    return data is not None and names_yolov5_repository(data)


def load(path: Path, device: str = "auto") -> "Yolov5Backend":
    return Yolov5Backend(path, device)


def yolov5_available() -> bool:
    return importlib.util.find_spec("yolov5") is not None


@contextlib.contextmanager
def _loading():
    """What ``yolov5.load`` needs and what it must not leave behind: torch >= 2.6 loads only weights by default,
    and YOLOv5 checkpoints are whole pickled models (as ultralytics' are: load only files you trust);
    ``yolov5``'s device selection rewrites CUDA_VISIBLE_DEVICES."""
    saved = {k: os.environ.get(k) for k in ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "CUDA_VISIBLE_DEVICES")}
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _yolov5_device(device: str) -> str:
    """``yolov5``'s spelling of a resolved torch device: "cpu", "mps", or the CUDA index."""
    if device.startswith("cuda"):
        return device.partition(":")[2] or "0"
    return device


class Yolov5Backend:
    """An original YOLOv5 detection checkpoint, loaded with the ``yolov5`` package."""

    def __init__(self, path: str | Path, device: str = "auto"):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such model file")
        data = checkpoint_pickle(path) or b""
        kind = next((k.decode() for k in _NOT_DETECTION if k in data), None)
        if kind:
            raise ModelLoadError(f"{path}: a YOLOv5 {kind} checkpoint; the YOLOv5 backend takes detection "
                                 "checkpoints (models.yolo.DetectionModel)")
        if not yolov5_available():
            raise ModelLoadError(f"{path}: a checkpoint of the original YOLOv5 repository (models.yolo); loading it "
                                 f"needs the yolov5 package: {INSTALL}")
        self.device = resolve_device(device)
        try:
            import torch
            import yolov5

            with _loading():
                wrapped = yolov5.load(str(path), device=_yolov5_device(self.device))
        except Exception as exc:  # noqa: BLE001 - foreign pickles raise anything
            raise ModelLoadError(f"{path}: the yolov5 package cannot load it ({type(exc).__name__}: "
                                 f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}); checkpoints "
                                 "of other repositories that reuse YOLOv5's module names (YOLOv7...) are not "
                                 "supported") from exc
        # AutoShape (yolov5.load's default) wraps the fused network; we feed the network ourselves
        self._net = getattr(wrapped, "model", wrapped)
        self._net.eval()
        self._torch = torch
        names = getattr(wrapped, "names", None) or getattr(self._net, "names", None) or {}
        names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names)
        stride = getattr(self._net, "stride", 32)
        self.stride = int(stride.max()) if hasattr(stride, "max") else int(stride)
        self.n_classes = len(names) or None
        self.info = ModelInfo(
            backend=NAME, path=str(path.resolve()), sha256=sha256_of(path), task="detect",
            class_names={int(k): str(v) for k, v in names.items()}, conf=DEFAULT_CONF,
            extra={"yolov5_version": getattr(yolov5, "__version__", None), "stride": self.stride},
        )

    def predict_boxes(self, tile: np.ndarray, settings: InferenceSettings) -> TileBoxes:
        """``tile``: (h, w, 3) uint8 RGB. Boxes in tile pixel coordinates."""
        from .onnx_detect import decode

        net = zoomed(tile, settings.zoom)
        zh, zw = net.shape[:2]
        padded = padded_to(net, stride_multiple(zh, self.stride), stride_multiple(zw, self.stride))
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1))[None]).to(self.device).float() / 255
        with torch.no_grad():
            out = self._net(x)
        pred = out[0] if isinstance(out, (list, tuple)) else out
        pred = pred[0].float().cpu().numpy()
        n_classes = pred.shape[1] - 5
        boxes, scores, classes = decode(pred, "yolov6", n_classes, settings.conf, settings.iou, settings.max_det)
        return tile_boxes_from_network(boxes, scores, classes, settings.zoom, tile.shape)
