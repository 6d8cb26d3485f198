"""Pieces shared by the widgets: model choice, cached loading, worker wiring."""
from __future__ import annotations

import os
from pathlib import Path

from magicgui import widgets

from ..backends import available_models
from ..backends.base import DEVICES
from ..core.recent import recent_models, remember_model


class ModelChooser(widgets.Container):
    """A combo box of shipped and recent models plus a file chooser that adds to it."""

    def __init__(self, label: str = "model", **kwargs):
        self.combo = widgets.ComboBox(label=label, choices=self._choices())
        self.file = widgets.FileEdit(label="model file", mode="r", filter="*.pt *.pth *.pkl")
        super().__init__(widgets=[self.combo, self.file], labels=True, **kwargs)
        self.file.changed.connect(self._on_file)

    @staticmethod
    def _choices() -> list[str]:
        return available_models() + recent_models()

    def _on_file(self, value):
        path = Path(value)
        if not path.is_file():
            return
        remember_model(path)
        self.combo.choices = self._choices()
        self.combo.value = str(path.resolve())

    @property
    def value(self) -> str | None:
        return self.combo.value

    @value.setter
    def value(self, path) -> None:
        self._on_file(path)


class ModelCache:
    """Models loaded in worker threads, kept for re-runs (per widget, not global)."""

    def __init__(self):
        self._models: dict = {}

    def get(self, model: str, device: str):
        from ..backends import load_model

        try:
            stamp = os.stat(model).st_mtime_ns
        except OSError:
            stamp = None  # a shipped name or a built-in
        key = (model, device, stamp)
        if key not in self._models:
            self._models.clear()  # one model resident at a time keeps memory bounded
            self._models[key] = load_model(model, device=device)
        return self._models[key]


def device_choice() -> widgets.ComboBox:
    return widgets.ComboBox(label="device", choices=list(DEVICES), value="auto")


def notify_error(exc: BaseException) -> None:
    from napari.utils.notifications import show_error

    show_error(f"napari-cellseg: {exc}")
