"""Segmentation as a generator: it yields progress per tile and returns the result.

The same generator runs in a napari thread worker (cancel = stop iterating),
in the CLI and directly in tests; ``run`` drives it to completion.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from ..backends import InferenceSettings, SegmentationBackend, load_model
from ..core.fusion import fuse_detections, predict_with_flips
from ..core.normalize import ImageLayout, apply_ranges, as_rgb, bright_background, channel_ranges, to_stack_of_frames
from ..core.refine import ContourRefinement, foreground_iter, refine_labels
from ..core.result import RunSummary, SegmentationResult, concat_tables, object_table
from ..core.tiling import InstanceStitcher, tile_grid
from ..core.progress import Progress
from ..core.options import parse_diameter  # noqa: F401 - re-exported: callers have used it from here

DEFAULT_IMGSZ = 640


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
    diameter: float | str | None = "auto",
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
    refine: str | os.PathLike | SegmentationBackend | None = "auto",
    refinement: ContourRefinement | None = None,
    bright_field: str | os.PathLike | SegmentationBackend | None = "auto",
) -> Generator[Progress, None, SegmentationResult]:
    """Segment a 2-D image or a stack frame by frame, tile by tile.

    ``diameter``: typical object diameter in image pixels; the image is scaled so that such objects
    appear at the size the model segments best (``ModelInfo.object_diameter``, calibrated on
    training images). ``"auto"`` (the default) measures it: a first pass at the model's own scale
    (without TTA, on the first frame of a stack, on at most its central 1024x1024 pixels) gives the
    median diameter of the objects scoring at least the model's threshold, and the image is segmented
    again at the scale that diameter calls for, within 1/1.5x to 2x of the model's own (a plain run of
    a 2-D image that fits the window keeps the first pass when the scale would change by less than
    15 %). ``None``, a given ``tile``, or a model without a reference size: the model's training
    scale (``imgsz`` / ``tile``).
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

    ``refine``: a U-Net (name, path or loaded) whose foreground redraws the outlines of the
    instances found (:mod:`napari_cellseg.core.refine`); ``"auto"`` (the default) uses the model's own
    ``refine_with`` (the named ``nuclei`` model: ``nuclei-contours``, a U-Net trained on the
    annotators' outlines), ``None`` none.
    ``refinement``: its settings (default: those stored in the refiner's checkpoint, else
    ``ContourRefinement()``; both chosen on training images).

    ``bright_field``: a model (name, path or loaded) that segments the image in ``model``'s place when
    the image's first frame has a light background (histology, bright-field: ``normalize.bright_background``);
    ``"auto"`` (the default) uses the model's own ``bright_field_with`` (the named ``nuclei`` model:
    ``nuclei-brightfield``), ``None`` never switches. Its own calibration, scale and refiner then apply.
    """
    from .. import __version__

    frames, layout = to_stack_of_frames(image, rgb=rgb, channel_axis=channel_axis, channel=channel)
    model, switched_from = bright_field_model(model, bright_field, frames, layout)
    conf = model.info.default_conf(tta) if conf is None else float(conf)
    if not 0 <= conf <= 1 or not 0 <= iou <= 1:
        raise ValueError(f"conf and iou must lie in [0, 1] (got conf={conf}, iou={iou})")
    mask_erosion = model.info.mask_erosion if mask_erosion is None else int(mask_erosion)
    mask_threshold = model.info.mask_threshold if mask_threshold is None else float(mask_threshold)
    if not 0 < mask_threshold < 1:
        raise ValueError(f"mask_threshold must lie strictly between 0 and 1 (got {mask_threshold})")
    class_conf = {int(k): float(v) for k, v in (class_conf or {}).items()}
    if any(not 0 <= v <= 1 for v in class_conf.values()):
        raise ValueError(f"per-class thresholds must lie in [0, 1] (got {class_conf})")
    refiner = contour_refiner(model, refine)  # loads before any work: a bad path fails at once
    # the caller's settings, else those the refiner was calibrated with, else the defaults
    refinement = refinement or getattr(refiner, "refinement", None) or ContourRefinement()
    plan = plan_tiling(model, imgsz, tile, overlap)  # the training scale, or the given tile
    diameter = parse_diameter(diameter)
    if diameter == "auto" and (tile is not None or not model.info.object_diameter):
        diameter = None  # a given tile fixes the scale; a model without a reference size keeps its own
    if diameter is not None:
        if tile is not None:
            raise ValueError("give either diameter or tile, not both: the diameter sets the tile size")
        object_diameter = reference_diameter(model)  # fails before any work for a model without one
    run_frames = partial(_segment_frames, model, conf=conf, iou=iou, max_det=max_det, match_iou=match_iou, tta=tta,
                         mask_erosion=mask_erosion, mask_threshold=mask_threshold, class_conf=class_conf,
                         normalization=normalization)
    started = time.perf_counter()
    scale = {}
    if diameter == "auto":
        window, window_layout, cut = measuring_window(frames, layout)
        # measuring needs no test-time augmentation: the first pass is plain
        first_pass = yield from run_frames(window, window_layout, plan, tta=False, message="measuring object size")
        # sized on confident objects only (at least the model's own threshold), whatever ``conf`` keeps,
        # and on whole ones: objects the window's cut edges truncate would bias the size down
        objects = first_pass.objects
        kept = ~(objects["score"] < max(conf, model.info.conf)) & ~touches(objects, window_layout, cut)
        measured = median_diameter(objects["area"][kept])
        zoom = auto_zoom(plan.zoom, object_diameter, measured)
        scale = {"measured_diameter": measured, "zoom_factor": zoom / plan.zoom}
        if zoom == plan.zoom and window_layout == layout and not tta:
            result = first_pass  # it saw the whole 2-D image at the scale wanted
        else:
            plan = plan_tiling(model, plan.imgsz, round(plan.imgsz / zoom), overlap)
            result = yield from run_frames(frames, layout, plan)
        if measured is None:
            result.warnings.append("too few objects to measure their size; segmented at the model's own scale")
    else:
        if diameter is not None:
            plan = plan_tiling(model, plan.imgsz, max(32, round(plan.imgsz * diameter / object_diameter)), overlap)
        result = yield from run_frames(frames, layout, plan)
    refined = None
    if refiner is not None:
        result, refined = yield from _refine_frames(frames, layout, result, refiner, refinement,
                                                    model.info.class_names, augmented=tta)
    result.metadata = {
        "model": asdict(model.info),
        "parameters": {
            "imgsz": plan.imgsz, "tile": plan.tile, "overlap": plan.overlap, "zoom": plan.zoom,
            "diameter": diameter, **scale,
            "conf": conf, "iou": iou, "max_det": max_det, "match_iou": match_iou, "tta": tta,
            "mask_erosion": mask_erosion, "mask_threshold": mask_threshold, "class_conf": class_conf,
            "normalization": normalization, "refine": refined, "bright_field_switch": switched_from,
            "device": model.device, "engine": getattr(model, "engine", "torch"),
            "rgb": rgb, "channel_axis": channel_axis, "channel": channel,
        },
        "input": {"shape": list(np.shape(image)), "dtype": str(image.dtype)},
        "napari_cellseg_version": __version__,
        "seconds": round(time.perf_counter() - started, 3),
    }
    result.summary = RunSummary(
        model_path=model.info.path, measured_diameter=scale.get("measured_diameter"),
        zoom_factor=scale.get("zoom_factor"), bright_field_model=model.info.path if switched_from else None,
        refine_model=refined["model"] if refined else None,
        refined_frames=list(refined["refined_frames"]) if refined else [],
        n_frames=int(np.prod(result.stack_shape)) if result.stack_shape else 1,
        seconds=result.metadata["seconds"])
    result.metadata["summary"] = asdict(result.summary)  # in the provenance file
    return result


def companion_model(model: SegmentationBackend, name: str) -> SegmentationBackend:
    """A model that works beside ``model`` (its contour refiner, its bright-field specialist), loaded by name
    once and kept on it."""
    store = getattr(model, "_companions", None)
    if store is None:
        store = model._companions = {}
    if name not in store:
        store[name] = load_model(name, device=model.device)
    return store[name]


def bright_field_model(model: SegmentationBackend, bright_field, frames,
                       layout: ImageLayout) -> tuple[SegmentationBackend, dict | None]:
    """The model a run uses: ``model``, or its bright-field specialist when the first frame has a light
    background (``bright_field``: "auto" for the model's own ``bright_field_with``, a name, path or loaded
    model, or None). Also what was switched from, for the metadata (None: no switch). A named specialist is
    a ``companion_model``."""
    if bright_field is None or bright_field is False:
        return model, None
    if isinstance(bright_field, str) and bright_field == "auto":
        bright_field = model.info.bright_field_with
        if not bright_field:
            return model, None
    if not bright_background(frames[(0,) * len(layout.stack_shape)]):
        return model, None
    if isinstance(bright_field, (str, os.PathLike)):
        bright_field = companion_model(model, str(bright_field))
    return bright_field, {"model": model.info.path, "sha256": model.info.sha256, "reason": "light background"}


def contour_refiner(model: SegmentationBackend, refine) -> SegmentationBackend | None:
    """The loaded refiner a run uses: ``refine`` itself, or for ``"auto"`` the model's own ``refine_with``
    (a ``companion_model``)."""
    if refine is None or refine is False:
        return None
    if isinstance(refine, str) and refine == "auto":
        name = model.info.refine_with
        if not name:
            return None
        refiner = companion_model(model, name)
    elif isinstance(refine, (str, os.PathLike)):
        refiner = load_model(refine, device=model.device)
    else:
        refiner = refine
    if not callable(getattr(refiner, "probabilities", None)):
        raise ValueError(f"refine: {refiner.info.path} is a {refiner.info.backend} model; contours can only be "
                         "redrawn from a U-Net student's foreground")
    return refiner


def _refine_frames(frames, layout: ImageLayout, result: SegmentationResult, refiner, params: ContourRefinement,
                   class_names: dict[int, str],
                   augmented: bool = False) -> Generator[Progress, None, tuple[SegmentationResult, dict]]:
    """Every frame's outlines redrawn from the refiner's foreground (see core.refine; ``augmented``: its
    maps averaged over four flips, with test-time augmentation); ids, scores and classes unchanged.
    Returns the result and what was done, for the metadata."""
    plan = plan_tiling(refiner)
    per_frame = len(tile_grid(layout.height, layout.width, plan.tile, plan.overlap))
    n_frames = int(np.prod(layout.stack_shape)) if layout.stack_shape else 1
    total = per_frame * n_frames
    labels = result.labels.reshape(n_frames, layout.height, layout.width)
    frame_of = np.asarray(result.objects["frame"])
    score_of = dict(zip(result.objects["label"].tolist(), result.objects["score"].tolist()))
    class_of = dict(zip(result.objects["label"].tolist(), result.objects["class_id"].tolist()))
    tables, agreements, applied = [], [], []
    yield Progress(0, total, 0, n_frames, "refining contours")
    for f, index in enumerate(np.ndindex(*layout.stack_shape)):
        frame = frames[index]
        tiles = foreground_iter(frame, channel_ranges(frame), refiner, plan.tile, plan.overlap, augmented)
        while True:
            try:
                done = next(tiles)
            except StopIteration as stop:
                foreground = stop.value
                break
            yield Progress(f * per_frame + done, total, f, n_frames,
                           f"refining contours: frame {f + 1}/{n_frames}, tile {f * per_frame + done}/{total}")
        new_labels, agreement, changed = refine_labels(labels[f], foreground, params)
        agreements.append(round(agreement, 4))
        applied.append(changed)
        if changed:
            labels[f] = new_labels
            tables.append(object_table(new_labels, score_of, class_of, class_names, frame=f))
        else:
            tables.append({k: np.asarray(v)[frame_of == f] for k, v in result.objects.items()})
    result.labels = labels.reshape(result.labels.shape)
    result.objects = concat_tables(tables)
    info = {"model": refiner.info.path, "sha256": refiner.info.sha256, "engine": getattr(refiner, "engine", "torch"),
            **params.as_dict(), "augmented": augmented,
            "agreement_per_frame": agreements, "refined_frames": applied}
    return result, info


AUTO_ZOOM_RANGE = (1 / 1.5, 2.0)  # the scales, relative to the model's own, that "auto" may choose
AUTO_ZOOM_TOLERANCE = 1.15  # a smaller change keeps the first pass
MIN_OBJECTS_TO_MEASURE = 3
MEASURING_SIDE = 1024  # "auto" measures on at most this central square of the first frame


def measuring_window(frames, layout: ImageLayout):
    """The first frame, or its central MEASURING_SIDE square (a large image is not segmented whole twice);
    its layout, and which of its edges (top, left, bottom, right) cut through the image."""
    height, width = min(layout.height, MEASURING_SIDE), min(layout.width, MEASURING_SIDE)
    y0, x0 = (layout.height - height) // 2, (layout.width - width) // 2
    first = frames[(0,) * len(layout.stack_shape)]
    cut = (y0 > 0, x0 > 0, y0 + height < layout.height, x0 + width < layout.width)
    return first[y0:y0 + height, x0:x0 + width], ImageLayout((), height, width, layout.channels), cut


def touches(objects: dict, layout: ImageLayout, edges: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """Which objects of a table touch the given edges (top, left, bottom, right) of a frame."""
    top, left, bottom, right = edges
    return ((top & (objects["bbox_y0"] <= 0)) | (left & (objects["bbox_x0"] <= 0))
            | (bottom & (objects["bbox_y1"] >= layout.height)) | (right & (objects["bbox_x1"] >= layout.width)))


def reference_diameter(model: SegmentationBackend) -> float:
    """The object diameter, in network pixels, the model segments best; an error if it has none."""
    if not model.info.object_diameter:
        raise ValueError(f"the model {model.info.path} carries no reference object size, so a diameter cannot "
                         "set its scale; give a tile size instead")
    return float(model.info.object_diameter)


def median_diameter(areas) -> float | None:
    """Median equivalent-circle diameter of objects with these pixel areas (None: too few objects)."""
    areas = np.asarray(areas, np.float64)
    if areas.size < MIN_OBJECTS_TO_MEASURE:
        return None
    return float(np.sqrt(4 * np.median(areas) / np.pi))


def auto_zoom(model_zoom: float, object_diameter: float, measured: float | None) -> float:
    """The zoom that shows objects of the measured diameter at the model's reference size, within
    AUTO_ZOOM_RANGE of the model's own zoom; the model's own when the change would be small."""
    if measured is None:
        return model_zoom
    factor = float(np.clip(object_diameter / (measured * model_zoom), *AUTO_ZOOM_RANGE))
    if max(factor, 1 / factor) < AUTO_ZOOM_TOLERANCE:
        return model_zoom
    return model_zoom * factor


def _segment_frames(model: SegmentationBackend, frames, layout: ImageLayout, plan: TilingPlan, *, conf: float,
                    iou: float, max_det: int, match_iou: float, tta: bool, mask_erosion: int, mask_threshold: float,
                    class_conf: dict[int, float], normalization: str,
                    message: str = "") -> Generator[Progress, None, SegmentationResult]:
    """The tile-by-tile run of :func:`segment_iter` at one scale; metadata is the caller's."""
    # the model keeps everything above the lowest threshold; each class is then cut at its own
    settings = InferenceSettings(zoom=plan.zoom, conf=min([conf, *class_conf.values()]), iou=iou, max_det=max_det,
                                 mask_threshold=mask_threshold, normalization=normalization)
    tiles = tile_grid(layout.height, layout.width, plan.tile, plan.overlap)
    n_frames = int(np.prod(layout.stack_shape)) if layout.stack_shape else 1
    total = n_frames * len(tiles)
    labels = np.zeros((n_frames, layout.height, layout.width), np.int32)
    tables, warnings = [], []
    prefix = f"{message}: " if message else ""
    done = 0
    yield Progress(0, total, 0, n_frames, message or "starting")
    offset = 0
    for f, index in enumerate(np.ndindex(*layout.stack_shape)):
        frame = frames[index]  # stays lazy for dask/zarr input: only tiles are read
        ranges = channel_ranges(frame)
        if hasattr(model, "begin_frame"):  # optional hook: per-frame statistics
            model.begin_frame(as_rgb(apply_ranges(frame, ranges)))
        stitcher = InstanceStitcher(layout.height, layout.width, match_iou=match_iou)
        for t in tiles:
            block = as_rgb(apply_ranges(frame[t.slices], ranges))
            if tta and hasattr(model, "predict_tile_augmented"):  # the backend fuses its own flips
                detections = model.predict_tile_augmented(block, settings)
            elif tta:  # mask probabilities, where the backend has them, are what gets averaged
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
            yield Progress(done, total, f, n_frames, f"{prefix}frame {f + 1}/{n_frames}, tile {done}/{total}")
        frame_labels, scores, classes = stitcher.finish(erode=mask_erosion)
        table = object_table(frame_labels, scores, classes, model.info.class_names, frame=f)
        frame_labels[frame_labels > 0] += offset  # ids unique over the whole stack
        table["label"] = table["label"] + offset
        offset += len(table["label"])
        labels[f] = frame_labels
        tables.append(table)
    return SegmentationResult(
        labels=labels.reshape(layout.stack_shape + (layout.height, layout.width)),
        objects=concat_tables(tables),
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
    from ..core.io import read_image

    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if not isinstance(model, SegmentationBackend):
        model = load_model(model, device=device)
    return run(segment_iter(image, model, **kwargs), on_progress)
