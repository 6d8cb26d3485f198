"""A real detectron2 checkpoint against detectron2's own predictions (shared/fixtures/detectron2).

The fixture holds a Mask R-CNN R50-FPN written by detectron2 (fp16 storage), its config.yaml and
DefaultPredictor's outputs on two images (see its README). The plugin must give the same instances:
detection by detection, matched one to one by box IoU, not by index (the model has many nested
duplicates). Skipped when the shared folder is absent.
"""
from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from detectron2_fixture_path import SKIP_REASON, detectron2_fixture_dir
from napari_cellseg import load_model
from napari_cellseg.core.backend import InferenceSettings, ModelLoadError


FIXTURE = detectron2_fixture_dir()
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(FIXTURE is None, reason=SKIP_REASON),
]
IMAGES = sorted(p.name for p in FIXTURE.glob("pred_*.npz")) if FIXTURE else []
MIN_SCORE = 0.05  # every detectron2 detection at least this confident must be reproduced


def _reference(name: str) -> tuple[dict, np.ndarray]:
    from PIL import Image

    ref = dict(np.load(FIXTURE / name))
    png = FIXTURE / str(ref["image_path"])
    assert hashlib.sha256(png.read_bytes()).hexdigest() == str(ref["image_sha256"])
    rgb = np.asarray(Image.open(png).convert("RGB"))  # as the fixture was made: alpha dropped
    return ref, rgb


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None] - inter)


def match_one_to_one(ref_boxes: np.ndarray, our_boxes: np.ndarray) -> np.ndarray:
    """For each reference box (in descending score), the unused plugin box of highest IoU (-1: none left)."""
    iou = box_iou(ref_boxes, our_boxes) if len(our_boxes) else np.zeros((len(ref_boxes), 0))
    used, matches = set(), []
    for i in range(len(ref_boxes)):
        free = [j for j in np.argsort(-iou[i], kind="stable") if j not in used]
        matches.append(free[0] if free else -1)
        used.add(matches[-1])
    return np.array(matches)


@pytest.fixture(scope="module")
def fixture_model():
    return load_model(FIXTURE / "model_final.pth", device="cpu")


def test_settings_come_from_the_config_beside_the_checkpoint(fixture_model):
    c = fixture_model.config
    assert fixture_model.info.extra["inference"] == "detectron2"
    assert (c.input_format, c.min_size_test, c.max_size_test, c.detections_per_image) == ("BGR", 512, 1024, 100)
    assert c.pixel_mean == (103.53, 116.28, 123.675) and c.pixel_std == (1.0, 1.0, 1.0)
    assert c.stride_in_1x1 and c.roi_align_aligned and c.mask_roi_align_aligned
    assert c.box_reg_weights == (10.0, 10.0, 5.0, 5.0) and c.anchor_offset == 0.0
    assert (c.num_classes, c.depth, c.groups) == (1, 50, 1)
    assert not any(n.startswith("no config.yaml") for n in fixture_model.info.extra["notes"])


def _compare(ours, ref) -> dict:
    keep = ref["scores"] >= MIN_SCORE
    boxes, scores, masks = ref["boxes"][keep], ref["scores"][keep], ref["masks"][keep]
    match = match_one_to_one(boxes, ours.boxes)
    assert (match >= 0).all(), f"{(match < 0).sum()} detectron2 detections have no plugin instance"
    box = box_iou(boxes, ours.boxes)[np.arange(len(boxes)), match]
    score = np.abs(scores - ours.scores[match])
    ours_masks = ours.masks[match].astype(bool)
    inter = (ours_masks & masks).sum((1, 2))
    union = np.maximum((ours_masks | masks).sum((1, 2)), 1)
    return {"n": len(boxes), "box_iou": box, "score_diff": score, "mask_iou": inter / union}


@pytest.mark.parametrize("name", IMAGES)
def test_every_detectron2_detection_is_reproduced(fixture_model, name):
    ref, rgb = _reference(name)
    ours = fixture_model.predict_tile(rgb, InferenceSettings(conf=MIN_SCORE))
    assert ours.masks.shape[1:] == tuple(ref["image_hw"])
    found = _compare(ours, ref)
    assert found["box_iou"].min() >= 0.98, found["box_iou"].min()
    assert found["score_diff"].max() <= 0.005, found["score_diff"].max()
    assert found["mask_iou"].min() >= 0.95, found["mask_iou"].min()
    assert abs(int((ours.scores > 0.5).sum()) - int((ref["scores"] > 0.5).sum())) <= 1
    assert (ours.class_ids == 0).all() and len(ours) <= fixture_model.config.detections_per_image


