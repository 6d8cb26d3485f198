"""Counting with box detectors (issue 29): the yolo-detect backend against ultralytics' own predict and val,
tiled detection, the detection result, CLI and Python paths, box metrics and box datasets."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_cellseg.core.box_metrics import BoxSample, evaluate_boxes, match_detections
from napari_cellseg.core.datasets import (DatasetError, boxes_from_labels, read_coco_detection_dataset,
                                          read_detection_dataset, read_yolo_detection_dataset, write_yolo_box_dataset)
from napari_cellseg.core.detection import DetectionResult, merge_tile_boxes
from napari_cellseg.core.result import OBJECT_COLUMNS

from synthetic import disc_image
from tiny_detector import IMGSZ, disc_samples, match_boxes, max_overlap_of_smaller, segment_cli_detections

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def detector(tiny_detector):
    from napari_cellseg import load_model

    return load_model(tiny_detector[0], device="cpu")


@pytest.fixture(scope="module")
def ultralytics_model(tiny_detector):
    from ultralytics import YOLO

    return YOLO(str(tiny_detector[0]))


def test_load_model_picks_the_detection_backend(tiny_detector, detector):
    from napari_cellseg.backends import ModelLoadError, load_model, probe_backend

    assert probe_backend(tiny_detector[0]) == "yolo-detect"
    assert detector.info.backend == "yolo-detect" and detector.info.task == "detect"
    assert detector.info.train_imgsz == IMGSZ and detector.info.class_names == {0: "nucleus"}
    # the shipped segmentation model still goes to the segmentation backend
    assert probe_backend("nuclei") == "yolo"
    with pytest.raises(ModelLoadError, match="task 'segment'.*yolo-detect"):
        load_model(tiny_detector[0], device="cpu", backend="yolo")
    with pytest.raises(ModelLoadError, match="ensemble"):
        load_model([str(tiny_detector[0]), "nuclei"], device="cpu")


def _assert_matches_predict(detector, ultralytics_model, seed, min_boxes):
    """On an image the size of imgsz (one tile) the pipeline gives ultralytics' own boxes and scores."""
    from napari_cellseg import segment

    _, rgb, _, _, _ = next(disc_samples(1, seed=seed))
    conf = 0.05
    ours = segment(rgb, detector, conf=conf, max_det=300)
    theirs = ultralytics_model.predict(rgb[..., ::-1].copy(), imgsz=IMGSZ, conf=conf, max_det=300, device="cpu",
                                       verbose=False)[0]
    assert isinstance(ours, DetectionResult)
    ref_boxes, ref_scores = theirs.boxes.xyxy.numpy(), theirs.boxes.conf.numpy()
    assert ours.n_objects == len(ref_scores) >= min_boxes
    pairs = match_boxes(ours.boxes, ref_boxes)
    assert len(pairs) == len(ref_scores)
    np.testing.assert_allclose([ours.scores[i] for i, _ in pairs], [ref_scores[j] for _, j in pairs], atol=1e-4)


@pytest.mark.parametrize("seed", [900, 901])
def test_boxes_and_scores_match_ultralytics_predict(detector, ultralytics_model, seed):
    _assert_matches_predict(detector, ultralytics_model, seed, min_boxes=3)


def test_yolov5u_checkpoint_matches_ultralytics_predict(tmp_path_factory):
    """A YOLOv5 'u' model (ultralytics' yolov5n.yaml, what yolov5nu.pt is) is an ultralytics detection
    checkpoint: probed as one, and giving ultralytics' own boxes and scores."""
    from ultralytics import YOLO

    from napari_cellseg import load_model
    from napari_cellseg.backends import probe_backend
    from tiny_detector import train_tiny_detector

    checkpoint, _ = train_tiny_detector(tmp_path_factory.mktemp("yolov5u"), epochs=40, model_yaml="yolov5n.yaml")
    reference = YOLO(str(checkpoint))
    assert reference.model.yaml["yaml_file"] == "yolov5n.yaml"
    assert probe_backend(checkpoint) == "yolo-detect"
    detector = load_model(checkpoint, device="cpu")
    assert detector.info.task == "detect"
    for seed in (900, 901):
        _assert_matches_predict(detector, reference, seed, min_boxes=1)


