"""The one progress type every long job yields (segmentation, training, distillation, tracking, classification).

Jobs are generators: they yield ``Progress`` and return their result, so the CLI, the tests and a
napari thread worker all run the same code (and a worker's Cancel takes effect at the next yield).
"""
from __future__ import annotations

from dataclasses import dataclass


class TrainingCancelled(Exception):
    """A training job was stopped by its caller."""


@dataclass(frozen=True)
class Progress:
    """Where a job stands.

    ``done`` / ``total``: units of work over the whole job (tiles, batches, frames, images);
    ``step`` / ``steps``: the frame or epoch it is on (``unit`` says which);
    ``payload``: what the step produced, when it produced something (an epoch's losses and
    metrics, a training record, the phase of a two-phase job); read it with ``get``.
    """

    done: int
    total: int
    step: int = 0
    steps: int = 0
    message: str = ""
    payload: dict | None = None
    unit: str = "frame"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def get(self, key: str, default=None):
        """A payload entry (``default`` where the step carries none)."""
        return (self.payload or {}).get(key, default)

    # the step under its unit's name, for readable call sites
    @property
    def frame(self) -> int:
        return self.step

    @property
    def n_frames(self) -> int:
        return self.steps

    @property
    def epoch(self) -> int:
        return self.step

    @property
    def epochs(self) -> int:
        return self.steps
