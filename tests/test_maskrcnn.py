"""Mask R-CNN backend: detectron2 conversion, its conventions, loading errors, ensembles and thresholds."""
import json

import numpy as np
import pytest
import torch

from napari_cellseg import load_model
from napari_cellseg.backends import ModelLoadError
from napari_cellseg.core.backend import InferenceSettings
from napari_cellseg.maskrcnn.convert import convert_detectron2_state, detectron2_architecture
from napari_cellseg.core.fusion import fuse_detections
from napari_cellseg.pipeline.segment import apply_class_conf, run, segment_iter
from napari_cellseg.core.tiling import TileDetections

from detectron2_style import SMALL_CONFIG, detectron2_state, save_pkl, save_pth


@pytest.fixture(scope="module")
def d2_state():
    return detectron2_state(num_classes=1, cell_bias=8.0)


@pytest.fixture(scope="module")
def d2_checkpoint(d2_state, tmp_path_factory):
    return save_pth(d2_state, tmp_path_factory.mktemp("d2") / "model_final.pth", SMALL_CONFIG % 1)


@pytest.fixture(scope="module")
def d2_model(d2_checkpoint):
    return load_model(d2_checkpoint, device="cpu")


def test_conversion_puts_each_detectron2_tensor_where_torchvision_reads_it():
    state = detectron2_state(num_classes=3, seed=1)
    tv, unmapped = convert_detectron2_state(state, num_classes=3)
    assert unmapped == []
    d2_cls = state["roi_heads.box_predictor.cls_score.weight"]
    tv_cls = tv["roi_heads.box_predictor.cls_score.weight"].numpy()
    # detectron2: classes 0..2 then background; torchvision: background then classes
    assert np.array_equal(tv_cls[0], d2_cls[3])
    assert np.array_equal(tv_cls[1:], d2_cls[:3])
    d2_box = state["roi_heads.box_predictor.bbox_pred.weight"]
    tv_box = tv["roi_heads.box_predictor.bbox_pred.weight"].numpy()
    assert tv_box.shape[0] == 16 and not tv_box[:4].any()
    assert np.array_equal(tv_box[4 * 2:4 * 3], d2_box[4:8])  # class 1's deltas -> torchvision label 2
    d2_mask = state["roi_heads.mask_head.predictor.weight"]
    tv_mask = tv["roi_heads.mask_predictor.mask_fcn_logits.weight"].numpy()
    assert tv_mask.shape[0] == 4 and not tv_mask[0].any() and np.array_equal(tv_mask[1], d2_mask[0])
    pairs = {
        "backbone.bottom_up.stem.conv1.weight": "backbone.body.conv1.weight",
        "backbone.bottom_up.stem.conv1.norm.running_var": "backbone.body.bn1.running_var",
        "backbone.bottom_up.res3.0.conv2.weight": "backbone.body.layer2.0.conv2.weight",
        "backbone.bottom_up.res4.5.conv3.norm.bias": "backbone.body.layer3.5.bn3.bias",
        "backbone.bottom_up.res5.0.shortcut.weight": "backbone.body.layer4.0.downsample.0.weight",
        "backbone.bottom_up.res5.0.shortcut.norm.weight": "backbone.body.layer4.0.downsample.1.weight",
        "backbone.fpn_lateral3.weight": "backbone.fpn.inner_blocks.1.0.weight",
        "backbone.fpn_output5.bias": "backbone.fpn.layer_blocks.3.0.bias",
        "proposal_generator.rpn_head.objectness_logits.weight": "rpn.head.cls_logits.weight",
        "proposal_generator.rpn_head.anchor_deltas.bias": "rpn.head.bbox_pred.bias",
        "roi_heads.box_head.fc2.weight": "roi_heads.box_head.fc7.weight",
        "roi_heads.mask_head.mask_fcn4.weight": "roi_heads.mask_head.3.0.weight",
        "roi_heads.mask_head.deconv.weight": "roi_heads.mask_predictor.conv5_mask.weight",
    }
    for d2_name, tv_name in pairs.items():
        assert np.array_equal(tv[tv_name].numpy(), state[d2_name]), d2_name


