"""A user's own ultralytics checkpoint: one scale rule, measured against ultralytics' own ``model.predict``.

The checkpoint is trained here by ultralytics, with its defaults (each image letterboxed to imgsz), on
generated images of mixed sizes; the plugin's default for it must score at least what
``model.predict(img, imgsz=<train imgsz>, max_det=1000, retina_masks=True)`` scores.
"""
import json
import numpy as np
import pytest
import tifffile

from napari_cellseg import load_model, segment
from napari_cellseg.cli import main
from napari_cellseg.core.metrics import agreement, iou_matrix, match_pairs, matching_stats

from synthetic import disc_image
from tiny_yolo import FOREIGN_SIZES, foreign_disc_image, train_foreign_yolo

TRAIN_IMGSZ = 160


@pytest.fixture(scope="session")
def foreign_yolo(tmp_path_factory):
    """A YOLO11n-seg trained by ultralytics at imgsz 160 on 192x256 and 320x240 images, once per session."""
    return train_foreign_yolo(tmp_path_factory.mktemp("foreign_yolo"), imgsz=TRAIN_IMGSZ)


@pytest.fixture(scope="session")
def foreign_yolo_128(tmp_path_factory):
    """A second one, trained at imgsz 128: an ensemble member with another input size."""
    return train_foreign_yolo(tmp_path_factory.mktemp("foreign_yolo_128"), imgsz=128, epochs=8)


@pytest.fixture(scope="session")
def foreign_model(foreign_yolo):
    return load_model(foreign_yolo, device="cpu")


@pytest.fixture(scope="session")
def held_out():
    """Images like the training ones, never seen in training."""
    return [foreign_disc_image(FOREIGN_SIZES[i % 2], seed=900 + i) for i in range(12)]


def ultralytics_labels(checkpoint, rgb: np.ndarray, imgsz: int) -> np.ndarray:
    """Instance labels from ultralytics' own predict: masks painted in descending score onto free pixels,
    leftovers under 4 pixels (a duplicate under a higher-scoring mask) dropped, as the plugin's stitcher does."""
    from ultralytics import YOLO

    result = YOLO(str(checkpoint)).predict(rgb[..., ::-1].copy(), imgsz=imgsz, max_det=1000, retina_masks=True,
                                          device="cpu", verbose=False)[0]
    labels = np.zeros(rgb.shape[:2], np.int32)
    if result.masks is None:
        return labels
    masks = result.masks.data.cpu().numpy() > 0.5
    for i in np.argsort(-result.boxes.conf.cpu().numpy()):
        free = masks[i] & (labels == 0)
        if free.sum() >= 4:
            labels[free] = labels.max() + 1
    return labels


def scores(pairs) -> dict:
    stats = [matching_stats(pred, truth, thresholds=(0.5,))[0] for pred, truth in pairs]
    return {"f1": float(np.mean([s.f1 for s in stats])),
            "count_error": float(np.mean([abs(s.fp - s.fn) for s in stats]))}


def test_a_foreign_checkpoint_loads_with_ultralytics_predict_geometry_as_its_default(foreign_model):
    info = foreign_model.info
    assert info.train_imgsz == TRAIN_IMGSZ and info.letterbox and info.object_diameter is None
    rgb, _ = foreign_disc_image((320, 240), seed=1)
    result = segment(rgb, foreign_model)
    assert result.summary.scale_source == "predict" and result.summary.zoom == TRAIN_IMGSZ / 320
    assert result.summary.tile == 320  # one pass over the whole image
    assert "ultralytics' predict geometry" in result.describe()
    assert result.metadata["parameters"]["zoom"] == result.summary.zoom  # the provenance file has it too


def test_the_default_scores_at_least_what_ultralytics_predict_scores(foreign_yolo, foreign_model, held_out):
    plugin = [(segment(rgb, foreign_model).labels, truth) for rgb, truth in held_out]
    reference = [(ultralytics_labels(foreign_yolo, rgb, TRAIN_IMGSZ), truth) for rgb, truth in held_out]
    ours, theirs = scores(plugin), scores(reference)
    assert theirs["f1"] > 0.6  # the reference itself segments these images
    assert ours["f1"] >= theirs["f1"] - 0.01, (ours, theirs)
    assert ours["count_error"] <= theirs["count_error"] + 0.5, (ours, theirs)


def test_on_an_image_at_imgsz_the_default_gives_ultralytics_instances(foreign_yolo, foreign_model):
    # discs the size the model saw in training (radius 8-14 px at scales 0.5-0.625), at scale 1: no resizing
    rgb = np.ascontiguousarray(np.repeat(disc_image((TRAIN_IMGSZ, TRAIN_IMGSZ), n=10, radius=(5, 8), seed=77,
                                                    dtype=np.uint8)[0][..., None], 3, axis=-1))
    ours, theirs = segment(rgb, foreign_model).labels, ultralytics_labels(foreign_yolo, rgb, TRAIN_IMGSZ)
    assert theirs.max() >= 5
    assert agreement(ours, theirs)["f1"] >= 0.95
    iou, _, _ = iou_matrix(ours, theirs)
    rows, cols = match_pairs(iou, 0.5)
    assert np.median(iou[rows, cols]) >= 0.85


