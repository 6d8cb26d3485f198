"""Several models as one backend: every member predicts each tile, the instance sets are fused.

The fusion rule is that of :mod:`napari_cellseg.core.fusion` (mask IoU matching, a
majority of members, or ``min_votes``, must agree, masks and scores averaged). A segmentation run
(``pipeline.segment.segment_iter``) runs each member at its own scale and input size and fuses the
label images (``core.fusion.fuse_labels``); ``predict_tile`` fuses the members on one tile, at one scale.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..core.fusion import fuse_detections
from ..core.tiling import TileDetections
from ..core.backend import InferenceSettings, ModelLoadError

NAME = "ensemble"


class EnsembleBackend:
    def __init__(self, members: list, min_votes: int | None = None):
        if len(members) < 2:
            raise ModelLoadError("an ensemble needs at least two models")
        self.members = members
        self.min_votes = min_votes
        self.device = members[0].device
        first = members[0].info
        self.info = replace(
            first, backend=NAME, path=" + ".join(m.info.path for m in members), sha256=None,
            # fed one way: the frame as given / whole only where every member asks for it
            wants_raw_uint8=all(m.info.wants_raw_uint8 for m in members),
            wants_whole_frame=all(m.info.wants_whole_frame for m in members),
            notes=list(dict.fromkeys(n for m in members for n in m.info.notes)),
            extra={"members": [{"backend": m.info.backend, "path": m.info.path, "sha256": m.info.sha256}
                               for m in members], "min_votes": min_votes},
        )

    def begin_frame(self, frame: np.ndarray) -> None:
        for member in self.members:
            if hasattr(member, "begin_frame"):
                member.begin_frame(frame)

    def member_runs(self, tile: np.ndarray, settings: InferenceSettings) -> list[TileDetections]:
        """Every member's instances; members that fed the same way share one preprocessed input,
        and members that give mask probabilities hand those to the fusion."""
        prepared: dict = {}
        runs = []
        for member in self.members:
            if hasattr(member, "prepare") and hasattr(member, "predict_prepared"):
                key = member.preprocess_key(settings)
                if key not in prepared:
                    prepared[key] = member.prepare(tile, settings)
                runs.append(member.predict_prepared(prepared[key], settings, soft=True))
            else:
                runs.append(getattr(member, "predict_tile_soft", member.predict_tile)(tile, settings))
        return runs

    def predict_tile(self, tile: np.ndarray, settings: InferenceSettings) -> TileDetections:
        return fuse_detections(self.member_runs(tile, settings), min_votes=self.min_votes,
                               mask_threshold=settings.mask_threshold)
