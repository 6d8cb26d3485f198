"""The object diameter sets the inference scale: given by the user, or measured by a first pass."""
import numpy as np
import pytest

from napari_cellseg import load_model, segment
from napari_cellseg.core.metrics import evaluate, matching_stats
from napari_cellseg.pipeline.scale import AUTO_ZOOM_RANGE
from napari_cellseg.core.tiling import tile_grid

from synthetic import disc_image
from tiny_yolo import with_calibration


class RecordingModel:
    """Otsu + watershed with a reference object size; records the zoom of every tile it is handed."""

    def __init__(self, object_diameter: float | None, imgsz: int = 128):
        self._model = load_model("otsu-watershed")
        self.info, self.device = self._model.info, self._model.device
        self.info.object_diameter, self.info.train_imgsz = object_diameter, imgsz
        self.zooms = []

    def begin_frame(self, frame):
        self._model.begin_frame(frame)

    def predict_tile(self, tile, settings):
        self.zooms.append(settings.zoom)
        return self._model.predict_tile(tile, settings)


def _true_median_diameter(labels) -> float:
    areas = np.bincount(labels.ravel())[1:]
    return float(np.sqrt(4 * np.median(areas[areas > 0]) / np.pi))


def _separate_discs():
    """(image, labels, median diameter) of ten separate discs 14-18 px across in 200x240 pixels."""
    image, truth = disc_image((200, 240), n=10, radius=(7, 9), seed=1)
    return image, truth, _true_median_diameter(truth)


def test_a_given_diameter_scales_objects_to_the_models_reference_size():
    image, truth, _ = _separate_discs()
    model = RecordingModel(object_diameter=32)
    result = segment(image, model, diameter=16)  # objects of 16 px shown at 32 px: zoom 2
    parameters = result.metadata["parameters"]
    assert parameters["diameter"] == 16 and parameters["tile"] == 64 and parameters["zoom"] == 2.0
    assert set(model.zooms) == {2.0}
    assert matching_stats(result.labels, truth, thresholds=(0.8,))[0].tp == truth.max()


def test_auto_measures_the_objects_and_segments_again_at_the_scale_they_call_for():
    image, truth, true_diameter = _separate_discs()
    model = RecordingModel(object_diameter=1.5 * true_diameter)
    result = segment(image, model, diameter="auto")
    parameters = result.metadata["parameters"]
    assert parameters["measured_diameter"] == pytest.approx(true_diameter, rel=0.05)
    assert parameters["zoom_factor"] == pytest.approx(1.5, rel=0.05)
    first_pass_tiles = model.zooms.count(1.0)
    assert first_pass_tiles > 0 and set(model.zooms) == {1.0, parameters["zoom"]}
    assert parameters["zoom"] == pytest.approx(1.5, rel=0.05)
    assert matching_stats(result.labels, truth, thresholds=(0.8,))[0].tp == truth.max()


def test_auto_keeps_the_first_pass_when_the_scale_is_already_right_and_stays_within_range():
    image, truth, true_diameter = _separate_discs()
    model = RecordingModel(object_diameter=1.05 * true_diameter)
    result = segment(image, model, diameter="auto")
    assert result.metadata["parameters"]["zoom_factor"] == 1.0 and set(model.zooms) == {1.0}
    plan = result.metadata["parameters"]
    assert len(model.zooms) == len(tile_grid(200, 240, plan["tile"], plan["overlap"]))  # one pass only
    model.zooms.clear()  # with TTA the size is measured on a plain pass, then the four flips run
    segment(image, model, tta=True)
    assert model.zooms == [1.0] * (5 * len(tile_grid(200, 240, plan["tile"], plan["overlap"])))
    huge = RecordingModel(object_diameter=20 * true_diameter)  # would zoom 20x: clipped
    assert segment(image, huge, diameter="auto").metadata["parameters"]["zoom_factor"] == AUTO_ZOOM_RANGE[1]


