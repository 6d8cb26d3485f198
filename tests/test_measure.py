import csv

import numpy as np
import pytest

from napari_cellseg.core.measure import measure
from napari_path import open_widget


def _square_and_disc():
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 5:15] = 1  # 10 x 10 square
    yy, xx = np.mgrid[:40, :60]
    labels[(yy - 25) ** 2 + (xx - 40) ** 2 <= 64] = 2
    return labels


def test_shape_and_intensity_in_physical_units():
    labels = _square_and_disc()
    intensity = np.zeros((40, 60, 2))
    intensity[..., 0] = 10.0
    intensity[labels == 2, 1] = 5.0
    table = measure(labels, intensity, pixel_size=(0.5, 0.5), unit="um", channel_names=["dapi", "gfp"])
    assert list(table["label"]) == [1, 2]
    assert table["area_um2"][0] == pytest.approx(100 * 0.25)
    assert table["centroid_y"][0] == pytest.approx(9.5 * 0.5)
    assert table["solidity"][0] == pytest.approx(1.0)
    assert table["eccentricity"][1] < 0.3  # a disc
    assert table["mean_dapi"][0] == 10 and table["mean_gfp"][0] == 0 and table["mean_gfp"][1] == 5
    assert table["integrated_gfp"][1] == pytest.approx(5 * (labels == 2).sum())


def test_stack_frames_and_mismatch():
    labels = np.stack([_square_and_disc(), _square_and_disc()[:, ::-1]])
    table = measure(labels)
    assert list(table["frame"]) == [0, 0, 1, 1] and "area_px2" in table
    with pytest.raises(ValueError, match="do not match"):
        measure(labels, np.zeros((2, 10, 10)))


@pytest.mark.gui
def test_measure_widget_features_table_and_csv(make_napari_viewer, tmp_path):

    viewer = make_napari_viewer()
    labels = _square_and_disc()
    viewer.add_image(np.where(labels > 0, 100.0, 1.0), name="dapi", scale=(0.2, 0.2))
    layer = viewer.add_labels(labels, name="cells", scale=(0.2, 0.2), features={"label": [1, 2], "score": [0.9, 0.8]})
    widget = open_widget(viewer, "measure")
    widget.labels_layer.value = layer
    widget.images.value = ["dapi"]
    widget.measure()
    assert list(layer.features["score"]) == [0.9, 0.8]  # model scores kept beside the measurements
    assert layer.features["area_µm2"][0] == pytest.approx(100 * 0.04)
    assert layer.features["mean_dapi"][0] == 100
    widget.csv.value = str(tmp_path / "objects.csv")
    widget.save()
    rows = list(csv.DictReader(open(tmp_path / "objects.csv", encoding="utf-8")))
    assert len(rows) == 2 and rows[1]["label"] == "2"
