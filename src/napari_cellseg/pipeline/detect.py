"""Box detection as a generator (the detection counterpart of ``segment_iter``): progress per tile, a
``core.detection.DetectionResult`` at the end.

Tiles are planned exactly as for segmentation (``plan_tiling``: the training imgsz, and tiles that keep the
training scale, so small nuclei of a large image are seen at full resolution); the boxes of neighbouring tiles
are merged by ``core.detection.merge_tile_boxes``.
"""
from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import asdict

import numpy as np

from ..core.backend import InferenceSettings
from ..core.detection import DetectionResult, merge_tiles
from ..core.normalize import apply_ranges, as_rgb, channel_ranges, to_stack_of_frames
from ..core.options import parse_diameter
from ..core.progress import Progress
from ..core.result import RunSummary
from ..core.tiling import tile_grid
from ..core.training_run import training_run_record
from .scale import auto_zoom, choose_scale, plan_tiling

# options of segment_iter that have no meaning for boxes: accepted (the CLI and widget pass them all), noted
# in the result's warnings when set to something other than their neutral value
MASK_ONLY = {"tta": False, "mask_erosion": None, "mask_threshold": None, "match_iou": 0.5, "normalization": "model",
             "refine": None, "refinement": None, "bright_field": None}


def is_detector(model) -> bool:
    return getattr(getattr(model, "info", None), "task", None) == "detect"


def detect_iter(image, model, *, imgsz: int | None = None, tile: int | None = None, overlap: int | None = None,
                diameter: float | str | None = "auto", zoom: float | None = None, native: bool = False,
                model_diameter: float | None = None, conf: float | None = None, iou: float = 0.7,
                max_det: int = 3000, rgb: bool | None = None, channel_axis: int | None = None,
                channel: int | None = None, class_conf: dict[int, float] | None = None,
                **mask_options) -> Generator[Progress, None, DetectionResult]:
    """Detect objects in a 2-D image or a stack frame by frame, tile by tile.

    ``conf``: score threshold (``None``: the model's own, 0.25 for checkpoints that carry none); ``iou``: the
    model's non-maximum suppression, also the IoU at which boxes of neighbouring tiles are the same object.
    ``diameter``: as for segmentation when the model stores a reference object size (``object_diameter``:
    the geometric mean of a box's sides, in network pixels); otherwise the training scale is kept.
    ``class_conf``: per-class thresholds. The segmentation-only options (``tta``, ``mask_*``, ``refine``...)
    are accepted and ignored, with a warning when set.
    """
    from .. import __version__

    unknown = set(mask_options) - set(MASK_ONLY)
    if unknown:
        raise TypeError(f"detect_iter() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    warnings = [f"{name} does not apply to a box detector; ignored" for name, value in mask_options.items()
                if name in ("tta", "mask_erosion", "mask_threshold") and value not in (None, False)]
    frames, layout = to_stack_of_frames(image, rgb=rgb, channel_axis=channel_axis, channel=channel)
    conf = model.info.default_conf() if conf is None else float(conf)
    if not 0 <= conf <= 1 or not 0 <= iou <= 1:
        raise ValueError(f"conf and iou must lie in [0, 1] (got conf={conf}, iou={iou})")
    class_conf = {int(k): float(v) for k, v in (class_conf or {}).items()}
    if any(not 0 <= v <= 1 for v in class_conf.values()):
        raise ValueError(f"per-class thresholds must lie in [0, 1] (got {class_conf})")
    # the scale rule of segmentation (pipeline.scale.choose_scale): zoom, native, a diameter, else the model's
    # default; the tile only partitions the image
    plan, diameter = choose_scale(model, layout, zoom=zoom, native=native, diameter=parse_diameter(diameter),
                                  imgsz=imgsz, tile=tile, overlap=overlap)
    reference = float(model_diameter) if model_diameter else model.info.object_diameter
    if diameter is not None and not reference:
        if diameter != "auto":
            warnings.append("the detector carries no reference object size (give model_diameter): the diameter "
                            "was not used; detected at the model's default scale")
        diameter = None
    scale = {}
    started = time.perf_counter()
    if diameter == "auto":  # a first pass at the model's own scale, on the first frame
        first = yield from _detect_frames(model, [frames[(0,) * len(layout.stack_shape)]], 1, layout.height,
                                          layout.width, plan, conf, iou, max_det, class_conf, "measuring")
        sides = np.sqrt(first[0][:, 2] - first[0][:, 0]) * np.sqrt(first[0][:, 3] - first[0][:, 1])
        measured = float(np.median(sides)) if len(sides) >= 3 else None
        new_zoom = auto_zoom(plan.zoom, reference, measured)
        scale = {"measured_diameter": measured, "zoom_factor": new_zoom / plan.zoom}
        plan = plan_tiling(model, plan.imgsz, tile, overlap, zoom=new_zoom, source="auto")
    elif diameter is not None:
        default_zoom = plan.zoom
        plan = plan_tiling(model, plan.imgsz, tile, overlap, zoom=reference / diameter, source="diameter")
        scale = {"zoom_factor": plan.zoom / default_zoom}
    n_frames = int(np.prod(layout.stack_shape)) if layout.stack_shape else 1
    flat = (frames[index] for index in np.ndindex(*layout.stack_shape))
    boxes, scores, classes, frame_of, tile_warnings = yield from _detect_frames(
        model, flat, n_frames, layout.height, layout.width, plan, conf, iou, max_det, class_conf)
    result = DetectionResult(boxes, scores, classes, frame_of, layout.stack_shape + (layout.height, layout.width),
                             dict(model.info.class_names),
                             warnings=model.info.notes_first(sorted(set(warnings + tile_warnings))))
    result.metadata = {
        "task": "detect",
        "model": asdict(model.info),
        "parameters": {"imgsz": plan.imgsz, "tile": plan.tile, "overlap": plan.overlap, "zoom": plan.zoom,
                       "scale_source": plan.source, "native": bool(native), "model_diameter": model_diameter,
                       "diameter": diameter, **scale, "conf": conf, "iou": iou, "max_det": max_det,
                       "class_conf": class_conf, "tile_merge": "core.detection.merge_tile_boxes",
                       "device": model.device, "rgb": rgb, "channel_axis": channel_axis, "channel": channel},
        "input": {"shape": list(np.shape(image)), "dtype": str(image.dtype)},
        "napari_cellseg_version": __version__,
        "seconds": round(time.perf_counter() - started, 3),
    }
    result.summary = RunSummary(model_path=model.info.path, measured_diameter=scale.get("measured_diameter"),
                                zoom_factor=scale.get("zoom_factor"), n_frames=n_frames,
                                seconds=result.metadata["seconds"], zoom=plan.zoom, scale_source=plan.source,
                                tile=plan.tile, imgsz=plan.imgsz, reference_diameter=reference,
                                warnings=result.warnings, training_run=training_run_record(model.info.path))
    result.metadata["summary"] = asdict(result.summary)
    return result


