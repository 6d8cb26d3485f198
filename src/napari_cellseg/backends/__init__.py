"""Backend registry. Each backend is one module, imported only when used.

A backend module provides ``probe(path) -> bool`` (cheap: no heavy imports, no
unpickling) and ``load(path, device) -> SegmentationBackend``.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import replace
from pathlib import Path

from ..core.backend import InferenceSettings, ModelInfo, ModelLoadError, SegmentationBackend, describe_file

# name -> module; probed in this order when a file is given
BACKENDS: dict[str, str] = {
    "unet": "napari_cellseg.unet_student.backend",
    "yolo-detect": "napari_cellseg.yolo.detect",  # before "yolo": its probe takes detection checkpoints only
    # before "yolo": checkpoints of the original YOLOv5 repository (the yolov5 extra), whose pickles may name
    # github.com/ultralytics/yolov5 but no ultralytics class
    "yolov5": "napari_cellseg.yolo.yolov5",
    "yolo": "napari_cellseg.yolo.backend",
    "onnx-detect": "napari_cellseg.yolo.onnx_detect",  # .onnx files, not napari-cellseg's own cached exports
    "classical": "napari_cellseg.classical.backend",
    "maskrcnn": "napari_cellseg.maskrcnn.backend",
}

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
# Named models shipped inside the package.
NAMED_MODELS: dict[str, str] = {"nuclei": "nuclei_yolo11n_seg.pt", "nuclei-student": "nuclei_unet_student.pt",
                                "nuclei-contours": "nuclei_unet_contours.pt",
                                "nuclei-brightfield": "nuclei_yolo11n_seg_brightfield.pt"}
# backends whose models draw boxes, not outlines (ModelInfo.task "detect")
DETECTION_BACKENDS = ("yolo-detect", "yolov5", "onnx-detect")
# Named models that need no file.
BUILTIN_MODELS: dict[str, str] = {"otsu-watershed": "classical"}
# named models whose outlines another named model redraws by default (core.refine; README, "Contour refinement");
# not nuclei-brightfield: on light training images its own outlines score higher (README, "Histology and bright-field")
CONTOUR_REFINERS: dict[str, str] = {"nuclei": "nuclei-contours"}
# named models that hand images with a light background (histology, bright-field) to a specialist by default
# (pipeline.segment.bright_field_model; README, "Histology and bright-field")
BRIGHT_FIELD_MODELS: dict[str, str] = {"nuclei": "nuclei-brightfield"}

__all__ = [
    "BACKENDS", "InferenceSettings", "ModelInfo", "ModelLoadError", "SegmentationBackend",
    "load_model", "resolve_model", "available_models",
]


def available_models() -> list[str]:
    """Names usable instead of a path (shipped files that exist, and built-ins)."""
    shipped = [name for name, file in NAMED_MODELS.items() if (MODELS_DIR / file).is_file()]
    return shipped + list(BUILTIN_MODELS)


def resolve_model(model: str | os.PathLike) -> tuple[str | None, Path | None]:
    """(backend name or None, path or None) for a model name or file path."""
    text = str(model)
    if text in BUILTIN_MODELS:
        return BUILTIN_MODELS[text], None
    if text in NAMED_MODELS:
        path = MODELS_DIR / NAMED_MODELS[text]
        if not path.is_file():
            raise ModelLoadError(f"the shipped model '{text}' is missing from the installation ({path})")
        return None, path
    path = Path(text).expanduser()
    if not path.exists():
        known = ", ".join(available_models())
        raise ModelLoadError(f"{text}: no such model file, and not a known model name ({known})")
    if path.is_dir():
        raise ModelLoadError(f"{text}: is a folder; give a checkpoint file (e.g. weights/best.pt)")
    return None, path


def probe_backend(model) -> str | None:
    """The backend that would load ``model`` (a name or path), from cheap probes only; None if unknown."""
    try:
        builtin_backend, path = resolve_model(model)
    except ModelLoadError:
        return None
    if builtin_backend is not None:
        return builtin_backend
    for name in BACKENDS:
        try:
            if _module(name).probe(path):
                return name
        except Exception:  # noqa: BLE001 - a probe that fails says "not mine"
            continue
    return None


def _module(name: str):
    return importlib.import_module(BACKENDS[name])


def load_model(model, device: str = "auto", backend: str | None = None) -> SegmentationBackend:
    """Load a model by shipped name or path (the backend is detected from the file).

    A list of two or more models gives an ensemble whose instances are fused.
    """
    if isinstance(model, (list, tuple)):
        if len(model) == 1:
            return load_model(model[0], device, backend)
        from .ensemble import EnsembleBackend

        members = [load_model(m, device, backend) for m in model]
        if any(m.info.task == "detect" for m in members):
            raise ModelLoadError("box detectors cannot be fused into an ensemble of segmentation models; "
                                 "give one detection checkpoint")
        return EnsembleBackend(members)
    loaded = _load_one(model, device, backend)
    name = str(model).strip() if isinstance(model, str) else None
    if name in CONTOUR_REFINERS:
        loaded.info = replace(loaded.info, refine_with=CONTOUR_REFINERS[name])
    if name in BRIGHT_FIELD_MODELS:
        loaded.info = replace(loaded.info, bright_field_with=BRIGHT_FIELD_MODELS[name])
    return loaded


def _load_one(model, device: str, backend: str | None) -> SegmentationBackend:
    builtin_backend, path = resolve_model(model)
    backend = backend or builtin_backend
    if backend is not None:
        if backend not in BACKENDS:
            raise ModelLoadError(f"unknown backend '{backend}'; known: {', '.join(BACKENDS)}")
        return _module(backend).load(path, device)
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: the file is empty")
    for name in BACKENDS:
        module = _module(name)
        if module.probe(path):
            return module.load(path, device)
    raise ModelLoadError(f"{path}: {describe_file(path)}; no backend of napari-cellseg can load it")

