"""Box detection with ONNX exports on ONNX Runtime: ultralytics detection exports, YOLOv6 exports (and the
YOLOv5 repository's ``export.py``, which writes the same layout).

The layout of the one output is read from its shape and from the metadata ultralytics writes into the file
(``task``, ``names``, ``stride``, ``imgsz``, ``end2end``; docs/yolo.md, "ONNX detectors"):

    "ultralytics"  (1, 4 + nc, N): cx, cy, w, h, then the class scores (``yolo export format=onnx``);
    "yolov6"       (1, N, 5 + nc): cx, cy, w, h, objectness, class scores; score = objectness * class score
                   (YOLOv6's ``deploy/ONNX/export_onnx.py`` writes ones as objectness; YOLOv5's a real one);
    "end2end"      (1, K, 6): x0, y0, x1, y1, score, class, already suppressed (ultralytics end-to-end
                   heads and ``nms=True`` exports).

Boxes are in network pixels. Each tile is fed as the torch detection backend (``detect.py``) feeds it: resized
by exactly the plan's zoom, RGB, scaled to [0, 1], padded bottom and right with grey 114 to the model's fixed
input (a static export) or to the stride (a dynamic one), so coordinates stay put. A tile larger than a fixed
input is cut into windows of that input, whose boxes are merged as the tiles of an image are
(``core.detection.merge_tile_boxes``). Suppression is ultralytics' (``onnx_engine.select``).

Class names: the metadata's ``names`` (ultralytics, YOLOv5); for files without them (YOLOv6) the ``names:`` of
``<stem>.yaml`` or ``data.yaml`` beside the file, else "class 0", "class 1"... The network input size: the
file's input shape when it is fixed, else the metadata's ``imgsz``, else 640 (``pipeline.scale.DEFAULT_IMGSZ``);
``imgsz=`` (``--imgsz``) sets it for a run.

Scale and threshold: zoom 1 and ``DEFAULT_CONF``, except for an export written by ``napari-cellseg export-onnx``
(``export_onnx.py``), whose ``napari_cellseg_calibration`` entry carries the ``.pt``'s zoom, calibrated conf and
reference object size; a malformed entry is ignored with a note.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from ..core.backend import DEFAULT_CONF, InferenceSettings, ModelInfo, ModelLoadError
from ..core.detection import TileBoxes, merge_tiles, padded_to, stride_multiple, tile_boxes_from_network, zoomed
from ..core.io import sha256_of
from .export_onnx import CALIBRATION_KEY, read_calibration

NAME = "onnx-detect"
DEFAULT_STRIDE = 32
LAYOUTS = ("ultralytics", "yolov6", "end2end")


def probe(path: Path) -> bool:
    """True for an ``.onnx`` file that is not one of napari-cellseg's own cached exports (core.onnx_cache)."""
    from ..core.onnx_cache import is_cache_file

    path = Path(path)
    return path.suffix.lower() == ".onnx" and path.is_file() and not is_cache_file(path)


def load(path: Path, device: str = "auto") -> "OnnxDetectBackend":
    return OnnxDetectBackend(path, device)


def _literal(text):
    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return None


