"""YOLO segmentation on ONNX Runtime: ultralytics' own ONNX export, run without torch.

The network is exported once with ``YOLO.export(format="onnx", dynamic=True)`` (any batch, any input
side that is a multiple of the stride) and cached by ``core.onnx_cache``. Inference reproduces the
torch path step by step: the same padded RGB input scaled to [0, 1]; ultralytics' non-maximum
suppression (best class per anchor, scores strictly above ``conf``, class-aware, at most 30000
candidates, then ``max_det``) in numpy; masks from the same prototypes and coefficients, upsampled
as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` does, but only inside
each box (the weights of that interpolation are separable, so a box's crop is exact).
"""
from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..core import onnx_cache

TAG = "yolo"
RECIPE = 1  # bump when the export or the metadata changes: older cache files are then ignored
MAX_NMS = 30000
MAX_WH = 7680  # ultralytics' per-class box offset for class-aware NMS


def load_cached(path: Path, sha256: str):
    return onnx_cache.open_cached(path, sha256, TAG, RECIPE)


def export(ultralytics_model, path: Path, sha256: str, info: dict):
    """Export with ultralytics, store beside the weights (or in the user cache), return (session, meta)."""
    target = onnx_cache.writable_target(path, sha256, TAG)
    with tempfile.TemporaryDirectory(prefix="napari-cellseg-export-") as work:
        copy = Path(work) / "model.pt"
        shutil.copyfile(path, copy)  # ultralytics writes its export beside the file it loaded
        from ultralytics import YOLO

        model = YOLO(str(copy), task="segment")
        imgsz = info.get("train_imgsz") or 640
        with _quiet_ultralytics():  # its export report would land in the caller's standard output
            exported = model.export(format="onnx", dynamic=True, simplify=False, imgsz=int(imgsz), device="cpu",
                                    verbose=False)
        meta = {"source_sha256": sha256, "recipe": RECIPE, "source": path.name, "info": info,
                "ultralytics_version": (getattr(ultralytics_model, "ckpt", None) or {}).get("version")}
        onnx_cache.save_with_metadata(Path(exported), target, meta)
    return onnx_cache.make_session(target), meta


@contextlib.contextmanager
def _quiet_ultralytics():
    import io
    import logging

    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        LOGGER.setLevel(level)


class OnnxYolo:
    """The exported network: batches of padded RGB uint8 tiles in, per-tile detections out."""

    def __init__(self, session, n_classes: int):
        self.session = session
        self.n_classes = int(n_classes)
        self.input_name = session.get_inputs()[0].name

    def run(self, padded: np.ndarray):
        """(B, H, W, 3) uint8 RGB -> raw (B, 4 + nc + 32, A) predictions and (B, 32, H/4, W/4) prototypes."""
        x = np.ascontiguousarray(padded.transpose(0, 3, 1, 2), dtype=np.float32)
        x *= 1 / 255.0
        preds, protos = self.session.run(None, {self.input_name: x})
        return preds, protos

    def detections(self, preds: np.ndarray, conf: float, iou: float, max_det: int):
        """Per batch item: (boxes xyxy, scores, classes, mask coefficients) after NMS, best score first."""
        out = []
        for pred in preds:
            boxes, scores, classes, anchors = select(pred, self.n_classes, conf, iou, max_det)
            out.append((boxes, scores, classes, pred[4 + self.n_classes:, anchors].T))
        return out


