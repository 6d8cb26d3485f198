import numpy as np
import pytest

from napari_cellseg.widgets._layers import META_KEY

from synthetic import disc_image
from napari_path import open_widget

pytestmark = pytest.mark.gui


@pytest.fixture
def segmented(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    image, truth = disc_image((128, 160), n=8, seed=21)
    viewer.add_image(image, name="cells")
    seg = open_widget(viewer, "segment")
    seg.model.combo.value = "otsu-watershed"
    seg.run()
    qtbot.waitUntil(lambda: seg.worker is None, timeout=30_000)
    labels = next(l for l in viewer.layers if l.metadata.get(META_KEY, {}).get("role") == "labels")
    points = next(l for l in viewer.layers if l.metadata.get(META_KEY, {}).get("role") == "points")
    widget = open_widget(viewer, "correct")
    widget.labels_layer.value = labels
    return viewer, widget, labels, points


def test_merge_is_undoable_and_keeps_points_in_step(segmented):
    viewer, widget, labels, points = segmented
    before = labels.data.copy()
    n = len(points.data)
    widget.ids.value = "1, 2"
    widget.merge()
    assert 2 not in labels.data and (labels.data == 1).sum() == ((before == 1) | (before == 2)).sum()
    assert len(points.data) == n - 1 and len(labels.features) == n - 1
    assert set(points.features["label"]) == set(np.unique(labels.data)) - {0}
    labels.undo()
    assert np.array_equal(labels.data, before)


def test_delete_fill_and_new_cell_touch_only_the_labels(segmented):
    viewer, widget, labels, points = segmented
    image_data = viewer.layers["cells"].data.copy()
    widget.ids.value = "3"
    widget.delete()
    assert 3 not in labels.data
    widget.ids.value = ""
    widget.new_cell()
    assert labels.selected_label == labels.data.max() + 1 and labels.mode == "paint"
    assert np.array_equal(viewer.layers["cells"].data, image_data)


def test_split_along_a_drawn_line(segmented):
    viewer, widget, labels, points = segmented
    target = int(labels.data.max())
    ys, xs = np.nonzero(labels.data == target)
    cx = xs.mean()
    shapes = viewer.add_shapes([np.array([[ys.min() - 2, cx], [ys.max() + 2, cx]])], shape_type="line")
    widget.line.reset_choices()
    widget.line.value = shapes
    widget.ids.value = str(target)
    n = len(points.data)
    widget.split_line()
    assert labels.data.max() == target + 1 and len(points.data) == n + 1


def test_bad_ids_are_reported_not_raised(segmented):
    viewer, widget, labels, points = segmented
    widget.ids.value = "one, two"
    widget.buttons["Merge"].changed.emit(True)
    assert "whole numbers" in widget.status.value