def test_auto_on_a_stack_measures_the_first_frame_and_segments_every_frame_at_one_scale():
    frames = [disc_image((128, 128), n=6, radius=(7, 9), seed=s) for s in range(3)]
    stack = np.stack([f[0] for f in frames])
    true_diameter = _true_median_diameter(frames[0][1])
    model = RecordingModel(object_diameter=1.5 * true_diameter)
    result = segment(stack, model, diameter="auto")
    plan = result.metadata["parameters"]
    assert result.labels.shape == stack.shape
    assert plan["measured_diameter"] == pytest.approx(true_diameter, rel=0.05) and plan["zoom"] != 1.0
    # the first frame once at the model's scale, then every frame at the new one
    assert model.zooms.count(1.0) == len(tile_grid(128, 128, 128, 32))
    assert model.zooms.count(plan["zoom"]) == 3 * len(tile_grid(128, 128, plan["tile"], plan["overlap"]))
    for f, (_, truth) in enumerate(frames):
        assert matching_stats(result.labels[f] > 0, truth > 0, thresholds=(0.5,))[0].tp == 1


def test_auto_measures_a_large_image_on_a_central_window_only(monkeypatch):
    import napari_cellseg.pipeline.segment as pipeline

    monkeypatch.setattr(pipeline, "MEASURING_SIDE", 96)
    # a grid of equal discs: the 96 px window holds 16 whole ones and cuts 20 more
    centres = [(10 + 20 * i, 10 + 20 * j) for i in range(20) for j in range(20)]
    image, truth = disc_image((400, 400), radius=(8, 8.01), centres=centres, seed=5)
    model = RecordingModel(object_diameter=1.05 * _true_median_diameter(truth))  # the scale stays
    result = segment(image, model, diameter="auto")
    plan = result.metadata["parameters"]
    # discs cut by the window's edges are left out: the size is that of whole ones
    assert plan["measured_diameter"] == pytest.approx(_true_median_diameter(truth), rel=0.02)
    window_tiles, whole_tiles = len(tile_grid(96, 96, 128, 32)), len(tile_grid(400, 400, 128, 32))
    assert len(model.zooms) == window_tiles + whole_tiles  # the window did not stand in for the image
    assert result.labels.shape == image.shape
    assert matching_stats(result.labels, truth, thresholds=(0.8,))[0].tp == truth.max()


def test_auto_with_too_few_objects_stays_at_the_models_scale_and_says_so():
    blank = np.full((96, 96), 100, np.uint16)
    model = RecordingModel(object_diameter=30)
    result = segment(blank, model, diameter="auto")
    assert result.n_objects == 0 and set(model.zooms) == {1.0}
    assert any("too few objects" in w for w in result.warnings)


@pytest.mark.parametrize("diameter", [0, -3, "big", float("nan")])
def test_a_bad_diameter_is_refused(diameter):
    image, _ = disc_image((64, 64), n=3, seed=2)
    with pytest.raises(ValueError, match="diameter must be a positive number"):
        segment(image, RecordingModel(30), diameter=diameter)


def test_a_tile_only_partitions_the_image_and_zoom_with_a_diameter_is_refused():
    image, truth, _ = _separate_discs()
    model = RecordingModel(object_diameter=32)
    whole, tiled = segment(image, model, diameter=16), segment(image, model, diameter=16, tile=64, overlap=24)
    assert whole.metadata["parameters"]["zoom"] == tiled.metadata["parameters"]["zoom"] == 2.0
    assert tiled.metadata["parameters"]["tile"] == 64 and whole.metadata["parameters"]["tile"] == 64
    assert segment(image, model, diameter=16, tile=200).metadata["parameters"]["zoom"] == 2.0  # not 128 / 200
    assert set(model.zooms) == {2.0}
    with pytest.raises(ValueError, match="give one of zoom, native and a diameter"):
        segment(image, model, diameter=10, zoom=2)
    with pytest.raises(ValueError, match="give one of zoom, native and a diameter"):
        segment(image, model, native=True, zoom=2)