def _names_from(value) -> dict[int, str]:
    if isinstance(value, dict):
        return {int(k): str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return {i: str(v) for i, v in enumerate(value)}
    return {}


def names_beside(path: Path) -> tuple[dict[int, str], Path | None]:
    """``names:`` of ``<stem>.yaml`` or ``data.yaml`` beside ``path`` (a YOLO dataset file), and that file."""
    import yaml

    for candidate in (path.with_suffix(".yaml"), path.with_suffix(".yml"), path.parent / "data.yaml"):
        if candidate.is_file():
            try:
                names = _names_from((yaml.safe_load(candidate.read_text()) or {}).get("names"))
            except (yaml.YAMLError, AttributeError, ValueError, OSError):
                continue
            if names:
                return names, candidate
    return {}, None


def _dim(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def output_layout(shape, meta: dict, names: dict[int, str]) -> tuple[str, int]:
    """(layout, number of classes) of an output of ``shape`` (ints, or names of dynamic axes), from the
    metadata where it says; a ValueError describing the shape where no layout fits."""
    if len(shape) != 3:
        raise ValueError(f"its output has shape {list(shape)}; a YOLO detection export has one output of three axes")
    a, b = _dim(shape[1]), _dim(shape[2])
    args = _literal(meta.get("args")) or {}
    if str(meta.get("end2end", "")).lower() == "true" or (isinstance(args, dict) and args.get("nms")):
        if b == 6:
            return "end2end", max(1, len(names))
        raise ValueError(f"its metadata says end-to-end but the output has shape {list(shape)}, not (1, K, 6)")
    nc = len(names)
    if nc:
        # ultralytics' dynamic exports name axis 1 (its length 4 + nc) like a dynamic axis
        if a == 4 + nc or (a is None and b is None and "task" in meta):
            return "ultralytics", nc
        if b == 5 + nc:
            return "yolov6", nc
        raise ValueError(f"its output has shape {list(shape)}, which is neither (1, 4 + nc, N) nor (1, N, 5 + nc) "
                         f"for the {nc} classes its metadata names")
    if a is not None and b is not None:
        if a < b and a > 4:
            return "ultralytics", a - 4
        if b < a and b > 5:
            return "yolov6", b - 5
    elif b is not None and b > 5:
        return "yolov6", b - 5
    elif a is not None and a > 4:
        return "ultralytics", a - 4
    raise ValueError(f"its output has shape {list(shape)}, which is neither (1, 4 + nc, N) nor (1, N, 5 + nc)")


def decode(pred: np.ndarray, layout: str, n_classes: int, conf: float, iou: float, max_det: int):
    """(boxes xyxy, scores, classes) of one image's raw output in ``layout`` (``LAYOUTS``), best score first:
    ultralytics' suppression (``onnx_engine.select``) on score = objectness x class score for "yolov6"."""
    from .onnx_engine import select

    pred = np.asarray(pred, np.float32)
    if layout == "end2end":
        keep = np.flatnonzero(pred[:, 4] > conf)
        keep = keep[np.argsort(-pred[keep, 4], kind="stable")][:max_det]
        return pred[keep, :4], pred[keep, 4], pred[keep, 5].astype(np.int64)
    if layout == "yolov6":  # to ultralytics' layout: rows cx, cy, w, h, objectness x class scores
        if pred.shape[1] != 5 + n_classes:
            raise RuntimeError(f"the model gave an output of {pred.shape[1]} columns, expected {5 + n_classes}")
        pred = np.concatenate([pred[:, :4].T, (pred[:, 4:5] * pred[:, 5:]).T], axis=0)
    elif pred.shape[0] != 4 + n_classes:
        raise RuntimeError(f"the model gave an output of {pred.shape[0]} rows, expected {4 + n_classes}")
    boxes, scores, classes, _ = select(pred, n_classes, conf, iou, max_det)
    return boxes, scores, classes


def _session(path: Path, device: str):
    """(session, device) on ONNX Runtime: CUDA where asked for (or "auto") and onnxruntime-gpu offers it."""
    import onnxruntime as ort

    from ..core.onnx_cache import make_session

    device = (device or "auto").lower()
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device.startswith("cuda") and not cuda:
        raise ModelLoadError(f"device '{device}' was asked for, but ONNX Runtime has no CUDA provider here "
                             "(it needs the onnxruntime-gpu package); use 'cpu' or 'auto'")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ModelLoadError(f"device '{device}': ONNX models run on the CPU, or on CUDA with onnxruntime-gpu")
    if cuda and device != "cpu":
        return ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]), "cuda"
    return make_session(path), "cpu"