def test_architecture_is_read_off_the_weights():
    fake = {f"backbone.bottom_up.res4.{i}.conv1.weight": None for i in range(23)}
    fake["backbone.bottom_up.res2.0.conv2.weight"] = np.zeros((256, 8, 3, 3))
    fake["roi_heads.box_predictor.cls_score.weight"] = np.zeros((4, 1024))
    fake["roi_heads.mask_head.predictor.weight"] = np.zeros((3, 256, 1, 1))
    assert detectron2_architecture(fake) == {"depth": 101, "groups": 32, "width_per_group": 8, "num_classes": 3}


def test_detectron2_checkpoint_detects_its_class_with_config(d2_model, d2_checkpoint):
    assert d2_model.info.backend == "maskrcnn"
    assert d2_model.architecture == "ResNet-50-FPN"
    config = d2_model.config
    assert (config.min_size_test, config.max_size_test, config.input_format) == (128, 256, "BGR")
    assert config.pixel_mean == (100.0, 110.0, 120.0) and config.roi_align_aligned
    assert any("config.yaml" in note for note in d2_model.info.extra["notes"])
    tile = (np.random.default_rng(0).random((200, 300, 3)) * 255).astype(np.uint8)
    found = d2_model.predict_tile(tile, InferenceSettings(conf=0.5))
    # the checkpoint's class-0 row (detectron2 order) says "cell" everywhere: if the rows were not
    # reordered, background would win and nothing would be found
    assert len(found) > 0 and found.masks.shape[1:] == (200, 300)
    assert (found.class_ids == 0).all() and found.scores.min() > 0.99
    assert found.masks.any(axis=(1, 2)).all()


def test_torchvision_checkpoint_prediction_equals_torchvision_own_forward(d2_state, tmp_path):
    """A torchvision checkpoint keeps torchvision's heads: our path gives what its GeneralizedRCNN gives."""
    tv_state, _ = convert_detectron2_state(d2_state, num_classes=1)
    torch.save({"model": tv_state}, tmp_path / "torchvision_maskrcnn.pth")
    backend = load_model(tmp_path / "torchvision_maskrcnn.pth", device="cpu")
    assert backend.exact is None and backend.info.extra["inference"] == "torchvision"
    model = backend.model
    tile = (np.random.default_rng(1).random((100, 150, 3)) * 255).astype(np.uint8)
    ours = backend.predict_tile_soft(tile, InferenceSettings(conf=0.5))
    model.roi_heads.score_thresh = 0.5
    rgb01 = torch.from_numpy(tile.copy()).permute(2, 0, 1).float() / 255
    with torch.inference_mode():
        reference = model([rgb01])[0]
    assert len(ours) == len(reference["scores"]) > 0
    # random weights give near-tied scores whose order can differ with float noise: match by box
    ref_boxes = reference["boxes"].numpy()
    match = np.abs(ours.boxes[:, None, :] - ref_boxes[None, :, :]).max(axis=2).argmin(axis=1)
    assert sorted(match.tolist()) == list(range(len(ref_boxes)))  # one to one
    assert np.allclose(ours.boxes, ref_boxes[match], atol=1e-2)
    assert np.allclose(ours.scores, reference["scores"].numpy()[match], atol=1e-5)
    assert np.allclose(ours.masks, reference["masks"][:, 0].numpy()[match], atol=1e-3)