def test_a_model_without_a_reference_size_measures_one_once_at_its_default_scale():
    image, truth, true_diameter = _separate_discs()
    model = RecordingModel(None)
    result = segment(image, model, diameter=true_diameter / 2)  # objects said to be half their size
    parameters = result.metadata["parameters"]
    # the first pass, at the model's own scale (1), found objects of their true size: that is the reference
    assert parameters["reference_diameter"] == pytest.approx(true_diameter, rel=0.05)
    assert parameters["zoom"] == pytest.approx(2.0, rel=0.05) and result.summary.scale_source == "diameter"
    assert 1.0 in model.zooms and result.summary.zoom == parameters["zoom"]
    model.zooms.clear()  # measured once: a later run on the same loaded model scales without a first pass
    again = segment(image, model, diameter=true_diameter * 2)
    assert set(model.zooms) == {again.metadata["parameters"]["zoom"]}
    assert again.metadata["parameters"]["zoom"] == pytest.approx(0.5, rel=0.05)
    given = segment(image, RecordingModel(None), diameter=10, model_diameter=30)  # or given
    assert given.metadata["parameters"]["zoom"] == 3.0 and given.summary.reference_diameter == 30


def test_auto_is_the_default_and_a_model_without_a_reference_size_keeps_the_models_scale():
    image, truth, true_diameter = _separate_discs()
    sized = RecordingModel(object_diameter=1.5 * true_diameter)
    auto = segment(image, sized).metadata["parameters"]
    assert auto["zoom_factor"] == pytest.approx(1.5, rel=0.05)
    # a given tile cuts the image differently; the scale stays what the diameter calls for
    assert segment(image, sized, tile=100).metadata["parameters"]["zoom"] == auto["zoom"]
    model = RecordingModel(object_diameter=None)
    parameters = segment(image, model).metadata["parameters"]
    assert parameters["diameter"] is None and "measured_diameter" not in parameters
    assert set(model.zooms) == {parameters["zoom"]} == {1.0} and len(model.zooms) == len(
        tile_grid(200, 240, parameters["tile"], parameters["overlap"]))  # a single pass


def test_a_checkpoints_reference_diameter_is_read(tmp_path, tiny_yolo):
    model = load_model(with_calibration(tiny_yolo, tmp_path / "sized.pt", object_diameter=36.0), device="cpu")
    assert model.info.object_diameter == 36.0 and "object_diameter" not in model.info.extra
    assert load_model(tiny_yolo, device="cpu").info.object_diameter is None
    image, _ = disc_image((128, 128), n=6, seed=4)
    assert segment(image, model, diameter=18, conf=0.01).metadata["parameters"]["zoom"] == 2.0  # 128 / 64


def test_the_default_overlap_holds_an_object_of_the_reference_size_and_segments_alike():
    from napari_cellseg.pipeline.scale import plan_tiling

    assert plan_tiling(RecordingModel(None)).overlap == 128 // 4  # no reference size: a quarter tile
    sized = RecordingModel(object_diameter=20)
    assert plan_tiling(sized).overlap == 24  # 20 px at zoom 1, rounded up to 8
    assert plan_tiling(sized, zoom=2.0).overlap == 16  # 10 px: at least 16
    assert plan_tiling(RecordingModel(object_diameter=60)).overlap == 32  # never more than a quarter tile
    image, truth = disc_image((200, 330), n=24, radius=(7, 9), seed=4)  # 14-18 px across, under 24
    narrow = segment(image, sized, zoom=1.0)
    assert narrow.metadata["parameters"]["overlap"] == 24
    quarter = segment(image, sized, zoom=1.0, overlap=32)
    assert len(tile_grid(200, 330, 128, 24)) == 6 < len(tile_grid(200, 330, 128, 32)) == 8  # fewer tiles
    assert evaluate(narrow.labels, quarter.labels, with_coco=False)["f1_50"] >= 0.99
    assert evaluate(narrow.labels, truth, with_coco=False)["f1_50"] >= 0.95
