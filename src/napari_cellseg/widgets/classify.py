"""The "Classify cells" widget: phenotype per tracked cell per frame, consensus, timeline, counts,
and training from phenotypes assigned to points in the viewer (the CLI's recipe and defaults)."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

from pathlib import Path

import numpy as np
from magicgui import widgets

from ..core.options import ClassifierTrainOptions
from ._options import OptionControls
from ._common import OutputDefault, WorkerWidget, device_choice, full_resolution, layer_file, notify_error
from ._layers import CLASS_COLORS, META_KEY
from ._plot import LinePlot


def _time_axis_first(layers) -> list:
    """Layers with a time axis (3-D and more) before 2-D ones such as a ground-truth frame."""
    return sorted(layers, key=lambda layer: layer.ndim < 3)


def _themed_plot(viewer) -> LinePlot:
    try:
        return LinePlot(viewer=viewer)  # follows napari's theme
    except TypeError:  # a LinePlot without theme support
        return LinePlot()


def _layer_choices(viewer, kind) -> list:
    return [(layer.name, layer) for layer in _time_axis_first([la for la in viewer.layers if isinstance(la, kind)])]


class ClassifyWidget(WorkerWidget):
    def __init__(self, viewer: napari.viewer.Viewer):
        from ..classifier.model import DEFAULT_CLASSES

        self.classifier = None
        self.last_result = None
        self.last_training = None
        self.image = widgets.ComboBox(label="image", choices=lambda _w: _layer_choices(viewer, napari.layers.Image),
                                      tooltip="the movie (T, Y, X) or (T, Y, X, C) whose cells are classified")
        self.tracked = widgets.ComboBox(label="tracked labels", choices=lambda _w: _layer_choices(viewer, napari.layers.Labels),
                                        tooltip="tracked labels of the same shape (label value = track id); "
                                                "layers with a time axis are offered first")
        self.model_file = widgets.FileEdit(label="classifier", mode="r", filter="*.pt *.pth",
                                           tooltip="a classifier trained here or with train-classifier, or "
                                                   "foreign ResNet50 weights (1-channel first convolution)")
        self.class_names = widgets.LineEdit(
            label="class names", value="",
            tooltip="foreign weights only: comma-separated names in the model's output order; empty: the "
                    "names stored in the plugin's checkpoints, or for 8 outputs the seed's order "
                    + ", ".join(DEFAULT_CLASSES))
        self.channel = widgets.SpinBox(label="channel (-1: all)", value=-1, min=-1, max=64,
                                       tooltip="which channel of a multi-channel image the classifier sees; "
                                               "-1: all channels (grey images have one)")
        self.device = device_choice()
        super().__init__(viewer, [self.image, self.tracked, self.model_file, self.class_names, self.channel,
                                  self.device], "Classify")
        self.run_button.tooltip = "classify every tracked cell in every frame; enabled once an image, its " \
                                  "tracked labels and a classifier file are chosen"
        self.track_id = widgets.SpinBox(label="timeline of track", value=0, min=0, max=10**6,
                                        tooltip="the track whose phenotype over time is plotted; 0: the longest")
        self.consensus = widgets.Table(tooltip="per track: consensus phenotype (highest mean probability) and "
                                               "the frames where the per-frame phenotype changes")
        self.counts = widgets.Table(tooltip="cells of each phenotype in each frame")
        self.csv_dir = widgets.FileEdit(label="save CSVs to", mode="d",
                                        tooltip="folder for phenotypes.csv, phenotype_per_track.csv and "
                                                "phenotype_counts.csv; by default the image's folder (else the "
                                                "working folder)")
        self.save_button = widgets.PushButton(text="Save CSVs", enabled=False,
                                              tooltip="write the last result's tables; enabled after a run")
        self.train_points = widgets.create_widget(
            annotation=napari.layers.Points | None, label="train from points", options={"nullable": True, "tooltip":
            "a Points layer whose 'phenotype' feature holds the class of the cell under each point "
                    "(e.g. the phenotypes layer after your corrections); crops are cut from the image "
                    "above, around the tracked cell under each point"})
        # the training options as the CLI's train-classifier defines them (core.options)
        self.train_settings = OptionControls(ClassifierTrainOptions, only=("crop_size", "epochs", "init"))
        self.crop_size, self.train_epochs, self.init = (self.train_settings[name] for name in
                                                        ("crop_size", "epochs", "init"))
        self.train_out = widgets.FileEdit(label="save classifier as", mode="w", filter="*.pt",
                                          tooltip="best epoch here; the last epoch, validation and confusion "
                                                  "CSVs beside it; by default <image>_classifier.pt beside the "
                                                  "image's file (else in the working folder)")
        self.train_button = widgets.PushButton(text="Train from points",
                                               tooltip="train a classifier; a fifth of each class (whole tracks) "
                                                       "is held out and scored in eval mode after every epoch; enabled once an "
                                                       "image and a Points layer with a 'phenotype' feature are chosen")
        self.validation = widgets.Table(tooltip="validation of the last training (eval mode, un-augmented "
                                                "held-out crops): per class recall and the confusion row")
        self.extend([self.track_id, self.csv_dir, self.save_button, self.train_points, self.crop_size,
                     self.train_epochs, self.init, self.train_out, self.train_button, self.consensus, self.counts,
                     self.validation])
        self.plot = _themed_plot(viewer)
        self.native.layout().addWidget(self.plot.canvas)
        self.confusion_plot = _themed_plot(viewer)
        self.native.layout().addWidget(self.confusion_plot.canvas)
        self.track_id.changed.connect(self._plot_timeline)
        self.save_button.changed.connect(self.save_csvs)
        self.train_button.changed.connect(self.train_from_points)
        for picker in (self.image, self.model_file, self.tracked):
            picker.changed.connect(self._refresh_classify_button)
        for picker in (self.image, self.tracked, self.train_points):
            viewer.layers.events.inserted.connect(picker.reset_choices)
            viewer.layers.events.removed.connect(picker.reset_choices)
        viewer.layers.events.inserted.connect(self._refresh_classify_button)
        viewer.layers.events.removed.connect(self._refresh_classify_button)
        image_file = lambda: (self.image.value, layer_file(self.image.value, viewer))  # noqa: E731
        self.train_out_default = OutputDefault(self.train_out, image_file, "_classifier.pt", triggers=(self.image,))
        self.csv_dir_default = OutputDefault(self.csv_dir, image_file, None, triggers=(self.image,))
        for picker in (self.image, self.train_points):
            picker.changed.connect(self._refresh_classify_button)
        self.train_points.changed.connect(self._watch_points)
        self._watched_points = None
        self._watch_points(self.train_points.value)
        self._refresh_classify_button()

    def _watch_points(self, layer) -> None:
        """Train follows the chosen Points layer's features (a 'phenotype' column may come later)."""
        if self._watched_points is not None:
            self._watched_points.events.features.disconnect(self._refresh_classify_button)
        self._watched_points = layer
        if layer is not None:
            layer.events.features.connect(self._refresh_classify_button)

    def train_inputs_ready(self) -> bool:
        points = self.train_points.value
        return self.image.value is not None and points is not None and "phenotype" in points.features

    def inputs_ready(self) -> bool:
        """An image and tracked labels whose frames match it, and an existing classifier file."""
        image, tracked, path = self.image.value, self.tracked.value, str(self.model_file.value or "")
        if image is None or tracked is None or not path or not Path(path).is_file():
            return False
        shape = tuple(image.data.shape if not image.multiscale else image.data[0].shape)
        return tuple(tracked.data.shape) == shape[:tracked.ndim]

    def _refresh_classify_button(self, *_):
        self.run_button.enabled = self.worker is None and self.inputs_ready()
        self.train_button.enabled = self.worker is None and self.train_inputs_ready()

    def _on_finished(self):
        super()._on_finished()
        if self.worker is None:
            self._refresh_classify_button()

    def _channels(self):
        return None if self.channel.value < 0 else [self.channel.value]

    def _names(self):
        return [n.strip() for n in self.class_names.value.split(",") if n.strip()] or None

    def _load(self):
        from ..classifier.model import load_classifier

        path = str(self.model_file.value)
        key = (str(Path(path).resolve()), tuple(self._names() or ()), self.device.value)
        if self.classifier is None or getattr(self, "_classifier_key", None) != key:
            self.classifier = load_classifier(path, device=self.device.value, class_names=self._names())
            self._classifier_key = key
        return self.classifier

    def run(self):
        from ..classifier.predict import classify_iter

        image, tracked = self.image.value, self.tracked.value
        if not self.inputs_ready():
            notify_error(ValueError("choose an image, its tracked labels (same frames) and a classifier file"))
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
        self.save_button.enabled = True
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
        names = list(result.class_names)
        self.plot.decorate(lambda axes: axes.set_yticks(range(len(names)), names, fontsize=6))

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
        from ..classifier.crops import crops_at_points
        from ..classifier.train import train_iter

        points, image, tracked = self.train_points.value, self.image.value, self.tracked.value
        if points is None or image is None or "phenotype" not in points.features:
            notify_error(ValueError("choose an image and a Points layer with a 'phenotype' feature"))
            return
        data = np.asarray(full_resolution(image))
        labels = None if tracked is None else np.asarray(tracked.data)
        if labels is not None and labels.ndim == 2:
            labels = labels[None]
        single_frame = data.ndim == 2 or (labels is not None and data.shape[:2] == labels.shape[1:3])
        stack = data[None] if single_frame else data
        if labels is not None and stack.shape[1:3] != labels.shape[1:3]:
            labels = None  # another image's labels: cut fixed windows around the points
        phenotypes = points.features["phenotype"].astype(str).to_numpy()
        loaded = self.classifier
        names = list(loaded.class_names) if loaded else sorted(set(phenotypes))
        unknown = sorted(set(phenotypes) - set(names))
        if unknown:
            notify_error(ValueError(f"phenotypes not among the classes {names}: {unknown}"))
            return
        size = loaded.crop_size if loaded else self.crop_size.value
        coords = np.asarray(points.data)
        coords = coords if coords.shape[1] == 3 else np.concatenate([np.zeros((len(coords), 1)), coords], axis=1)
        crops, cells = crops_at_points(stack, coords, size, labels, self._channels())
        # a track's frames stay on one side of the validation split; points off any cell stand alone
        tracks = np.array([f"track {c}" if c else f"point {i}" for i, c in enumerate(cells)], dtype=object)
        class_index = np.array([names.index(p) for p in phenotypes])
        out = Path(str(self.train_out.value))
        self._start(train_iter, crops, class_index, names, tracks=tracks, epochs=self.train_epochs.value,
                    init=self.init.value.strip() or "auto", device=self.device.value,
                    on_done=lambda result: self._on_trained(result, out))

    def _on_trained(self, result, out: Path):
        self.last_training = result
        result.save(out)  # the best and last epochs, the history and the validation CSVs
        self.model_file.value = str(out)
        self.classifier = None  # reload from the file on the next run
        message = f"classifier saved to {out.name}; " + "; ".join(result.notes)
        evaluation = result.evaluation
        if evaluation is not None:
            table = {"class": list(evaluation.class_names), "recall": list(np.round(evaluation.recall, 3))}
            table.update({f"-> {n}": evaluation.confusion[:, k].tolist() for k, n in enumerate(evaluation.class_names)})
            self.validation.value = table
            self._plot_confusion(evaluation)
            message += (f"; epoch {result.best_epoch} kept: validation balanced accuracy "
                        f"{evaluation.balanced_accuracy:.2f} (eval mode, {evaluation.n} held-out crops)")
        for warning in result.warnings:
            notify_error(ValueError(warning))
            message += f"; WARNING: {warning}"
        self.status.value = message
        self._refresh_classify_button()

    def _plot_confusion(self, evaluation):
        names = list(evaluation.class_names)
        confusion = np.array(evaluation.confusion)
        recall_names = [f"{n} ({r:.2f})" if np.isfinite(r) else n for n, r in zip(names, evaluation.recall)]
        self.confusion_plot.show([], [], xlabel="predicted", ylabel="true",
                                 title=f"validation: balanced accuracy {evaluation.balanced_accuracy:.2f}")

        def draw(axes):  # in the plot's drawing thread
            axes.imshow(confusion, cmap="Blues")
            for (i, j), value in np.ndenumerate(confusion):
                axes.text(j, i, str(value), ha="center", va="center", fontsize=7, color="black")
            axes.set_xticks(range(len(names)), names, fontsize=6, rotation=45)
            axes.set_yticks(range(len(names)), recall_names, fontsize=6)

        self.confusion_plot.decorate(draw)
