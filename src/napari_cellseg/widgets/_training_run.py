"""The "Training run" section of Segment cells: what ultralytics wrote beside the chosen checkpoint.

When the chosen model sits in an ultralytics run folder (``runs/detect/train/weights/best.pt``), the
section appears under the model chooser with the training arguments that matter (model, data, epochs,
imgsz, batch ...), the best epoch's precision, recall, mAP50 and mAP50-95 (boxes, and masks for a
segmentation model), the loss and metric curves from ``results.csv`` (in napari's theme, the best epoch
marked) and a chooser over the run's PNG pictures (``results.png``, the F1/PR curves, the confusion
matrix), one of which can be opened as an image layer. For any other model it stays hidden. The folder
is read by ``core.training_run``; this module only shows it.
"""
from __future__ import annotations

from pathlib import Path

from magicgui import widgets

from ._common import notify_error, wrapping
from ._layers import META_KEY
from ._options import Collapsible
from ._plot import theme_colours

PICTURE_ROLE = "training_run_picture"  # layer metadata of a picture opened from the section
PICTURE_MAX_HEIGHT = 260


class TrainingRunPanel(Collapsible):
    """Hidden until ``show_run(TrainingRun)``; ``show_run(None)`` hides it again."""

    def __init__(self, viewer):
        from ._plot import LinePlot

        self._viewer = viewer
        self.run = None
        self.text = wrapping(widgets.Label(value="", tooltip="the training run's folder, arguments and best epoch "
                                                             "(from args.yaml and results.csv)"))
        # a callable: the viewer's reset_choices (on every layer change) re-reads it
        self.picture_choice = widgets.ComboBox(label="picture", choices=lambda _widget: self._pictures(),
                                               tooltip="the pictures ultralytics drew for this run (results.png, "
                                                       "F1 and precision-recall curves, confusion matrix)")
        self.open_picture = widgets.PushButton(text="Open picture as a layer",
                                               tooltip="add the chosen picture to the viewer as an image layer "
                                                       "(once: a second press selects it)")
        super().__init__("Training run", [self.text, self.picture_choice, self.open_picture])
        self.toggle.tooltip = "the ultralytics run this model was trained in: curves, arguments, best epoch"
        self.losses = LinePlot(height_px=170, viewer=viewer)
        self.metrics = LinePlot(height_px=170, viewer=viewer)
        self.picture = _picture_view_class()()
        layout = self.body.native.layout()
        layout.insertWidget(1, self.losses.canvas)
        layout.insertWidget(2, self.metrics.canvas)
        layout.addWidget(self.picture)
        self.picture_choice.changed.connect(self._show_picture)
        self.open_picture.changed.connect(self.add_picture_layer)
        self.visible = False

    def show_run(self, run) -> None:
        """Show ``run`` (a ``core.training_run.TrainingRun``), or hide the section for None."""
        self.run = run
        if run is None:
            self.visible = False
            self.losses.lines.clear()
            self.metrics.lines.clear()
            self.picture_choice.reset_choices()
            self.picture.show_file(None)
            return
        self._title = "Training run" + (f": {run.headline()}" if run.best else "")
        self.set_open(self.opened)
        self.text.value = run.describe()
        self._plot(self.losses, run.loss_columns(), "loss", run)
        self._plot(self.metrics, run.metric_columns(), "metric", run)
        self.picture_choice.reset_choices()
        self.picture_choice.visible = self.open_picture.visible = bool(run.images)
        self._show_picture()
        self.visible = True

    def _pictures(self) -> list[tuple[str, str]]:
        return [(p.name, str(p)) for p in self.run.images] if self.run is not None else []

    @staticmethod
    def _plot(plot, columns: list[str], ylabel: str, run) -> None:
        import math

        shown = [c for c in columns if any(not math.isnan(v) for v in run.columns[c])]
        if not shown:
            plot.lines.clear()
            plot.hide()
            return
        for i, column in enumerate(shown):
            values = run.columns[column]
            plot.show(run.epochs[:len(values)], values, xlabel="epoch", ylabel=ylabel, label=column,
                      title="losses" if ylabel == "loss" else "validation metrics", clear=i == 0)
        best = run.best["epoch"] if run.best and ylabel == "metric" else None
        colours = theme_colours(getattr(plot._viewer, "theme", None))

        def finish(axes):  # short names in a small two-column legend; the best epoch marked
            for line in axes.get_lines():
                line.set_markersize(2)
            if best is not None:
                axes.axvline(best, color=colours["grid"], linestyle=":", linewidth=1)
            handles = [h for h in axes.get_lines() if not h.get_label().startswith("_")]
            legend = axes.legend(handles, [_short(h.get_label()) for h in handles], fontsize=6, ncol=2,
                                 framealpha=0.6, facecolor=colours["background"], edgecolor=colours["grid"])
            for text in legend.get_texts():
                text.set_color(colours["text"])

        plot.decorate(finish)

    def _show_picture(self, *_) -> None:
        self.picture.show_file(self.picture_choice.value)

    def add_picture_layer(self, *_):
        """The chosen picture as an RGB image layer, marked as the plugin's; a picture already open is
        selected, never replaced. Returns the layer (None without a picture)."""
        path = self.picture_choice.value
        if not path:
            return None
        for layer in self._viewer.layers:
            meta = layer.metadata.get(META_KEY, {})
            if meta.get("role") == PICTURE_ROLE and meta.get("path") == str(path):
                self._viewer.layers.selection.active = layer
                return layer
        try:
            import imageio.v3 as iio

            pixels = iio.imread(path)
        except Exception as exc:  # noqa: BLE001 - a broken picture is reported, never a crash
            notify_error(ValueError(f"{Path(path).name} could not be read ({exc})"))
            return None
        if pixels.ndim == 3 and pixels.shape[-1] == 4:
            pixels = pixels[..., :3]
        return self._viewer.add_image(pixels, name=Path(path).stem, rgb=pixels.ndim == 3,
                                      metadata={META_KEY: {"role": PICTURE_ROLE, "path": str(path),
                                                           "run_folder": str(self.run.folder)}})


def _short(column: str) -> str:
    """``train box`` for ``train/box_loss``, ``mAP50-95(B)`` for ``metrics/mAP50-95(B)``."""
    return column.replace("metrics/", "").replace("_loss", "").replace("/", " ")


def _picture_view_class():
    from qtpy.QtCore import Qt
    from qtpy.QtGui import QPixmap
    from qtpy.QtWidgets import QLabel, QSizePolicy

    class PictureView(QLabel):
        """A PNG fitted to the dock's width (at most ``PICTURE_MAX_HEIGHT`` tall), refitted on resize."""

        def __init__(self):
            super().__init__()
            self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            self.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self._pixmap = None

        def show_file(self, path) -> None:
            self._pixmap = None
            self.clear()
            if not path:
                return
            pixmap = QPixmap(str(path))
            if pixmap.isNull():
                self.setText(f"{Path(path).name} could not be read")
                return
            self._pixmap = pixmap
            self._fit()

        def _fit(self) -> None:
            if self._pixmap is not None:
                self.setPixmap(self._pixmap.scaled(max(self.width(), 100), PICTURE_MAX_HEIGHT,
                                                   Qt.AspectRatioMode.KeepAspectRatio,
                                                   Qt.TransformationMode.SmoothTransformation))

        def resizeEvent(self, event):  # noqa: N802 - Qt's name
            super().resizeEvent(event)
            self._fit()

    return PictureView