def test_result_table_has_the_mask_columns(detector):
    from napari_cellseg import segment

    _, rgb, _, _, _ = next(disc_samples(1, seed=902))
    result = segment(rgb, detector, conf=0.05)
    table = result.objects
    assert tuple(table) == OBJECT_COLUMNS
    b = result.boxes
    np.testing.assert_allclose(table["area"], (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    np.testing.assert_allclose(table["centroid_x"], (b[:, 0] + b[:, 2]) / 2)
    assert set(table["class_name"]) <= {"nucleus"} and not hasattr(result, "labels")
    higher = result.scoring_at_least(0.5)
    assert higher.n_objects == int((result.scores >= 0.5).sum())
    assert result.counts_per_frame(0.5).tolist() == [higher.n_objects]


def test_merge_keeps_a_box_cut_by_a_tile_border_once():
    """Tile 0 spans x 0..128 and cuts an object at its right border; tile 1 sees it whole."""
    boxes = np.array([[100, 10, 128, 50],   # tile 0: cut (touches x = 128)
                      [100, 10, 140, 50],   # tile 1: whole
                      [20, 20, 40, 40],     # tile 0 only
                      [150, 60, 170, 80]])  # tile 1 only
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    merged, merged_scores, _ = merge_tile_boxes(boxes, scores, np.zeros(4, int), np.array([0, 1, 0, 1]),
                                                np.array([True, False, False, False]))
    assert len(merged) == 3
    np.testing.assert_array_equal(merged[0], [100, 10, 140, 50])  # the whole box, with the higher score
    assert merged_scores[0] == pytest.approx(0.9)
    # two different objects side by side in neighbouring tiles are not merged
    two, _, _ = merge_tile_boxes(np.array([[100, 10, 128, 50], [128, 10, 160, 50]]), np.array([0.9, 0.8]),
                                 np.zeros(2, int), np.array([0, 1]), np.array([True, True]))
    assert len(two) == 2


def test_large_image_is_tiled_at_full_resolution_and_counted_once(detector):
    from napari_cellseg import segment

    image, labels = disc_image((300, 400), n=40, radius=(7, 12), seed=7, dtype=np.uint8)
    rgb = np.repeat(image[..., None], 3, axis=-1)
    # NMS at IoU 0.5: at ultralytics' 0.7 the tiny model itself keeps a few nested boxes inside one tile
    result = segment(rgb, detector, conf=0.25, iou=0.5)
    parameters = result.metadata["parameters"]
    assert parameters["tile"] == IMGSZ and parameters["zoom"] == 1.0  # the segmentation backends' rule
    b = result.boxes
    assert max_overlap_of_smaller(b) < 0.5  # no object twice
    truth = boxes_from_labels(labels)
    matched = len(match_boxes(b, truth, min_iou=0.5))
    assert matched >= 0.6 * len(truth)  # the tiny model finds most nuclei, across tile borders too


def test_python_and_cli_segment_write_boxes_not_labels(tiny_detector, tmp_path):
    from napari_cellseg import segment
    from napari_cellseg.core.io import write_image

    _, rgb, _, _, _ = next(disc_samples(1, seed=903))
    image_path = tmp_path / "cells.png"
    write_image(image_path, rgb)
    expected = segment(rgb, str(tiny_detector[0]), device="cpu")
    assert isinstance(expected, DetectionResult) and expected.n_objects > 0
    out = tmp_path / "out"
    rows = segment_cli_detections(image_path, tiny_detector[0], out, expected)
    assert tuple(rows[0]) == OBJECT_COLUMNS
    import csv

    env = {"PYTHONPATH": str(SRC), "YOLO_VERBOSE": "False", "PATH": "/usr/bin:/bin"}
    counts = list(csv.DictReader(open(out / "cells_counts.csv")))
    assert counts == [{"frame": "0", "count": str(expected.n_objects)}]
    provenance = json.loads((out / "cells_provenance.json").read_text())
    assert provenance["task"] == "detect" and provenance["model"]["backend"] == "yolo-detect"
    # a second run skips the finished file (no label image is expected of a detector)
    again = subprocess.run([sys.executable, "-m", "napari_cellseg.cli", "segment", str(image_path), "--model",
                            str(tiny_detector[0]), "--out", str(out), "--device", "cpu"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert "already done" in again.stdout
    # the boxes written are scored by evaluate against the image's YOLO label file
    labels_dir = tmp_path / "gt"
    labels_dir.mkdir()
    _, _, boxes, _, _ = next(disc_samples(1, seed=903))
    from napari_cellseg.core.datasets import yolo_box_lines

    (labels_dir / "cells.txt").write_text("\n".join(yolo_box_lines(boxes, rgb.shape[:2])))
    scored = subprocess.run([sys.executable, "-m", "napari_cellseg.cli", "evaluate", str(out), str(labels_dir),
                             "--csv", str(tmp_path / "ev.csv"), "--json"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert scored.returncode == 0, scored.stderr
    summary = json.loads(scored.stdout)["summary"]
    assert summary["n_gt"] == len(boxes)


def test_precision_recall_f1_by_hand():
    """Two true boxes, two detections, one matched: P = R = F1 = 0.5; COCO AP50 = 51/101 (recall 0..0.5 at
    precision 1 on COCO's 101 recall points)."""
    sample = BoxSample("a", pred_boxes=[[0, 0, 10, 10], [50, 50, 60, 60]], scores=[0.9, 0.8],
                       gt_boxes=[[1, 0, 11, 10], [20, 20, 30, 30]])
    assert match_detections(sample).tolist() == [True, False]
    ev = evaluate_boxes([sample], conf=0.5)
    assert (ev.precision, ev.recall, ev.f1) == (0.5, 0.5, 0.5)
    assert ev.map50 == pytest.approx(51 / 101)
    assert ev.count_mae == 0 and ev.relative_count_error == 0
    # at 0.85 only the matched one is kept: precision 1, recall 0.5, the best F1 (2/3)
    assert ev.best_f1 == pytest.approx(2 / 3) and 0.8 < ev.best_f1_conf <= 0.9
    low = evaluate_boxes([sample], conf=0.85)
    assert (low.precision, low.recall, low.count_mae) == (1.0, 0.5, 1.0)


def test_map50_matches_ultralytics_val(tiny_detector, ultralytics_model):
    """Our pycocotools mAP50 against ``model.val()`` on the same split and settings (conf 0.001, NMS IoU 0.7, 300
    detections), on the predictions val itself makes: its validation loader letterboxes each 128 x 128 image into
    a 160 x 160 grey frame (rectangular batches padded by half a stride), so we predict on that frame too.

    Then ultralytics' own ``compute_ap`` on our COCO matching gives val's mAP50 exactly, and COCOeval's mAP50
    differs only by the interpolation: COCO averages the step precision envelope at 101 recall points,
    ultralytics integrates the linearly interpolated envelope (trapezoids) over the same points. With n = 24
    true boxes the two differ by a fraction of a recall step (1 / n = 0.04) times the precision drops;
    we allow 0.01 (measured: 0.001)."""
    from ultralytics.utils.metrics import compute_ap

    checkpoint, data = tiny_detector
    samples = []
    for name, image, boxes, classes in read_yolo_detection_dataset(data, ["val"]):
        frame = np.full((160, 160, 3), 114, np.uint8)
        frame[16:144, 16:144] = image[..., ::-1]
        r = ultralytics_model.predict(frame, imgsz=160, conf=0.001, iou=0.7, max_det=300, device="cpu",
                                      verbose=False)[0]
        samples.append(BoxSample(name, r.boxes.xyxy.numpy() - 16, r.boxes.conf.numpy(), boxes,
                                 r.boxes.cls.numpy().astype(int), classes))
    ours = evaluate_boxes(samples)
    from ultralytics import YOLO

    theirs = YOLO(str(checkpoint)).val(data=str(data), imgsz=IMGSZ, batch=1, conf=0.001, iou=0.7, max_det=300,
                                       device="cpu", plots=False, verbose=False, workers=0,
                                       project=str(Path(checkpoint).parents[2]), name="val", exist_ok=True)
    n = sum(len(s.gt_boxes) for s in samples)
    assert n == 24
    tp = np.concatenate([match_detections(s) for s in samples])
    order = np.argsort(-np.concatenate([s.scores for s in samples]), kind="stable")
    cum = np.cumsum(tp[order])
    ap, _, _ = compute_ap(cum / n, cum / np.arange(1, len(order) + 1))
    assert ap == pytest.approx(theirs.box.map50, abs=1e-6)  # the same matching as ultralytics'
    assert ours.map50 == pytest.approx(theirs.box.map50, abs=0.01)
    assert ours.map50_95 == pytest.approx(theirs.box.map, abs=0.02)  # ten IoU thresholds, ten such differences


def test_cli_evaluate_runs_the_detector_on_a_dataset(tiny_detector, tmp_path):
    checkpoint, data = tiny_detector
    env = {"PYTHONPATH": str(SRC), "YOLO_VERBOSE": "False", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "napari_cellseg.cli", "evaluate", "--model", str(checkpoint),
                           "--data", str(data), "--split", "val", "--device", "cpu", "--csv",
                           str(tmp_path / "det.csv")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "mAP50" in done.stdout and "best F1" in done.stdout
    import csv

    curves = list(csv.DictReader(open(tmp_path / "det_curves.csv")))
    assert tuple(curves[0]) == ("confidence", "precision", "recall", "f1") and len(curves) == 1001
    f1 = np.array([float(r["f1"]) for r in curves])
    assert f"best F1 {f1.max():.4f}" in done.stdout
    assert (tmp_path / "det_pr_curve.csv").is_file()
    pytest.importorskip("matplotlib")
    assert (tmp_path / "det_F1_curve.png").is_file() and (tmp_path / "det_PR_curve.png").is_file()


# --- datasets -------------------------------------------------------------------------------------------------

def _roboflow(tmp_path, n=(3, 2, 1)):
    samples = list(disc_samples(sum(n), seed=500))
    split_of = {s[0]: "train" if i < n[0] else "val" if i < n[0] + n[1] else "test" for i, s in enumerate(samples)}
    return write_yolo_box_dataset([s[:4] for s in samples], tmp_path / "export", split_of=split_of,
                                  class_names=["nucleus"]), samples


def test_roboflow_export_is_read_as_downloaded(tmp_path):
    data, samples = _roboflow(tmp_path)
    text = data.read_text()
    assert "train: ../train/images" in text and "val: ../valid/images" in text and "path:" not in text
    read = {name: boxes for name, _, boxes, _ in read_yolo_detection_dataset(data)}
    assert len(read) == 6
    for name, _, boxes, _, _ in samples:
        np.testing.assert_allclose(read[name], boxes, atol=1e-3 * IMGSZ)
    assert len(list(read_yolo_detection_dataset(data, ["test"]))) == 1
    # polygon labels give their extent
    label = next((tmp_path / "export" / "train" / "labels").iterdir())
    label.write_text("0 0.1 0.2 0.3 0.2 0.3 0.5 0.1 0.5\n")
    boxes = {n: b for n, _, b, _ in read_yolo_detection_dataset(data, ["train"])}[label.stem]
    np.testing.assert_allclose(boxes, [[0.1 * IMGSZ, 0.2 * IMGSZ, 0.3 * IMGSZ, 0.5 * IMGSZ]])


def test_wrong_or_empty_datasets_name_the_folder(tmp_path):
    data, _ = _roboflow(tmp_path)
    with pytest.raises(DatasetError, match="no such file.*data.yaml"):
        list(read_detection_dataset(tmp_path / "missing" / "data.yaml"))
    for image in (tmp_path / "export" / "valid" / "images").iterdir():
        image.unlink()
    with pytest.raises(DatasetError, match=r"valid/images: the val folder holds no images"):
        list(read_yolo_detection_dataset(data, ["val"]))
    for label in (tmp_path / "export" / "train" / "labels").iterdir():
        label.unlink()
    with pytest.raises(DatasetError, match=r"train/labels: no label file for any of the 3 train images"):
        list(read_yolo_detection_dataset(data, ["train"]))
    import shutil

    shutil.rmtree(tmp_path / "export" / "test")
    with pytest.raises(DatasetError, match="the test folder '../test/images' does not exist"):
        list(read_yolo_detection_dataset(data))
    with pytest.raises(DatasetError, match="no data.yaml"):
        read_detection_dataset(tmp_path / "export" / "train")


def test_coco_boxes_and_instance_masks(tmp_path):
    from napari_cellseg.core.io import write_image, write_json

    image, labels = disc_image((64, 80), n=4, radius=(5, 8), seed=3, dtype=np.uint8)
    write_image(tmp_path / "a.png", image)
    boxes = boxes_from_labels(labels)
    assert len(boxes) == labels.max()
    ys, xs = np.nonzero(labels == 1)
    np.testing.assert_array_equal(boxes[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    write_json(tmp_path / "_annotations.coco.json", {
        "images": [{"id": 7, "file_name": "a.png", "height": 64, "width": 80}],
        "categories": [{"id": 1, "name": "nucleus"}],
        "annotations": [{"id": i + 1, "image_id": 7, "category_id": 1,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for i, b in enumerate(boxes)]})
    (name, _, read, classes), = read_coco_detection_dataset(tmp_path / "_annotations.coco.json")
    assert name == "a" and classes.tolist() == [0] * len(boxes)
    np.testing.assert_allclose(read, boxes)
    assert len(list(read_detection_dataset(tmp_path))) == 1  # the folder with its one JSON


def _finetune_detect_cli(tmp_path, out, *options):
    """'napari-cellseg finetune --task detect' from yolo11n.yaml on the export in tmp_path, in a fresh process."""
    env = {"PYTHONPATH": str(SRC), "YOLO_VERBOSE": "False", "PATH": "/usr/bin:/bin",
           "YOLO_CONFIG_DIR": str(tmp_path / "cfg")}
    return subprocess.run([sys.executable, "-m", "napari_cellseg.cli", "finetune", "--task", "detect", "--model",
                           "yolo11n.yaml", "--data", str(tmp_path / "export"), "--out", str(out), "--batch", "4",
                           "-q", *options], capture_output=True, text=True, env=env, timeout=600)


def test_cli_finetune_detect_on_a_roboflow_export(tmp_path):
    """A detector trained by 'finetune --task detect' on a Roboflow-layout export, from scratch (no download):
    its best-F1 confidence on the val split is stored as its own threshold, the test split is scored."""
    from napari_cellseg import load_model
    from tiny_detector import write_disc_dataset

    write_disc_dataset(tmp_path / "export", n_train=8, n_val=2, n_test=2)
    out = tmp_path / "det.pt"
    done = _finetune_detect_cli(tmp_path, out, "--epochs", "3")
    assert done.returncode == 0, done.stderr
    assert "stored as the model's own" in done.stdout and "test split" in done.stdout
    model = load_model(out, device="cpu")
    assert model.info.backend == "yolo-detect" and model.info.train_imgsz == IMGSZ and model.info.zoom == 1.0
    stored = model.info.extra["conf_calibration"]
    assert model.info.conf == stored["conf"] == pytest.approx(stored["val"]["best_f1_conf"], abs=1e-3)
    assert set(stored["test"]) >= {"precision", "recall", "f1", "map50"}


def test_diameter_sets_the_scale_of_a_detector_with_a_reference_size(tiny_detector, tmp_path):
    """With a reference object size stored (box side, network pixels), a given diameter scales tiles as for
    segmentation, and 'auto' measures the boxes of a first pass."""
    from napari_cellseg import load_model, segment
    from tiny_yolo import with_calibration

    model = load_model(with_calibration(tiny_detector[0], tmp_path / "ref.pt", object_diameter=20.0), device="cpu")
    image, _ = disc_image((256, 256), n=12, radius=(14, 20), seed=8, dtype=np.uint8)  # twice the trained size
    rgb = np.repeat(image[..., None], 3, axis=-1)
    given = segment(rgb, model, diameter=40)
    assert given.metadata["parameters"]["tile"] == 2 * IMGSZ and given.metadata["parameters"]["zoom"] == 0.5
    auto = segment(rgb, model, diameter="auto")
    measured = auto.metadata["parameters"]["measured_diameter"]
    assert measured is not None
    # auto_zoom's rule: the factor clipped to [1/1.5, 2], kept at 1 below a 15 % change
    factor = float(np.clip(20.0 / measured, 1 / 1.5, 2.0))
    expected_zoom = 1.0 if max(factor, 1 / factor) < 1.15 else factor
    assert auto.metadata["parameters"]["zoom"] == pytest.approx(expected_zoom, rel=0.02)
    plain = segment(rgb, tiny_detector[0], device="cpu")  # no reference size: the training scale
    assert plain.metadata["parameters"]["zoom"] == 1.0 and plain.metadata["parameters"]["diameter"] is None


def test_tile_box_dataset_cuts_boxes_as_the_labels_are_cut(tmp_path):
    """The tiles of a box dataset hold the boxes of the cut masks (rectangles: exact), slivers dropped, and a
    small image is padded to the full tile, so every object is trained at one scale."""
    from napari_cellseg.core.datasets import read_yolo_detection_dataset, write_yolo_box_dataset
    from napari_cellseg.core.tiling import tile_grid
    from napari_cellseg.yolo.train import MIN_BOX_SIDE, tile_box_dataset

    rng = np.random.default_rng(0)
    labels = np.zeros((150, 200), np.uint16)
    for k in range(1, 30):  # disjoint rectangles, some across tile borders
        y, x = rng.integers(0, 140), rng.integers(0, 190)
        h, w = rng.integers(3, 12, size=2)
        if not labels[max(y - 1, 0):y + h + 1, max(x - 1, 0):x + w + 1].any():
            labels[y:y + h, x:x + w] = k
    image = (labels > 0).astype(np.uint8)[..., None].repeat(3, -1) * 200
    small = np.zeros((40, 50), np.uint16)
    small[5:15, 10:30] = 1
    samples = [("big", image, boxes_from_labels(labels), np.zeros(len(boxes_from_labels(labels)), np.int64)),
               ("small", (small > 0).astype(np.uint8)[..., None].repeat(3, -1) * 200, boxes_from_labels(small),
                np.zeros(1, np.int64))]
    data = write_yolo_box_dataset(samples, tmp_path / "data", class_names=["nucleus"])
    tiled = tile_box_dataset(data, 64, tmp_path / "tiles")
    got = {name: (img, boxes) for name, img, boxes, _ in read_yolo_detection_dataset(tiled, ("train",))}
    grid = tile_grid(150, 200, 64, 16)
    assert len(got) == len(grid) + 1
    for k, t in enumerate(grid):
        img, boxes = got[f"train_big_{k:03d}"]
        assert img.shape[:2] == (64, 64)
        expected = boxes_from_labels(labels[t.slices])
        expected = expected[((expected[:, 2] - expected[:, 0]) >= MIN_BOX_SIDE)
                            & ((expected[:, 3] - expected[:, 1]) >= MIN_BOX_SIDE)]
        order = lambda b: b[np.lexsort(b.T[::-1])]  # noqa: E731
        np.testing.assert_allclose(order(boxes), order(expected), atol=1e-3)
    img, boxes = got["train_small_000"]
    assert img.shape[:2] == (64, 64) and not img[40:].any() and not img[:, 50:].any()
    np.testing.assert_allclose(boxes, [[10, 5, 30, 15]], atol=1e-3)


def test_finetune_detect_with_a_zoom_trains_on_tiles_at_that_scale(tmp_path):
    """'finetune --task detect --zoom' cuts the training images into imgsz / zoom tiles and records that zoom
    (images of mixed sizes: without it the first training image's size decides); the calibration scores the
    whole val images."""
    from napari_cellseg import load_model
    from tiny_detector import write_disc_dataset

    write_disc_dataset(tmp_path / "export", n_train=4, n_val=2, n_test=0)
    out = tmp_path / "det.pt"
    done = _finetune_detect_cli(tmp_path, out, "--epochs", "1", "--imgsz", "64", "--zoom", "2")
    assert done.returncode == 0, done.stderr
    model = load_model(out, device="cpu")
    assert model.info.train_imgsz == 64 and model.info.zoom == 2.0
    assert "conf_calibration" in model.info.extra