class OnnxDetectBackend:
    """A YOLO detection export on ONNX Runtime; predicts boxes at the tile's full resolution."""

    def __init__(self, path: str | Path, device: str = "auto"):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such model file")
        try:
            session, self.device = _session(path, device)
        except ModelLoadError:
            raise
        except Exception as exc:  # a damaged or foreign file: ONNX Runtime's message is long and multi-line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelLoadError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {first[:200]}); the "
                                 "file may be truncated") from exc
        self._session = session
        meta = dict(session.get_modelmeta().custom_metadata_map)
        if "napari_cellseg" in meta:
            raise ModelLoadError(f"{path}: a network napari-cellseg exported and caches for its own use; load the "
                                 "weights it was made from instead")
        task = meta.get("task")
        if task and task != "detect":  # segment, pose, obb, classify
            raise ModelLoadError(f"{path}: an ultralytics '{task}' export; the ONNX detection backend takes box "
                                 "detection exports (task 'detect')" +
                                 ("; load the segmentation checkpoint (.pt) itself" if task == "segment" else ""))
        outputs = session.get_outputs()
        names_out = [o.name for o in outputs]
        if "num_dets" in names_out or "det_boxes" in names_out:
            raise ModelLoadError(f"{path}: an end-to-end export with built-in NMS (outputs {', '.join(names_out)}); "
                                 "export without --end2end (docs/yolo.md, 'ONNX detectors')")
        if len(outputs) != 1:
            shapes = ", ".join(str(list(o.shape)) for o in outputs)
            raise ModelLoadError(f"{path}: {len(outputs)} outputs ({shapes}); a YOLO detection export has one "
                                 "(a segmentation export has two: load its .pt checkpoint)")
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelLoadError(f"{path}: inputs {[list(i.shape) for i in inputs]}; a YOLO export takes one "
                                 "(1, 3, H, W) image")
        self._input = inputs[0].name
        _, channels, height, width = inputs[0].shape
        if _dim(channels) not in (None, 3):
            raise ModelLoadError(f"{path}: its input has {channels} channels; the backend feeds RGB (3)")
        names = _names_from(_literal(meta.get("names")))
        try:
            self.layout, self.n_classes = output_layout(outputs[0].shape, meta, names)
        except ValueError as exc:
            raise ModelLoadError(f"{path}: {exc}; not a YOLO detection export this backend can decode "
                                 "(docs/yolo.md, 'ONNX detectors')") from exc
        names_file = None
        if not names:  # YOLOv6 writes no metadata: the dataset file beside the export, if any
            names, names_file = names_beside(path)
        notes = []
        if names_file is not None and len(names) != self.n_classes:
            notes.append(f"{names_file.name} names {len(names)} classes but the model has {self.n_classes}; "
                         "classes are numbered")
            names = {}
        if not names or len(names) != self.n_classes:
            names = {i: f"class {i}" for i in range(self.n_classes)}
        self.fixed = (_dim(height), _dim(width)) if _dim(height) and _dim(width) else None
        self.stride = int(_literal(meta.get("stride")) or DEFAULT_STRIDE)
        imgsz = _literal(meta.get("imgsz"))
        if isinstance(imgsz, (list, tuple)):
            imgsz = max(imgsz)
        train_imgsz = min(self.fixed) if self.fixed else (int(imgsz) if imgsz else None)
        producer = "ultralytics" if "task" in meta else "yolov6" if self.layout == "yolov6" else "unknown"
        # the calibration of a detector trained by napari-cellseg, where ``export-onnx`` wrote it
        calibration, problem = read_calibration(meta.get(CALIBRATION_KEY))
        if problem:
            notes.append(f"its {CALIBRATION_KEY} entry is malformed ({problem}); zoom 1 and conf {DEFAULT_CONF} "
                         "are used (give --zoom and --conf)")
        calibrated = calibration or {}
        self.info = ModelInfo(
            backend=NAME, path=str(path.resolve()), sha256=sha256_of(path), task="detect", class_names=names,
            train_imgsz=train_imgsz, zoom=calibrated.get("zoom", 1.0), conf=calibrated.get("conf", DEFAULT_CONF),
            object_diameter=calibrated.get("object_diameter"), notes=notes,
            extra={"layout": self.layout, "input_shape": list(inputs[0].shape), "stride": self.stride,
                   "producer": producer, "ultralytics_version": meta.get("version"),
                   "class_names_from": str(names_file) if names_file else ("metadata" if meta.get("names") else None),
                   "calibration_from": CALIBRATION_KEY if calibration else None,
                   **({"calibration_source_sha256": calibration["source_sha256"],
                       "calibration_plugin_version": calibration["plugin_version"]} if calibration else {})},
        )

    def predict_boxes(self, tile: np.ndarray, settings: InferenceSettings) -> TileBoxes:
        """``tile``: (h, w, 3) uint8 RGB. Boxes in tile pixel coordinates."""
        net = np.ascontiguousarray(zoomed(tile, settings.zoom))
        boxes, scores, classes = self._network_boxes(net, settings)
        # clipped to the network input the torch backend feeds (the zoomed tile padded to the stride), as
        # ultralytics' predict clips them: where rounding makes the zoomed tile a little shorter than tile x zoom,
        # a box at its edge ends where the .pt's does
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        zh, zw = net.shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, stride_multiple(zw, self.stride))
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, stride_multiple(zh, self.stride))
        return tile_boxes_from_network(boxes, scores, classes, settings.zoom, tile.shape)

    def _network_boxes(self, net: np.ndarray, settings: InferenceSettings):
        """Boxes (network pixels), scores and classes of a network-scale RGB image."""
        zh, zw = net.shape[:2]
        if self.fixed is not None:
            ph, pw = self.fixed
            if zh > ph or zw > pw:
                return self._windows(net, settings)
        else:
            ph, pw = stride_multiple(zh, self.stride), stride_multiple(zw, self.stride)
        padded = padded_to(net, ph, pw)
        x = padded.transpose(2, 0, 1)[None].astype(np.float32)
        x *= 1 / 255.0
        pred = self._session.run(None, {self._input: x})[0][0]
        return self.decode(pred, settings.conf, settings.iou, settings.max_det)

    def decode(self, pred: np.ndarray, conf: float, iou: float, max_det: int):
        """(boxes xyxy, scores, classes) of one image's raw output in this model's layout."""
        return decode(pred, self.layout, self.n_classes, conf, iou, max_det)

    def _windows(self, net: np.ndarray, settings: InferenceSettings):
        """A network image larger than the fixed input: windows of the input's side, merged as tiles are."""
        from ..core.tiling import tile_grid

        zh, zw = net.shape[:2]
        side = min(self.fixed)
        windows = tile_grid(zh, zw, side, side // 4)
        found = [TileBoxes(*self._network_boxes(np.ascontiguousarray(net[t.slices]), settings)) for t in windows]
        boxes, scores, classes = merge_tiles(found, windows, zh, zw, iou=settings.iou)
        return boxes[:settings.max_det], scores[:settings.max_det], classes[:settings.max_det]
