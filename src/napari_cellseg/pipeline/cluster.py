"""Batch segmentation on a Dask cluster, one task per image (imports distributed: imported only for cluster runs).

Every worker loads the model once (a worker plugin) and reuses it for all its tasks.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker

from ..backends import load_model
from .batch import FileOutcome, is_done, segment_file


class ModelOnWorker(WorkerPlugin):
    """Loads the model once per worker; every task on that worker reuses it."""

    name = "napari-cellseg-model"

    def __init__(self, model, device: str = "auto"):
        self.model = [str(m) for m in model] if isinstance(model, (list, tuple)) else str(model)
        self.device = device

    def setup(self, worker):
        worker.napari_cellseg_model = load_model(self.model, device=self.device)


def segment_on_worker(path: str, out: str, parameters: dict) -> FileOutcome:
    return segment_file(path, get_worker().napari_cellseg_model, out, parameters)


def segment_files_on_cluster(
    paths: list[Path], model: str | list[str], out: Path, parameters: dict, *, scheduler: str | None = None,
    n_workers: int = 2, device: str = "auto", overwrite: bool = False,
) -> Iterator[FileOutcome]:
    """Yield one outcome per input as tasks finish. ``scheduler``: address of a running cluster
    (e.g. one started by dask-jobqueue); without it a local cluster of ``n_workers`` processes."""
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
