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


def _labels(shape, n=3):
    _, truth = disc_image(shape[-2:], n=n)
    return np.broadcast_to(truth, shape).astype(np.int32).copy()


def test_evaluate_runs_only_with_two_labels_layers_of_one_shape(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "evaluate")
    assert not widget.run_button.enabled
    pred = viewer.add_labels(_labels((64, 64)), name="pred")
    other = viewer.add_labels(_labels((32, 32)), name="other size")
    widget.prediction.value, widget.ground_truth.value = pred, other
    assert not widget.run_button.enabled  # shapes differ
    widget.ground_truth.value = viewer.add_labels(_labels((64, 64)), name="truth")
    assert widget.run_button.enabled
    viewer.layers.remove(pred)
    widget.prediction.value = other
    assert not widget.run_button.enabled


def test_track_runs_only_with_a_time_series(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "track")
    assert not widget.run_button.enabled and not widget.save_button.enabled
    viewer.add_labels(_labels((64, 64)), name="one frame")
    assert not widget.run_button.enabled  # 2-D: nothing to track
    widget.labels_layer.value = viewer.add_labels(_labels((3, 64, 64)), name="movie")
    assert widget.run_button.enabled and not widget.save_button.enabled  # nothing tracked yet


def test_measure_and_save_follow_the_labels_and_the_table(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "measure")
    assert not widget.measure_button.enabled and not widget.save_button.enabled
    viewer.add_labels(_labels((64, 64)), name="cells")
    assert widget.measure_button.enabled and not widget.save_button.enabled
    widget.measure_button.changed.emit(True)
    assert widget.columns is not None and widget.save_button.enabled


def test_correct_actions_need_a_labels_layer_and_the_cut_a_line(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "correct")
    assert not any(button.enabled for button in widget.buttons.values())
    viewer.add_labels(_labels((64, 64)), name="cells")
    assert all(button.enabled for text, button in widget.buttons.items() if text != "Split along line")
    assert not widget.buttons["Split along line"].enabled
    widget.line.value = viewer.add_shapes([np.array([[0, 0], [63, 63]])], shape_type="line", name="cut")
    assert widget.buttons["Split along line"].enabled


def test_finetune_runs_only_with_an_image_and_its_labels_or_a_dataset(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "finetune")
    assert widget.model.value  # a shipped model to start from
    assert not widget.run_button.enabled
    image, truth = disc_image((64, 64), n=3)
    widget.image.value = viewer.add_image(image, name="cells")
    assert not widget.run_button.enabled  # no labels yet
    widget.labels_layer.value = viewer.add_labels(_labels((32, 32)), name="other size")
    assert not widget.run_button.enabled
    widget.labels_layer.value = viewer.add_labels(truth.astype(np.int32), name="corrected")
    assert widget.run_button.enabled
    widget.labels_layer.value = None
    widget.dataset.value = str(tmp_path)
    assert not widget.run_button.enabled  # a folder without data.yaml
    (tmp_path / "data.yaml").write_text("path: .\n")
    widget.dataset.value = str(tmp_path / ".")
    widget.refresh_run_button()
    assert widget.run_button.enabled


def test_student_runs_only_with_what_its_mode_needs(make_napari_viewer):
    from napari_cellseg.widgets.student import TRAIN

    viewer = make_napari_viewer()
    widget = open_widget(viewer, "student")
    assert widget.teacher.value and not widget.run_button.enabled
    image, truth = disc_image((64, 64), n=3)
    widget.image.value = viewer.add_image(image, name="cells")
    assert widget.run_button.enabled  # distil: an image and a teacher
    widget.mode.value = TRAIN
    assert not widget.run_button.enabled  # train: labels too
    widget.labels_layer.value = viewer.add_labels(truth.astype(np.int32), name="labels")
    assert widget.run_button.enabled


def test_classify_train_and_save_need_their_inputs(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "classify")
    assert not widget.run_button.enabled and not widget.train_button.enabled and not widget.save_button.enabled
    image, _ = disc_image((64, 64), n=3)
    viewer.add_image(np.stack([image] * 3), name="movie")
    points = viewer.add_points(np.array([[0, 10, 10], [1, 20, 20]]), name="marks")
    widget.train_points.value = points
    assert not widget.train_button.enabled  # no 'phenotype' feature yet
    points.features = {"phenotype": ["a", "b"]}
    assert widget.train_button.enabled


