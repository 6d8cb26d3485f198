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


def write_instance_exports(inputs, out: str | os.PathLike, *, rle_csv: str | os.PathLike | None = None,
                           coco: str | os.PathLike | None = None, class_names: dict | None = None) -> dict[str, int]:
    """A Kaggle Sartorius run-length CSV (``rle_csv``) and/or COCO JSON (``coco``) over every segmented input,
    read back from the outputs written to ``out``. Returns the instances written per export."""
    import csv
    import json

    import numpy as np

    from ..core.io import read_image
    from ..core.submission import write_coco_json, write_sartorius_csv

    out = Path(out)

    def items(with_table: bool):
        for path in map(Path, inputs):
            labels_path = out / f"{path.stem}_labels.tif"
            if not labels_path.is_file():
                continue
            labels = read_image(labels_path, lazy=False)
            if not with_table:
                yield path.stem, labels
                continue
            with open(out / f"{path.stem}_objects.csv", newline="") as fh:
                rows = list(csv.DictReader(fh))
            table = {key: np.array([float(r[key]) for r in rows]) for key in ("label", "frame", "score", "class_id")}
            table = {k: (v.astype(np.int64) if k != "score" else v) for k, v in table.items()}
            # the instances as predicted, overlaps kept (written by this version's runs); else the labels
            instances_path = out / f"{path.stem}_instances.json"
            predicted = json.loads(instances_path.read_text())["instances"] if instances_path.is_file() else None
            yield path.stem, labels, table, predicted

    written = {}
    if rle_csv:
        written["rle_csv"] = write_sartorius_csv(rle_csv, items(False))
    if coco:
        written["coco"] = write_coco_json(coco, items(True), class_names)
    return written
