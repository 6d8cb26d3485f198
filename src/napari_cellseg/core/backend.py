"""The one protocol every segmentation backend implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .tiling import TileDetections


class ModelLoadError(ValueError):
    """A model file or name cannot be loaded; the message says what was found."""


@dataclass(frozen=True)
class InferenceSettings:
    """Parameters every backend understands (backends ignore what does not apply)."""

    zoom: float = 1.0  # network pixels per image pixel (the core derives it from imgsz and tile size)
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 3000
    # input statistics for backends that standardise their input themselves (Mask R-CNN):
    # "model" (the checkpoint's own), "imagenet", or "image" (the frame's own mean and std)
    normalization: str = "model"
    # mask probability a pixel needs to belong to an object (YOLO binary masks; fusion of soft ones)
    mask_threshold: float = 0.5


DEFAULT_CONF = 0.25  # score threshold of a checkpoint that carries no calibrated one (ultralytics' default)


@dataclass
class ModelInfo:
    """What the model is, for layer metadata and provenance files."""

    backend: str
    path: str
    sha256: str | None
    task: str
    class_names: dict[int, str]
    train_imgsz: int | None = None
    zoom: float = 1.0  # network pixels per image pixel the model was trained at
    # the model's default scale is ultralytics' predict geometry: each image's long side fitted to
    # ``train_imgsz`` in one pass (scale = train_imgsz / max(H, W)), as ultralytics trains and predicts;
    # set for foreign ultralytics checkpoints (those that carry no napari-cellseg scale)
    letterbox: bool = False
    # pixels to peel off every instance: ultralytics rasterises training polygons with their
    # boundary pixels included, so its masks come out inflated; calibrated on training images
    mask_erosion: int = 0
    # score threshold used when the caller gives none; calibrated on training images where stored
    conf: float = DEFAULT_CONF
    # the same for test-time augmented runs, whose fused scores differ; None: ``conf``
    conf_tta: float | None = None
    # mask probability a pixel needs to belong to an object; calibrated on training images where stored
    mask_threshold: float = 0.5
    # object diameter, in network pixels, the model segments best (calibrated where stored);
    # ``segment(diameter=...)`` scales images to it
    object_diameter: float | None = None
    # a model (name or path) whose foreground redraws this model's outlines by default (core.refine)
    refine_with: str | None = None
    # a model (name or path) that segments images with a light background (histology, bright-field)
    # in this model's place by default (pipeline.segment.bright_field_model)
    bright_field_with: str | None = None
    # the frame as given instead of the percentile stretch every other model gets: uint8 frames pass
    # unchanged (channel ranges (0, 255)); other types are mapped as ``normalize.raw_uint8_ranges`` says.
    # For models that standardise their input themselves (detectron2 checkpoints: BGR 0..255 minus PIXEL_MEAN)
    # and foreign ultralytics checkpoints (trained on raw 8-bit images, as ultralytics' predict feeds them)
    wants_raw_uint8: bool = False
    # whole frames in one ``predict_tile`` call instead of tiles: for models that resize the whole image
    # themselves (detectron2's ResizeShortestEdge); frames larger than ``pipeline.segment.WHOLE_FRAME_MAX_SIDE``
    # on a side are still tiled, as is a run given an explicit tile size
    wants_whole_frame: bool = False
    # what loading found that the user should know (defaults used in place of a missing config, ...):
    # every run's result carries them in its warnings, so the CLI summary and the status line show them
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def notes_first(self, warnings) -> list[str]:
        """A run's warnings with what loading the model found first (CLI summary, status line), each once."""
        return list(dict.fromkeys([*self.notes, *warnings]))

    def default_conf(self, tta: bool = False) -> float:
        """The score threshold a run uses when the caller gives none."""
        return self.conf_tta if tta and self.conf_tta is not None else self.conf


@runtime_checkable
class SegmentationBackend(Protocol):
    """A loaded model that turns one RGB uint8 tile into instances.

    The core handles normalisation, channels, tiling, stitching and stacks;
    a backend only predicts on a tile it is handed, at the tile's own size.
    """

    info: ModelInfo
    device: str

    def predict_tile(self, tile: np.ndarray, settings: InferenceSettings) -> TileDetections:
        """``tile``: (h, w, 3) uint8 RGB. Returns instances in tile pixel coordinates."""
        ...

    # Optional: ``begin_frame(frame)`` is called with each whole normalised frame
    # before its tiles, for backends that need frame-level statistics.


def names_yolov5_repository(pickle: bytes) -> bool:
    """Whether a checkpoint's pickle (``checkpoint_pickle``) is of the original YOLOv5 repository: it names its
    ``models.yolo`` classes and no ultralytics model class (not b"ultralytics" alone: YOLOv5 7.0 checkpoints
    record their git remote, github.com/ultralytics/yolov5)."""
    return b"models.yolo" in pickle and b"ultralytics.nn" not in pickle


def checkpoint_pickle(path) -> bytes | None:
    """The pickle bytes of a torch zip checkpoint, read without unpickling (for cheap probes); else None."""
    import zipfile

    if path is None or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            return archive.read(pickles[0]) if pickles else None
    except (zipfile.BadZipFile, OSError, KeyError):
        return None


DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str = "auto") -> str:
    """'auto' picks cuda, then mps, then cpu. An unavailable device is an error, not a silent fallback."""
    import torch

    device = (device or "auto").lower()
    cuda_ok = torch.cuda.is_available()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if cuda_ok else "mps" if mps_ok else "cpu"
    if device.startswith("cuda") and not cuda_ok:
        raise ModelLoadError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    if device == "mps" and not mps_ok:
        raise ModelLoadError("device 'mps' was asked for but Apple MPS is not available; use 'auto' or 'cpu'")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise ModelLoadError(f"unknown device '{device}'; use one of {', '.join(DEVICES)}")
    return device


def describe_file(path) -> str:
    """A short description of what a file that no backend accepts looks like."""
    import zipfile

    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "a corrupted or truncated PyTorch checkpoint"
        if any(n.endswith("data.pkl") for n in names):
            data = checkpoint_pickle(path) or b""
            if names_yolov5_repository(data):
                return ("a checkpoint of the original YOLOv5 repository (models.yolo), which the ultralytics package "
                        "cannot open; backend 'yolov5' loads it (pip install \"napari-cellseg[yolov5]\"; docs/yolo.md, "
                        "'YOLOv5 and YOLOv6')")
            return "a PyTorch checkpoint of an unknown kind (not ultralytics)"
        return "a zip archive, not a checkpoint"
    if head[:1] == b"\x80":
        return "a legacy pickle file, not an ultralytics checkpoint"
    return f"not a model checkpoint (starts with {head!r})"
