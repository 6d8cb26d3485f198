import numpy as np
import pytest

from napari_cellseg import load_model, segment, segment_iter
from napari_cellseg.backends import ModelLoadError
from napari_cellseg.pipeline.segment import plan_tiling, run

from synthetic import disc_image
from tiny_yolo import with_calibration


def test_tiny_model_loads_with_its_training_size(tiny_yolo_model):
    info = tiny_yolo_model.info
    assert info.backend == "yolo" and info.task == "segment"
    assert info.train_imgsz == 128  # read from the checkpoint's train_args
    assert info.class_names == {0: "nucleus"}
    assert len(info.sha256) == 64
    plan = plan_tiling(tiny_yolo_model)
    assert (plan.imgsz, plan.tile, plan.zoom) == (128, 128, 1.0)
    plan = plan_tiling(tiny_yolo_model, imgsz=256)
    assert plan.tile == 256  # user override keeps full resolution


def test_full_path_on_a_16bit_image_larger_than_a_tile(tiny_yolo_model):
    image, truth = disc_image((200, 300), n=20, radius=(7, 12), seed=3, dtype=np.uint16)
    assert image.max() > 255  # would be crushed by a plain 8-bit cast
    result = segment(image, tiny_yolo_model, conf=0.01, native=True)  # full resolution: tiles of 128 px
    assert result.labels.shape == image.shape and result.labels.dtype == np.int32
    assert result.n_objects > 0
    ids = np.unique(result.labels)
    assert np.array_equal(ids[ids > 0], np.arange(1, result.n_objects + 1))  # 1..N, no gaps
    table = result.objects
    assert np.array_equal(table["label"], np.arange(1, result.n_objects + 1))
    assert np.all((table["score"] >= 0.01) & (table["score"] <= 1))
    assert set(table["class_name"]) == {"nucleus"}
    assert result.metadata["parameters"]["tile"] == 128 and result.summary.zoom == 1.0
    assert result.summary.scale_source == "native"
    assert result.metadata["model"]["sha256"] == tiny_yolo_model.info.sha256


def test_a_checkpoints_calibrated_score_threshold_is_the_default(tmp_path, tiny_yolo):
    model = load_model(with_calibration(tiny_yolo, tmp_path / "calibrated.pt", conf=0.3), device="cpu")
    assert model.info.conf == 0.3 and "conf" not in model.info.extra
    assert load_model(tiny_yolo, device="cpu").info.conf == 0.25  # a checkpoint without one

    handed = []  # the threshold the backend is given for each tile
    predict_tile = model.predict_tile
    model.predict_tile = lambda tile, settings: handed.append(settings.conf) or predict_tile(tile, settings)
    image, _ = disc_image((200, 300), n=20, radius=(7, 12), seed=3)
    assert segment(image, model).metadata["parameters"]["conf"] == 0.3
    assert handed and set(handed) == {0.3}
    handed.clear()
    assert segment(image, model, conf=0.01).metadata["parameters"]["conf"] == 0.01  # an explicit value wins
    assert set(handed) == {0.01}
    # without a TTA calibration a TTA run uses the plain one
    assert model.info.conf_tta is None and model.info.default_conf(tta=True) == 0.3


def test_a_tta_calibration_is_stored_apart_and_used_only_by_tta_runs(tmp_path, tiny_yolo):
    import shutil

    from napari_cellseg.yolo.train import store_calibration

    path = shutil.copy(tiny_yolo, tmp_path / "tta.pt")
    store_calibration(path, {"conf": 0.4, "tta": True, "f1_50_by_conf": {0.4: 1.0}, "images": ["a"]})
    model = load_model(path, device="cpu")
    assert (model.info.conf, model.info.conf_tta) == (0.25, 0.4)
    assert model.info.extra["conf_tta_calibration"]["conf"] == 0.4 and "conf_tta" not in model.info.extra
    image, _ = disc_image((128, 128), n=5, seed=4)
    assert segment(image, model, tta=True).metadata["parameters"]["conf"] == 0.4
    assert segment(image, model).metadata["parameters"]["conf"] == 0.25
    assert segment(image, model, tta=True, conf=0.1).metadata["parameters"]["conf"] == 0.1


def test_max_det_cap_is_reported_not_silent(tiny_yolo_model):
    image, _ = disc_image((128, 128), n=8, seed=4)
    result = segment(image, tiny_yolo_model, conf=0.0001, max_det=1)
    assert any("max_det" in w for w in result.warnings)


def test_stack_keeps_its_shape_with_progress_per_tile(tiny_yolo_model):
    frames = [disc_image((150, 150), n=6, seed=s)[0] for s in range(3)]
    stack = np.stack(frames)
    progress = []
    result = run(segment_iter(stack, tiny_yolo_model, conf=0.01, native=True), progress.append)
    n_tiles = 4  # 150 px with 128 px tiles: 2 x 2 per frame
    assert [p.done for p in progress] == list(range(3 * n_tiles + 1))
    assert result.labels.shape == stack.shape
    assert len(result.counts_per_frame()) == 3
    assert sum(result.counts_per_frame()) == result.n_objects
    # labels are unique over the stack; each object sits in its own frame
    for label, frame in zip(result.objects["label"], result.objects["frame"]):
        assert np.any(result.labels[frame] == label)


