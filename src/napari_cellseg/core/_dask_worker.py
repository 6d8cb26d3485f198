"""What runs on Dask workers (imports distributed, so it is imported only for cluster runs)."""
from __future__ import annotations

from distributed import WorkerPlugin, get_worker

from .batch import FileOutcome, segment_file


class ModelOnWorker(WorkerPlugin):
    """Loads the model once per worker; every task on that worker reuses it."""

    name = "napari-cellseg-model"

    def __init__(self, model, device: str = "auto"):
        self.model = [str(m) for m in model] if isinstance(model, (list, tuple)) else str(model)
        self.device = device

    def setup(self, worker):
        from ..backends import load_model

        worker.napari_cellseg_model = load_model(self.model, device=self.device)


def segment_on_worker(path: str, out: str, parameters: dict) -> FileOutcome:
    return segment_file(path, get_worker().napari_cellseg_model, out, parameters)
