"""Batch segmentation of many files, one file at a time (a Dask cluster: ``pipeline.cluster``).

Finished outputs are skipped unless ``overwrite``, so an interrupted batch resumes where it stopped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

OUTPUT_KINDS = ("labels.tif", "objects.csv", "provenance.json")


@dataclass(frozen=True)
class FileOutcome:
    path: str
    status: str  # "done", "skipped" or "failed"
    n_objects: int | None = None
    message: str = ""
    scale: str = ""  # the scale used, for a person (RunSummary.describe_scale)


def is_done(path: Path, out: Path) -> bool:
    """All outputs written (a box detector's run writes no label image: its provenance says task 'detect')."""
    if all((out / f"{path.stem}_{kind}").is_file() for kind in OUTPUT_KINDS):
        return True
    provenance = out / f"{path.stem}_provenance.json"
    if not (out / f"{path.stem}_objects.csv").is_file() or not provenance.is_file():
        return False
    import json

    try:
        return json.loads(provenance.read_text()).get("task") == "detect"
    except (OSError, ValueError):
        return False


def segment_file(path: str | os.PathLike, model, out: str | os.PathLike, parameters: dict,
                 on_progress=None) -> FileOutcome:
    """Segment one file and write its outputs; bad input becomes a 'failed' outcome, not an exception."""
    from ..core.backend import ModelLoadError
    from ..core.io import ImageReadError, read_image
    from ..core.normalize import ImageInputError
    from .segment import run, segment_iter

    path = Path(path)
    try:
        result = run(segment_iter(read_image(path), model, **parameters), on_progress)
    except (ImageReadError, ImageInputError, ModelLoadError, ValueError) as exc:
        return FileOutcome(str(path), "failed", message=str(exc))
    result.metadata["input"]["path"] = str(path.resolve())
    result.save(out, path.stem)
    return FileOutcome(str(path), "done", result.n_objects, "; ".join(result.warnings),
                       result.summary.describe_scale())
