"""The user's path (CLI, ``napari_cellseg.segment``, the COCO export) against detectron2's own predictions.

tests/test_detectron2_fixture.py checks the backend called on a tile; this checks what a user gets:
``napari-cellseg segment IMG --model model_final.pth --conf 0.05 --coco out.json`` and
``napari_cellseg.segment(...)`` on the fixture's images must give DefaultPredictor's detections (the
frame reaches the model as given and whole, ``ModelInfo.wants_raw_uint8`` / ``wants_whole_frame``),
the COCO file must hold them as predicted (boxes, scores, overlapping masks), and the notes of a
checkpoint without its config.yaml must reach the warnings. Skipped when ../shared is absent.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from test_detectron2_fixture import FIXTURE, IMAGES, MIN_SCORE, _reference, box_iou, match_one_to_one

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,  # a few CPU minutes: R50-FPN on 512x512 (800x800 without config.yaml) frames
    pytest.mark.skipif(FIXTURE is None, reason="shared/fixtures/detectron2 is not present "
                                               "(set CELLSEG_SHARED to the folder holding fixtures/)"),
]


def _stem(name: str) -> str:
    return name.removeprefix("pred_").removesuffix(".npz")


def _decode(rles) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return np.stack([mask_utils.decode({"size": r["size"], "counts": r["counts"]}) for r in rles]).astype(bool)


def _agreement(ref: dict, boxes: np.ndarray, scores: np.ndarray, masks: np.ndarray) -> dict:
    """Each detectron2 detection (score >= MIN_SCORE) against its one-to-one plugin instance."""
    keep = ref["scores"] >= MIN_SCORE
    ref_boxes, ref_scores, ref_masks = ref["boxes"][keep], ref["scores"][keep], ref["masks"][keep]
    match = match_one_to_one(ref_boxes, boxes)
    assert (match >= 0).all(), f"{(match < 0).sum()} detectron2 detections have no plugin instance"
    ours = masks[match]
    inter = (ours & ref_masks).sum((1, 2))
    union = (ours | ref_masks).sum((1, 2))
    mask_iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return {"n": int(keep.sum()), "box_iou": box_iou(ref_boxes, boxes)[np.arange(len(ref_boxes)), match],
            "score_diff": np.abs(ref_scores - scores[match]), "mask_iou": mask_iou,
            "above_half": (int((scores > 0.5).sum()), int((ref["scores"] > 0.5).sum()))}


def _assert_detectron2s(found: dict) -> None:
    assert found["box_iou"].min() >= 0.98, found["box_iou"].min()
    assert found["score_diff"].max() <= 0.005, found["score_diff"].max()
    assert found["mask_iou"].min() >= 0.95, found["mask_iou"].min()
    ours, theirs = found["above_half"]
    assert abs(ours - theirs) <= 1, found["above_half"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One CLI run over both fixture images, as a user types it."""
    from napari_cellseg.cli import main

    out = tmp_path_factory.mktemp("cli")
    images = [str(FIXTURE / f"{_stem(n)}.png") for n in IMAGES]
    code = main(["segment", *images, "--model", str(FIXTURE / "model_final.pth"), "--conf", str(MIN_SCORE),
                 "--coco", str(out / "out.json"), "--out", str(out), "--device", "cpu", "-q"])
    assert code == 0
    return out, json.loads((out / "out.json").read_text())


@pytest.mark.parametrize("name", IMAGES)
def test_cli_coco_export_gives_detectron2s_detections(cli_run, name):
    out, coco = cli_run
    ref, _ = _reference(name)
    (image,) = [i for i in coco["images"] if i["file_name"] == _stem(name)]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    xywh = np.array([a["bbox"] for a in anns], np.float64)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    scores = np.array([a["score"] for a in anns])
    assert len(anns) == int((ref["scores"] >= MIN_SCORE).sum())  # every instance, none merged or dropped
    assert {a["category_id"] for a in anns} == {1}
    _assert_detectron2s(_agreement(ref, boxes, scores, _decode([a["segmentation"] for a in anns])))


