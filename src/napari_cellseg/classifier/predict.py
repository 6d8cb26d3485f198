"""Per-frame classification of tracked cells as a generator, and its summaries."""
from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.io import IMAGE_SUFFIXES
from ..core.progress import Progress
from .crops import cell_crops, crop_file
from .model import Classifier


@dataclass
class PhenotypeResult:
    table: dict[str, np.ndarray]  # one row per cell per frame
    class_names: list[str]
    metadata: dict = field(default_factory=dict)

    def per_track(self) -> dict[str, np.ndarray]:
        """Consensus phenotype per track (highest mean probability) and the frames where it changes."""
        t = self.table
        tracks = np.unique(t["track_id"])
        consensus, changes, n_frames = [], [], []
        for track in tracks:
            rows = np.flatnonzero(t["track_id"] == track)
            rows = rows[np.argsort(t["frame"][rows])]
            mean = t["probabilities"][rows].mean(axis=0)
            consensus.append(self.class_names[int(np.argmax(mean))])
            labels = t["phenotype"][rows]
            switch = [int(t["frame"][rows][i]) for i in range(1, len(rows)) if labels[i] != labels[i - 1]]
            changes.append(" ".join(map(str, switch)))
            n_frames.append(len(rows))
        return {"track_id": tracks, "consensus": np.array(consensus, dtype=object),
                "change_frames": np.array(changes, dtype=object), "n_frames": np.array(n_frames)}

    def counts_per_frame(self) -> dict[str, np.ndarray]:
        frames = np.unique(self.table["frame"])
        counts = {"frame": frames}
        for name in self.class_names:
            counts[name] = np.array([np.sum((self.table["frame"] == f) & (self.table["phenotype"] == name))
                                     for f in frames])
        return counts

    def rows(self) -> dict[str, np.ndarray]:
        """The table without the probability matrix, for CSV and layer features."""
        return {k: v for k, v in self.table.items() if k != "probabilities"}


def classify_iter(image: np.ndarray, tracked: np.ndarray, classifier: Classifier,
                  channels: list[int] | None = None, batch_size: int = 256
                  ) -> Generator[Progress, None, PhenotypeResult]:
    tracked = np.asarray(tracked)
    stack = tracked if tracked.ndim == 3 else tracked[None]
    image = np.asarray(image)
    image = image if tracked.ndim == 3 else image[None]
    n_frames = stack.shape[0]
    crops_all, rows_all = [], []
    for t in range(n_frames):
        crops, rows = cell_crops(image[t:t + 1], stack[t:t + 1], classifier.crop_size, channels,
                                 getattr(classifier, "crop_mode", "resize"))
        rows["frame"] = rows["frame"] + t
        crops_all.append(crops)
        rows_all.append(rows)
        yield Progress(t + 1, 2 * n_frames, t, n_frames, f"cropping frame {t + 1}/{n_frames}")
    crops = np.concatenate(crops_all)
    probabilities = []
    for start in range(0, max(1, len(crops)), batch_size):  # yield per batch: cancel stays quick
        probabilities.append(classifier.predict(crops[start:start + batch_size], batch_size))
        yield Progress(n_frames + int(n_frames * min(1.0, (start + batch_size) / max(1, len(crops)))),
                       2 * n_frames, n_frames - 1, n_frames, "classifying")
    probabilities = np.concatenate(probabilities) if len(crops) else np.zeros((0, len(classifier.class_names)))
    order = np.argsort(-probabilities, axis=1)
    names = np.array(classifier.class_names, dtype=object)
    table = {k: np.concatenate([r[k] for r in rows_all]) for k in rows_all[0]} if rows_all else {}
    best, second = order[:, 0], order[:, 1] if probabilities.shape[1] > 1 else order[:, 0]
    table.update({
        "phenotype": names[best] if len(best) else np.zeros(0, object),
        "probability": probabilities[np.arange(len(best)), best],
        "runner_up": names[second] if len(second) else np.zeros(0, object),
        "runner_up_probability": probabilities[np.arange(len(second)), second],
        "probabilities": probabilities,
    })
    return PhenotypeResult(table, list(classifier.class_names), {
        "classifier": classifier.path, "classifier_sha256": classifier.sha256, "crop_size": classifier.crop_size,
        "crop_mode": classifier.crop_mode,
        "channels": channels,
    })


def classify_crop_folder(folder, classifier: Classifier, channels: list[int] | None = None) -> dict:
    """Classify loose crop files under ``folder`` (sub-folders or not): a table of file (relative to
    ``folder``), phenotype and probability, one row per crop, sorted by file name."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    crops = [crop_file(path, classifier.crop_size, channels) for path in files]
    probabilities = classifier.predict(np.stack(crops)) if crops else np.zeros((0, 1))
    names = np.array(classifier.class_names, dtype=object)
    return {"file": [str(p.relative_to(folder)) for p in files], "phenotype": list(names[probabilities.argmax(1)]),
            "probability": probabilities.max(1)}

