"""Segmentation as a generator: it yields progress per tile and returns the result.

The same generator runs in a napari thread worker (cancel = stop iterating),
in the CLI and directly in tests; ``run`` drives it to completion.
"""
from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import asdict, replace
from functools import partial

import numpy as np

from ..backends import InferenceSettings, SegmentationBackend, load_model
from ..core.fusion import fuse_detections, fuse_labels, predict_with_flips
from ..core.normalize import (
    ImageLayout, apply_ranges, as_rgb, bright_background, channel_ranges, raw_uint8_ranges, to_stack_of_frames,
)
from ..core.refine import ContourRefinement, ForegroundWorker, foreground_iter, refine_labels
from ..core.detection import DetectionResult
from ..core.result import RunSummary, SegmentationResult, concat_tables, object_table
from ..core.tiling import InstanceStitcher, tile_grid
from ..core.training_run import training_run_record
from ..core.progress import Progress
from .scale import LARGE_IMAGE_FACTOR, WHOLE_FRAME_MAX_SIDE, TilingPlan, auto_zoom, choose_scale, plan_tiling
from ..core.options import parse_diameter  # noqa: F401 - re-exported: callers have used it from here



def segment_iter(
    image,
    model: SegmentationBackend,
    *,
    imgsz: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    diameter: float | str | None = "auto",
    zoom: float | None = None,
    native: bool = False,
    model_diameter: float | None = None,
    min_agree: int | None = None,
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

    The scale (model pixels per image pixel) comes from, in this order: ``zoom`` (given); ``native``
    (scale 1: full resolution, tiled); a numeric ``diameter``; otherwise the model's default: for a
    foreign ultralytics checkpoint (``ModelInfo.letterbox``) ultralytics' predict geometry (the image's
    long side fitted to the training imgsz, scale imgsz / max(H, W), one pass), else the model's training
    scale (``ModelInfo.zoom``), adjusted by ``diameter="auto"`` where the model has a reference object size.
    Zoom, native and a numeric diameter each set the scale: give one. ``tile`` (image pixels) only cuts
    the image into pieces at that scale; ``imgsz`` is the network input of a full tile (and, at ultralytics'
    predict geometry, the size the long side is fitted to, as ``model.predict(imgsz=...)``).

    Each frame is mapped to uint8 by per-channel percentiles, except for a model that wants the frame as
    given (``ModelInfo.wants_raw_uint8``: ``frame_ranges``); a model that resizes whole images itself
    (``ModelInfo.wants_whole_frame``) gets each frame in one piece up to WHOLE_FRAME_MAX_SIDE pixels a side
    unless ``tile`` is given (``whole_frame_plan``). The result's ``instances`` hold every detection as
    predicted, before the label image's overlap resolution; its warnings start with the model's load notes.

    A box detector (``model.info.task == "detect"``) gives a ``core.detection.DetectionResult`` instead
    (``pipeline.detect.detect_iter``: boxes, scores, counts; no label image).

    ``diameter``: typical object diameter in image pixels; the image is scaled so that such objects
    appear at the size the model segments best: ``model_diameter`` if given (network pixels), else the
    model's own (``ModelInfo.object_diameter``, calibrated on training images), else one measured once
    (the first time this loaded model is asked for a diameter) in a first pass at the model's default
    scale, kept with the loaded model. ``"auto"`` (the default) measures the objects when the model has a
    reference size: a first pass at the model's default scale (without TTA, on the first frame of a
    stack, on at most its central 1024x1024 pixels) gives the median diameter of the objects scoring at
    least the model's threshold, and the image is segmented again at the scale that diameter calls for,
    within 1/1.5x to 2x of the model's own (a plain run of a 2-D image that fits the window keeps the
    first pass when the scale would change by less than 15 %). ``None`` or a model without a reference
    size: the model's default scale.
    ``min_agree``: for an ensemble (a list of models), how many members must find an object (default: a
    majority); each member runs at its own scale and input size and the label images are fused
    (:func:`napari_cellseg.core.fusion.fuse_labels`).
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
    from .detect import detect_iter, is_detector

    if is_detector(model):  # a box detector: boxes and counts, no label image (pipeline.detect)
        return (yield from detect_iter(
            image, model, imgsz=imgsz, tile=tile, overlap=overlap, diameter=diameter, zoom=zoom, native=native,
            model_diameter=model_diameter, conf=conf, iou=iou,
            max_det=max_det, rgb=rgb, channel_axis=channel_axis, channel=channel, class_conf=class_conf, tta=tta,
            mask_erosion=mask_erosion, mask_threshold=mask_threshold))
    frames, layout = to_stack_of_frames(image, rgb=rgb, channel_axis=channel_axis, channel=channel)
    model, switched_from = bright_field_model(model, bright_field, frames, layout)
    members = list(getattr(model, "members", None) or [])
    if members:  # an ensemble: the members' own calibrations apply unless given
        conf = None if conf is None else float(conf)
        mask_erosion = None if mask_erosion is None else int(mask_erosion)
        mask_threshold = None if mask_threshold is None else float(mask_threshold)
    else:
        conf = model.info.default_conf(tta) if conf is None else float(conf)
        mask_erosion = model.info.mask_erosion if mask_erosion is None else int(mask_erosion)
        mask_threshold = model.info.mask_threshold if mask_threshold is None else float(mask_threshold)
    if conf is not None and not 0 <= conf <= 1 or not 0 <= iou <= 1:
        raise ValueError(f"conf and iou must lie in [0, 1] (got conf={conf}, iou={iou})")
    if mask_threshold is not None and not 0 < mask_threshold < 1:
        raise ValueError(f"mask_threshold must lie strictly between 0 and 1 (got {mask_threshold})")
    class_conf = {int(k): float(v) for k, v in (class_conf or {}).items()}
    if any(not 0 <= v <= 1 for v in class_conf.values()):
        raise ValueError(f"per-class thresholds must lie in [0, 1] (got {class_conf})")
    if min_agree is not None and members and not 1 <= int(min_agree) <= len(members):
        raise ValueError(f"min_agree must lie between 1 and the number of models ({len(members)}), got {min_agree}")
    if model_diameter is not None and not float(model_diameter) > 0:
        raise ValueError(f"model_diameter must be a positive number of model pixels (got {model_diameter})")
    refiner = contour_refiner(model, refine)  # loads before any work: a bad path fails at once
    # the caller's settings, else those the refiner was calibrated with, else the defaults
    refinement = refinement or getattr(refiner, "refinement", None) or ContourRefinement()
    diameter = parse_diameter(diameter)
    started = time.perf_counter()
    # the refiner needs only the frame: its network runs beside the detector's, in a worker thread
    worker = _start_refiner(frames, layout, refiner, augmented=tta)
    try:
        scale, member_summaries = {}, []
        if members:
            plan = None
            member_options = dict(imgsz=imgsz, tile=tile, overlap=overlap, diameter=diameter, zoom=zoom, native=native,
                                  model_diameter=model_diameter, conf=conf, iou=iou, max_det=max_det,
                                  match_iou=match_iou, tta=tta, mask_erosion=mask_erosion,
                                  mask_threshold=mask_threshold, class_conf=class_conf, normalization=normalization,
                                  rgb=rgb, channel_axis=channel_axis, channel=channel, refine=None, bright_field=None)
            member_results = []
            for m, member in enumerate(members):
                runs = segment_iter(image, member, **member_options)
                label = f"model {m + 1}/{len(members)}"
                while True:
                    try:
                        progress = next(runs)
                    except StopIteration as stop:
                        member_results.append(stop.value)
                        break
                    yield replace(progress, message=f"{label}: {progress.message}")
            member_summaries = [asdict(r.summary) for r in member_results]
            result = fuse_member_results(member_results, layout, match_iou=match_iou, min_votes=min_agree,
                                         class_names=model.info.class_names)
        else:
            plan, diameter = choose_scale(model, layout, zoom=zoom, native=native, diameter=diameter, imgsz=imgsz,
                                          tile=tile, overlap=overlap)
            reference = float(model_diameter) if model_diameter else model.info.object_diameter
            if diameter == "auto" and not reference:
                diameter = None  # a model without a reference size keeps its default scale
            run_frames = partial(_segment_frames, model, conf=conf, iou=iou, max_det=max_det, match_iou=match_iou,
                                 tta=tta, mask_erosion=mask_erosion, mask_threshold=mask_threshold,
                                 class_conf=class_conf, normalization=normalization)
            result = None
            if diameter is not None:
                if diameter != "auto" and not reference:
                    reference = getattr(model, "_measured_reference", None)
                    scale["reference_diameter_measured"] = True
                if diameter == "auto" or not reference:
                    window, window_layout, cut = measuring_window(frames, layout)
                    # measuring needs no test-time augmentation: the first pass is plain
                    first_pass = yield from run_frames(window, window_layout, plan, tta=False,
                                                       message="measuring object size")
                    # sized on confident objects only (at least the model's own threshold), whatever ``conf``
                    # keeps, and on whole ones: objects the window's cut edges truncate would bias the size down
                    objects = first_pass.objects
                    kept = ~(objects["score"] < max(conf, model.info.conf)) & ~touches(objects, window_layout, cut)
                    measured = median_diameter(objects["area"][kept])
                    scale["measured_diameter"] = measured
                if diameter == "auto":
                    new_zoom = auto_zoom(plan.zoom, reference, measured)
                    scale["zoom_factor"] = new_zoom / plan.zoom
                    if new_zoom == plan.zoom and window_layout == layout and not tta:
                        result = first_pass  # it saw the whole 2-D image at the scale wanted
                    elif new_zoom != plan.zoom:
                        plan = plan_tiling(model, plan.imgsz, tile, overlap, zoom=new_zoom, source="auto")
                    if measured is None:
                        warning = "too few objects to measure their size; segmented at the model's default scale"
                else:
                    if not reference and scale.get("measured_diameter"):
                        # the size at which this model found objects at its default scale, in model pixels:
                        # measured once, kept with the loaded model for its later images
                        reference = model._measured_reference = scale["measured_diameter"] * plan.zoom
                    if reference:
                        default_zoom = plan.zoom
                        plan = plan_tiling(model, plan.imgsz, tile, overlap, zoom=reference / diameter, source="diameter")
                        scale["zoom_factor"] = plan.zoom / default_zoom
                    else:
                        warning = ("too few objects to measure the size this model segments best at its default scale; "
                                   "segmented at that scale (give model_diameter to set the scale from the diameter)")
                scale["reference_diameter"] = reference
            if result is None:
                result = yield from run_frames(frames, layout, plan)
            if diameter is not None and (diameter == "auto" and scale.get("measured_diameter") is None
                                         or diameter != "auto" and not reference):
                result.warnings.append(warning)
            result.warnings.extend(large_image_warnings(plan, layout, result))
        if model.info.wants_whole_frame and not members and plan.tile < max(layout.height, layout.width):
            result.warnings.append(f"frames larger than {WHOLE_FRAME_MAX_SIDE} pixels a side are tiled, not handed "
                                   "to the model whole: results can differ from the model's own framework at tile seams")
        result.warnings = model.info.notes_first(result.warnings)
        refined = None
        if refiner is not None:
            result, refined = yield from _refine_frames(frames, layout, result, refiner, refinement,
                                                        model.info.class_names, augmented=tta, worker=worker)
    finally:
        if worker is not None:
            worker.cancel()  # a run cancelled or failed before refining stops the worker; once done, no-op
    if members:
        plan_record = {"imgsz": imgsz, "tile": tile, "overlap": overlap, "zoom": zoom, "min_agree": min_agree,
                       "members": [{k: r.metadata["parameters"][k] for k in
                                    ("imgsz", "tile", "overlap", "zoom", "scale_source", "diameter", "conf",
                                     "mask_erosion", "mask_threshold")} | {"model": r.metadata["model"]["path"]}
                                   for r in member_results]}
    else:
        plan_record = {"imgsz": plan.imgsz, "tile": plan.tile, "overlap": plan.overlap, "zoom": plan.zoom,
                       "scale_source": plan.source}
    result.metadata = {
        "model": asdict(model.info),
        "parameters": {
            **plan_record, "native": bool(native), "diameter": diameter, "model_diameter": model_diameter, **scale,
            "whole_frame": bool(plan is not None and plan.source == "whole frame"),
            "input": "as given (uint8)" if model.info.wants_raw_uint8 else "percentile-stretched",
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
        seconds=result.metadata["seconds"], warnings=result.warnings,
        zoom=None if plan is None else plan.zoom, scale_source=None if plan is None else plan.source,
        tile=None if plan is None else plan.tile, imgsz=None if plan is None else plan.imgsz,
        reference_diameter=scale.get("reference_diameter"), members=member_summaries,
        min_agree=(min_agree or len(members) // 2 + 1) if members else None,
        training_run=None if members else training_run_record(model.info.path))
    result.metadata["summary"] = asdict(result.summary)  # in the provenance file
    return result


def frame_ranges(model: SegmentationBackend, frame) -> tuple[list[tuple[float, float]], str | None]:
    """The per-channel ranges that map a frame to the uint8 the model sees: the frame as given for a model
    that wants raw uint8 (``normalize.raw_uint8_ranges``), else the percentile stretch; and a note where a
    raw-uint8 model's frame had to be stretched."""
    if model.info.wants_raw_uint8:
        return raw_uint8_ranges(frame)
    return channel_ranges(frame), None


# the models loaded beside a model (its contour refiner, its bright-field specialist), kept exactly as
# long as that model lives: a widget's or a batch's model cache decides their lifetime, not this module
_COMPANIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def companions_of(model: SegmentationBackend) -> dict:
    """The companions loaded for ``model`` so far, by name (a live dict: adding one pre-loads it)."""
    return _COMPANIONS.setdefault(model, {})


def companion_model(model: SegmentationBackend, name: str) -> SegmentationBackend:
    """A model that works beside ``model``, loaded by name once per ``model``."""
    store = companions_of(model)
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
                   class_names: dict[int, str], augmented: bool = False,
                   worker: ForegroundWorker | None = None) -> Generator[Progress, None, tuple[SegmentationResult, dict]]:
    """Every frame's outlines redrawn from the refiner's foreground (see core.refine; ``augmented``: its
    maps averaged over four flips, with test-time augmentation); ids, scores and classes unchanged.
    ``worker``: the first frame's foreground, already under way (``_start_refiner``).
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
        tiles = worker.wait() if f == 0 and worker is not None else _foreground_tiles(frame, refiner, augmented)
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


# the first frame's foreground is computed beside the detector up to this size; larger frames one after the
# other, keeping the peak memory of the largest images where it was
CONCURRENT_REFINER_MAX_PIXELS = 4096 * 4096


def _start_refiner(frames, layout: ImageLayout, refiner, augmented: bool) -> ForegroundWorker | None:
    if refiner is None or layout.height * layout.width > CONCURRENT_REFINER_MAX_PIXELS:
        return None
    return ForegroundWorker(_foreground_tiles(frames[(0,) * len(layout.stack_shape)], refiner, augmented))


def _foreground_tiles(frame, refiner, augmented: bool):
    """The refiner's foreground of one frame, tile by tile at the refiner's own tiling (core.refine.foreground_iter)."""
    plan = plan_tiling(refiner)
    return foreground_iter(frame, channel_ranges(frame), refiner, plan.tile, plan.overlap, augmented)


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


def large_image_warnings(plan: TilingPlan, layout: ImageLayout, result: SegmentationResult) -> list[str]:
    """At ultralytics' predict geometry, an image much larger than the network input shrinks its objects:
    say by how much and what to set."""
    side = max(layout.height, layout.width)
    if plan.source != "predict" or side < LARGE_IMAGE_FACTOR * plan.imgsz:
        return []
    found = median_diameter(result.objects["area"])
    size = "" if found is None else (f" (the objects found are {found:.0f} px across, "
                                     f"{found * plan.zoom:.1f} px at the model's input)")
    return [f"the image is {side} px across, {1 / plan.zoom:.1f}x the model's input of {plan.imgsz} px: at the "
            f"model's default scale (the whole image fitted to {plan.imgsz} px, as ultralytics' predict does) "
            f"the cells shrink {1 / plan.zoom:.1f}x{size}. If the model was trained on tiles or crops at this "
            "image's resolution, set --native (full resolution, tiled); or set the scale with --diameter "
            "(the cells' size in pixels) or --zoom"]


def fuse_member_results(results: list[SegmentationResult], layout: ImageLayout, match_iou: float,
                        min_votes: int | None, class_names: dict[int, str]) -> SegmentationResult:
    """The ensemble's result: each frame's member label images fused (``core.fusion.fuse_labels``)."""
    n_frames = int(np.prod(layout.stack_shape)) if layout.stack_shape else 1
    stacks = [r.labels.reshape(n_frames, layout.height, layout.width) for r in results]
    scores = [dict(zip(r.objects["label"].tolist(), r.objects["score"].tolist())) for r in results]
    classes = [dict(zip(r.objects["label"].tolist(), r.objects["class_id"].tolist())) for r in results]
    labels = np.zeros((n_frames, layout.height, layout.width), np.int32)
    tables, offset = [], 0
    for f in range(n_frames):
        fused, fused_scores, fused_classes = fuse_labels([s[f] for s in stacks], scores, classes,
                                                         match_iou=match_iou, min_votes=min_votes)
        table = object_table(fused, fused_scores, fused_classes, class_names, frame=f)
        fused[fused > 0] += offset
        table["label"] = table["label"] + offset
        offset += len(table["label"])
        labels[f] = fused
        tables.append(table)
    warnings = sorted({w for r in results for w in r.warnings})
    return SegmentationResult(labels=labels.reshape(layout.stack_shape + (layout.height, layout.width)),
                              objects=concat_tables(tables), warnings=warnings)


def median_diameter(areas) -> float | None:
    """Median equivalent-circle diameter of objects with these pixel areas (None: too few objects)."""
    areas = np.asarray(areas, np.float64)
    if areas.size < MIN_OBJECTS_TO_MEASURE:
        return None
    return float(np.sqrt(4 * np.median(areas) / np.pi))


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
    instances = []
    for f, index in enumerate(np.ndindex(*layout.stack_shape)):
        frame = frames[index]  # stays lazy for dask/zarr input: only tiles are read
        ranges, note = frame_ranges(model, frame)
        if note:
            warnings.append(note)
        whole = None
        if hasattr(model, "begin_frame"):  # optional hook: per-frame statistics
            whole = as_rgb(apply_ranges(frame, ranges))
            model.begin_frame(whole)
        stitcher = InstanceStitcher(layout.height, layout.width, match_iou=match_iou)
        for t in tiles:
            covers = t.shape == (layout.height, layout.width)
            block = whole if covers and whole is not None else as_rgb(apply_ranges(frame[t.slices], ranges))
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
        instances += [{"frame": f, "label": p.label + offset if p.label else 0, "box": [float(v) for v in p.box],
                       "score": p.score, "class_id": p.class_id, "segmentation": p.rle(layout.height, layout.width)}
                      for p in stitcher.instances]
        frame_labels[frame_labels > 0] += offset  # ids unique over the whole stack
        table["label"] = table["label"] + offset
        offset += len(table["label"])
        labels[f] = frame_labels
        tables.append(table)
    return SegmentationResult(
        labels=labels.reshape(layout.stack_shape + (layout.height, layout.width)),
        objects=concat_tables(tables),
        warnings=sorted(set(warnings)),
        instances=instances,
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
) -> SegmentationResult | DetectionResult:
    """Segment an image (array or file path) with a model (name, path or loaded backend); a box detection
    checkpoint gives a ``DetectionResult`` (boxes, scores, counts).

    Keyword arguments are those of :func:`segment_iter`.
    """
    from ..core.io import read_image

    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if not isinstance(model, SegmentationBackend) and not hasattr(model, "predict_boxes"):  # a name or path
        model = load_model(model, device=device)
    return run(segment_iter(image, model, **kwargs), on_progress)