def select(pred: np.ndarray, n_classes: int, conf: float, iou: float, max_det: int):
    """Ultralytics' non-maximum suppression on one raw prediction in its layout, (4 + nc + extra, A): rows
    cx, cy, w, h, the class scores, then anything else (mask coefficients). Best class per anchor, scores
    strictly above ``conf``, at most ``MAX_NMS`` candidates, class-aware NMS, then ``max_det``.
    Returns (boxes xyxy, scores, classes, anchor indices), best score first."""
    nc = int(n_classes)
    scores_all = pred[4:4 + nc]
    if nc == 1:
        scores, classes = scores_all[0], np.zeros(pred.shape[1], np.int64)
    else:
        classes = scores_all.argmax(0)
        scores = scores_all.max(0)
    keep = np.flatnonzero(scores > conf)
    if len(keep) > MAX_NMS:
        keep = keep[np.argsort(-scores[keep], kind="stable")[:MAX_NMS]]
    xywh = pred[:4, keep].T
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    s, c = scores[keep], classes[keep]
    chosen = nms(boxes + (c[:, None] * MAX_WH).astype(boxes.dtype), s, iou)[:max_det]
    return boxes[chosen], s[chosen], c[chosen], keep[chosen]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS as torchvision.ops.nms: indices kept, by decreasing score; a box is dropped when its
    IoU with a kept one is above ``iou``."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = (boxes[:, i].astype(np.float32) for i in range(4))
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for position, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[position + 1:]
        rest = rest[~suppressed[rest]]
        if not len(rest):
            continue
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        suppressed[rest[inter / (areas[i] + areas[rest] - inter) > iou]] = True
    return np.asarray(keep, np.int64)


def _interpolation_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output position: the two input indices and the weight of the second, exactly as torch's
    bilinear interpolation with align_corners=False (source = (dst + 0.5) * in / out - 0.5, at least 0)."""
    scale = n_in / n_out
    source = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    first = np.minimum(source.astype(np.int64), n_in - 1)
    second = np.minimum(first + 1, n_in - 1)
    return first, second, (source - first).astype(np.float32)


def _weight_matrix(first, second, frac, start: int, stop: int, lo: int, hi: int) -> np.ndarray:
    """(stop - start, hi - lo) dense interpolation weights of outputs [start, stop) on inputs [lo, hi)."""
    rows = np.arange(stop - start)
    matrix = np.zeros((stop - start, hi - lo), np.float32)
    np.add.at(matrix, (rows, first[start:stop] - lo), 1 - frac[start:stop])
    np.add.at(matrix, (rows, second[start:stop] - lo), frac[start:stop])
    return matrix


def assemble_masks(protos: np.ndarray, coefficients: np.ndarray, boxes: np.ndarray, network_shape, zoom: float,
                   tile_shape, soft: bool = False, threshold: float = 0.5):
    """numpy twin of ``backend._assemble_masks``: (N, h, w) masks at tile resolution (bool, or float32
    probabilities when ``soft``; 0 outside the box) and (N,) whether each is non-empty."""
    c, mh, mw = protos.shape
    h, w = tile_shape
    out_h, out_w = max(h, round(network_shape[0] / zoom)), max(w, round(network_shape[1] / zoom))
    ry0, ry1, ryf = _interpolation_weights(mh, out_h)
    cx0, cx1, cxf = _interpolation_weights(mw, out_w)
    n = len(boxes)
    masks = np.zeros((n, h, w), np.float32 if soft else bool)
    nonempty = np.zeros(n, bool)
    threshold_logit = math.log(threshold / (1 - threshold))
    coefficients = coefficients.astype(np.float32)
    protos = protos.astype(np.float32)
    for k, (bx0, by0, bx1, by1) in enumerate(np.asarray(boxes, np.float64)):
        # pixels whose index i satisfies bx0 <= i < bx1 (the torch path's box test)
        r0, r1 = max(0, math.ceil(by0)), min(h, math.ceil(by1))
        c0, c1 = max(0, math.ceil(bx0)), min(w, math.ceil(bx1))
        if r0 >= r1 or c0 >= c1:
            continue
        lo_r, hi_r = int(ry0[r0:r1].min()), int(ry1[r0:r1].max()) + 1
        lo_c, hi_c = int(cx0[c0:c1].min()), int(cx1[c0:c1].max()) + 1
        local = np.tensordot(coefficients[k], protos[:, lo_r:hi_r, lo_c:hi_c], axes=1)
        up = _weight_matrix(ry0, ry1, ryf, r0, r1, lo_r, hi_r) @ local @ \
            _weight_matrix(cx0, cx1, cxf, c0, c1, lo_c, hi_c).T
        inside = up > threshold_logit
        nonempty[k] = inside.any()
        if soft:
            masks[k, r0:r1, c0:c1] = 1 / (1 + np.exp(-up))
        else:
            masks[k, r0:r1, c0:c1] = inside
    return masks, nonempty
