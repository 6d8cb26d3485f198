"""YOLO11 (ultralytics) instance segmentation backend.

Ultralytics checkpoints are pickled Python objects, so loading one runs code
from the file: only files the user chose (or the shipped model) are loaded.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..core.io import sha256_of
from ..core.tiling import TileDetections
from ..core.backend import DEFAULT_CONF, InferenceSettings, ModelInfo, ModelLoadError, checkpoint_pickle

NAME = "yolo"
STRIDE = 32  # YOLO11 input sides must be multiples of the largest stride


def probe(path: Path) -> bool:
    """True for a torch zip checkpoint whose pickle refers to ultralytics classes."""
    data = checkpoint_pickle(path)
    return data is not None and b"ultralytics" in data


def load(path: Path, device: str = "auto") -> "YoloBackend":
    return YoloBackend(path, device)


class YoloBackend:
    """A loaded ultralytics segmentation model; predicts at the tile's full resolution."""

    def __init__(self, path: str | Path, device: str = "auto", engine: str | None = None):
        from ..core import onnx_cache

        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such model file")
        if not probe(path):
            from ..core.backend import describe_file

            raise ModelLoadError(f"{path}: {describe_file(path)}; expected an ultralytics YOLO checkpoint")
        sha256 = sha256_of(path)
        self.engine, self.engine_note, self._onnx, self._model = "torch", None, None, None
        resolved = onnx_cache.resolve_device_lazily(device)  # an unavailable device is an error here
        try:
            onnx_wanted = onnx_cache.use_onnx(engine, resolved)
        except (ImportError, ValueError) as exc:
            raise ModelLoadError(str(exc)) from exc
        if onnx_wanted:  # the cached export needs neither torch nor ultralytics
            from . import onnx_engine

            cached = onnx_engine.load_cached(path, sha256)
            # an export made when ModelInfo had other fields is made again (it re-reads the checkpoint)
            if cached is not None and set(cached[1].get("info", {})) == set(_info_fields()):
                self._use_onnx(*cached, path, sha256)
                return
        self.device = resolved
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
                f"{path}: found an ultralytics '{task}' checkpoint; the YOLO segmentation backend needs a "
                "segmentation checkpoint (a '-seg' model, task 'segment')"
                + ("; box detection checkpoints load with backend 'yolo-detect' (the default for such a file)"
                   if task == "detect" else "")
            )
        self.info = _info_from_checkpoint(self._model, path, sha256)
        if onnx_wanted:
            from . import onnx_engine

            try:
                session, meta = onnx_engine.export(self._model, path, sha256, _info_record(self.info))
            except Exception as exc:  # noqa: BLE001 - torch is the fallback
                if onnx_cache.default_engine(engine) == "onnx":
                    raise ModelLoadError(f"{path}: ONNX export failed ({type(exc).__name__}: {exc})") from exc
                self.engine_note = onnx_cache.fallback_warning(str(path), exc)
            else:
                self._use_onnx(session, meta, path, sha256)

    def _use_onnx(self, session, meta: dict, path: Path, sha256: str) -> None:
        from .onnx_engine import OnnxYolo

        record = _number_keys(meta["info"])
        self.info = ModelInfo(path=str(path.resolve()), sha256=sha256,
                              **{**record, "class_names": {int(k): v for k, v in record["class_names"].items()}})
        self._onnx = OnnxYolo(session, len(self.info.class_names))
        self._model = None  # the torch model is not kept: the ONNX session replaces it
        self.engine, self.device = "onnx", "cpu"

    def predict_tile(self, tile: np.ndarray, settings: InferenceSettings) -> TileDetections:
        return self._predict(tile, settings, soft=False)

    def predict_tile_soft(self, tile: np.ndarray, settings: InferenceSettings) -> TileDetections:
        """Instances with mask probabilities (float32) instead of binary masks, for fusion: averaged
        probabilities give the flips of test-time augmentation an even say along the boundary,
        where a vote among four binary masks would tie."""
        return self._predict(tile, settings, soft=True)

    def _predict(self, tile: np.ndarray, settings: InferenceSettings, soft: bool) -> TileDetections:
        h, w = tile.shape[:2]
        padded, _ = _network_input(tile, settings.zoom)
        if self._onnx is not None:
            return self._onnx_detections(padded[None], settings, soft, [(h, w)])[0]
        ph, pw = padded.shape[:2]
        result = self._model.predict(
            np.ascontiguousarray(padded[..., ::-1]), imgsz=[ph, pw], conf=settings.conf, iou=settings.iou, max_det=settings.max_det,
            device=self.device, retina_masks=True, verbose=False, predictor=_prototype_predictor(),
        )[0]  # ultralytics takes numpy input as BGR (OpenCV order)
        if len(result.boxes) == 0:
            return TileDetections.empty((h, w))
        boxes = result.boxes.xyxy / settings.zoom  # network pixels -> tile pixels
        masks, keep = _assemble_masks(result.protos, result.mask_coefficients, boxes, (ph, pw), settings.zoom,
                                      (h, w), soft=soft, threshold=settings.mask_threshold)  # non-empty ones kept
        return TileDetections(
            masks=masks[keep].numpy(),
            scores=result.boxes.conf[keep].cpu().numpy().astype(np.float32),
            class_ids=result.boxes.cls[keep].cpu().numpy().astype(np.int64),
            boxes=boxes[keep].cpu().numpy(),
        )

    def _onnx_detections(self, batch: np.ndarray, settings: InferenceSettings, soft: bool,
                         tile_shapes) -> list[TileDetections]:
        from .onnx_engine import assemble_masks

        preds, protos = self._onnx.run(batch)
        found = self._onnx.detections(preds, settings.conf, settings.iou, settings.max_det)
        out = []
        for (boxes, scores, classes, coefficients), proto, shape in zip(found, protos, tile_shapes):
            if len(boxes) == 0:
                out.append(TileDetections.empty(tuple(shape)))
                continue
            boxes = boxes / settings.zoom  # network pixels -> tile pixels
            masks, keep = assemble_masks(proto, coefficients, boxes, batch.shape[1:3], settings.zoom, tuple(shape),
                                         soft=soft, threshold=settings.mask_threshold)
            out.append(TileDetections(masks=masks[keep], scores=scores[keep].astype(np.float32),
                                      class_ids=classes[keep].astype(np.int64), boxes=boxes[keep].astype(np.float64)))
        return out