def test_stride_in_1x1_moves_the_downsampling_to_the_first_conv(d2_model, d2_state):
    block = d2_model.model.backbone.body.layer2[0]
    x = torch.randn(1, 256, 32, 32)
    prefix = "backbone.bottom_up.res3.0"

    def conv_bn(x, name, stride, padding):
        t = {k: torch.from_numpy(v) for k, v in d2_state.items() if k.startswith(name + ".")}
        y = torch.nn.functional.conv2d(x, t[f"{name}.weight"], stride=stride, padding=padding)
        scale = t[f"{name}.norm.weight"] / torch.sqrt(t[f"{name}.norm.running_var"] + 1e-5)
        return y * scale[None, :, None, None] + (t[f"{name}.norm.bias"] - t[f"{name}.norm.running_mean"] * scale)[None, :, None, None]

    y = torch.relu(conv_bn(x, f"{prefix}.conv1", 2, 0))  # detectron2 MSRA: stride in the 1x1
    y = torch.relu(conv_bn(y, f"{prefix}.conv2", 1, 1))
    y = conv_bn(y, f"{prefix}.conv3", 1, 0)
    expected = torch.relu(y + conv_bn(x, f"{prefix}.shortcut", 2, 0))
    with torch.inference_mode():
        assert torch.allclose(block(x), expected, atol=1e-4)


def test_aligned_roi_align_is_roialignv2():
    from torchvision.ops import MultiScaleRoIAlign, roi_align

    from napari_cellseg.maskrcnn.backend import AlignedMultiScaleRoIAlign

    features = {"0": torch.randn(1, 4, 16, 16)}
    boxes = [torch.tensor([[1.0, 2.0, 9.0, 13.0]])]
    aligned = AlignedMultiScaleRoIAlign(["0"], 7, 0)(features, boxes, [(64, 64)])
    expected = roi_align(features["0"], [boxes[0]], 7, 0.25, 0, aligned=True)
    assert torch.allclose(aligned, expected)
    legacy = MultiScaleRoIAlign(["0"], 7, 0)(features, boxes, [(64, 64)])
    assert not torch.allclose(aligned, legacy)


def test_resnext_config_builds_grouped_convolutions_with_the_stride_in_the_3x3(tmp_path):
    state = detectron2_state(num_classes=1, groups=32, width=4, seed=2, cell_bias=8.0)
    config = SMALL_CONFIG.replace("STRIDE_IN_1X1: true", "STRIDE_IN_1X1: false, NUM_GROUPS: 32, WIDTH_PER_GROUP: 4")
    model = load_model(save_pth(state, tmp_path / "x50" / "model_final.pth", config % 1), device="cpu")
    assert model.architecture == "ResNeXt-50-32x4d-FPN" and not model.config.stride_in_1x1
    block = model.model.backbone.body.layer2[0]
    assert block.conv2.groups == 32 and block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    found = model.predict_tile((np.random.default_rng(4).random((96, 128, 3)) * 255).astype(np.uint8),
                               InferenceSettings(conf=0.5))
    assert len(found) > 0 and (found.class_ids == 0).all()


def test_pkl_without_config_uses_defaults_and_says_so(d2_state, tmp_path):
    path = save_pkl(d2_state, tmp_path / "model_final.pkl")
    model = load_model(path, device="cpu")
    assert model.config.min_size_test == 800 and model.config.pixel_std == (1.0, 1.0, 1.0)
    assert any(note.startswith("no config.yaml beside the checkpoint") for note in model.info.extra["notes"])


def _load_error(path) -> str:
    from napari_cellseg.maskrcnn.backend import MaskRCNNBackend

    with pytest.raises(ModelLoadError) as info:
        MaskRCNNBackend(path, device="cpu")
    message = str(info.value)
    assert "\n" not in message and str(path.parent) in message
    return message


