"""What a backend is handed (frames as given, whole frames) and what a run keeps of its predictions
(instances before overlap resolution, load notes in the warnings). Fast: a recording stand-in backend."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from napari_cellseg.core.backend import ModelInfo
from napari_cellseg.core.normalize import raw_uint8_ranges, apply_ranges
from napari_cellseg.core.tiling import InstanceStitcher, Tile, TileDetections, crop_rle
from napari_cellseg.pipeline.scale import WHOLE_FRAME_MAX_SIDE
from napari_cellseg.pipeline.segment import run, segment_iter


class Recorder:
    """Returns two overlapping square instances per call, and keeps every tile it was handed."""

    def __init__(self, raw: bool, whole: bool, notes=()):
        self.info = ModelInfo(backend="test", path="recorder", sha256=None, task="segment", class_names={0: "cell"},
                              train_imgsz=64, wants_raw_uint8=raw, wants_whole_frame=whole, notes=list(notes))
        self.device = "cpu"
        self.tiles = []

    def predict_tile(self, tile, settings):
        self.tiles.append(tile.copy())
        h, w = tile.shape[:2]
        masks = np.zeros((3, h, w), bool)
        masks[0, 4:20, 4:20] = True  # the best
        masks[1, 10:26, 10:26] = True  # overlaps the first
        masks[2, 6:12, 6:12] = True  # nested inside the first: loses every pixel in the labels
        boxes = np.array([[4, 4, 20, 20], [10, 10, 26, 26], [6, 6, 12, 12]], np.float32)
        return TileDetections(masks, np.array([0.9, 0.8, 0.7], np.float32), np.zeros(3, np.int64), boxes)


def _image(dtype=np.uint8, shape=(150, 170)):
    rng = np.random.default_rng(0)
    return (rng.random(shape) * 200 + 20).astype(dtype)


def test_raw_uint8_model_gets_the_pixels_as_given_and_the_whole_frame():
    image = _image()
    model = Recorder(raw=True, whole=True)
    result = run(segment_iter(image, model, conf=0.05))
    assert len(model.tiles) == 1 and model.tiles[0].shape == (150, 170, 3)
    assert np.array_equal(model.tiles[0][..., 0], image)  # no percentile stretch
    assert result.metadata["parameters"]["whole_frame"] and result.warnings == []


def test_other_models_keep_the_stretch_and_the_tiles():
    image = _image()
    model = Recorder(raw=False, whole=False)
    run(segment_iter(image, model, conf=0.05))
    assert len(model.tiles) > 1  # 64-pixel tiles
    from napari_cellseg.core.normalize import normalize_to_uint8

    stretched = normalize_to_uint8(image)[:64, :64]  # by percentiles
    assert np.array_equal(model.tiles[0][..., 0], stretched) and not np.array_equal(stretched, image[:64, :64])


def test_a_given_tile_or_a_huge_frame_is_tiled_even_for_whole_frame_models():
    model = Recorder(raw=True, whole=True)
    run(segment_iter(_image(), model, conf=0.05, tile=64))
    assert len(model.tiles) > 1
    from napari_cellseg.core.normalize import ImageLayout
    from napari_cellseg.pipeline.scale import plan_tiling, whole_frame_plan

    tiny = run(segment_iter(_image(shape=(9, 12)), Recorder(raw=True, whole=True), conf=0.05))
    assert tiny.metadata["parameters"]["whole_frame"]
    big = ImageLayout((), WHOLE_FRAME_MAX_SIDE + 1, 10, 1)
    assert whole_frame_plan(model, big, plan_tiling(model), None) is None
    fits = ImageLayout((), WHOLE_FRAME_MAX_SIDE, 10, 1)
    assert whole_frame_plan(model, fits, plan_tiling(model), None).tile == WHOLE_FRAME_MAX_SIDE


def test_raw_uint8_ranges_rules():
    assert raw_uint8_ranges(_image()[..., None]) == ([(0.0, 255.0)], None)
    wide = _image(np.uint16)[..., None]  # 8-bit values in a 16-bit array: as given
    assert raw_uint8_ranges(wide) == ([(0.0, 255.0)], None)
    unit = (_image().astype(np.float32) / 255)[..., None]
    ranges, note = raw_uint8_ranges(unit)
    assert ranges == [(0.0, 1.0)] and note is None
    assert np.abs(apply_ranges(unit, ranges).astype(int) - _image()[..., None]).max() <= 1
    twelve_bit = (_image(np.uint16).astype(np.uint16) * 16)[..., None]
    ranges, note = raw_uint8_ranges(twelve_bit)
    assert ranges[0][1] > 255 and "stretched to uint8" in note


def test_a_stretched_16_bit_frame_and_the_models_notes_are_in_the_warnings():
    model = Recorder(raw=True, whole=True, notes=["recorder: no config.yaml beside the checkpoint"])
    result = run(segment_iter(_image(np.uint16) * 16, model, conf=0.05))
    assert result.warnings[0] == "recorder: no config.yaml beside the checkpoint"
    assert any("uint16" in w and "stretched" in w for w in result.warnings)
    assert result.summary.warnings == result.warnings
    assert "no config.yaml" in result.describe()


def test_instances_keep_what_the_model_predicted_and_labels_resolve_overlaps():
    model = Recorder(raw=True, whole=True)
    result = run(segment_iter(_image(), model, conf=0.05))
    assert result.n_objects == 2 and len(result.instances) == 3
    masks = [mask_utils.decode(i["segmentation"]).astype(bool) for i in result.instances]
    assert [int(m.sum()) for m in masks] == [256, 256, 36]  # whole, overlaps kept
    assert (masks[0] & masks[1]).sum() == 100
    assert [i["box"] for i in result.instances] == [[4, 4, 20, 20], [10, 10, 26, 26], [6, 6, 12, 12]]
    assert [i["label"] for i in result.instances][2] == 0  # nested: in no label, still exported
    first, second = (result.labels == result.instances[k]["label"] for k in (0, 1))
    assert first.sum() == 256 and second.sum() == 256 - 100  # the label image gives overlaps to the best

    from napari_cellseg.core.submission import coco_instances

    coco = coco_instances([("img", result.labels, result.objects, result.instances)])
    assert len(coco["annotations"]) == 3
    assert [a["bbox"] for a in coco["annotations"]] == [[4, 4, 16, 16], [10, 10, 16, 16], [6, 6, 6, 6]]
    assert [a["area"] for a in coco["annotations"]] == [256, 256, 36]


def test_an_object_joined_over_tiles_is_one_instance_with_the_union():
    stitcher = InstanceStitcher(40, 60)
    left, right = Tile(0, 0, 40, 36), Tile(0, 24, 40, 60)
    a = np.zeros((1, 40, 36), bool)
    a[0, 10:20, 20:36] = True  # cut by the left tile's right edge
    b = np.zeros((1, 40, 36), bool)
    b[0, 10:20, 0:16] = True  # the same object seen whole from the right tile (columns 24..40)
    stitcher.add(left, TileDetections(a, np.array([0.6], np.float32), np.zeros(1, np.int64),
                                      np.array([[20, 10, 36, 20]], np.float32)))
    stitcher.add(right, TileDetections(b, np.array([0.7], np.float32), np.zeros(1, np.int64),
                                       np.array([[0, 10, 16, 20]], np.float32)))
    labels, scores, _ = stitcher.finish()
    assert labels.max() == 1 and len(stitcher.instances) == 1
    (joined,) = stitcher.instances
    assert joined.label == 1 and joined.score == pytest.approx(0.7) and joined.box == (20.0, 10.0, 40.0, 20.0)
    assert np.array_equal(mask_utils.decode(joined.rle(40, 60)).astype(bool), labels == 1)


def test_crop_rle_equals_pycocotools_encode_of_the_full_frame():
    rng = np.random.default_rng(1)
    for _ in range(200):
        height, width = rng.integers(1, 30, 2)
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        crop = rng.random((rng.integers(0, height - y0 + 1), rng.integers(0, width - x0 + 1))) < rng.random()
        full = np.zeros((height, width), np.uint8)
        full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        assert crop_rle(crop, y0, x0, height, width)["counts"] == mask_utils.encode(np.asfortranarray(full))[
            "counts"].decode()


def test_a_frame_too_large_for_one_piece_is_tiled_and_said():
    model = Recorder(raw=True, whole=True)
    result = run(segment_iter(_image(shape=(20, WHOLE_FRAME_MAX_SIDE + 1)), model, conf=0.05))
    assert len(model.tiles) > 1 and not result.metadata["parameters"]["whole_frame"]
    assert any(f"larger than {WHOLE_FRAME_MAX_SIDE} pixels a side are tiled" in w for w in result.warnings)
