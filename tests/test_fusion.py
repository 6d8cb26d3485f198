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


def test_ensemble_of_two_models_fuses_their_instances(tiny_yolo):
    from napari_cellseg.backends import ModelLoadError
    from napari_cellseg.backends.ensemble import EnsembleBackend

    image, truth = disc_image((160, 160), n=10, seed=8)
    classical = load_model("otsu-watershed")
    ensemble = load_model(["otsu-watershed", "otsu-watershed"])
    assert isinstance(ensemble, EnsembleBackend) and len(ensemble.info.extra["members"]) == 2
    alone, both = segment(image, classical, tile=96), segment(image, ensemble, tile=96)
    assert both.n_objects == alone.n_objects == truth.max()  # identical members agree on everything
    assert both.metadata["model"]["backend"] == "ensemble"
    mixed = load_model(["otsu-watershed", tiny_yolo], device="cpu")
    result = segment(image, mixed, tile=96, conf=0.01)
    assert result.n_objects <= alone.n_objects  # only objects both members found survive the majority vote
    with pytest.raises(ModelLoadError, match="at least two"):
        EnsembleBackend([classical])


def test_ensemble_cli_records_every_member(tmp_path, tiny_yolo):
    import json

    import tifffile

    from napari_cellseg.cli import main

    tifffile.imwrite(tmp_path / "a.tif", disc_image((96, 96), n=4)[0])
    assert main(["segment", str(tmp_path / "a.tif"), "--model", "otsu-watershed", "--model", str(tiny_yolo),
                 "--out", str(tmp_path), "-q", "--conf", "0.01"]) == 0
    provenance = json.loads((tmp_path / "a_provenance.json").read_text())
    members = provenance["model"]["extra"]["members"]
    assert [m["backend"] for m in members] == ["classical", "yolo"] and len(members[1]["sha256"]) == 64


def test_mask_probabilities_are_averaged_where_binary_votes_would_tie():
    # four runs see one square; along its last two columns two runs say 0.7 and two say 0.1
    certain = _square(4, 4, s=8).astype(np.float32)
    rim = np.zeros((32, 32), np.float32)
    rim[4:12, 12:14] = 1
    high, low = certain + 0.7 * rim, certain + 0.1 * rim
    runs = [TileDetections(m[None], np.array([0.9], np.float32), np.zeros(1, int)) for m in (high, high, low, low)]
    fused = fuse_detections(runs)
    assert np.array_equal(fused.masks[0], certain.astype(bool))  # mean 0.4: out
    # as binary masks the rim has two votes of four, which the 0.5 threshold keeps
    votes = fuse_detections([_dets([m >= 0.5], [0.9]) for m in (high, high, low, low)])
    assert votes.masks[0][4:12, 12:14].all()


def test_a_lower_mask_threshold_takes_in_what_the_mean_probability_reaches():
    certain = _square(4, 4, s=8).astype(np.float32)
    rim = np.zeros((32, 32), np.float32)
    rim[4:12, 12:14] = 1
    runs = [TileDetections(m[None], np.array([0.9], np.float32), np.zeros(1, int))
            for m in (certain + 0.7 * rim, certain + 0.7 * rim, certain + 0.1 * rim, certain + 0.1 * rim)]
    assert fuse_detections(runs, mask_threshold=0.35).masks[0][4:12, 12:14].all()  # mean 0.4
    assert not fuse_detections(runs, mask_threshold=0.5).masks[0][4:12, 12:14].any()


def test_label_images_fuse_by_the_same_rule_with_min_votes():
    from napari_cellseg.core.fusion import fuse_labels

    a, b = np.zeros((40, 60), np.int32), np.zeros((40, 60), np.int32)
    a[5:15, 5:15] = 1  # found by both, shifted by one pixel
    b[6:16, 5:15] = 1
    a[20:30, 30:40] = 2  # found by a only
    b[25:35, 45:55] = 2  # found by b only
    scores = [{1: 0.9, 2: 0.8}, {1: 0.7, 2: 0.6}]
    classes = [{1: 0, 2: 0}, {1: 0, 2: 0}]
    both, both_scores, _ = fuse_labels([a, b], scores, classes, min_votes=2)
    assert both.max() == 1 and both_scores[1] == pytest.approx(0.8)
    assert np.array_equal(both == 1, (a == 1) | (b == 1))  # the mean of two masks at >= 0.5: their union
    either, either_scores, _ = fuse_labels([a, b], scores, classes, min_votes=1)
    assert either.max() == 3 and sorted(either_scores.values()) == pytest.approx([0.3, 0.4, 0.8])
    assert fuse_labels([a, b], scores, classes)[0].max() == 1  # default: a majority, 2 of 2
