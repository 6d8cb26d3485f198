"""Batch segmentation of many files: locally, or on a Dask cluster (one task per image).

On a cluster every worker loads the model once (a worker plugin) and reuses it
for all its tasks. Finished outputs are skipped unless ``overwrite``, so an
interrupted batch resumes where it stopped.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

OUTPUT_KINDS = ("labels.tif", "objects.csv", "provenance.json")


@dataclass(frozen=True)
class FileOutcome:
    path: str
    status: str  # "done", "skipped" or "failed"
    n_objects: int | None = None
    message: str = ""


def is_done(path: Path, out: Path) -> bool:
    return all((out / f"{path.stem}_{kind}").is_file() for kind in OUTPUT_KINDS)


def segment_file(path: str | os.PathLike, model, out: str | os.PathLike, parameters: dict,
                 on_progress=None) -> FileOutcome:
    """Segment one file and write its outputs; bad input becomes a 'failed' outcome, not an exception."""
    from ..backends.base import ModelLoadError
    from .io import ImageReadError, read_image
    from .normalize import ImageInputError
    from .pipeline import run, segment_iter

    path = Path(path)
    try:
        result = run(segment_iter(read_image(path), model, **parameters), on_progress)
    except (ImageReadError, ImageInputError, ModelLoadError, ValueError) as exc:
        return FileOutcome(str(path), "failed", message=str(exc))
    result.metadata["input"]["path"] = str(path.resolve())
    result.save(out, path.stem)
    return FileOutcome(str(path), "done", result.n_objects, "; ".join(result.warnings))


def segment_files_on_cluster(
    paths: list[Path], model: str | list[str], out: Path, parameters: dict, *, scheduler: str | None = None,
    n_workers: int = 2, device: str = "auto", overwrite: bool = False,
) -> Iterator[FileOutcome]:
    """Yield one outcome per input as tasks finish. ``scheduler``: address of a running cluster
    (e.g. one started by dask-jobqueue); without it a local cluster of ``n_workers`` processes."""
    from distributed import Client, LocalCluster, as_completed

    from ._dask_worker import ModelOnWorker, segment_on_worker

    todo = []
    for path in paths:
        if not overwrite and is_done(path, out):
            yield FileOutcome(str(path), "skipped")
        else:
            todo.append(path)
    if not todo:
        return
    cluster = None if scheduler else LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                                  processes=n_workers > 0, dashboard_address=None)
    client = Client(scheduler or cluster)
    try:
        client.register_plugin(ModelOnWorker(model, device))
        futures = client.map(segment_on_worker, [str(p) for p in todo], out=str(out), parameters=parameters,
                             pure=False)
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