@pytest.mark.parametrize("key, control, name", [
    ("finetune", "out", "cells_finetuned.pt"),
    ("student", "out", "cells_student.pt"),
    ("classify", "train_out", "cells_classifier.pt"),
    ("classify", "csv_dir", None),
])
def test_outputs_default_beside_the_opened_image(make_napari_viewer, tmp_path, monkeypatch, key, control, name):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = tmp_path / "data"
    data.mkdir()
    image, _ = disc_image((64, 64), n=3)
    tifffile.imwrite(data / "cells.tif", image)
    viewer = make_napari_viewer()
    widget = open_widget(viewer, key)
    edit = getattr(widget, control)
    assert str(edit.value).startswith(str(work))  # nothing opened yet: the working folder, not the home root
    opened = viewer.open(data / "cells.tif", plugin=PLUGIN)[0]
    assert opened.source.path is not None
    widget.image.value = opened
    expected = data if name is None else data / name
    assert edit.value == expected
    # a path the user chose stays when the image changes
    mine = tmp_path / "mine" / (name or "")
    edit.value = str(mine)
    widget.image.value = viewer.add_image(image, name="unsaved")
    assert edit.value == mine


@pytest.mark.parametrize("key, name", [("measure", "cells_objects.csv"), ("track", "cells_tracks.csv")])
def test_tables_default_beside_the_opened_labels(make_napari_viewer, tmp_path, monkeypatch, key, name):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "cells_labels.tif", _labels((3, 64, 64)).astype(np.uint16))
    viewer = make_napari_viewer()
    widget = open_widget(viewer, key)
    opened = viewer.open(data / "cells_labels.tif", plugin=PLUGIN)[0]
    widget.labels_layer.value = opened
    assert widget.csv.value == data / name.replace("cells", "cells_labels")
    # labels made from an opened image (our output layers name their source) go beside that image
    tifffile.imwrite(data / "movie.tif", np.zeros((3, 64, 64), np.uint8))
    movie = viewer.open(data / "movie.tif", plugin=PLUGIN)[0]
    made = viewer.add_labels(_labels((3, 64, 64)), name="movie labels",
                             metadata={"napari_cellseg": {"role": "labels", "source_layer_id": movie.unique_id}})
    widget.labels_layer.value = made
    assert widget.csv.value == data / name.replace("cells", "movie")


def test_segment_dock_fits_a_1000_px_screen_and_its_status_wraps(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    widget = open_widget(viewer, "segment")
    dock = widget.native.parentWidget()  # napari's dock widget around ours
    window = viewer.window._qt_window
    assert not widget.advanced.opened
    qtbot.wait(100)
    assert widget.native.sizeHint().height() < 900, widget.native.sizeHint()
    width_before, window_height = dock.width(), window.height()
    widget.status.value = "segmented 123 objects " + "with a rather long explanation of what happened " * 6
    assert len(widget.status.value) >= 300
    qtbot.wait(200)
    assert widget.status.native.wordWrap()
    assert dock.width() <= max(500, width_before), (width_before, dock.width())
    # a word-wrapped label asks for its height at a narrow width: the dock (and the window with it)
    # grew past a 1000 px screen before the label was told to take the dock's width
    assert widget.native.minimumSizeHint().height() < 900, widget.native.minimumSizeHint()
    assert widget.native.sizeHint().height() < 900, widget.native.sizeHint()
    assert window.height() <= max(window_height, 1000), (window_height, window.height())
    assert widget.status.native.width() > 200  # the text uses the dock's width


def test_plots_are_drawn_off_the_gui_thread_in_the_theme(make_napari_viewer, qtbot):
    import threading

    from napari_cellseg.widgets._plot import theme_colours

    viewer = make_napari_viewer(show=True)
    widget = open_widget(viewer, "evaluate")
    qtbot.wait(100)
    assert not widget.plot.canvas.isVisible() and not widget.plot.drawn.is_set()  # nothing drawn for nothing
    truth = _labels((64, 64))
    widget.prediction.value = viewer.add_labels(truth, name="pred")
    widget.ground_truth.value = viewer.add_labels(truth.copy(), name="truth")
    with qtbot.waitSignal(widget.result_shown, timeout=60_000):
        widget.run()
    qtbot.waitUntil(lambda: widget.plot.drawn.is_set() and not widget.plot.canvas.pixmap().isNull(), timeout=20_000)
    assert widget.plot.canvas.isVisible() and widget.plot.lines["F1"][1][0] == 1.0
    assert threading.get_ident() not in widget.plot.drawing_threads
    from qtpy.QtGui import QColor

    def corner():
        return widget.plot.canvas.pixmap().toImage().pixelColor(2, 2).name()

    assert corner() == QColor(theme_colours(viewer.theme)["background"]).name()
    viewer.theme = "light"
    widget.plot.drawn.clear()
    qtbot.waitUntil(lambda: widget.plot.drawn.is_set(), timeout=20_000)
    qtbot.wait(100)
    assert corner() == QColor(theme_colours("light")["background"]).name() != QColor("#000").name()
