"""Open the plugin's contributions the way a napari user does: through napari's own plugin loading."""
from __future__ import annotations

PLUGIN = "napari-cellseg"

# the manifest's widget display names, as the Plugins menu lists them
WIDGETS = {
    "segment": "Segment cells",
    "compare": "Compare models",
    "evaluate": "Evaluate against ground truth",
    "correct": "Correct labels",
    "finetune": "Fine-tune a model",
    "student": "Train U-Net student",
    "measure": "Measure objects",
    "track": "Track cells",
    "classify": "Classify cells",
}


def open_widget(viewer, key: str):
    """The dock widget napari itself builds from the manifest (``add_plugin_dock_widget``)."""
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGETS[key])
    return widget


def run_and_wait(qtbot, widget, timeout: int = 60_000) -> None:
    """Press a widget's Run, check a worker started, and wait for it to finish."""
    widget.run()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)
