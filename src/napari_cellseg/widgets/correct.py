"""The "Correct labels" widget: merge, split, delete, fill, clean, relabel, draw a new cell.

Edits go through napari's undoable ``Labels.data_setitem`` (Ctrl+Z undoes them),
act on the frame on screen, and touch no other layer except the Points layer
that belongs to these labels, which is kept in step with the object table.
"""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

import numpy as np
from magicgui import widgets

from ..core import editing
from ._common import reporting_errors, wrapping
from ._layers import META_KEY


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(";", ",").split(",") if t.strip()]
    except ValueError as exc:
        raise ValueError(f"labels must be whole numbers separated by commas, got '{text}'") from exc


class CorrectWidget(widgets.Container):
    def __init__(self, viewer: napari.viewer.Viewer):

        self._viewer = viewer
        self.labels_layer = widgets.create_widget(
            annotation=napari.layers.Labels, label="labels",
            options={"tooltip": "the Labels layer to correct; edits act on the frame on screen and Ctrl+Z undoes them"})
        self.ids = widgets.LineEdit(label="label ids", value="",
                                    tooltip="label values to act on, comma-separated (e.g. 12, 15); empty: the "
                                            "label selected in the layer's controls (Fill holes: every object)")
        self.min_area = widgets.SpinBox(label="min area (px)", value=20, min=1, max=100000,
                                        tooltip="Remove small deletes objects smaller than this many pixels")
        self.seeds = widgets.create_widget(
            annotation=napari.layers.Points | None, label="split seeds",
            options={"nullable": True, "tooltip": "optional: a Points layer with one point per part for Split "
                                                  "(watershed); empty: the split finds two parts itself"})
        self.line = widgets.create_widget(
            annotation=napari.layers.Shapes | None, label="cut line",
            options={"nullable": True, "tooltip": "a Shapes layer whose last line or path cuts an object for Split "
                                                  "along line"})
        self.status = wrapping(widgets.Label(value="", tooltip="what the last edit did"))
        buttons = {
            "Merge": (self.merge, "merge the given labels into one object (the first id)"),
            "Delete": (self.delete, "delete the given labels (or the selected one)"),
            "Fill holes": (self.fill_holes, "fill the holes inside the given objects (empty ids: every object)"),
            "Remove small": (self.remove_small, "delete every object smaller than min area"),
            "Relabel 1..N": (self.relabel, "renumber the objects 1..N in every frame, without gaps"),
            "Split (watershed)": (self.split, "split the given (or selected) object in two, or at the seed points"),
            "Split along line": (self.split_line, "cut the object the line crosses along the cut line; "
                                                  "enabled once a cut line layer is chosen"),
            "New cell": (self.new_cell, "pick the next free label and switch to painting it"),
        }
        self.buttons = {}
        for text, (action, tip) in buttons.items():
            button = widgets.PushButton(text=text, tooltip=f"{tip}; needs a Labels layer" if text != "Split along line"
                                        else tip)
            button.changed.connect(reporting_errors(action, self.status))
            self.buttons[text] = button
        super().__init__(widgets=[self.labels_layer, self.ids, self.min_area, self.seeds, self.line,
                                  *self.buttons.values(), self.status])
        for picker in (self.labels_layer, self.seeds, self.line):
            viewer.layers.events.inserted.connect(picker.reset_choices)
            viewer.layers.events.removed.connect(picker.reset_choices)
            picker.changed.connect(self.refresh_buttons)
        self.refresh_buttons()

    def refresh_buttons(self, *_) -> None:
        """Every action needs a Labels layer; Split along line also a cut line layer."""
        has_labels = self.labels_layer.value is not None
        for text, button in self.buttons.items():
            button.enabled = has_labels and (text != "Split along line" or self.line.value is not None)

    # -- helpers -------------------------------------------------------------------------------
    def _layer(self):
        layer = self.labels_layer.value
        if layer is None:
            raise ValueError("choose a Labels layer")
        return layer

    def _frame(self, layer) -> tuple[tuple[int, ...], np.ndarray]:
        """Index of the frame on screen and its 2-D labels."""
        n_lead = layer.data.ndim - 2
        step = self._viewer.dims.current_step
        index = tuple(int(i) for i in step[len(step) - layer.data.ndim:][:n_lead]) if n_lead else ()
        return index, np.asarray(layer.data[index])

    def _selected_ids(self, layer) -> list[int]:
        ids = _parse_ids(self.ids.value)
        return ids or [int(layer.selected_label)]

    def _apply(self, layer, index: tuple, edit: editing.Edit) -> None:
        if len(edit):
            full = tuple(np.full(len(edit), i) for i in index) + edit.indices
            layer.data_setitem(full, edit.values)  # undoable
        self.sync_table(layer)
        self.status.value = edit.message or "nothing to change"

    def _to_labels_coords(self, layer, other, points: np.ndarray) -> np.ndarray:
        world = np.array([other.data_to_world(p) for p in points])
        return np.array([layer.world_to_data(w) for w in world])[:, -2:]

    # -- actions -------------------------------------------------------------------------------
    def merge(self):
        layer = self._layer()
        index, frame = self._frame(layer)
        self._apply(layer, index, editing.merge(frame, self._selected_ids(layer)))

    def delete(self):
        layer = self._layer()
        index, frame = self._frame(layer)
        self._apply(layer, index, editing.delete(frame, self._selected_ids(layer)))

    def fill_holes(self):
        layer = self._layer()
        index, frame = self._frame(layer)
        ids = _parse_ids(self.ids.value) or None
        self._apply(layer, index, editing.fill_holes(frame, ids))

    def remove_small(self):
        layer = self._layer()
        index, frame = self._frame(layer)
        self._apply(layer, index, editing.remove_small(frame, self.min_area.value))

    def relabel(self):
        layer = self._layer()
        self._apply(layer, (), editing.relabel_sequential(np.asarray(layer.data)))

    def split(self):
        layer = self._layer()
        index, frame = self._frame(layer)
        label = self._selected_ids(layer)[0]
        seeds = None
        if self.seeds.value is not None and len(self.seeds.value.data):
            seeds = self._to_labels_coords(layer, self.seeds.value, self.seeds.value.data)
        self._apply(layer, index, editing.split_watershed(frame, label, seeds))

    def split_line(self):
        layer = self._layer()
        shapes = self.line.value
        if shapes is None or not len(shapes.data):
            raise ValueError("draw a line in a Shapes layer and choose it as the cut line")
        index, frame = self._frame(layer)
        line = self._to_labels_coords(layer, shapes, shapes.data[-1])
        label = _parse_ids(self.ids.value)
        if not label:  # the object the line crosses most
            rr = np.clip(np.round(line).astype(int), 0, np.array(frame.shape) - 1)
            hits = frame[rr[:, 0], rr[:, 1]]
            label = [int(np.bincount(hits[hits > 0]).argmax())] if (hits > 0).any() else [layer.selected_label]
        self._apply(layer, index, editing.split_by_line(frame, label[0], line))

    def new_cell(self):
        layer = self._layer()
        layer.selected_label = editing.next_free_label(np.asarray(layer.data))
        layer.mode = "paint"
        self.status.value = f"paint the new cell: label {layer.selected_label}"

    # -- keeping the table and the points in step ----------------------------------------------
    def sync_table(self, layer) -> None:
        import pandas as pd

        from ..core.result import concat_tables, object_table

        data = np.asarray(layer.data)
        frames = data.reshape((-1,) + data.shape[-2:])
        table = concat_tables([object_table(f, frame=i) for i, f in enumerate(frames)])
        old = layer.features
        if len(old) and "label" in old:  # keep model scores and classes of surviving objects
            previous = old.set_index("label")
            for column in ("score", "class_id", "class_name"):
                if column in previous:
                    mapped = pd.Series(table["label"]).map(previous[column])
                    table[column] = np.where(mapped.notna(), mapped, table[column])
        layer.features = pd.DataFrame(table)
        points = self._points_of(layer)
        if points is not None:
            lead = np.stack(np.unravel_index(table["frame"], data.shape[:-2]), axis=1) if data.ndim > 2 else None
            yx = np.stack([table["centroid_y"], table["centroid_x"]], axis=1)
            points.data = yx if lead is None else np.concatenate([lead, yx], axis=1)
            points.features = pd.DataFrame(table)

    def _points_of(self, layer):
        meta = layer.metadata.get(META_KEY, {})
        if meta.get("role") != "labels":
            return None
        for other in self._viewer.layers:
            other_meta = other.metadata.get(META_KEY, {})
            if (other_meta.get("role") == "points" and other_meta.get("kind") == meta.get("kind")
                    and other_meta.get("source_layer_id") == meta.get("source_layer_id")):
                return other
        return None
