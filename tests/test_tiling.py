import numpy as np
import pytest

from napari_cellseg import load_model, segment
from napari_cellseg.core.metrics import matching_stats
from napari_cellseg.core.tiling import InstanceStitcher, Tile, TileDetections, tile_grid

from synthetic import disc_image


def test_tile_grid_covers_the_image_with_the_requested_overlap():
    tiles = tile_grid(300, 500, 128, 32)
    covered = np.zeros((300, 500), int)
    for t in tiles:
        covered[t.slices] += 1
        assert t.shape[0] <= 128 and t.shape[1] <= 128
    assert covered.min() >= 1
    xs = sorted({t.x0 for t in tiles})
    assert all(b - a <= 128 - 32 for a, b in zip(xs, xs[1:]))
    assert tile_grid(50, 60, 128, 32) == [Tile(0, 0, 50, 60)]
    with pytest.raises(ValueError):
        tile_grid(100, 100, 64, 64)


def _detections(masks):
    masks = np.asarray(masks, bool)
    return TileDetections(masks, np.linspace(0.9, 0.5, len(masks)).astype(np.float32), np.zeros(len(masks), int))


def test_object_cut_by_a_tile_border_is_merged_once():
    stitcher = InstanceStitcher(20, 40)
    whole = np.zeros((20, 40), bool)
    whole[5:15, 12:28] = True  # spans the shared strip x in [16, 24)
    left, right = Tile(0, 0, 20, 24), Tile(0, 16, 20, 40)
    stitcher.add(left, _detections([whole[left.slices]]))
    stitcher.add(right, _detections([whole[right.slices]]))
    labels, scores, _ = stitcher.finish()
    assert labels.max() == 1
    assert np.array_equal(labels > 0, whole)


def test_neighbours_across_a_border_stay_separate():
    stitcher = InstanceStitcher(20, 40)
    a = np.zeros((20, 40), bool)
    a[5:15, 10:19] = True
    b = np.zeros((20, 40), bool)
    b[5:15, 19:28] = True  # touches a inside the shared strip
    left, right = Tile(0, 0, 20, 24), Tile(0, 16, 20, 40)
    stitcher.add(left, _detections([a[left.slices], b[left.slices]]))
    stitcher.add(right, _detections([a[right.slices], b[right.slices]]))
    labels, _, _ = stitcher.finish()
    assert labels.max() == 2
    assert len(np.unique(labels[a])) == 1 and len(np.unique(labels[b])) == 1
    assert labels[a][0] != labels[b][0]


def test_overlapping_detections_in_one_tile_never_share_pixels():
    stitcher = InstanceStitcher(30, 30)
    m1 = np.zeros((30, 30), bool)
    m1[5:20, 5:20] = True
    m2 = np.zeros((30, 30), bool)
    m2[10:25, 10:25] = True
    stitcher.add(Tile(0, 0, 30, 30), _detections([m1, m2]))
    labels, scores, _ = stitcher.finish()
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.all(labels[m1] == 1)  # the higher score keeps the contested pixels
    assert scores[1] > scores[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discs_on_tile_borders_are_stitched_like_a_whole_image_run(seed):
    model = load_model("otsu-watershed")
    tile, overlap = 96, 24
    # centres placed right on the tile seams (step 72) and their crossings
    centres = [(72, 72), (72, 144), (144, 72), (144, 144), (36, 72), (72, 36), (200, 144), (144, 210)]
    image, truth = disc_image((240, 260), seed=seed, centres=centres, radius=(9, 14))
    tiled = segment(image, model, tile=tile, overlap=overlap)
    whole = segment(image, model, tile=512)
    assert tiled.n_objects == whole.n_objects == truth.max()
    stats = matching_stats(tiled.labels, truth, thresholds=(0.9,))[0]
    assert stats.tp == truth.max() and stats.fp == 0


def test_mask_erosion_peels_boundaries_and_keeps_ids_sequential():
    stitcher = InstanceStitcher(30, 30)
    big = np.zeros((30, 30), bool)
    big[5:15, 5:15] = True
    speck = np.zeros((30, 30), bool)
    speck[20:22, 20:22] = True  # vanishes under a 1-pixel erosion
    stitcher.add(Tile(0, 0, 30, 30), _detections([speck, big]))
    labels, scores, _ = stitcher.finish(erode=1)
    assert set(np.unique(labels)) == {0, 1} and (labels == 1).sum() == 8 * 8
    assert list(scores) == [1]


def test_pipeline_uses_the_models_erosion_unless_overridden():
    model = load_model("otsu-watershed")
    image, truth = disc_image((96, 96), n=4, seed=4)
    plain = segment(image, model)
    model.info.mask_erosion = 1
    calibrated = segment(image, model)
    assert calibrated.metadata["parameters"]["mask_erosion"] == 1
    assert (calibrated.labels > 0).sum() < (plain.labels > 0).sum()
    assert (segment(image, model, mask_erosion=0).labels > 0).sum() == (plain.labels > 0).sum()