def test_cancel_stops_within_one_tile(tiny_yolo_model):
    calls = []
    original = tiny_yolo_model.predict_tile

    def counting(tile, settings):
        calls.append(1)
        return original(tile, settings)

    tiny_yolo_model.predict_tile = counting
    try:
        gen = segment_iter(np.zeros((3, 300, 300), np.uint16), tiny_yolo_model)
        next(gen)  # started
        next(gen)  # one tile done
        gen.close()  # what a napari worker does on cancel
    finally:
        del tiny_yolo_model.predict_tile
    assert len(calls) == 1


def test_detect_checkpoint_goes_to_the_detection_backend(tmp_path):
    """Once refused (issue 29): a detection checkpoint now loads with 'yolo-detect'; the segmentation backend,
    asked for by name, still refuses it and says which backend takes it."""
    from ultralytics import YOLO

    path = tmp_path / "detector.pt"
    YOLO("yolo11n.yaml").save(str(path))
    assert load_model(path, device="cpu").info.backend == "yolo-detect"
    with pytest.raises(ModelLoadError, match="'detect' checkpoint.*segmentation.*yolo-detect"):
        load_model(path, device="cpu", backend="yolo")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a model at all", "not a model checkpoint"),
        (b"", "empty"),
    ],
)
def test_non_checkpoint_files_are_refused(tmp_path, content, message):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        load_model(path)


def test_truncated_and_foreign_checkpoints_are_refused(tmp_path, tiny_yolo):
    import torch

    data = tiny_yolo.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupted or truncated"):
        load_model(truncated)
    foreign = tmp_path / "state_dict.pt"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, foreign)
    with pytest.raises(ModelLoadError, match="unknown kind"):
        load_model(foreign)


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(ModelLoadError, match="not a known model name.*otsu-watershed"):
        load_model("no-such-model")


def test_unavailable_device_is_an_error(tiny_yolo):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load_model(tiny_yolo, device="cuda")


def test_soft_masks_are_the_probabilities_behind_the_binary_ones(tiny_yolo_model):
    from napari_cellseg.core.backend import InferenceSettings

    image, _ = disc_image((128, 128), n=8, radius=(7, 12), seed=5, dtype=np.uint8)
    tile = np.repeat(image[..., None], 3, axis=-1)
    settings = InferenceSettings(zoom=1.0, conf=0.01)
    hard, soft = tiny_yolo_model.predict_tile(tile, settings), tiny_yolo_model.predict_tile_soft(tile, settings)
    assert len(hard) > 0 and len(soft) == len(hard)
    assert hard.masks.dtype == bool and soft.masks.dtype == np.float32
    assert soft.masks.min() >= 0 and soft.masks.max() <= 1
    assert ((soft.masks > 0) & (soft.masks < 1)).any()  # real probabilities, not 0/1
    # the same objects; thresholded at 0.5 the same masks (up to rounding where a logit is about 0)
    np.testing.assert_array_equal(soft.scores, hard.scores)
    assert ((soft.masks >= 0.5) != hard.masks).sum() <= 0.001 * hard.masks.size
    for mask, (x0, y0, x1, y1) in zip(soft.masks, soft.boxes):  # nothing outside the object's box
        outside = np.ones(mask.shape, bool)
        # a box may start left of or above the tile: clip at 0, a negative start would index from the end
        outside[max(0, int(np.ceil(y0))):int(np.ceil(y1)), max(0, int(np.ceil(x0))):int(np.ceil(x1))] = False
        assert not mask[outside].any()


def test_a_checkpoints_mask_threshold_shrinks_masks_and_an_explicit_one_wins(tmp_path, tiny_yolo):
    from napari_cellseg.core.backend import InferenceSettings
    from napari_cellseg.core.normalize import apply_ranges, as_rgb, channel_ranges

    strict = load_model(with_calibration(tiny_yolo, tmp_path / "strict.pt", mask_threshold=0.55), device="cpu")
    plain = load_model(tiny_yolo, device="cpu")
    assert (strict.info.mask_threshold, plain.info.mask_threshold) == (0.55, 0.5)
    assert "mask_threshold" not in strict.info.extra
    image, _ = disc_image((200, 300), n=20, radius=(7, 12), seed=3)
    assert segment(image, strict).metadata["parameters"]["mask_threshold"] == 0.55
    at_05 = segment(image, strict, conf=0.01, mask_threshold=0.5)
    assert at_05.metadata["parameters"]["mask_threshold"] == 0.5
    assert np.array_equal(at_05.labels, segment(image, plain, conf=0.01).labels)  # 0.5: ultralytics' own masks
    # a stricter threshold (the median probability of the 0.5 masks' pixels): each mask inside its 0.5
    # mask, and smaller in all
    frame = image[..., None]
    tile = as_rgb(apply_ranges(frame, channel_ranges(frame)))[:128, :128]
    soft = strict.predict_tile_soft(tile, InferenceSettings(conf=0.01))
    median = float(np.median(soft.masks[soft.masks >= 0.5]))
    loose = strict.predict_tile(tile, InferenceSettings(conf=0.01, mask_threshold=0.5))
    tight = strict.predict_tile(tile, InferenceSettings(conf=0.01, mask_threshold=median))
    assert len(loose) > 0 and np.array_equal(tight.scores, loose.scores[:len(tight)])
    assert not (tight.masks & ~loose.masks[:len(tight)]).any()
    assert tight.masks.sum() < loose.masks[:len(tight)].sum()
    with pytest.raises(ValueError, match="mask_threshold"):
        segment(image, strict, mask_threshold=1.0)
