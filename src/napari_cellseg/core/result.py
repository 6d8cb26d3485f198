"""The result of a segmentation run and its per-object table."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OBJECT_COLUMNS = (
    "label", "frame", "centroid_y", "centroid_x", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1",
    "area", "score", "class_id", "class_name",
)


@dataclass
class RunSummary:
    """What a run did, for the status line, the CLI and the provenance file (no string keys to read back)."""

    model_path: str | None = None  # the model that segmented (the bright-field specialist where it took over)
    measured_diameter: float | None = None  # what diameter="auto" measured, in image pixels
    zoom_factor: float | None = None  # the scale used, relative to the model's own
    bright_field_model: str | None = None  # set when a light image was handed to the specialist
    refine_model: str | None = None  # the contour U-Net that redrew outlines, when one ran
    refined_frames: list[bool] = field(default_factory=list)  # per frame: redrawn (True) or kept (False)
    n_frames: int = 1
    seconds: float | None = None
    zoom: float | None = None  # the scale used: model pixels per image pixel (None: an ensemble, see members)
    scale_source: str | None = None  # where it came from: zoom, native, diameter, auto, predict, model
    tile: int | None = None  # tile side in image pixels (it only partitions the image)
    imgsz: int | None = None  # network input of a full tile
    reference_diameter: float | None = None  # object diameter, in model pixels, a diameter was scaled to
    members: list[dict] = field(default_factory=list)  # an ensemble's members' own summaries
    min_agree: int | None = None  # an ensemble: how many members had to find an object
    # the ultralytics run folder the checkpoint was trained in (core.training_run.TrainingRun.record): folder,
    # imgsz, epochs, the best epoch's metrics; None for a model without one
    training_run: dict | None = None

    # what the user should know about the run: the model's load notes (e.g. detectron2 defaults used for
    # want of a config.yaml) first, then the run's own; the same list as ``SegmentationResult.warnings``
    warnings: list[str] = field(default_factory=list)

    def describe_scale(self) -> str:
        """The scale used, for a person."""
        if self.members:
            scales = ", ".join(f"{m['zoom']:.3g} ({Path(m['model_path'] or '').stem})" for m in self.members)
            return f"models at scales {scales}; kept where {self.min_agree} of {len(self.members)} agree"
        if self.zoom is None:
            return ""
        how = {"predict": f"ultralytics' predict geometry at {self.imgsz} px", "native": "full resolution",
               "zoom": "given", "diameter": "from the diameter", "auto": "from the measured object size",
               "model": "the model's training scale", "whole frame": "each whole frame resized by the model itself",
               }.get(self.scale_source or "", self.scale_source or "")
        return f"scale {self.zoom:.3g} ({how})"

    def describe(self, n_objects: int, warnings: list[str] = ()) -> str:
        """One line for a person."""

        text = f"{n_objects} objects" + (f" in {self.n_frames} frames" if self.n_frames > 1 else "")
        if self.describe_scale():
            text += "; " + self.describe_scale()
        if self.measured_diameter:
            text += (f"; object size {self.measured_diameter:.0f} px, segmented at "
                     f"{self.zoom_factor:.2g}x the model's scale")
        if self.bright_field_model:
            text += f"; light background: segmented by {Path(self.bright_field_model).stem}"
        if self.refine_model:
            refined = sum(self.refined_frames)
            kept = len(self.refined_frames) - refined
            text += (f"; contours refined by {Path(self.refine_model).stem}" if refined else
                     "; contours kept as the model drew them (its contour U-Net disagreed)")
            if refined and kept:
                text += f" ({kept} frames kept the model's own)"
        return text + ("; " + "; ".join(warnings) if warnings else "")


@dataclass
class SegmentationResult:
    """Instance labels (0 = background, 1..N unique over the whole stack) and their table.

    ``labels`` has the input's stack and spatial shape (no channel axis).
    ``objects`` maps each column of ``OBJECT_COLUMNS`` to an array, one row per object;
    ``frame`` is the flat index of the object's frame in the stack (0 for a 2-D image).
    """

    labels: np.ndarray
    objects: dict[str, np.ndarray]
    metadata: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    summary: RunSummary = field(default_factory=RunSummary)
    # every instance as the model predicted it, before the label image's overlap resolution (the COCO
    # export): dicts with ``frame``, ``label`` (its id in ``labels``; 0 where it lost every pixel to
    # higher-scoring objects), ``box`` (x0, y0, x1, y1, image pixels, as predicted), ``score``,
    # ``class_id`` and ``segmentation`` (compressed COCO RLE of the whole predicted mask, counts as str).
    # None for results that were not made by a model run (e.g. read back from a label image)
    instances: list[dict] | None = None

    def describe(self) -> str:
        return self.summary.describe(self.n_objects, self.warnings)

    @property
    def n_objects(self) -> int:
        return len(self.objects["label"])

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return self.labels.shape[:-2]

    def counts_per_frame(self) -> np.ndarray:
        """Number of objects in each frame of the stack (one value for a 2-D image)."""
        n_frames = int(np.prod(self.stack_shape)) if self.stack_shape else 1
        return np.bincount(self.objects["frame"].astype(np.int64), minlength=n_frames)

    def labels_scoring_at_least(self, conf: float) -> np.ndarray:
        """The labels with the objects scoring below ``conf`` set to 0: what a run at that score
        threshold gives (NMS and stitching rank by score), without running the model again."""
        object_scores = np.zeros(int(self.labels.max()) + 1, np.float32)
        object_scores[self.objects["label"].astype(np.int64)] = self.objects["score"]
        return np.where(object_scores[self.labels] >= conf, self.labels, 0)

    def centroid_coordinates(self) -> np.ndarray:
        """(N, ndim) centroids in layer coordinates: stack indices, then y, x."""
        yx = np.stack([self.objects["centroid_y"], self.objects["centroid_x"]], axis=1)
        if not self.stack_shape:
            return yx
        index = np.stack(np.unravel_index(self.objects["frame"].astype(np.int64), self.stack_shape), axis=1)
        return np.concatenate([index.astype(float), yx], axis=1)

    def save(self, out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
        """Write ``<stem>_labels.tif``, ``_objects.csv``, ``_counts.csv`` and ``_provenance.json`` atomically,
        and ``_instances.json`` (the predicted instances, overlaps kept) where the result has them."""
        from .io import write_csv, write_json, write_labels

        out = Path(out_dir)
        paths = {
            "labels": out / f"{stem}_labels.tif",
            "objects": out / f"{stem}_objects.csv",
            "counts": out / f"{stem}_counts.csv",
            "provenance": out / f"{stem}_provenance.json",
        }
        write_labels(paths["labels"], self.labels)
        write_csv(paths["objects"], self.objects)
        counts = self.counts_per_frame()
        write_csv(paths["counts"], {"frame": np.arange(len(counts)), "count": counts})
        if self.instances is not None:  # before the provenance, whose presence marks the input as done
            paths["instances"] = out / f"{stem}_instances.json"
            write_json(paths["instances"], {"format": "napari-cellseg predicted instances 1",
                                            "frame_shape": list(self.labels.shape[-2:]),
                                            "instances": self.instances})
        provenance = dict(self.metadata)
        provenance["n_objects"] = self.n_objects
        provenance["counts_per_frame"] = self.counts_per_frame().tolist()
        provenance["warnings"] = list(self.warnings)
        write_json(paths["provenance"], provenance)
        return paths


def object_table(
    labels: np.ndarray,
    scores: dict[int, float] | None = None,
    class_ids: dict[int, int] | None = None,
    class_names: dict[int, str] | None = None,
    frame: int = 0,
) -> dict[str, np.ndarray]:
    """Per-object rows for one 2-D label frame."""
    props = _region_props(np.asarray(labels))
    ids = props["label"].astype(np.int64)
    scores = scores or {}
    class_ids = class_ids or {}
    class_names = class_names or {}
    cls = np.array([class_ids.get(int(i), 0) for i in ids], np.int64)
    return {
        "label": ids,
        "frame": np.full(len(ids), frame, np.int64),
        "centroid_y": props["centroid-0"],
        "centroid_x": props["centroid-1"],
        "bbox_y0": props["bbox-0"].astype(np.int64),
        "bbox_x0": props["bbox-1"].astype(np.int64),
        "bbox_y1": props["bbox-2"].astype(np.int64),
        "bbox_x1": props["bbox-3"].astype(np.int64),
        "area": props["area"].astype(np.int64),
        "score": np.array([scores.get(int(i), np.nan) for i in ids], np.float32),
        "class_id": cls,
        "class_name": np.array([class_names.get(int(c), str(c)) for c in cls], dtype=object),
    }


def _region_props(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Label, centroid, bbox and area of each object: skimage's regionprops_table names and values.

    One pass of ``find_objects``, then one small box per object: no per-object
    RegionProperties, no full-image coordinate arrays (large frames stay cheap).
    """
    from scipy import ndimage

    columns = {name: [] for name in ("label", "centroid-0", "centroid-1", "bbox-0", "bbox-1", "bbox-2", "bbox-3", "area")}
    if labels.size and labels.max() > 0:
        for index, box in enumerate(ndimage.find_objects(labels)):
            if box is None:
                continue
            mask = labels[box] == index + 1
            area = int(np.count_nonzero(mask))
            rows, cols = np.nonzero(mask)
            columns["label"].append(index + 1)
            columns["centroid-0"].append(box[0].start + rows.mean())
            columns["centroid-1"].append(box[1].start + cols.mean())
            columns["bbox-0"].append(box[0].start)
            columns["bbox-1"].append(box[1].start)
            columns["bbox-2"].append(box[0].stop)
            columns["bbox-3"].append(box[1].stop)
            columns["area"].append(area)
    return {name: np.asarray(values, np.float64 if name.startswith("centroid") else np.int64)
            for name, values in columns.items()}


def concat_tables(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not tables:
        return object_table(np.zeros((1, 1), np.int32))
    return {name: np.concatenate([t[name] for t in tables]) for name in OBJECT_COLUMNS}


@dataclass
class FinetuneResult:
    """What a fine-tuning job returns: the checkpoint written (None if none), its history and calibration."""
    path: Path | None
    epochs_done: int
    cancelled: bool
    history: list[dict] = field(default_factory=list)
    calibration: dict | None = None  # the score threshold chosen on the validation images, and why
    calibration_tta: dict | None = None  # the same for test-time augmented runs
