"""The scale rule every tiled run shares (segmentation and box detection): the network input size, the tile
size that keeps the model's training scale, and the zoom an object diameter calls for."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_IMGSZ = 640
# a model that resizes whole images itself (``ModelInfo.wants_whole_frame``: detectron2 checkpoints) is
# handed frames of up to this many pixels on either side whole, as detectron2's DefaultPredictor would be;
# larger frames are tiled (their per-instance masks would not fit in memory: N x H x W)
WHOLE_FRAME_MAX_SIDE = 4096


@dataclass(frozen=True)
class TilingPlan:
    imgsz: int  # network input size of a full tile
    tile: int  # tile side in image pixels
    overlap: int
    zoom: float  # the scale: network pixels per image pixel
    source: str = "model"  # where the scale came from (SCALE_SOURCES)


# where a run's scale comes from, in the order they are looked at
SCALE_SOURCES = {
    "zoom": "given (--zoom)",
    "native": "full resolution (--native)",
    "diameter": "from the object diameter",
    "auto": "from the measured object size",
    "predict": "ultralytics' predict geometry: the image's long side fitted to the training size",
    "model": "the model's training scale",
    "whole frame": "the model's own: it resizes each whole frame itself (detectron2's ResizeShortestEdge)",
}
# an image whose long side is this many times the network input, run at ultralytics' predict geometry,
# gets a warning: its objects shrink by that factor
LARGE_IMAGE_FACTOR = 3.0


def plan_tiling(model, imgsz: int | None = None, tile: int | None = None,
                overlap: int | None = None, zoom: float | None = None, source: str = "model") -> TilingPlan:
    """Tiles at a scale: ``zoom`` (default: the model's training scale), tiles of ``tile`` image pixels
    (default: those whose network input is the training imgsz). The tile only partitions the image:
    it never changes the scale."""
    imgsz = int(imgsz or model.info.train_imgsz or DEFAULT_IMGSZ)
    if imgsz < 32:
        raise ValueError(f"imgsz {imgsz} is too small (minimum 32)")
    zoom = float(model.info.zoom if zoom is None else zoom)
    if not zoom > 0:
        raise ValueError(f"zoom must be a positive number of model pixels per image pixel (got {zoom})")
    tile = int(tile or max(32, round(imgsz / zoom)))
    overlap = int(default_overlap(model, tile, zoom) if overlap is None else overlap)
    return TilingPlan(imgsz=imgsz, tile=tile, overlap=overlap, zoom=zoom, source=source)


def default_overlap(model, tile: int, zoom: float) -> int:
    """Tile overlap in image pixels: a quarter of the tile (at most 128), or, for a model that carries its
    reference object diameter, that diameter at this zoom rounded up to 8 pixels (at least 16), when that
    is less: an object of that size then lies whole in one tile; larger ones are joined across the cut by
    the stitcher."""
    quarter = min(128, tile // 4)
    diameter = model.info.object_diameter
    if not diameter:
        return quarter
    needed = 8 * int(np.ceil(float(diameter) / zoom / 8))
    return int(min(quarter, max(16, needed)))


def predict_geometry(model, height: int, width: int, imgsz: int | None = None,
                     tile: int | None = None, overlap: int | None = None) -> TilingPlan:
    """Ultralytics' predict geometry at ``imgsz`` (default: the training imgsz): the image's long side
    letterboxed to imgsz, scale imgsz / max(H, W), in one pass (or in the given tiles, at that scale)."""
    imgsz = int(imgsz or model.info.train_imgsz or DEFAULT_IMGSZ)
    side = max(height, width)
    return plan_tiling(model, imgsz, tile or side, overlap, zoom=imgsz / side, source="predict")


def default_plan(model, layout, imgsz: int | None = None, tile: int | None = None,
                 overlap: int | None = None) -> TilingPlan:
    """The model's default scale: ultralytics' predict geometry for a foreign ultralytics checkpoint
    (``ModelInfo.letterbox``), else its training scale."""
    if model.info.letterbox:
        return predict_geometry(model, layout.height, layout.width, imgsz, tile, overlap)
    return plan_tiling(model, imgsz, tile, overlap)


AUTO_ZOOM_RANGE = (1 / 1.5, 2.0)  # the scales, relative to the model's own, that "auto" may choose
AUTO_ZOOM_TOLERANCE = 1.15  # a smaller change keeps the first pass



def reference_diameter(model) -> float:
    """The object diameter, in network pixels, the model segments best; an error if it has none."""
    if not model.info.object_diameter:
        raise ValueError(f"the model {model.info.path} carries no reference object size, so a diameter cannot "
                         "set its scale; give --zoom, or --model-diameter (the object size it segments best)")
    return float(model.info.object_diameter)


def auto_zoom(model_zoom: float, object_diameter: float, measured: float | None) -> float:
    """The zoom that shows objects of the measured diameter at the model's reference size, within
    AUTO_ZOOM_RANGE of the model's own zoom; the model's own when the change would be small."""
    if measured is None:
        return model_zoom
    factor = float(np.clip(object_diameter / (measured * model_zoom), *AUTO_ZOOM_RANGE))
    if max(factor, 1 / factor) < AUTO_ZOOM_TOLERANCE:
        return model_zoom
    return model_zoom * factor


def whole_frame_plan(model, layout, plan: TilingPlan,
                     tile: int | None) -> TilingPlan | None:
    """One tile per frame for a model that resizes whole images itself (``ModelInfo.wants_whole_frame``),
    unless a tile size was given or the frame is larger than WHOLE_FRAME_MAX_SIDE on a side; its zoom 1.0
    leaves the scale to the model (detectron2's ResizeShortestEdge on the whole frame). None: tile as usual."""
    if not model.info.wants_whole_frame or tile is not None:
        return None
    if max(layout.height, layout.width) > WHOLE_FRAME_MAX_SIDE:
        return None
    return TilingPlan(imgsz=plan.imgsz, tile=max(16, layout.height, layout.width), overlap=0, zoom=1.0,
                      source="whole frame")


def choose_scale(model, layout, *, zoom: float | None, native: bool,
                 diameter, imgsz: int | None, tile: int | None, overlap: int | None) -> tuple[TilingPlan, object]:
    """The plan a run starts from, and the diameter still to apply (a number, "auto" or None).

    ``zoom`` given: that scale; ``native``: scale 1; otherwise the model's default scale (``default_plan``),
    which a numeric or "auto" ``diameter`` then changes. The tile never changes the scale."""
    explicit = [name for name, given in (("zoom", zoom is not None), ("native", bool(native)),
                                         ("diameter", isinstance(diameter, float))) if given]
    if len(explicit) > 1:
        raise ValueError(f"give one of zoom, native and a diameter: each sets the scale (got {' and '.join(explicit)})")
    if zoom is not None:
        return plan_tiling(model, imgsz, tile, overlap, zoom=float(zoom), source="zoom"), None
    if native:
        return plan_tiling(model, imgsz, tile, overlap, zoom=1.0, source="native"), None
    default = default_plan(model, layout, imgsz, tile, overlap)
    if not isinstance(diameter, float):
        whole = whole_frame_plan(model, layout, default, tile)
        if whole is not None:  # the model resizes the whole frame itself: no scale of ours to choose
            return whole, None
    return default, diameter
