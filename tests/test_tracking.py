import csv

import numpy as np
import pytest
import tifffile

from napari_cellseg.cli import main
from napari_cellseg.pipeline.segment import run
from napari_cellseg.core.tracking import track_iter
from napari_path import open_widget


def _drifting(n_frames=5, missing=(2, 2)):
    """Three discs moving right by 4 px per frame with shuffled ids; disc 2 is missing in one frame."""
    labels = np.zeros((n_frames, 60, 80), np.int32)
    yy, xx = np.mgrid[:60, :80]
    rng = np.random.default_rng(0)
    for t in range(n_frames):
        ids = rng.permutation([1, 2, 3]) + 10
        for k, (cy, cx) in enumerate([(15, 10), (30, 20), (45, 10)]):
            if (k, t) == missing:
                continue
            labels[t][(yy - cy) ** 2 + (xx - cx - 4 * t) ** 2 < 25] = ids[k]
    return labels


def _ids_along(tracked, centres, step=4):
    return [[int(tracked[t][cy, cx + step * t]) for t in range(len(tracked))] for cy, cx in centres]


def test_ids_are_consistent_across_frames_and_gaps_are_closed():
    labels = _drifting()
    result = run(track_iter(labels, max_distance=10, gap_frames=1))
    paths = _ids_along(result.tracked, [(15, 10), (30, 20), (45, 10)])
    assert len(set(paths[0])) == 1 and len(set(paths[1])) == 1
    assert set(paths[2]) - {0} == {paths[2][0]} and paths[2][2] == 0  # reconnected after the gap
    assert result.n_tracks == 3 and sorted(set(result.table["track_id"])) == [1, 2, 3]
    without_gap = run(track_iter(labels, max_distance=10, gap_frames=0))
    assert without_gap.n_tracks == 4


def test_max_distance_is_respected():
    labels = _drifting(missing=(9, 9))
    assert run(track_iter(labels, max_distance=3, gap_frames=0)).n_tracks == 3 * 5  # 4 px moves refused


def test_division_is_recorded_as_a_parent_link():
    labels = np.zeros((4, 60, 60), np.int32)
    yy, xx = np.mgrid[:60, :60]
    for t in range(2):
        labels[t][(yy - 30) ** 2 + (xx - 30) ** 2 < 36] = 1
    for t in range(2, 4):  # two daughters next to where the mother was
        labels[t][(yy - 30) ** 2 + (xx - 26) ** 2 < 16] = 1
        labels[t][(yy - 30) ** 2 + (xx - 34) ** 2 < 16] = 2
    result = run(track_iter(labels, max_distance=10, divisions=True))
    assert len(result.parents) == 2
    (mother,) = {p[0] for p in result.parents.values()}
    assert result.tracked[0][30, 30] == mother
    assert set(result.table["parent"][result.table["frame"] == 3]) == {mother}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="time series"):
        run(track_iter(np.zeros((10, 10), np.int32)))
    with pytest.raises(ValueError, match="no objects"):
        run(track_iter(np.zeros((3, 10, 10), np.int32)))


def test_track_cli_writes_tracked_stack_and_csv(tmp_path, capsys):
    labels = _drifting()
    tifffile.imwrite(tmp_path / "movie_labels.tif", labels.astype(np.uint16))
    assert main(["track", str(tmp_path / "movie_labels.tif"), "--out", str(tmp_path), "--max-distance", "10"]) == 0
    tracked = tifffile.imread(tmp_path / "movie_tracked.tif")
    assert tracked.shape == labels.shape
    rows = list(csv.DictReader(open(tmp_path / "movie_tracks.csv")))
    assert {"track_id", "frame", "centroid_y", "centroid_x", "area", "parent"} <= set(rows[0])
    assert len(rows) == 14  # 3 cells x 5 frames, one missing


@pytest.mark.gui
def test_track_widget_adds_tracks_and_plots_size(qtbot, make_napari_viewer, tmp_path):

    viewer = make_napari_viewer()
    layer = viewer.add_labels(_drifting(), name="movie")
    widget = open_widget(viewer, "track")
    widget.labels_layer.value = layer
    widget.max_distance.value = 10
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    kinds = [type(l).__name__ for l in viewer.layers]
    assert kinds == ["Labels", "Labels", "Tracks"]
    tracks = viewer.layers[-1]
    assert len(np.unique(tracks.data[:, 0])) == 3
    frames, areas = widget.plot.lines["area"]
    assert frames == [0, 1, 2, 3, 4] and all(a > 60 for a in areas)
    widget.csv.value = str(tmp_path / "tracks.csv")
    widget.save_csv()
    assert len((tmp_path / "tracks.csv").read_text().splitlines()) == 1 + 14


@pytest.mark.realdata
def test_baby_yeast_time_series_ids_are_recovered(shared_data):
    from napari_cellseg.core.io import read_image

    folder = shared_data / "baby-yeast"
    truth = np.stack([read_image(folder / f"evolve_testG_tp{t}_labels.png") for t in range(1, 6)]).astype(np.int32)
    rng = np.random.default_rng(1)
    shuffled = np.zeros_like(truth)
    for t in range(len(truth)):  # forget the ids: each frame numbered independently
        ids = np.unique(truth[t][truth[t] > 0])
        lut = np.zeros(truth.max() + 1, np.int32)
        lut[ids] = rng.permutation(len(ids)) + 1
        shuffled[t] = lut[truth[t]]
    result = run(track_iter(shuffled, max_distance=15, gap_frames=1))
    for cell in np.unique(truth[truth > 0]):
        track_ids = set(np.unique(result.tracked[truth == cell])) - {0}
        assert len(track_ids) == 1, f"cell {cell} spread over tracks {track_ids}"
    assert result.n_tracks == len(np.unique(truth[truth > 0]))
