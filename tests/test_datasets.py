import json

import numpy as np
import pytest
import tifffile

from napari_cellseg.cli import main
from napari_cellseg.core.datasets import export_dataset, read_coco_dataset, read_yolo_dataset, split_names
from napari_cellseg.core.metrics import iou_matrix, match_pairs

from synthetic import disc_image


def _round_trip_ious(read_back, truth):
    ious = []
    for name, image, labels in read_back:
        iou, pred_ids, gt_ids = iou_matrix(labels, truth[name])
        rows, cols = match_pairs(iou, 0.5)
        assert len(rows) == len(gt_ids) == len(pred_ids), name  # every object back, no extra
        ious.extend(iou[rows, cols])
    return np.array(ious)


@pytest.fixture
def samples():
    return [(f"img{i}", *disc_image((96, 120), n=6, radius=(4, 12), seed=i)) for i in range(5)]


def test_yolo_round_trip_gives_back_every_object(tmp_path, samples):
    data = export_dataset(samples, tmp_path / "yolo", "yolo", val_fraction=0.2)
    config = data.read_text()
    assert "train: images/train" in config and "val: images/val" in config and "0: cell" in config
    assert len(list((tmp_path / "yolo" / "labels" / "val").glob("*.txt"))) == 1
    ious = _round_trip_ious(read_yolo_dataset(data), {n: l for n, _, l in samples})
    assert len(ious) == 30 and ious.min() > 0.97


def test_coco_round_trip_is_exact(tmp_path, samples):
    out = export_dataset(samples, tmp_path / "coco", "coco", val_fraction=0.4)
    truth = {n: l for n, _, l in samples}
    n_val = len(json.loads((out / "val.json").read_text())["images"])
    assert n_val == 2
    ious = np.concatenate([_round_trip_ious(read_coco_dataset(out / f), truth) for f in ("train.json", "val.json")])
    assert len(ious) == 30 and np.all(ious == 1.0)


def test_stack_frames_become_samples_and_16bit_is_normalised(tmp_path):
    stack = np.stack([disc_image((64, 64), n=3, seed=s)[0] for s in range(3)])
    labels = np.stack([disc_image((64, 64), n=3, seed=s)[1] for s in range(3)])
    out = export_dataset([("movie", stack, labels)], tmp_path / "d", "coco", val_fraction=0)
    images = json.loads((out / "train.json").read_text())["images"]
    assert [i["file_name"] for i in images] == [f"images/train/movie_t00{k}.png" for k in range(3)]
    (_, image, _), *_ = read_coco_dataset(out / "train.json")
    assert image.dtype == np.uint8 and image.max() > 200


def test_split_is_reproducible_and_mismatched_labels_are_refused():
    names = [f"n{i}" for i in range(10)]
    assert split_names(names, 0.3) == split_names(list(reversed(names)), 0.3) and len(split_names(names, 0.3)) == 3
    with pytest.raises(ValueError, match="do not match"):
        export_dataset([("x", np.zeros((10, 10)), np.zeros((12, 10), int))], "/nonexistent", "yolo")


def test_export_cli_and_reading_the_dataset_back_in_napari_reader(tmp_path, samples, capsys):
    for name, image, labels in samples:
        tifffile.imwrite(tmp_path / f"{name}.tif", image)
        tifffile.imwrite(tmp_path / f"{name}_labels.tif", labels.astype(np.uint16))
    images = [str(tmp_path / f"{n}.tif") for n, _, _ in samples]
    labels = [str(tmp_path / f"{n}_labels.tif") for n, _, _ in samples]
    assert main(["export", *images, "--labels", *labels, "--format", "yolo", "--out", str(tmp_path / "ds"),
                 "--val-fraction", "0.4"]) == 0
    from napari_cellseg._reader import napari_get_reader

    reader = napari_get_reader(str(tmp_path / "ds"))
    layers = reader(str(tmp_path / "ds"))
    assert [kind for _, _, kind in layers] == ["image", "labels"] * 5
    assert main(["export", *images, "--labels", *labels[:2], "--out", str(tmp_path / "x")]) == 2
    assert "one label image per image" in capsys.readouterr().err
