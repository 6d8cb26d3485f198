import json

import numpy as np
import pytest
import tifffile

from napari_cellseg.cli import main
from napari_cellseg.core.metrics import (
    agreement, coco_mask_map, dice, evaluate, iou_matrix, matching_stats, unmatched,
)

from synthetic import disc_image


def test_perfect_prediction_scores_one_with_any_label_ids():
    _, truth = disc_image((128, 128), n=8)
    shuffled = np.where(truth > 0, truth * 7 + 100, 0)  # different, non-sequential ids
    row = evaluate(shuffled, truth)
    assert row["f1_50"] == row["dsb_score"] == row["dice"] == 1.0
    assert row["coco_map"] == pytest.approx(1.0)
    assert row["count_error"] == 0


def test_missing_and_extra_objects_are_counted():
    _, truth = disc_image((128, 128), n=8, seed=2)
    pred = truth.copy()
    pred[pred == 3] = 0  # one missed
    pred[0:5, 0:5] = 50  # one invented
    (s,) = matching_stats(pred, truth, thresholds=(0.5,))
    assert (s.tp, s.fp, s.fn) == (7, 1, 1)
    assert s.f1 == pytest.approx(14 / 16) and s.score == pytest.approx(7 / 9)
    fp, fn = unmatched(pred, truth)
    assert list(fp) == [50] and list(fn) == [3]
    row = evaluate(pred, truth)
    assert row["count_error"] == 0 and row["n_pred"] == 8


def test_dsb_score_rewards_precise_masks():
    truth = np.zeros((40, 40), np.int32)
    truth[10:30, 10:30] = 1  # 400 px
    pred = np.zeros_like(truth)
    pred[10:30, 10:26] = 1  # IoU 0.80
    stats = matching_stats(pred, truth)
    assert [s.tp for s in stats] == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert evaluate(pred, truth)["dsb_score"] == pytest.approx(0.7)
    assert dice(pred, truth) == pytest.approx(2 * 320 / 720)


def test_one_to_one_matching_never_reuses_an_object():
    truth = np.zeros((10, 20), np.int32)
    truth[:, :10], truth[:, 10:] = 1, 2
    pred = np.ones_like(truth)  # one object covering both
    iou, _, _ = iou_matrix(pred, truth)
    assert iou.shape == (1, 2) and iou[0, 0] == pytest.approx(0.5)
    (s,) = matching_stats(pred, truth, thresholds=(0.5,))
    assert s.tp == 1 and s.fn == 1
    assert agreement(pred, truth)["matched"] == 1


def test_coco_map_uses_scores_to_rank():
    _, truth = disc_image((128, 128), n=6, seed=5)
    pred = truth.copy()
    pred[100:110, 100:110] = 99  # a false positive
    confident_fp = coco_mask_map(pred, truth, {99: 0.99, **{i: 0.5 for i in range(1, 7)}})["map"]
    unsure_fp = coco_mask_map(pred, truth, {99: 0.01, **{i: 0.5 for i in range(1, 7)}})["map"]
    assert unsure_fp > confident_fp


def test_evaluate_cli_folders_matched_by_name(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for i in range(2):
        _, truth = disc_image((96, 96), n=5, seed=i)
        pred = truth.copy()
        if i == 1:
            pred[pred == 1] = 0
        tifffile.imwrite(tmp_path / "pred" / f"img{i}_labels.tif", pred)
        tifffile.imwrite(tmp_path / "gt" / f"img{i}.tif", truth)
    csv_path = tmp_path / "eval.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "img0" in out and "img1" in out and "mean" in out
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("name,n_pred,n_gt") and len(lines) == 4
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json", "--csv", ""]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["images"][0]["f1_50"] == 1.0 and data["images"][1]["n_pred"] == 4
    assert data["mean"]["f1_50"] == pytest.approx((1.0 + 8 / 9) / 2)


def test_evaluate_cli_rejects_shape_mismatch(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((10, 10), np.uint16))
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((12, 10), np.uint16))
    assert main(["evaluate", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "--csv", ""]) == 2
    assert "differs" in capsys.readouterr().err
