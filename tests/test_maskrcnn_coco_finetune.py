"""Fine-tuning a Mask R-CNN the Sartorius way: a COCO JSON dataset with several classes (polygons and
RLE), a validation split scored with pycocotools' mask mAP every epoch, best and last checkpoints, and
a result in detectron2's own layout (checked against the real detectron2 checkpoint in shared/)."""
import json
from pathlib import Path

import numpy as np
import pytest

from detectron2_fixture_path import SKIP_REASON, detectron2_fixture_dir
from napari_cellseg import load_model
from napari_cellseg.core.backend import ModelLoadError
from napari_cellseg.maskrcnn.train import last_path, maskrcnn_finetune_iter
from napari_cellseg.pipeline.segment import run, segment_iter


FIXTURE = detectron2_fixture_dir()
needs_fixture = pytest.mark.skipif(FIXTURE is None, reason=SKIP_REASON)


def _shapes_image(seed: int, size: int = 80):
    """A grey image with bright squares (class 'square') and discs (class 'disc'), and their instances."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size), 20, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    anns = []  # (category id, mask, as polygon?)
    for k, (cy, cx) in enumerate([(20, 20), (20, 58), (58, 20), (58, 58)]):
        cy, cx = cy + int(rng.integers(-3, 4)), cx + int(rng.integers(-3, 4))
        if (k + seed) % 2 == 0:
            r = 9
            image[cy - r:cy + r, cx - r:cx + r] = 200
            anns.append((1, [float(v) for v in (cx - r, cy - r, cx + r, cy - r, cx + r, cy + r, cx - r, cy + r)]))
        else:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 81
            image[mask] = 120
            anns.append((2, mask))
    return image, anns


def _write_coco(root: Path, name: str, seeds) -> Path:
    from pycocotools import mask as mask_utils

    from napari_cellseg.core.io import write_image

    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}]}
    for image_id, seed in enumerate(seeds, start=1):
        image, anns = _shapes_image(seed)
        file_name = f"images/{name}_{seed}.png"
        write_image(root / file_name, image)
        coco["images"].append({"id": image_id, "file_name": file_name, "height": 80, "width": 80})
        for cat, seg in anns:
            if isinstance(seg, list):  # a polygon (Sartorius' own annotations)
                segmentation = [seg]
            else:  # compressed RLE (LIVECell, pycocotools)
                rle = mask_utils.encode(np.asfortranarray(seg.astype(np.uint8)))
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": cat, "segmentation": segmentation, "iscrowd": 0,
                                        "bbox": [0, 0, 1, 1], "area": 1})
    path = root / f"{name}.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.fixture(scope="session")
def coco_run(tmp_path_factory):
    """A new two-class Mask R-CNN trained for 2 epochs on train.json, validated on val.json."""
    from napari_cellseg.pipeline.finetune import train_any_iter

    root = tmp_path_factory.mktemp("coco")
    train = _write_coco(root, "train", [0, 1, 2])
    _write_coco(root, "val", [3])
    progress = []
    out = root / "model" / "tuned.pth"
    result = run(train_any_iter(None, out, arch="maskrcnn", data_yaml=train, epochs=2, batch=2, imgsz=64),
                 progress.append)
    return out, result, progress


@pytest.mark.slow
def test_a_coco_json_with_two_categories_trains_a_two_class_model_validated_by_mask_map(coco_run):
    out, result, progress = coco_run
    assert result.path == out and out.is_file() and last_path(out).is_file()
    assert last_path(out).name == "tuned_last.pth" and (out.parent / "config.yaml").is_file()
    assert len(result.history) == 2
    for entry in result.history:
        assert 0.0 <= entry["val/mask_mAP50-95"] <= entry["val/mask_mAP50"] <= 1.0
    metrics = [p.get("metrics") for p in progress if p.get("metrics")]
    assert len(metrics) == 2 and all("val/mask_mAP50" in m and "val/mask_mAP50-95" in m for m in metrics)
    best = max(h["val/mask_mAP50-95"] for h in result.history)
    assert metrics[-1]["best/mask_mAP50-95"] == pytest.approx(best)
    model = load_model(out, device="cpu")
    image, _ = _shapes_image(5)
    segmented = run(segment_iter(image, model, conf=0.0))
    assert segmented.labels.shape == (80, 80)
    assert set(segmented.objects["class_name"]) <= {"square", "disc"}  # the COCO names in the outputs
    assert model.info.class_names == {0: "square", 1: "disc"}
    assert model.config.num_classes == 2 and model.config.class_names == {0: "square", 1: "disc"}
    import torch

    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert saved["model"]["roi_heads.box_predictor.cls_score.weight"].shape[0] == 3  # 2 classes + background
    assert saved["model"]["roi_heads.mask_head.predictor.weight"].shape[0] == 2
    assert saved["napari_cellseg"]["history"][-1]["epoch"] in (1, 2)  # the best epoch's history
    assert torch.load(last_path(out), map_location="cpu", weights_only=True)["napari_cellseg"]["history"][-1][
        "epoch"] == 2


def test_label_folders_are_read_as_training_samples(tmp_path):
    from napari_cellseg.core.datasets import DatasetError, read_label_folders
    from napari_cellseg.core.io import write_image

    from synthetic import disc_image

    image, labels = disc_image((64, 64), n=3, radius=(6, 8), seed=0)
    write_image(tmp_path / "images" / "a.tif", image)
    write_image(tmp_path / "labels" / "a_labels.tif", labels.astype(np.uint16))
    (name, img, lab), = read_label_folders(tmp_path)
    assert name == "a" and np.array_equal(lab, labels) and np.array_equal(img, image)
    with pytest.raises(DatasetError):
        list(read_label_folders(tmp_path / "images"))


@pytest.fixture(scope="session")
def fixture_run(tmp_path_factory):
    """The real detectron2 checkpoint fine-tuned for one epoch on tiny discs, a seeded validation share."""
    from synthetic import disc_image

    root = tmp_path_factory.mktemp("d2tune")
    samples = [(f"s{i}", *disc_image((96, 96), n=4, radius=(8, 12), seed=i)) for i in range(3)]
    out = root / "tuned" / "model_final.pth"
    progress = []
    result = run(maskrcnn_finetune_iter(samples, out, base=FIXTURE / "model_final.pth", epochs=1, batch=2,
                                        min_size=96, max_size=128, val_fraction=0.34), progress.append)
    return out, result, progress


@needs_fixture
@pytest.mark.slow
def test_a_fine_tuned_detectron2_checkpoint_keeps_detectron2s_layout_and_config(fixture_run):
    import torch

    from napari_cellseg.maskrcnn.convert import config_from_detectron2, read_config_yaml

    out, result, _ = fixture_run
    assert result.path == out and last_path(out).is_file()
    assert "val/mask_mAP50" in result.history[0]
    expected = {}
    for line in (FIXTURE / "keys_with_shapes.txt").read_text().splitlines():
        key, shape, _ = line.split("\t")
        expected[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in saved["model"].items()} == expected
    # config.yaml beside it: the fixture's own config with what fine-tuning changed; the loader reads it back
    cfg = read_config_yaml(out.parent / "config.yaml")
    base_cfg = read_config_yaml(FIXTURE / "config.yaml")
    assert cfg["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] == 1 and cfg["SOLVER"] == base_cfg["SOLVER"]
    config = config_from_detectron2(cfg)
    assert (config.min_size_test, config.max_size_test, config.input_format) == (96, 128, "BGR")
    assert config.stride_in_1x1 and config.roi_align_aligned
    # as detectron2 would see it: only {'model': ...} and config.yaml (the plugin's extras dropped)
    plain = out.parent / "plain" / "model_final.pth"
    plain.parent.mkdir()
    torch.save({"model": saved["model"]}, plain)
    (plain.parent / "config.yaml").write_text((out.parent / "config.yaml").read_text())
    from synthetic import disc_image

    image, _ = disc_image((96, 96), n=4, radius=(8, 12), seed=7)
    for path in (out, plain):
        model = load_model(path, device="cpu")
        assert model.exact is not None  # detectron2's own inference arithmetic
        segmented = run(segment_iter(image, model, conf=0.0))
        assert segmented.labels.shape == (96, 96)


@needs_fixture
def test_bad_start_checkpoints_fail_in_one_line_and_write_nothing(tmp_path):
    import torch

    from synthetic import disc_image

    samples = [("s0", *disc_image((64, 64), n=2, radius=(6, 8), seed=0))]
    truncated = tmp_path / "cut" / "model_final.pth"
    truncated.parent.mkdir()
    truncated.write_bytes((FIXTURE / "model_final.pth").read_bytes()[:1_000_000])
    other = tmp_path / "other" / "model.pth"
    other.parent.mkdir()
    torch.save({"model": {"backbone.bottom_up.res2.0.conv1.weight": torch.zeros(64, 64, 1, 1)}}, other)
    contradicting = tmp_path / "contra" / "model_final.pth"
    contradicting.parent.mkdir()
    contradicting.symlink_to(FIXTURE / "model_final.pth")
    (contradicting.parent / "config.yaml").write_text(
        (FIXTURE / "config.yaml").read_text().replace("NUM_CLASSES: 1", "NUM_CLASSES: 3"))
    for base, found in ((truncated, "truncated"), (other, "not a Mask R-CNN"), (contradicting, "num_classes 3 in config.yaml vs 1")):
        out = tmp_path / "out" / "tuned.pth"
        with pytest.raises(ModelLoadError) as info:
            run(maskrcnn_finetune_iter(samples, out, base=base, epochs=1, batch=1, min_size=64))
        message = str(info.value)
        assert "\n" not in message and found in message, message
        assert not out.exists() and not last_path(out).exists() and not (out.parent / "config.yaml").exists()


class _Oracle:
    """Stands in for a model in eval mode: predicts each frame's ground truth (score 0.9) or nothing."""

    training = False

    def __init__(self, answers):
        self.answers = iter(answers)

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def __call__(self, images):
        import torch

        labels, classes = next(self.answers)
        ids = [i for i in np.unique(labels) if i > 0]
        masks = torch.tensor(np.stack([labels == i for i in ids])[:, None].astype(np.float32))
        return [{"masks": masks, "scores": torch.full((len(ids),), 0.9),
                 "labels": torch.tensor([classes.get(int(i), 0) + 1 for i in ids])}]


