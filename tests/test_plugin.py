"""The npe2 manifest, reader, writer, sample data, evaluate widget, counting and the demo."""
import csv

import numpy as np
import pytest
import tifffile

from napari_cellseg.widgets._layers import META_KEY

from synthetic import disc_image
from napari_path import open_widget


def test_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-cellseg")
    manifest.validate_imports()
    commands = {c.id for c in manifest.contributions.commands}
    assert {"napari-cellseg.segment_widget", "napari-cellseg.compare_widget", "napari-cellseg.evaluate_widget",
            "napari-cellseg.get_reader", "napari-cellseg.write_labels"} <= commands


def test_reader_opens_images_and_label_images(tmp_path):
    from napari_cellseg._reader import napari_get_reader

    image, truth = disc_image((64, 64), n=3)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    tifffile.imwrite(tmp_path / "cells_labels.tif", truth.astype(np.uint16))
    assert napari_get_reader(str(tmp_path / "cells.png")) is None
    (data, meta, kind), = napari_get_reader(str(tmp_path / "cells.tif"))(str(tmp_path / "cells.tif"))
    assert kind == "image" and np.array_equal(data, image)
    (data, meta, kind), = napari_get_reader(str(tmp_path / "cells_labels.tif"))(str(tmp_path / "cells_labels.tif"))
    assert kind == "labels" and np.array_equal(data, truth)


def test_writer_saves_the_labels_as_edited_with_their_table(tmp_path):
    from napari_cellseg._writer import write_labels

    _, truth = disc_image((64, 64), n=3)
    features = {"label": np.array([1, 2, 3]), "score": np.array([0.9, 0.8, 0.7]),
                "class_id": np.array([0, 0, 0]), "class_name": np.array(["nucleus"] * 3, dtype=object)}
    truth[truth == 2] = 0  # the user deleted object 2
    written = write_labels(str(tmp_path / "out.tif"), truth, {"features": features})
    assert np.array_equal(tifffile.imread(written[0]), truth)
    rows = list(csv.DictReader(open(written[1])))
    assert [r["label"] for r in rows] == ["1", "3"]
    assert [r["score"] for r in rows] == ["0.9", "0.7"] and rows[0]["class_name"] == "nucleus"


@pytest.mark.gui
def test_sample_data_opens_with_ground_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellseg", "small_nuclei")
    kinds = sorted(type(layer).__name__ for layer in viewer.layers)
    assert kinds == ["Image", "Labels"]
    labels = next(layer for layer in viewer.layers if type(layer).__name__ == "Labels")
    assert labels.data.max() == 77


@pytest.mark.gui
def test_evaluate_widget_reports_and_marks_misses(qtbot, make_napari_viewer):

    viewer = make_napari_viewer()
    _, truth = disc_image((96, 96), n=6, seed=3)
    pred = truth.copy()
    pred[pred == 2] = 0
    pred[0:4, 0:4] = 40
    gt_layer = viewer.add_labels(truth, name="truth")
    pred_layer = viewer.add_labels(pred, name="pred")
    widget = open_widget(viewer, "evaluate")
    widget.prediction.value, widget.ground_truth.value = pred_layer, gt_layer
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    metrics = widget.last_metrics
    assert metrics["n_gt"] == 6 and metrics["n_pred"] == 6 and metrics["f1_50"] == pytest.approx(10 / 12)
    assert "F1@0.5 0.833" in widget.metrics.value
    roles = {layer.metadata[META_KEY]["role"]: layer for layer in viewer.layers if META_KEY in layer.metadata}
    assert set(np.unique(roles["false positives"].data)) == {0, 40}
    assert set(np.unique(roles["false negatives"].data)) == {0, 2}
    assert len(widget.plot.lines["F1"][0]) == 10  # one point per IoU threshold


@pytest.mark.gui
def test_stack_counts_per_frame_are_plotted(qtbot, make_napari_viewer):

    viewer = make_napari_viewer()
    frames = [disc_image((96, 96), n=n, seed=n)[0] for n in (2, 4, 6)]
    viewer.add_image(np.stack(frames), name="movie")
    widget = open_widget(viewer, "segment")
    widget.model.combo.value = "otsu-watershed"
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    x, y = widget.counts_plot.lines["objects"]
    assert x == [0, 1, 2] and y == [2, 4, 6]
    points = next(layer for layer in viewer.layers if layer.metadata.get(META_KEY, {}).get("role") == "points")
    assert points.data.shape == (12, 3)  # frame, y, x
    assert sorted(np.bincount(points.features["frame"])) == [2, 4, 6]


@pytest.mark.gui
def test_demo_segments_and_scores_the_sample(qtbot, make_napari_viewer):
    from napari_cellseg._demo import build_demo

    viewer = make_napari_viewer()
    segment, evaluate = build_demo(viewer, "small", model="otsu-watershed", device="cpu")
    qtbot.waitUntil(lambda: evaluate.last_metrics is not None, timeout=60_000)
    assert evaluate.last_metrics["n_gt"] == 77
    assert evaluate.last_metrics["f1_50"] > 0.5


def test_headless_demo_prints_metrics(capsys, tmp_path):
    from napari_cellseg.cli import main

    assert main(["demo", "--headless", "--sample", "small", "--model", "otsu-watershed", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ground truth 77" in out and "F1@0.5" in out
    assert (tmp_path / "dsb2018_fluorescence_small_labels.tif").is_file()