def _network_input(tile: np.ndarray, zoom: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The tile resized by exactly ``zoom`` (RGB uint8), zero-padded at the bottom and right to the network
    stride, and its size before padding. Resizing and padding here, not in ultralytics' letterbox: handed a
    small tile, the letterbox would up-scale it to imgsz and change the object scale the model was trained at."""
    import cv2

    h, w = tile.shape[:2]
    zh, zw = max(1, round(h * zoom)), max(1, round(w * zoom))
    net = tile if (zh, zw) == (h, w) else cv2.resize(tile, (zw, zh), interpolation=cv2.INTER_LINEAR)
    ph, pw = -(-zh // STRIDE) * STRIDE, -(-zw // STRIDE) * STRIDE
    padded = np.zeros((ph, pw, 3), np.uint8)
    padded[:zh, :zw] = net
    return padded, (zh, zw)


def _info_from_checkpoint(model, path: Path, sha256: str) -> ModelInfo:
    ckpt = getattr(model, "ckpt", None) or {}
    train_args = ckpt.get("train_args") or {}
    train_imgsz = train_args.get("imgsz")
    if isinstance(train_imgsz, (list, tuple)):
        train_imgsz = max(train_imgsz)
    extra = ckpt.get("napari_cellseg") or {}
    names = {int(k): str(v) for k, v in (model.names or {}).items()}
    return ModelInfo(
        backend=NAME,
        path=str(path.resolve()),
        sha256=sha256,
        task="segment",
        class_names=names,
        train_imgsz=int(train_imgsz) if train_imgsz else None,
        zoom=float(extra.get("zoom", 1.0)),
        letterbox="zoom" not in extra,  # a foreign checkpoint: trained on letterboxed whole images,
        wants_raw_uint8="zoom" not in extra,  # from raw 8-bit files
        mask_erosion=int(extra.get("mask_erosion", 0)),
        conf=float(extra.get("conf", DEFAULT_CONF)),
        conf_tta=None if extra.get("conf_tta") is None else float(extra["conf_tta"]),
        mask_threshold=float(extra.get("mask_threshold", 0.5)),
        object_diameter=None if extra.get("object_diameter") is None else float(extra["object_diameter"]),
        extra={"ultralytics_version": ckpt.get("version"),
               **{k: v for k, v in extra.items()
                  if k not in ("zoom", "mask_erosion", "conf", "conf_tta", "mask_threshold", "object_diameter")}},
    )


def _info_fields() -> list[str]:
    """What a cached ONNX export stores of the model's information: every ModelInfo field but where the
    weights are and what the registry sets after loading."""
    import dataclasses

    return [f.name for f in dataclasses.fields(ModelInfo)
            if f.name not in ("path", "sha256", "refine_with", "bright_field_with")]


def _info_record(info: ModelInfo) -> dict:
    import json

    record = {name: getattr(info, name) for name in _info_fields()}
    record["class_names"] = {str(k): v for k, v in info.class_names.items()}
    return _number_keys(json.loads(json.dumps(record, default=str)))  # what JSON cannot hold is kept as text


def _number_keys(value):
    """JSON writes a mapping's number keys as text (a calibration's score thresholds): read them back as
    numbers, so a cached export's information equals the checkpoint's."""
    if isinstance(value, dict):
        def key(k):
            try:
                return float(k) if isinstance(k, str) and "." in k else k
            except ValueError:
                return k
        return {key(k): _number_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_number_keys(v) for v in value]
    return value


@functools.cache
def _prototype_predictor():
    """ultralytics' segmentation predictor, stopped before it assembles masks.

    Its retina masks are built at the network input size; the backend builds them
    straight at the tile's own size instead (one interpolation, fewer pixels),
    from the same prototypes and coefficients.
    """
    from ultralytics.engine.results import Results
    from ultralytics.models.yolo.segment import SegmentationPredictor

    class PrototypePredictor(SegmentationPredictor):
        def construct_result(self, pred, img, orig_img, img_path, proto):
            result = Results(orig_img, path=img_path, names=self.model.names, boxes=pred[:, :6])
            result.protos, result.mask_coefficients = proto, pred[:, 6:]
            return result

    return PrototypePredictor


def _assemble_masks(protos, coefficients, boxes, network_shape, zoom, tile_shape, budget=16_000_000, soft=False,
                    threshold=0.5):
    """(N, h, w) bool CPU masks at tile resolution: prototype logits upsampled once, thresholded at the logit of
    probability ``threshold`` (0 for ultralytics' 0.5), box-cropped; and (N,) whether each is non-empty.
    ``soft``: float32 probabilities (the logits' sigmoid) instead, 0 outside the box."""
    import math

    import torch
    import torch.nn.functional as F

    c, mh, mw = protos.shape
    h, w = tile_shape
    # the prototypes span the padded network input: scale them to that input's size in tile pixels
    out_h, out_w = max(h, round(network_shape[0] / zoom)), max(w, round(network_shape[1] / zoom))
    logits = (coefficients.float() @ protos.float().reshape(c, -1)).reshape(1, -1, mh, mw)
    boxes = boxes.cpu()
    cols = torch.arange(w, dtype=boxes.dtype)[None, None, :]
    rows = torch.arange(h, dtype=boxes.dtype)[None, :, None]
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    in_cols, in_rows = (cols >= x0) & (cols < x1), (rows >= y0) & (rows < y1)  # (N, 1, w), (N, h, 1)
    masks = torch.empty((logits.shape[1], h, w), dtype=torch.float32 if soft else torch.bool)
    nonempty = torch.empty(logits.shape[1], dtype=torch.bool)
    step = max(1, budget // (out_h * out_w))  # bound the float intermediate on large tiles
    threshold_logit = math.log(threshold / (1 - threshold))
    for start in range(0, logits.shape[1], step):
        chunk = slice(start, start + step)
        up = F.interpolate(logits[:, chunk], size=(out_h, out_w), mode="bilinear", align_corners=False)
        up = up[0, :, :h, :w].cpu()
        binary = (up > threshold_logit) & in_cols[chunk] & in_rows[chunk]
        nonempty[chunk] = binary.flatten(1).any(1)
        if soft:
            masks[chunk] = up.sigmoid_().mul_(in_cols[chunk]).mul_(in_rows[chunk])
        else:
            masks[chunk] = binary
    return masks, nonempty