def test_validation_mask_map_is_pycocotools_segm_map():
    """The evaluator gives 1.0 for perfect masks, and a wrong class or a shifted mask costs what COCOeval says."""
    from napari_cellseg.maskrcnn.train import evaluate_masks

    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15], labels[20:35, 20:35] = 1, 2
    frames = [(np.zeros((40, 40, 3), np.uint8), labels, {1: 0, 2: 1})]
    perfect = evaluate_masks(_Oracle([(labels, {1: 0, 2: 1})]), frames, 2, bgr=False)
    assert perfect == {"val/mask_mAP50": 1.0, "val/mask_mAP50-95": 1.0}
    swapped = evaluate_masks(_Oracle([(labels, {1: 1, 2: 0})]), frames, 2, bgr=False)
    assert swapped == {"val/mask_mAP50": 0.0, "val/mask_mAP50-95": 0.0}
    shifted = np.zeros_like(labels)
    shifted[7:17, 5:15], shifted[20:35, 20:35] = 1, 2  # IoU 8/12 = 0.67 for the first object
    partial = evaluate_masks(_Oracle([(shifted, {1: 0, 2: 1})]), frames, 2, bgr=False)
    assert partial["val/mask_mAP50"] == 1.0 and 0.5 < partial["val/mask_mAP50-95"] < 1.0
