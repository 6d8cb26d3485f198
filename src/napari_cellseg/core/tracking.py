"""Linking per-frame instances into tracks with laptrack (linear assignment problem tracker).

Frame-to-frame links cost the squared centroid distance and are refused beyond
``max_distance`` pixels; a cell missing for up to ``gap_frames`` frames is
reconnected (gap closing); divisions are detected as splits (a new cell close
to an existing one), recorded as parent links. Each track keeps one label value,
its track id (1..N), in every frame.
"""
from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from .progress import Progress


@dataclass
class TrackingResult:
    tracked: np.ndarray  # (T, H, W): label value = track id
    table: dict[str, np.ndarray]  # one row per cell per frame
    parents: dict[int, list[int]] = field(default_factory=dict)  # track id -> parent track ids
    metadata: dict = field(default_factory=dict)

    @property
    def n_tracks(self) -> int:
        return len(np.unique(self.table["track_id"]))

    def napari_tracks(self) -> np.ndarray:
        """(N, 4) rows of track_id, t, y, x for a napari Tracks layer."""
        t = self.table
        return np.stack([t["track_id"], t["frame"], t["centroid_y"], t["centroid_x"]], axis=1).astype(float)

    def track(self, track_id: int) -> dict[str, np.ndarray]:
        rows = self.table["track_id"] == track_id
        return {k: v[rows] for k, v in self.table.items()}


def track_iter(
    labels: np.ndarray, intensity: np.ndarray | None = None, *, max_distance: float = 20.0, gap_frames: int = 1,
    divisions: bool = True,
) -> Generator[Progress, None, TrackingResult]:
    import pandas as pd
    from laptrack import LapTrack
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"tracking needs a time series of label images (T, H, W), got shape {labels.shape}")
    if intensity is not None and np.shape(intensity) != labels.shape:
        raise ValueError(f"intensity image {np.shape(intensity)} does not match the labels {labels.shape}")
    n_frames = labels.shape[0]
    total = n_frames * 2 + 1
    rows = []
    for f in range(n_frames):
        props = regionprops_table(labels[f], intensity_image=None if intensity is None else np.asarray(intensity[f]),
                                  properties=("label", "centroid", "area")
                                  + (("intensity_mean",) if intensity is not None else ()))
        frame = pd.DataFrame(props).rename(columns={"centroid-0": "y", "centroid-1": "x"})
        frame["frame"] = f
        rows.append(frame)
        yield Progress(f + 1, total, f, n_frames, f"measuring frame {f + 1}/{n_frames}")
    cells = pd.concat(rows, ignore_index=True)
    if cells.empty:
        raise ValueError("the label images hold no objects to track")
    cutoff = float(max_distance) ** 2
    tracker = LapTrack(
        metric="sqeuclidean", cutoff=cutoff,
        gap_closing_cutoff=cutoff if gap_frames > 0 else False, gap_closing_max_frame_count=gap_frames + 1,  # laptrack counts the frame step, not the missing frames
        splitting_cutoff=cutoff if divisions else False, merging_cutoff=False,
    )
    yield Progress(n_frames, total, n_frames - 1, n_frames, "linking")
    track_df, split_df, _ = tracker.predict_dataframe(cells, coordinate_cols=["y", "x"], frame_col="frame",
                                                      only_coordinate_cols=False)
    track_df = track_df.reset_index(drop=True)
    track_df["track_id"] = track_df["track_id"].astype(int) + 1  # 0 stays background
    parents: dict[int, list[int]] = {}
    for _, row in split_df.iterrows():
        parents.setdefault(int(row["child_track_id"]) + 1, []).append(int(row["parent_track_id"]) + 1)

    tracked = np.zeros(labels.shape, np.int32)
    for f in range(n_frames):
        in_frame = track_df[track_df["frame"] == f]
        lut = np.zeros(int(labels[f].max()) + 1, np.int32)
        lut[in_frame["label"].to_numpy(int)] = in_frame["track_id"].to_numpy(int)
        tracked[f] = lut[labels[f]]
        yield Progress(n_frames + 1 + f, total, f, n_frames, f"relabelling frame {f + 1}/{n_frames}")
    track_df = track_df.sort_values(["track_id", "frame"])
    table = {
        "track_id": track_df["track_id"].to_numpy(np.int64),
        "frame": track_df["frame"].to_numpy(np.int64),
        "label": track_df["label"].to_numpy(np.int64),
        "centroid_y": track_df["y"].to_numpy(float),
        "centroid_x": track_df["x"].to_numpy(float),
        "area": track_df["area"].to_numpy(float),
        "parent": np.array([parents.get(int(t), [0])[0] for t in track_df["track_id"]], np.int64),
    }
    if intensity is not None:
        table["mean_intensity"] = track_df["intensity_mean"].to_numpy(float)
    return TrackingResult(tracked, table, parents, {
        "max_distance": max_distance, "gap_frames": gap_frames, "divisions": divisions, "tracker": "laptrack",
    })