def test_other_architectures_are_named_in_one_line(d2_state, tmp_path):
    faster = {k: v for k, v in d2_state.items() if not k.startswith("roi_heads.mask_head.")}
    message = _load_error(save_pth(faster, tmp_path / "faster" / "model_final.pth", SMALL_CONFIG % 1))
    assert "Faster R-CNN" in message and "roi_heads.box_head" in message
    retina = {k: v for k, v in d2_state.items() if k.startswith("backbone.")}
    retina["head.cls_score.weight"] = np.zeros((9, 256, 3, 3), np.float32)
    message = _load_error(save_pth(retina, tmp_path / "retina" / "model_final.pth"))
    assert "without ROI heads" in message and "head.cls_score" in message
    classifier = {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "fc.weight": np.zeros((10, 2048), np.float32)}
    message = _load_error(save_pth(classifier, tmp_path / "resnet" / "resnet50.pth"))
    assert "not a Mask R-CNN checkpoint (found conv1.weight, fc.weight)" in message


def test_truncated_pkl_is_a_one_line_error(d2_state, tmp_path):
    path = save_pkl(d2_state, tmp_path / "model_final.pkl")
    path.write_bytes(path.read_bytes()[:1_000_000])
    assert "truncated" in _load_error(path)


def test_config_contradicting_the_weights_names_both(d2_state, tmp_path):
    wide = SMALL_CONFIG.replace("MASK_ON: true", "MASK_ON: true\n  FPN: {OUT_CHANNELS: 128}") % 1
    message = _load_error(save_pth(d2_state, tmp_path / "a" / "model_final.pth", wide))
    assert "MODEL.FPN.OUT_CHANNELS 128 in config.yaml vs 256 in the weights" in message
    deeper = SMALL_CONFIG.replace("DEPTH: 50", "DEPTH: 101") % 1
    assert "depth 101 in config.yaml vs 50 in the weights" in _load_error(
        save_pth(d2_state, tmp_path / "b" / "model_final.pth", deeper))
    roipool = SMALL_CONFIG.replace("POOLER_TYPE: ROIAlignV2", "POOLER_TYPE: ROIPool") % 1
    assert "ROIPool" in _load_error(save_pth(d2_state, tmp_path / "c" / "model_final.pth", roipool))


def test_mismatched_keys_are_listed(d2_state, tmp_path):
    state = dict(d2_state)
    del state["roi_heads.box_head.fc1.weight"]
    state["roi_heads.extra_head.weight"] = np.zeros(3, np.float32)
    path = save_pth(state, tmp_path / "broken" / "model_final.pth", SMALL_CONFIG % 1)
    with pytest.raises(ModelLoadError) as info:
        load_model(path, device="cpu")
    message = str(info.value)
    assert "missing (1): roi_heads.box_head.fc6.weight" in message
    assert "unexpected (1): roi_heads.extra_head.weight" in message


def test_soft_masks_are_fused_by_averaging_probabilities():
    a = np.zeros((1, 8, 8), np.float32)
    a[0, :4] = 0.9
    a[0, 4:6] = 0.45  # below 0.5 alone, but averaged with b's 0.7 it is kept
    b = np.zeros((1, 8, 8), np.float32)
    b[0, :6] = 0.7
    fused = fuse_detections([TileDetections(a, np.array([0.8], np.float32), np.zeros(1, int)),
                             TileDetections(b, np.array([0.6], np.float32), np.zeros(1, int))])
    assert fused.masks.dtype == bool and fused.masks[0, :6].all() and not fused.masks[0, 6:].any()


def test_per_class_thresholds():
    masks = np.ones((3, 4, 4), bool)
    detections = TileDetections(masks, np.array([0.4, 0.6, 0.4], np.float32), np.array([0, 1, 2]))
    kept = apply_class_conf(detections, 0.5, {0: 0.3, 1: 0.7})
    assert kept.scores.tolist() == pytest.approx([0.4])  # class 0 at 0.3; class 1 at 0.7; class 2 at conf


def test_segment_with_class_threshold_and_tta(d2_model):
    image = (np.random.default_rng(2).random((150, 200)) * 255).astype(np.uint8)
    result = run(segment_iter(image, d2_model, conf=0.5))
    assert result.n_objects > 0
    none = run(segment_iter(image, d2_model, conf=0.5, class_conf={0: 1.0}))
    assert none.n_objects == 0  # scores are just below 1
    tta = run(segment_iter(image, d2_model, conf=0.5, tta=True, normalization="image"))
    assert tta.metadata["parameters"]["normalization"] == "image" and tta.n_objects > 0