def test_cli_coco_keeps_overlaps_and_the_labels_file_resolves_them(cli_run):
    """detectron2's masks overlap (nested duplicates): the COCO file keeps each whole, the label image
    gives each pixel to one object, and the file loads in pycocotools as a results file."""
    from pycocotools.coco import COCO

    from napari_cellseg.core.io import read_image

    out, coco = cli_run
    name = IMAGES[0]
    ref, _ = _reference(name)
    (image,) = [i for i in coco["images"] if i["file_name"] == _stem(name)]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    masks = _decode([a["segmentation"] for a in anns])
    ref_masks = ref["masks"][ref["scores"] >= MIN_SCORE]
    ref_overlap = int((ref_masks.sum(0) > 1).sum())
    ours_overlap = int((masks.sum(0) > 1).sum())
    assert ref_overlap > 0 and abs(ours_overlap - ref_overlap) <= 0.01 * ref_overlap
    labels = read_image(out / f"{_stem(name)}_labels.tif", lazy=False)
    in_labels = {a["label"] for a in anns if a["label"]}
    assert in_labels == set(np.unique(labels[labels > 0]).tolist()) and len(in_labels) < len(anns)
    for a, mask in zip(anns, masks):  # an object of the label image is a part of its predicted mask
        if a["label"]:
            assert not (labels == a["label"])[~mask].any()
    as_dataset = COCO(str(out / "out.json"))  # the file is a COCO dataset ...
    assert len(as_dataset.getAnnIds()) == len(coco["annotations"])
    loaded = as_dataset.loadRes(coco["annotations"])  # ... whose annotations are a results list
    assert len(loaded.getAnnIds()) == len(coco["annotations"])
    first = loaded.loadAnns(loaded.getAnnIds(imgIds=[image["id"]]))
    np.testing.assert_allclose([a["bbox"] for a in first], [a["bbox"] for a in anns])  # boxes kept as predicted


def test_segment_api_gives_detectron2s_detections():
    import napari_cellseg

    from napari_cellseg import load_model

    model = load_model(FIXTURE / "model_final.pth", device="cpu")
    assert model.info.wants_raw_uint8 and model.info.wants_whole_frame
    for name in IMAGES:
        ref, _ = _reference(name)
        result = napari_cellseg.segment(FIXTURE / f"{_stem(name)}.png", model, conf=MIN_SCORE)
        assert result.metadata["parameters"]["whole_frame"] and result.metadata["parameters"]["tile"] == 256
        instances = result.instances
        boxes = np.array([i["box"] for i in instances])
        scores = np.array([i["score"] for i in instances])
        _assert_detectron2s(_agreement(ref, boxes, scores, _decode([i["segmentation"] for i in instances])))
        assert result.n_objects == len({i["label"] for i in instances if i["label"]})
        assert not result.warnings  # config.yaml read, uint8 frames: nothing to warn about


def test_without_config_the_defaults_note_reaches_warnings_and_the_cli_summary(tmp_path, capsys):
    import napari_cellseg
    from napari_cellseg.cli import main

    shutil.copy(FIXTURE / "model_final.pth", tmp_path / "model_final.pth")  # no config.yaml beside it
    image = str(FIXTURE / f"{_stem(IMAGES[0])}.png")
    result = napari_cellseg.segment(image, tmp_path / "model_final.pth", device="cpu")
    note = [w for w in result.warnings if "no config.yaml beside the checkpoint: detectron2 defaults used" in w]
    assert note and note[0].startswith("model_final.pth: ")
    assert result.summary.warnings == result.warnings and note[0] in result.describe()
    provenance_warnings = result.metadata["summary"]["warnings"]
    assert note[0] in provenance_warnings
    capsys.readouterr()
    assert main(["segment", image, "--model", str(tmp_path / "model_final.pth"), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "-q"]) == 0
    assert note[0] in capsys.readouterr().err
    assert note[0] in json.loads((tmp_path / "o" / f"{_stem(IMAGES[0])}_provenance.json").read_text())["warnings"]
