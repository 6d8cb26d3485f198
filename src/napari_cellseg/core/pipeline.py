"""Segmentation as a generator: it yields progress per tile and returns the result.

The same generator runs in a napari thread worker (cancel = stop iterating),
in the CLI and directly in tests; ``run`` drives it to completion.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass

import numpy as np

from ..backends import InferenceSettings, SegmentationBackend, load_model
from .fusion import fuse_detections, predict_with_flips
from .normalize import apply_ranges, as_rgb, channel_ranges, to_stack_of_frames
from .result import SegmentationResult, concat_tables, object_table
from .tiling import InstanceStitcher, tile_grid

DEFAULT_IMGSZ = 640


@dataclass(frozen=True)
class Progress:
    done: int  # tiles finished over the whole run
    total: int
    frame: int
    n_frames: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class TilingPlan:
    imgsz: int  # network input size of a full tile
    tile: int  # tile side in image pixels
    overlap: int
    zoom: float  # network pixels per image pixel


def plan_tiling(model: SegmentationBackend, imgsz: int | None = None, tile: int | None = None,
                overlap: int | None = None) -> TilingPlan:
    """Defaults: the training imgsz, and tiles that keep the training scale (full resolution)."""
    imgsz = int(imgsz or model.info.train_imgsz or DEFAULT_IMGSZ)
    if imgsz < 32:
        raise ValueError(f"imgsz {imgsz} is too small (minimum 32)")
    tile = int(tile or round(imgsz / model.info.zoom))
    overlap = int(min(128, tile // 4) if overlap is None else overlap)
    return TilingPlan(imgsz=imgsz, tile=tile, overlap=overlap, zoom=imgsz / tile)


def segment_iter(
    image,
    model: SegmentationBackend,
    *,
    imgsz: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    conf: float | None = None,
    iou: float = 0.7,
    max_det: int = 3000,
    match_iou: float = 0.5,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int | None = None,
    tta: bool = False,
    mask_erosion: int | None = None,
    mask_threshold: float | None = None,
    class_conf: dict[int, float] | None = None,
    normalization: str = "model",
) -> Generator[Progress, None, SegmentationResult]:
    """Segment a 2-D image or a stack frame by frame, tile by tile.

    ``conf``: score threshold; ``None`` uses the model's own calibration, its TTA one when ``tta``
    (0.25 for checkpoints that carry none).
    ``mask_erosion``: pixels peeled off every object after stitching; ``None`` uses
    the model's own calibration (0 for checkpoints that carry none).
    ``mask_threshold``: probability a pixel needs to belong to an object (YOLO masks, and the
    fused masks of TTA and ensembles); ``None`` uses the model's own calibration (else 0.5).

    ``tta``: also predict on horizontally, vertically and doubly flipped tiles and
    fuse the four instance sets (see :mod:`napari_cellseg.core.fusion`); 4x slower.

    ``class_conf``: per-class score thresholds ``{class_id: threshold}``; other classes use ``conf``.
    ``normalization``: "model", "imagenet" or "image" statistics, for backends that standardise
    their input (Mask R-CNN); others ignore it.
    """
    from .. import __version__

    conf = model.info.default_conf(tta) if conf is None else float(conf)
    if not 0 <= conf <= 1 or not 0 <= iou <= 1:
        raise ValueError(f"conf and iou must lie in [0, 1] (got conf={conf}, iou={iou})")
    mask_erosion = model.info.mask_erosion if mask_erosion is None else int(mask_erosion)
    mask_threshold = model.info.mask_threshold if mask_threshold is None else float(mask_threshold)
    if not 0 < mask_threshold < 1:
        raise ValueError(f"mask_threshold must lie strictly between 0 and 1 (got {mask_threshold})")
    frames, layout = to_stack_of_frames(image, rgb=rgb, channel_axis=channel_axis, channel=channel)
    class_conf = {int(k): float(v) for k, v in (class_conf or {}).items()}
    if any(not 0 <= v <= 1 for v in class_conf.values()):
        raise ValueError(f"per-class thresholds must lie in [0, 1] (got {class_conf})")
    plan = plan_tiling(model, imgsz, tile, overlap)
    # the model keeps everything above the lowest threshold; each class is then cut at its own
    settings = InferenceSettings(zoom=plan.zoom, conf=min([conf, *class_conf.values()]), iou=iou, max_det=max_det,
                                 mask_threshold=mask_threshold,
                                 normalization=normalization)
    tiles = tile_grid(layout.height, layout.width, plan.tile, plan.overlap)
    n_frames = int(np.prod(layout.stack_shape)) if layout.stack_shape else 1
    total = n_frames * len(tiles)
    labels = np.zeros((n_frames, layout.height, layout.width), np.int32)
    tables, warnings = [], []
    started = time.perf_counter()
    done = 0
    yield Progress(0, total, 0, n_frames, "starting")
    offset = 0
    for f, index in enumerate(np.ndindex(*layout.stack_shape)):
        frame = frames[index]  # stays lazy for dask/zarr input: only tiles are read
        ranges = channel_ranges(frame)
        if hasattr(model, "begin_frame"):  # optional hook: per-frame statistics
            model.begin_frame(as_rgb(apply_ranges(frame, ranges)))
        stitcher = InstanceStitcher(layout.height, layout.width, match_iou=match_iou)
        for t in tiles:
            block = as_rgb(apply_ranges(frame[t.slices], ranges))
            if tta:  # mask probabilities, where the backend has them, are what gets averaged
                predict = getattr(model, "predict_tile_soft", model.predict_tile)
                detections = fuse_detections(predict_with_flips(predict, block, settings),
                                             mask_threshold=mask_threshold)
            else:
                detections = model.predict_tile(block, settings)
            if class_conf:
                detections = apply_class_conf(detections, conf, class_conf)
            if len(detections) >= max_det:
                warnings.append(f"frame {f}: a tile reached max_det={max_det} detections; raise max_det")
            stitcher.add(t, detections)
            done += 1
            yield Progress(done, total, f, n_frames, f"frame {f + 1}/{n_frames}, tile {done}/{total}")
        frame_labels, scores, classes = stitcher.finish(erode=mask_erosion)
        table = object_table(frame_labels, scores, classes, model.info.class_names, frame=f)
        frame_labels[frame_labels > 0] += offset  # ids unique over the whole stack
        table["label"] = table["label"] + offset
        offset += len(table["label"])
        labels[f] = frame_labels
        tables.append(table)
    metadata = {
        "model": {k: v for k, v in asdict(model.info).items()},
        "parameters": {
            "imgsz": plan.imgsz, "tile": plan.tile, "overlap": plan.overlap, "zoom": plan.zoom,
            "conf": conf, "iou": iou, "max_det": max_det, "match_iou": match_iou, "tta": tta,
            "mask_erosion": mask_erosion, "mask_threshold": mask_threshold, "class_conf": class_conf,
            "normalization": normalization,
            "device": model.device, "rgb": rgb, "channel_axis": channel_axis, "channel": channel,
        },
        "input": {"shape": list(np.shape(image)), "dtype": str(image.dtype)},
        "napari_cellseg_version": __version__,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return SegmentationResult(
        labels=labels.reshape(layout.stack_shape + (layout.height, layout.width)),
        objects=concat_tables(tables),
        metadata=metadata,
        warnings=sorted(set(warnings)),
    )


def apply_class_conf(detections, conf: float, class_conf: dict[int, float]):
    """Keep each instance whose score reaches its class's threshold (``conf`` for unlisted classes)."""
    thresholds = np.array([class_conf.get(int(c), conf) for c in detections.class_ids], np.float32)
    keep = np.asarray(detections.scores) >= thresholds
    if keep.all():
        return detections
    return type(detections)(detections.masks[keep], detections.scores[keep], detections.class_ids[keep],
                            None if detections.boxes is None else detections.boxes[keep])


def warm_up(model: SegmentationBackend, side: int = 64) -> None:
    """One inference on a small noise image: the backend's lazily imported modules and first-call
    set-up (e.g. ultralytics' predictor) are then ready for the first real run."""
    noise = np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)
    run(segment_iter(noise, model))


def run(generator: Generator, on_progress: Callable[[Progress], None] | None = None):
    """Drive a compute generator to its end and return its result."""
    while True:
        try:
            progress = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(progress)


def segment(
    image,
    model: str | os.PathLike | SegmentationBackend = "nuclei",
    *,
    device: str = "auto",
    on_progress: Callable[[Progress], None] | None = None,
    **kwargs,
) -> SegmentationResult:
    """Segment an image (array or file path) with a model (name, path or loaded backend).

    Keyword arguments are those of :func:`segment_iter`.
    """
    from .io import read_image

    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if not isinstance(model, SegmentationBackend):
        model = load_model(model, device=device)
    return run(segment_iter(image, model, **kwargs), on_progress)
