"""Sartorius run-length CSV and COCO JSON exports, and the segment CLI with Mask R-CNN ensembles."""
import json

import numpy as np
import pytest

from napari_cellseg.core.submission import (
    coco_instances, labels_from_coco, read_sartorius_csv, rle_decode, rle_encode, write_sartorius_csv,
)

from synthetic import disc_image


def test_rle_is_one_indexed_row_major():
    mask = np.zeros((3, 4), bool)
    mask[0, 1:3] = True  # flat positions 1, 2 -> starts at pixel 2
    mask[1, 3] = mask[2, 0] = True  # positions 7 and 8: one run across the row break
    assert rle_encode(mask) == "2 2 8 2"
    assert np.array_equal(rle_decode("2 2 8 2", (3, 4)), mask)
    with pytest.raises(ValueError):
        rle_decode("11 5", (3, 4))


def test_sartorius_csv_round_trip(tmp_path):
    _, labels = disc_image((64, 80), n=6, seed=3)
    empty = np.zeros((10, 12), np.int32)
    n = write_sartorius_csv(tmp_path / "submission.csv", [("img_a", labels), ("img_b", empty)])
    assert n == labels.max()
    header = (tmp_path / "submission.csv").read_text().splitlines()[0]
    assert header == "id,predicted"
    back = read_sartorius_csv(tmp_path / "submission.csv", {"img_a": labels.shape, "img_b": empty.shape})
    for label in range(1, labels.max() + 1):  # same instances (numbered in file order = label order)
        assert np.array_equal(back["img_a"] == label, labels == label)
    assert not back["img_b"].any()


def test_coco_json_round_trip_with_scores_and_classes():
    _, labels = disc_image((64, 80), n=5, seed=4)
    ids = np.unique(labels[labels > 0])
    table = {"label": ids, "frame": np.zeros(len(ids), int), "score": np.linspace(0.5, 0.9, len(ids)),
             "class_id": np.arange(len(ids)) % 2}
    coco = json.loads(json.dumps(coco_instances([("img", labels, table)], {0: "astro", 1: "cort"})))
    assert [c["name"] for c in coco["categories"]] == ["astro", "cort"]
    assert [a["category_id"] for a in coco["annotations"]] == [int(c) + 1 for c in table["class_id"]]
    assert [a["score"] for a in coco["annotations"]] == pytest.approx(table["score"].tolist())
    assert np.array_equal(labels_from_coco(coco)["img"], labels)