def test_ensemble_shares_preprocessing(d2_checkpoint, monkeypatch):
    ensemble = load_model([d2_checkpoint, d2_checkpoint], device="cpu")
    calls = []
    first = ensemble.members[0]
    original = type(first).prepare
    monkeypatch.setattr(type(first), "prepare", lambda self, *a: calls.append(1) or original(self, *a))
    tile = (np.random.default_rng(3).random((120, 160, 3)) * 255).astype(np.uint8)
    fused = ensemble.predict_tile(tile, InferenceSettings(conf=0.5))
    single = first.predict_tile(tile, InferenceSettings(conf=0.5))
    assert len(calls) == 2  # one for the ensemble's two members, one for the single model
    assert len(fused) == len(single)  # identical members agree on everything


@pytest.mark.slow
def test_cli_segments_with_an_ensemble_tta_and_exports(d2_checkpoint, tmp_path):
    from napari_cellseg.cli import main
    from napari_cellseg.core.io import read_image, write_image
    from napari_cellseg.core.submission import read_sartorius_csv

    image = (np.random.default_rng(5).random((100, 120)) * 255).astype(np.uint8)
    write_image(tmp_path / "cells.png", image)
    code = main(["segment", str(tmp_path / "cells.png"), "--model", str(d2_checkpoint), "--model", str(d2_checkpoint),
                 "--tta", "--conf", "0.5", "--class-conf", "0=0.6", "--out", str(tmp_path / "out"), "-q",
                 "--rle-csv", str(tmp_path / "sub.csv"), "--coco", str(tmp_path / "coco.json")])
    assert code == 0
    labels = read_image(tmp_path / "out" / "cells_labels.tif")
    assert labels.max() > 0
    back = read_sartorius_csv(tmp_path / "sub.csv", {"cells": labels.shape})["cells"]
    assert back.max() == labels.max() and np.array_equal(back > 0, labels > 0)
    provenance = json.loads((tmp_path / "out" / "cells_provenance.json").read_text())
    assert provenance["model"]["backend"] == "ensemble" and provenance["parameters"]["class_conf"] == {"0": 0.6}
    assert len(json.loads((tmp_path / "coco.json").read_text())["annotations"]) == labels.max()
    assert main(["segment", str(tmp_path / "cells.png"), "--model", str(d2_checkpoint), "--class-conf", "x"]) == 2


def test_detectron2_engine_agrees_with_the_converted_model(d2_checkpoint, d2_model):
    """Only where detectron2 is installed: the same checkpoint through detectron2 itself."""
    pytest.importorskip("detectron2")
    from napari_cellseg.maskrcnn.backend import MaskRCNNBackend

    native = MaskRCNNBackend(d2_checkpoint, device="cpu", engine="detectron2")
    tile = (np.random.default_rng(3).random((200, 300, 3)) * 255).astype(np.uint8)
    ours = d2_model.predict_tile(tile, InferenceSettings(conf=0.5))
    theirs = native.predict_tile(tile, InferenceSettings(conf=0.5))
    assert len(theirs) == len(ours) > 0
    np.testing.assert_allclose(np.sort(theirs.scores), np.sort(ours.scores), atol=1e-3)


def test_detectron2_engine_without_detectron2_says_so(d2_checkpoint):
    try:
        import detectron2  # noqa: F401
    except ImportError:
        from napari_cellseg.core.backend import ModelLoadError
        from napari_cellseg.maskrcnn.backend import MaskRCNNBackend

        with pytest.raises(ModelLoadError, match="needs detectron2 installed"):
            MaskRCNNBackend(d2_checkpoint, device="cpu", engine="detectron2")
    else:
        pytest.skip("detectron2 is installed")
