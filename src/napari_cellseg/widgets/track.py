"""The "Track cells" widget: tracks from a labelled time series, a Tracks layer, and a size plot."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

import numpy as np
from magicgui import widgets

from ._common import OutputDefault, WorkerWidget, full_resolution, layer_file, notify_error
from ._layers import META_KEY
from ._plot import LinePlot


class TrackWidget(WorkerWidget):
    def __init__(self, viewer: napari.viewer.Viewer):

        self.last_result = None
        self.labels_layer = widgets.create_widget(
            annotation=napari.layers.Labels, label="labels (T,Y,X)",
            options={"tooltip": "a labelled time series (frames, rows, columns), e.g. Segment cells on a movie"})
        self.intensity = widgets.create_widget(
            annotation=napari.layers.Image | None, label="intensity",
            options={"nullable": True, "tooltip": "optional: an image of the same frames whose mean intensity per "
                                                  "object goes into the table; empty: none"})
        self.max_distance = widgets.FloatSpinBox(
            label="max move (px)", value=20.0, min=1.0, max=1000.0,
            tooltip="the farthest a cell's centroid may move between two frames, in pixels")
        self.gap = widgets.SpinBox(label="gap closing (frames)", value=1, min=0, max=20,
                                   tooltip="frames a cell may go missing and still keep its track; 0: no gaps")
        self.divisions = widgets.CheckBox(label="detect divisions", value=True,
                                          tooltip="link two daughters to their mother's track (a parent in the "
                                                  "Tracks layer's graph)")
        self.track_id = widgets.SpinBox(label="plot track", value=0, min=0, max=10**6,
                                        tooltip="0: the longest track")
        super().__init__(viewer, [self.labels_layer, self.intensity, self.max_distance, self.gap, self.divisions],
                         "Track")
        self.run_button.tooltip = "link the objects of every frame into tracks; enabled once a Labels layer " \
                                  "with a time axis (T, Y, X) is chosen"
        self.csv = widgets.FileEdit(label="tracks CSV", mode="w", filter="*.csv",
                                    tooltip="where the per-object track table goes; by default beside the "
                                            "labels' file (else the working folder)")
        self.save_button = widgets.PushButton(text="Save tracks CSV", enabled=False,
                                              tooltip="write the last tracking result's table; enabled after a run")
        self.extend([self.track_id, self.csv, self.save_button])
        self.csv_default = OutputDefault(
            self.csv, lambda: (self.labels_layer.value, layer_file(self.labels_layer.value, viewer)),
            "_tracks.csv", triggers=(self.labels_layer,))
        self.save_button.changed.connect(self.save_csv)
        self.plot = LinePlot(viewer=viewer)
        self.native.layout().addWidget(self.plot.canvas)
        self.track_id.changed.connect(self._plot_track)
        for picker in (self.labels_layer, self.intensity):
            viewer.layers.events.inserted.connect(picker.reset_choices)
            viewer.layers.events.removed.connect(picker.reset_choices)
        self.labels_layer.changed.connect(self.refresh_run_button)
        self.refresh_run_button()

    def inputs_ready(self) -> bool:
        layer = self.labels_layer.value
        return layer is not None and layer.data.ndim == 3

    def run(self):
        from ..core.tracking import track_iter

        layer = self.labels_layer.value
        if layer is None or layer.data.ndim != 3:
            notify_error(ValueError("choose a Labels layer holding a time series (T, Y, X)"))
            return
        intensity = None if self.intensity.value is None else np.asarray(full_resolution(self.intensity.value))
        self._start(track_iter, np.asarray(layer.data), intensity, max_distance=self.max_distance.value,
                    gap_frames=self.gap.value, divisions=self.divisions.value,
                    on_done=lambda result: self._on_done(layer, result))

    def _on_done(self, layer, result):
        import pandas as pd

        self.last_result = result
        features = pd.DataFrame(result.table)
        meta = {META_KEY: {"role": "tracked", "source_layer_id": layer.unique_id, **result.metadata}}
        per_track = features.groupby("track_id").agg(
            first_frame=("frame", "min"), last_frame=("frame", "max"), n_frames=("frame", "size"),
            mean_area=("area", "mean"), parent=("parent", "first"),
        ).reset_index().rename(columns={"track_id": "label"})
        self._viewer.add_labels(result.tracked, name=f"{layer.name} tracked", metadata=meta, features=per_track,
                                scale=layer.scale, translate=layer.translate)
        self._viewer.add_tracks(result.napari_tracks(), graph=result.parents, features=features,
                                name=f"{layer.name} tracks", metadata=meta, scale=layer.scale,
                                translate=layer.translate)
        self.save_button.enabled = True
        self.status.value = f"{result.n_tracks} tracks, {len(result.parents)} divisions"
        self._plot_track()

    def save_csv(self, *_):
        from ..core.io import write_csv

        path = str(self.csv.value)
        if self.last_result is None or not path or path == ".":
            notify_error(ValueError("track first, then choose a CSV file"))
            return
        write_csv(path, self.last_result.table)
        self.status.value = f"saved {path}"

    def _plot_track(self, *_):
        result = self.last_result
        if result is None:
            return
        track_id = self.track_id.value
        if not track_id:  # the longest track
            ids, lengths = np.unique(result.table["track_id"], return_counts=True)
            track_id = int(ids[np.argmax(lengths)])
        rows = result.track(track_id)
        self.plot.show(rows["frame"], rows["area"], xlabel="frame", ylabel="area (px)",
                       title=f"track {track_id}", label="area")