def input_ranges(frame) -> list[tuple[float, float]]:
    """8-bit frames go to the detector as they are (ultralytics trains and predicts on the raw 8-bit pixels of
    its datasets, Roboflow exports included); other types are percentile-normalised as for segmentation."""
    if np.dtype(frame.dtype) == np.uint8:
        return [(0.0, 255.0)] * frame.shape[-1]
    return channel_ranges(frame)


def _detect_frames(model, frames, n_frames: int, height: int, width: int, plan, conf: float, iou: float,
                   max_det: int, class_conf: dict[int, float], message: str = ""):
    settings = InferenceSettings(zoom=plan.zoom, conf=min([conf, *class_conf.values()]), iou=iou, max_det=max_det)
    tiles = tile_grid(height, width, plan.tile, plan.overlap)
    total = n_frames * len(tiles)
    prefix = f"{message}: " if message else ""
    all_boxes, all_scores, all_classes, all_frames, warnings = [], [], [], [], []
    done = 0
    yield Progress(0, total, 0, n_frames, message or "starting")
    for f, frame in enumerate(frames):
        ranges = input_ranges(frame)
        found_per_tile = []
        for t in tiles:
            block = as_rgb(apply_ranges(frame[t.slices], ranges))
            found = model.predict_boxes(block, settings)
            if class_conf and len(found):
                keep = found.scores >= np.array([class_conf.get(int(c), conf) for c in found.class_ids], np.float32)
                found = type(found)(found.boxes[keep], found.scores[keep], found.class_ids[keep])
            if len(found) >= max_det:
                warnings.append(f"frame {f}: a tile reached max_det={max_det} detections; raise max_det")
            found_per_tile.append(found)
            done += 1
            yield Progress(done, total, f, n_frames, f"{prefix}frame {f + 1}/{n_frames}, tile {done}/{total}")
        boxes, scores, classes = merge_tiles(found_per_tile, tiles, height, width, iou=iou)
        all_boxes.append(boxes)
        all_scores.append(scores)
        all_classes.append(classes)
        all_frames.append(np.full(len(scores), f, np.int64))
    return (np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4)),
            np.concatenate(all_scores) if all_scores else np.zeros(0, np.float32),
            np.concatenate(all_classes) if all_classes else np.zeros(0, np.int64),
            np.concatenate(all_frames) if all_frames else np.zeros(0, np.int64), warnings)


EVAL_CONF = 0.001  # detections scored down to this threshold (ultralytics' val), for the curves and mAP


def evaluate_detector_iter(model, data, split: str = "val", conf: float | None = None, **detect_options):
    """Run a detector on a dataset's images (``data.yaml``, its folder or a COCO .json; ``split``: which
    of its folders) and score them: a generator of progress, returning a ``core.box_metrics.BoxEvaluation``.
    Detections are kept down to ``EVAL_CONF``; ``conf`` is the threshold P, R, F1 and counts are reported at
    (``None``: the best-F1 one)."""
    from ..core.box_metrics import BoxSample, evaluate_boxes
    from ..core.datasets import read_detection_dataset

    samples = []
    items = list(read_detection_dataset(data, (split,)))
    for i, (name, image, boxes, classes) in enumerate(items):
        yield Progress(i, len(items), 0, 1, f"evaluating: image {i + 1}/{len(items)}")
        result = yield from _drain(detect_iter(image, model, conf=EVAL_CONF, **detect_options))
        samples.append(BoxSample(name, result.boxes, result.scores, boxes, result.class_ids, classes))
    yield Progress(len(items), len(items), 0, 1, "scoring")
    return evaluate_boxes(samples, conf=conf)


def _drain(generator):
    """Run a sub-generator without passing its per-tile progress on; return its value."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value
    yield  # pragma: no cover - makes this a generator
