"""The "Measure objects" widget: regionprops per object as layer features, a table, and CSV."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

import numpy as np
from magicgui import widgets

from ._common import OutputDefault, full_resolution, layer_file, reporting_errors, wrapping


class MeasureWidget(widgets.Container):
    def __init__(self, viewer: napari.viewer.Viewer):

        self._viewer = viewer
        self.labels_layer = widgets.create_widget(
            annotation=napari.layers.Labels, label="labels",
            options={"tooltip": "the Labels layer whose objects are measured (area, shape, centroid, ...)"})
        self.images = widgets.Select(label="intensity images", choices=self._image_names, allow_multiple=True,
                                     tooltip="optional: image layers of the same size whose mean, min and max "
                                             "intensity per object are added; none chosen: shape only")
        self.unit = widgets.LineEdit(label="unit", value="µm",
                                     tooltip="the unit of the labels layer's scale (lengths and areas are given in "
                                             "it); a layer without a scale is measured in pixels")
        self.measure_button = widgets.PushButton(text="Measure", tooltip="measure every object into the table and "
                                                 "the layer's features; enabled once a Labels layer is chosen")
        self.csv = widgets.FileEdit(label="CSV", mode="w", filter="*.csv",
                                    tooltip="where the table goes; by default beside the labels' file (else the "
                                            "working folder)")
        self.save_button = widgets.PushButton(text="Save CSV", enabled=False,
                                              tooltip="write the measured table; enabled after Measure")
        self.table = widgets.Table(tooltip="one row per object, as measured")
        self.status = wrapping(widgets.Label(value="", tooltip="what the last action did"))
        super().__init__(widgets=[self.labels_layer, self.images, self.unit, self.measure_button, self.csv,
                                  self.save_button, self.status, self.table])
        self.measure_button.changed.connect(reporting_errors(self.measure, self.status))
        self.save_button.changed.connect(reporting_errors(self.save, self.status))
        self.columns: dict | None = None
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.labels_layer.reset_choices)
            event.connect(self.images.reset_choices)
        self.csv_default = OutputDefault(
            self.csv, lambda: (self.labels_layer.value, layer_file(self.labels_layer.value, viewer)),
            "_objects.csv", triggers=(self.labels_layer,))
        self.labels_layer.changed.connect(self.refresh_buttons)
        self.refresh_buttons()

    def refresh_buttons(self, *_) -> None:
        """Measure needs a Labels layer; Save a table measured from the chosen layer."""
        self.measure_button.enabled = self.labels_layer.value is not None
        self.save_button.enabled = self.columns is not None and self.labels_layer.value is self._measured_layer

    _measured_layer = None

    def _image_names(self, *_):
        return [layer.name for layer in self._viewer.layers if type(layer).__name__ == "Image"]

    def measure(self):
        import pandas as pd

        from ..core.measure import measure

        layer = self.labels_layer.value
        if layer is None:
            raise ValueError("choose a Labels layer")
        layers = [self._viewer.layers[name] for name in self.images.value]
        intensity = None
        if layers:
            arrays = [np.asarray(full_resolution(im)) for im in layers]
            for image, array in zip(layers, arrays):
                if array.shape[: layer.data.ndim] != layer.data.shape:
                    raise ValueError(f"'{image.name}' {array.shape} does not match the labels {layer.data.shape}")
            intensity = np.stack([a if a.ndim == layer.data.ndim else a.mean(axis=-1) for a in arrays], axis=-1)
        scale = tuple(layer.scale[-2:])
        has_scale = not np.allclose(scale, 1.0)
        self.columns = measure(np.asarray(layer.data), intensity, pixel_size=scale if has_scale else None,
                               unit=self.unit.value if has_scale else "px",
                               channel_names=[im.name for im in layers])
        table = pd.DataFrame(self.columns)
        old = layer.features
        if len(old) and "label" in old:  # keep model scores and classes next to the measurements
            keep = [c for c in ("score", "class_id", "class_name") if c in old]
            table = table.merge(old[["label", *keep]].drop_duplicates("label"), on="label", how="left")
        layer.features = table
        self.table.value = table.round(3).to_dict("list")
        self._measured_layer = layer
        self.refresh_buttons()
        self.status.value = f"{len(table)} objects measured"

    def save(self):
        from ..core.io import write_csv

        if self.columns is None:
            raise ValueError("measure first")
        path = str(self.csv.value)
        if not path or path == ".":
            raise ValueError("choose a CSV file")
        write_csv(path, {k: list(v) for k, v in self.labels_layer.value.features.items()})
        self.status.value = f"saved {path}"
