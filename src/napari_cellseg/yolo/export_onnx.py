"""An ONNX export of a box detector that keeps the plugin's calibration (``napari-cellseg export-onnx``).

A detector trained by napari-cellseg keeps its scale (``zoom``), its calibrated score threshold (``conf``) and
its reference object size (``object_diameter``) in the ``napari_cellseg`` entry of its ``.pt``; ultralytics'
``export(format="onnx")`` drops them. ``export_detector_onnx`` reads them as the detection backend does
(``detect.YoloDetectBackend``), runs ultralytics' own export on the CPU, and adds one metadata entry,
``CALIBRATION_KEY``, to the ``.onnx`` (ultralytics' own entries are kept), which ``onnx_detect`` reads.

The key is not ``napari_cellseg``: that one marks the plugin's private cached exports (``core.onnx_cache``),
which ``onnx-detect`` refuses.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

from ..core.backend import ModelLoadError, checkpoint_pickle, describe_file

CALIBRATION_KEY = "napari_cellseg_calibration"
CALIBRATION_FIELDS = ("zoom", "conf", "object_diameter", "source_sha256", "plugin_version")


def read_calibration(text: str | None) -> tuple[dict | None, str | None]:
    """(zoom, conf, object_diameter and the provenance fields, None) of a ``CALIBRATION_KEY`` entry's text;
    (None, None) when there is none; (None, what is wrong) for a malformed one."""
    if text is None:
        return None, None
    try:
        entry = json.loads(text)
    except (TypeError, ValueError):
        return None, "it is not JSON"
    if not isinstance(entry, dict):
        return None, "it is not a JSON object"

    def number(name):
        value = entry.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} {value!r} is not a number")
        return float(value)

    try:
        zoom, conf = number("zoom"), number("conf")
        if zoom <= 0:
            raise ValueError(f"zoom {zoom} is not positive")
        if not 0 <= conf <= 1:
            raise ValueError(f"conf {conf} does not lie in [0, 1]")
        diameter = None if entry.get("object_diameter") is None else number("object_diameter")
        if diameter is not None and diameter <= 0:
            raise ValueError(f"object_diameter {diameter} is not positive")
    except ValueError as exc:
        return None, str(exc)
    return {"zoom": zoom, "conf": conf, "object_diameter": diameter,
            "source_sha256": entry.get("source_sha256"), "plugin_version": entry.get("plugin_version")}, None


def _load_detector(path: Path):
    """The plugin's detection backend on ``path``; a one-line ModelLoadError for anything but a box detector."""
    from . import detect

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file")
    if not detect.probe(path):
        data = checkpoint_pickle(path) or b""
        if b"ultralytics.nn" in data and b"SegmentationModel" in data:
            raise ModelLoadError(f"{path}: an ultralytics segmentation checkpoint; export-onnx exports box "
                                 "detectors (task 'detect'); segmentation models are exported and cached by the "
                                 "plugin itself on CPU runs")
        if b"ultralytics.nn" in data:
            raise ModelLoadError(f"{path}: an ultralytics checkpoint of another task than box detection; "
                                 "export-onnx exports box detectors (task 'detect')")
        raise ModelLoadError(f"{path}: {describe_file(path)}; export-onnx takes an ultralytics box detector (.pt)")
    return detect.YoloDetectBackend(path, device="cpu")


def export_detector_onnx(checkpoint, out=None, dynamic: bool = True, imgsz: int | None = None,
                         opset: int | None = None) -> tuple[Path, dict]:
    """Export an ultralytics box detector (``.pt``) to ONNX with its napari-cellseg calibration.

    ``out``: the ``.onnx`` to write (default: beside the checkpoint, ``<stem>.onnx``); ``dynamic``: any input
    side (as the ``.pt`` is fed: each tile padded to the stride only) or a fixed input of ``imgsz``; ``imgsz``:
    default the checkpoint's training size. Returns (the file written, the calibration entry it carries).
    """
    import onnx

    from .. import __version__
    from ..core.io import atomic_path
    from ..core.onnx_cache import is_cache_file

    checkpoint = Path(checkpoint)
    out = Path(out) if out is not None else checkpoint.with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out {out}: the export is an .onnx file")
    if is_cache_file(out):
        raise ValueError(f"--out {out}: named like the plugin's cached exports (<stem>.<sha256>.<tag>.onnx), which "
                         "onnx-detect does not open; choose another name")
    backend = _load_detector(checkpoint)
    info = backend.info
    imgsz = int(imgsz) if imgsz else (info.train_imgsz or None)
    calibration = {"zoom": float(info.zoom), "conf": float(info.conf),
                   "object_diameter": None if info.object_diameter is None else float(info.object_diameter),
                   "source_sha256": info.sha256, "plugin_version": __version__}
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix="napari-cellseg-export-") as work:
        # ultralytics writes its export beside the file it loaded: a copy, so nothing beside the .pt is touched
        copy = Path(work) / f"{checkpoint.stem}.pt"
        shutil.copyfile(checkpoint, copy)
        kwargs = {"format": "onnx", "dynamic": bool(dynamic), "device": "cpu", "verbose": False}
        if imgsz:
            kwargs["imgsz"] = imgsz
        if opset:
            kwargs["opset"] = int(opset)
        try:
            exported = YOLO(str(copy)).export(**kwargs)
        except Exception as exc:  # an exporter failure (missing onnx, an op it cannot trace): one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelLoadError(f"{checkpoint}: ultralytics' ONNX export failed ({type(exc).__name__}: "
                                 f"{first[:200]})") from exc
        model = onnx.load(str(exported))
        for i in reversed(range(len(model.metadata_props))):  # a re-export: one entry, the new one
            if model.metadata_props[i].key == CALIBRATION_KEY:
                del model.metadata_props[i]
        entry = model.metadata_props.add()
        entry.key, entry.value = CALIBRATION_KEY, json.dumps(calibration)
        with atomic_path(out) as tmp:
            onnx.save(model, str(tmp))
    return out, calibration
