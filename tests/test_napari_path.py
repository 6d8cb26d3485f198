"""Every manifest contribution, reached through napari itself (menu, dock widgets, samples, open, save)."""
import numpy as np
import pytest
import tifffile

from napari_path import PLUGIN, WIDGETS, open_widget
from synthetic import disc_image

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("key", list(WIDGETS))
def test_every_widget_opens_through_add_plugin_dock_widget(make_napari_viewer, key):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, key)
    assert widget.native.isVisible() or widget.native.parent() is not None
    assert WIDGETS[key] in viewer.window.dock_widgets.keys() or any(
        WIDGETS[key] in name for name in viewer.window.dock_widgets.keys())


def test_every_widget_is_in_the_plugins_menu_and_opens_from_it(make_napari_viewer, qtbot):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    app = get_app_model()
    # napari registers one menu command per manifest widget; triggering it is what a click does
    commands = {cmd.title: cmd_id for cmd_id, cmd in app.commands if cmd_id.startswith(f"{PLUGIN}.")}
    for title in WIDGETS.values():
        matching = [cmd_id for t, cmd_id in commands.items() if t == title]
        assert matching, f"'{title}' is not in the Plugins menu: {sorted(commands)}"
        app.commands.execute_command(matching[0]).result()
    opened = set(viewer.window.dock_widgets.keys())
    for title in WIDGETS.values():
        assert any(title in name for name in opened), f"'{title}' did not open: {opened}"


@pytest.mark.parametrize("key, n_truth", [("small_nuclei", 77), ("dense_nuclei", None), ("large_nuclei", None)])
def test_samples_open_with_the_ground_truth_hidden(make_napari_viewer, key, n_truth):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    image = next(layer for layer in viewer.layers if type(layer).__name__ == "Image")
    truth = next(layer for layer in viewer.layers if type(layer).__name__ == "Labels")
    assert image.visible and not truth.visible  # the image is what a user sees first
    if n_truth is not None:
        assert len(np.unique(truth.data)) - 1 == n_truth


def test_reader_opens_images_and_labels_through_viewer_open(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    image, truth = disc_image((64, 64), n=3)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    tifffile.imwrite(tmp_path / "cells_labels.tif", truth.astype(np.uint16))
    viewer.open(tmp_path / "cells.tif", plugin=PLUGIN)
    viewer.open(tmp_path / "cells_labels.tif", plugin=PLUGIN)
    kinds = [type(layer).__name__ for layer in viewer.layers]
    assert kinds == ["Image", "Labels"]
    assert np.array_equal(viewer.layers[0].data, image) and np.array_equal(viewer.layers[1].data, truth)


def test_writer_saves_labels_and_table_through_layers_save(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    _, truth = disc_image((64, 64), n=3)
    layer = viewer.add_labels(truth.astype(np.uint16), name="cells")
    layer.features = {"label": [1, 2, 3], "score": [0.9, 0.8, 0.7]}
    written = viewer.layers.save(str(tmp_path / "out.tif"), selected=False, plugin=PLUGIN)
    assert any(str(p).endswith(".tif") for p in written) and any(str(p).endswith(".csv") for p in written)
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), truth)


def test_demo_in_a_window_prints_the_headless_summary(qtbot, make_napari_viewer, capsys):
    from napari_cellseg._demo import build_demo
    from napari_cellseg.cli import main

    viewer = make_napari_viewer()
    summaries = []
    build_demo(viewer, "small", model="otsu-watershed", device="cpu", on_scored=summaries.append)
    qtbot.waitUntil(lambda: bool(summaries), timeout=60_000)
    assert main(["demo", "--headless", "--sample", "small", "--model", "otsu-watershed"]) == 0
    headless = capsys.readouterr().out.strip().splitlines()
    in_window = summaries[0].splitlines()
    # the same objects and scores; only the timing differs
    assert in_window[1] == headless[1]
    assert in_window[0].split(" in ")[0] == headless[0].split(" in ")[0]


def _controls(container, path=""):
    """Every value widget (pickers, spin boxes, file pickers, check boxes, combo boxes, labels, tables) and
    PushButton under a magicgui container, into nested containers (ModelChooser, Collapsible bodies), with a
    readable path for each. A FileEdit counts as one control: its line and button show its tooltip."""
    from magicgui.widgets import PushButton
    from magicgui.widgets.bases import BaseContainerWidget, BaseValueWidget

    for child in container:
        name = f"{path}/{getattr(child, 'text', None) or child.label or child.name or type(child).__name__}"
        if isinstance(child, (BaseValueWidget, PushButton)):
            yield name, child
        elif isinstance(child, BaseContainerWidget):
            yield from _controls(child, name)


@pytest.mark.parametrize("key", list(WIDGETS))
def test_every_control_of_every_widget_has_a_tooltip(make_napari_viewer, key):
    from magicgui.widgets import Container

    viewer = make_napari_viewer()
    widget = open_widget(viewer, key)
    assert isinstance(widget, Container)
    controls = list(_controls(widget))
    assert len(controls) >= 3
    missing = [name for name, control in controls if not (control.tooltip or "").strip()]
    assert not missing, f"{WIDGETS[key]}: controls without a tooltip: {missing}"
