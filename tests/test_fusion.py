import numpy as np
import pytest

from napari_cellseg import load_model, segment
from napari_cellseg.core.fusion import fuse_detections, predict_with_flips
from napari_cellseg.core.metrics import matching_stats
from napari_cellseg.core.tiling import TileDetections

from synthetic import disc_image


def _dets(masks, scores):
    return TileDetections(np.asarray(masks, bool), np.asarray(scores, np.float32), np.zeros(len(masks), int))


def _square(y, x, s=8, shape=(32, 32)):
    m = np.zeros(shape, bool)
    m[y:y + s, x:x + s] = True
    return m


def test_majority_vote_keeps_agreed_objects_and_averages_masks():
    a = _dets([_square(2, 2), _square(20, 20)], [0.9, 0.8])
    b = _dets([_square(3, 2)], [0.7])  # same first object, shifted one row; misses the second
    c = _dets([_square(2, 2), _square(20, 2)], [0.6, 0.9])  # a third object only here
    fused = fuse_detections([a, b, c])
    assert len(fused) == 1  # only the first object has 2 of 3 votes
    assert fused.scores[0] == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    expected = (_square(2, 2).astype(int) * 2 + _square(3, 2)) / 3 >= 0.5
    assert np.array_equal(fused.masks[0], expected)
    assert len(fuse_detections([a, b, c], min_votes=1)) == 3


def test_one_run_never_votes_twice_for_a_cluster():
    a = _dets([_square(2, 2), _square(2, 3)], [0.9, 0.8])  # two overlapping detections, one run
    fused = fuse_detections([a, _dets([], [])], min_votes=1)
    assert len(fused) == 2


def test_flips_are_undone():
    model = load_model("otsu-watershed")
    image, truth = disc_image((64, 80), n=5, seed=3, dtype=np.uint8)
    tile = np.repeat(((image > 100) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    model.begin_frame(tile)
    runs = predict_with_flips(model.predict_tile, tile, None)
    union = [r.masks.any(axis=0) for r in runs]
    for u in union[1:]:
        assert np.array_equal(u, union[0])


def test_tta_segmentation_matches_the_truth(tmp_path):
    image, truth = disc_image((128, 128), n=8, seed=6)
    result = segment(image, "otsu-watershed", tta=True)
    assert result.metadata["parameters"]["tta"] is True
    stats = matching_stats(result.labels, truth, thresholds=(0.8,))[0]
    assert stats.tp == truth.max() and stats.fp == 0
