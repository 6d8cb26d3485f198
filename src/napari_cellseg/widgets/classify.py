"""The "Classify cells" widget: phenotype per tracked cell per frame, consensus, timeline, counts,
and training from phenotypes assigned to points in the viewer."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

from pathlib import Path

import numpy as np
from magicgui import widgets

from ._common import WorkerWidget, full_resolution, notify_error
from ._layers import CLASS_COLORS, META_KEY
from ._plot import LinePlot


class ClassifyWidget(WorkerWidget):
    def __init__(self, viewer: napari.viewer.Viewer):

        self.classifier = None
        self.last_result = None
        self.image = widgets.create_widget(annotation=napari.layers.Image, label="image")
        self.tracked = widgets.create_widget(annotation=napari.layers.Labels, label="tracked labels")
        self.model_file = widgets.FileEdit(label="classifier", mode="r", filter="*.pt *.pth")
        self.channel = widgets.SpinBox(label="channel (-1: all)", value=-1, min=-1, max=64)
        super().__init__(viewer, [self.image, self.tracked, self.model_file, self.channel], "Classify")
        self.track_id = widgets.SpinBox(label="timeline of track", value=0, min=0, max=10**6,
                                        tooltip="0: the longest track")
        self.consensus = widgets.Table()  # per track
        self.counts = widgets.Table()  # per phenotype per frame
        self.crop_size = widgets.SpinBox(label="crop size (new classifier)", value=40, min=8, max=512)
        self.csv_dir = widgets.FileEdit(label="save CSVs to", mode="d")
        self.save_button = widgets.PushButton(text="Save CSVs")
        self.train_points = widgets.create_widget(annotation=napari.layers.Points | None, label="train from points",
                                                  options={"nullable": True})
        self.train_epochs = widgets.SpinBox(label="epochs", value=5, min=1, max=500)
        self.train_out = widgets.FileEdit(label="save classifier as", mode="w", filter="*.pt",
                                          value=str(Path.home() / "napari-cellseg-classifier.pt"))
        self.train_button = widgets.PushButton(text="Train from points")
        self.extend([self.track_id, self.csv_dir, self.save_button, self.train_points, self.crop_size,
                     self.train_epochs, self.train_out, self.train_button, self.consensus, self.counts])
        self.plot = LinePlot()
        self.native.layout().addWidget(self.plot.canvas)
        self.track_id.changed.connect(self._plot_timeline)
        self.save_button.changed.connect(self.save_csvs)
        self.train_button.changed.connect(self.train_from_points)
        for picker in (self.image, self.tracked, self.train_points):
            viewer.layers.events.inserted.connect(picker.reset_choices)
            viewer.layers.events.removed.connect(picker.reset_choices)

    def _channels(self):
        return None if self.channel.value < 0 else [self.channel.value]

    def _load(self):
        from ..classify.model import load_classifier

        path = str(self.model_file.value)
        if self.classifier is None or self.classifier.path != str(Path(path).resolve()):
            self.classifier = load_classifier(path)
        return self.classifier

    def run(self):
        from ..classify.pipeline import classify_iter

        image, tracked = self.image.value, self.tracked.value
        if image is None or tracked is None:
            notify_error(ValueError("choose an image and its tracked labels"))
            return
        try:
            classifier = self._load()
        except ValueError as exc:
            notify_error(exc)
            return
        self._start(classify_iter, np.asarray(full_resolution(image)), np.asarray(tracked.data), classifier,
                    self._channels(), on_done=lambda result: self._on_done(tracked, result))

    def _on_done(self, tracked, result):
        import pandas as pd

        self.last_result = result
        rows = pd.DataFrame(result.rows())
        coords = np.stack([rows["frame"], rows["centroid_y"], rows["centroid_x"]], axis=1) if len(rows) else \
            np.zeros((0, 3))
        if tracked.data.ndim == 2:
            coords = coords[:, 1:]
        colours = [CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(len(result.class_names))]
        meta = {META_KEY: {"role": "phenotypes", "source_layer_id": tracked.unique_id, **result.metadata}}
        styling = {"face_color": "phenotype", "face_color_cycle": colours} if len(rows) else {}
        rows["phenotype"] = pd.Categorical(rows["phenotype"], categories=result.class_names)
        self._viewer.add_points(coords, features=rows, name=f"{tracked.name} phenotypes", size=6, border_width=0,
                                metadata=meta, scale=tracked.scale, translate=tracked.translate, **styling)
        self.consensus.value = pd.DataFrame(result.per_track()).to_dict("list")
        self.counts.value = pd.DataFrame(result.counts_per_frame()).to_dict("list")
        self.status.value = f"{len(rows)} cells classified in {len(np.unique(rows['frame']))} frames"
        self._plot_timeline()

    def _plot_timeline(self, *_):
        result = self.last_result
        if result is None or not len(result.table["frame"]):
            return
        t = result.table
        track = self.track_id.value
        if not track:
            ids, lengths = np.unique(t["track_id"], return_counts=True)
            track = int(ids[np.argmax(lengths)])
        rows = np.flatnonzero(t["track_id"] == track)
        rows = rows[np.argsort(t["frame"][rows])]
        index = [result.class_names.index(p) for p in t["phenotype"][rows]]
        self.plot.show(t["frame"][rows], index, xlabel="frame", ylabel="phenotype", title=f"track {track}",
                       label="phenotype")
        self.plot.axes.set_yticks(range(len(result.class_names)), result.class_names, fontsize=6)
        self.plot.canvas.draw_idle()

    def save_csvs(self, *_):
        from ..core.io import write_csv

        if self.last_result is None:
            notify_error(ValueError("classify first"))
            return
        folder = Path(str(self.csv_dir.value))
        write_csv(folder / "phenotypes.csv", self.last_result.rows())
        write_csv(folder / "phenotype_per_track.csv", self.last_result.per_track())
        write_csv(folder / "phenotype_counts.csv", self.last_result.counts_per_frame())
        self.status.value = f"saved CSVs in {folder}"

    def train_from_points(self, *_):
        from ..classify.crops import crop_at, normalise_frame
        from ..classify.train import train_iter

        points, image = self.train_points.value, self.image.value
        if points is None or image is None or "phenotype" not in points.features:
            notify_error(ValueError("choose an image and a Points layer with a 'phenotype' feature"))
            return
        data = np.asarray(full_resolution(image))
        stack = data if data.ndim == 3 else data[None]
        phenotypes = points.features["phenotype"].astype(str).to_numpy()
        names = list(self.classifier.class_names) if self.classifier else sorted(set(phenotypes))
        unknown = sorted(set(phenotypes) - set(names))
        if unknown:
            notify_error(ValueError(f"phenotypes not among the classes {names}: {unknown}"))
            return
        size = self.classifier.crop_size if self.classifier else self.crop_size.value
        coords = np.asarray(points.data)
        coords = coords if coords.shape[1] == 3 else np.concatenate([np.zeros((len(coords), 1)), coords], axis=1)
        crops = np.stack([crop_at(normalise_frame(stack[int(t)]), y, x, size)[None] for t, y, x in coords])
        labels = np.array([names.index(p) for p in phenotypes])
        out = Path(str(self.train_out.value))
        self._start(train_iter, crops, labels, names, epochs=self.train_epochs.value,
                    on_done=lambda result: self._on_trained(result, out))

    def _on_trained(self, result, out: Path):
        result.classifier.save(out, history=result.history, notes=result.notes)
        self.model_file.value = str(out)
        self.classifier = None  # reload from the file on the next run
        self.status.value = f"classifier saved to {out.name}; " + "; ".join(result.notes)