@pytest.mark.parametrize("name", IMAGES)
def test_28x28_mask_probabilities_match(fixture_model, name):
    ref, rgb = _reference(name)
    raw = fixture_model.predict_raw(rgb, InferenceSettings(conf=MIN_SCORE))
    assert raw.input_shape == tuple(ref["input_hw"])
    keep = ref["scores"] >= MIN_SCORE
    ref_boxes = ref["boxes_input_scale"][keep]
    our_boxes = raw.boxes.numpy()
    match = match_one_to_one(ref_boxes, our_boxes)
    assert (match >= 0).all()
    assert box_iou(ref_boxes, our_boxes)[np.arange(len(ref_boxes)), match].min() >= 0.98
    probs = raw.mask_probs.numpy()[match]
    assert probs.shape[1:] == ref["mask_probs_28x28"].shape[1:]
    assert np.abs(probs - ref["mask_probs_28x28"][keep]).mean() <= 0.01


def test_model_zoo_pkl_form_gives_the_same_detections(fixture_model, tmp_path):
    """The same weights as detectron2's Model Zoo stores them (a latin1 pickle of numpy arrays)."""
    import torch

    state = torch.load(FIXTURE / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    with open(tmp_path / "model_final.pkl", "wb") as fh:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "test"}, fh)
    shutil.copy(FIXTURE / "config.yaml", tmp_path / "config.yaml")
    from_pkl = load_model(tmp_path / "model_final.pkl", device="cpu")
    ref, rgb = _reference(IMAGES[0])
    settings = InferenceSettings(conf=MIN_SCORE)
    a, b = from_pkl.predict_tile(rgb, settings), fixture_model.predict_tile(rgb, settings)
    assert len(a) == len(b) and np.array_equal(a.scores, b.scores) and np.array_equal(a.masks, b.masks)


def test_without_config_detectron2_defaults_are_used_and_said(tmp_path):
    (tmp_path / "model_final.pth").symlink_to(FIXTURE / "model_final.pth")
    model = load_model(tmp_path / "model_final.pth", device="cpu")
    c = model.config
    assert (c.min_size_test, c.max_size_test, c.input_format, c.score_thresh) == (800, 1333, "BGR", 0.05)
    assert any(n.startswith("no config.yaml beside the checkpoint: detectron2 defaults used")
               for n in model.info.extra["notes"])


def test_truncated_checkpoint_is_one_line_error(tmp_path):
    data = (FIXTURE / "model_final.pth").read_bytes()
    (tmp_path / "model_final.pth").write_bytes(data[: len(data) // 2])
    shutil.copy(FIXTURE / "config.yaml", tmp_path / "config.yaml")
    from napari_cellseg.maskrcnn.backend import MaskRCNNBackend

    for load in (lambda p: load_model(p, device="cpu"), lambda p: MaskRCNNBackend(p, device="cpu")):
        with pytest.raises(ModelLoadError) as info:
            load(tmp_path / "model_final.pth")
        assert "truncated" in str(info.value) and "\n" not in str(info.value)


def test_config_contradicting_the_weights_is_one_line_error(tmp_path):
    (tmp_path / "model_final.pth").symlink_to(FIXTURE / "model_final.pth")
    text = (FIXTURE / "config.yaml").read_text()
    assert "    NUM_CLASSES: 1\n" in text
    (tmp_path / "config.yaml").write_text(text.replace("    NUM_CLASSES: 1\n", "    NUM_CLASSES: 3\n", 1))
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "model_final.pth", device="cpu")
    message = str(info.value)
    assert "num_classes 3 in config.yaml vs 1 in the weights" in message and "\n" not in message


def test_ensembles_run_on_the_exact_path(fixture_model):
    """A one-model list is the single model; two identical members fuse back to its instances."""
    from napari_cellseg.backends.ensemble import EnsembleBackend

    ref, rgb = _reference(IMAGES[0])
    settings = InferenceSettings(conf=MIN_SCORE)
    single = fixture_model.predict_tile(rgb, settings)
    assert load_model([FIXTURE / "model_final.pth"], device="cpu").predict_tile(rgb, settings).scores.tolist() \
        == single.scores.tolist()
    fused = EnsembleBackend([fixture_model, fixture_model]).predict_tile(rgb, settings)
    order_single, order_fused = np.argsort(-single.scores, kind="stable"), np.argsort(-fused.scores, kind="stable")
    assert len(fused) == len(single)
    np.testing.assert_allclose(fused.scores[order_fused], single.scores[order_single], atol=1e-6)
    assert np.array_equal(fused.masks[order_fused], single.masks[order_single])