def test_tiles_of_256_512_and_1024_px_at_one_scale_agree(foreign_model):
    image, truth = disc_image((1100, 1300), n=260, radius=(9, 16), seed=11, dtype=np.uint8)
    results = {tile: segment(image, foreign_model, zoom=0.625, tile=tile) for tile in (256, 512, 1024)}
    assert {r.summary.zoom for r in results.values()} == {0.625}  # the tile never changes the scale
    assert matching_stats(results[1024].labels, truth, thresholds=(0.5,))[0].f1 > 0.8
    for tile in (256, 512):
        assert agreement(results[tile].labels, results[1024].labels)["f1"] >= 0.97, tile


def test_a_diameter_sets_the_scale_of_a_foreign_checkpoint(tmp_path, foreign_yolo, capsys):
    rgb, _ = foreign_disc_image((320, 240), seed=5)
    tifffile.imwrite(tmp_path / "cells.tif", rgb)
    zooms = {}
    for diameter in ("16", "32"):
        out = tmp_path / diameter
        assert main(["segment", str(tmp_path / "cells.tif"), "--model", str(foreign_yolo), "--out", str(out),
                     "--diameter", diameter, "--device", "cpu", "-q"]) == 0
        parameters = json.loads((out / "cells_provenance.json").read_text())["parameters"]
        assert parameters["scale_source"] == "diameter" and parameters["reference_diameter_measured"]
        # the reference: the objects' size at the model's default scale, measured in a first pass
        assert parameters["reference_diameter"] == pytest.approx(
            parameters["measured_diameter"] * TRAIN_IMGSZ / 320)
        zooms[diameter] = parameters["zoom"]
    assert zooms["16"] == pytest.approx(2 * zooms["32"])  # the scale follows the diameter
    out = tmp_path / "given"
    assert main(["segment", str(tmp_path / "cells.tif"), "--model", str(foreign_yolo), "--out", str(out),
                 "--diameter", "20", "--model-diameter", "10", "--device", "cpu"]) == 0
    assert json.loads((out / "cells_provenance.json").read_text())["parameters"]["zoom"] == 0.5
    assert "objects (scale 0.5 (from the diameter)) ->" in capsys.readouterr().out  # the CLI summary says it


def test_a_huge_image_says_how_much_cells_shrink_and_what_to_set(foreign_model):
    image, _ = disc_image((1200, 1600), n=150, radius=(8, 12), seed=3, dtype=np.uint8)
    result = segment(image, foreign_model)
    assert result.summary.zoom == TRAIN_IMGSZ / 1600
    [warning] = [w for w in result.warnings if "shrink" in w]
    assert "10.0x" in warning and "--native" in warning and "--diameter" in warning
    assert warning in result.describe()
    native = segment(image[:400, :400], foreign_model, native=True)
    assert native.summary.zoom == 1.0 and not any("shrink" in w for w in native.warnings)


def test_ensemble_members_run_at_their_own_scales_and_min_agree_is_a_parameter(foreign_yolo, foreign_yolo_128,
                                                                               held_out):
    rgb, truth = held_out[1]  # 320 x 240
    members = [load_model(foreign_yolo, device="cpu"), load_model(foreign_yolo_128, device="cpu")]
    alone = [segment(rgb, m) for m in members]
    assert [r.summary.zoom for r in alone] == [TRAIN_IMGSZ / 320, 128 / 320]
    ensemble = load_model([str(foreign_yolo), str(foreign_yolo_128)], device="cpu")
    both = segment(rgb, ensemble, min_agree=2)
    either = segment(rgb, ensemble, min_agree=1)
    assert [m["zoom"] for m in both.summary.members] == [TRAIN_IMGSZ / 320, 128 / 320]  # each its own
    assert [m["imgsz"] for m in both.metadata["parameters"]["members"]] == [TRAIN_IMGSZ, 128]
    assert both.summary.min_agree == 2 and "2 of 2 agree" in both.describe()
    # 2 of 2 keeps the objects both found; 1 of 2 those either found
    assert both.n_objects <= min(r.n_objects for r in alone) <= max(r.n_objects for r in alone) <= either.n_objects
    for r in alone:
        assert agreement(both.labels, r.labels)["matched"] == both.n_objects
    assert segment(rgb, ensemble).summary.min_agree == 2  # a majority of two
    with pytest.raises(ValueError, match="min_agree"):
        segment(rgb, ensemble, min_agree=3)
