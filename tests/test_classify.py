import csv

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_cellseg.classifier.crops import cell_crops, crop_at
from napari_cellseg.classifier.model import (
    DEFAULT_CLASSES, ClassifierLoadError, build_resnet50, load_classifier,
)
from napari_cellseg.classifier.predict import classify_iter
from napari_cellseg.classifier.train import confusion_matrix, cross_validate_iter, train_iter
from napari_cellseg.cli import main
from napari_cellseg.pipeline.segment import run


def _spot_or_ring(kind: int, rng, size=40):
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
    base = np.exp(-r ** 2 / 30) if kind == 0 else np.exp(-(r - 10) ** 2 / 6)
    return (base + rng.normal(0, 0.05, base.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 8)
    crops = np.stack([_spot_or_ring(k, rng) for k in labels])
    result = run(train_iter(crops, labels, ["spot", "ring"], epochs=1, batch_size=8))
    path = tmp_path_factory.mktemp("clf") / "classifier.pt"
    result.classifier.save(path, history=result.history)
    return path


def test_saved_classifier_loads_safely_with_its_names(tiny_classifier):
    clf = load_classifier(tiny_classifier)
    assert clf.class_names == ["spot", "ring"] and clf.in_channels == 1 and clf.crop_size == 40
    probs = clf.predict(np.zeros((3, 40, 40), np.float32))
    assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_three_channel_state_dict_gets_an_averaged_first_convolution(tmp_path):
    import torch

    model = build_resnet50(8, in_channels=3)
    torch.save(model.state_dict(), tmp_path / "rgb.pth")
    clf = load_classifier(tmp_path / "rgb.pth")
    assert clf.in_channels == 1 and clf.class_names == list(DEFAULT_CLASSES)
    expected = model.conv1.weight.mean(dim=1, keepdim=True)
    assert torch.allclose(clf.model.conv1.weight, expected)
    torch.save({"model_state_dict": model.state_dict(), "epoch": 3}, tmp_path / "full.pth")
    assert load_classifier(tmp_path / "full.pth").class_names == list(DEFAULT_CLASSES)


def test_mismatched_and_foreign_checkpoints_are_refused(tmp_path):
    import torch
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None, num_classes=8).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ClassifierLoadError, match="missing: .*unexpected"):
        load_classifier(tmp_path / "r18.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ClassifierLoadError, match="not a ResNet classifier"):
        load_classifier(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ClassifierLoadError, match="not a plain PyTorch"):
        load_classifier(tmp_path / "junk.pth")


def test_crops_near_the_border_are_padded_not_dropped():
    frame = np.ones((30, 30), np.float32)
    crop = crop_at(frame, 2, 2, 10)
    assert crop.shape == (10, 10) and crop[0, 0] == 0 and crop[-1, -1] == 1
    labels = np.zeros((2, 30, 30), np.int32)
    labels[:, 0:4, 0:4] = 5  # a cell in the corner
    labels[1, 20:25, 20:25] = 6
    crops, rows = cell_crops(np.random.default_rng(0).random((2, 30, 30)), labels, size=12)
    assert crops.shape == (3, 1, 12, 12)
    assert list(rows["track_id"]) == [5, 5, 6] and list(rows["frame"]) == [0, 1, 1]


def test_classification_table_consensus_changes_and_counts(tiny_classifier):
    clf = load_classifier(tiny_classifier)
    tracked = np.zeros((3, 60, 60), np.int32)
    tracked[:, 10:20, 10:20] = 1
    tracked[:, 40:50, 40:50] = 2
    image = np.random.default_rng(1).random((3, 60, 60)).astype(np.float32)
    result = run(classify_iter(image, tracked, clf))
    t = result.table
    assert len(t["frame"]) == 6 and set(t["phenotype"]) <= {"spot", "ring"}
    assert np.all(t["probability"] >= t["runner_up_probability"])
    per_track = result.per_track()
    assert list(per_track["track_id"]) == [1, 2] and list(per_track["n_frames"]) == [3, 3]
    counts = result.counts_per_frame()
    assert list(counts["frame"]) == [0, 1, 2] and all(counts["spot"] + counts["ring"] == 2)


def test_cross_validation_reports_every_fold():
    rng = np.random.default_rng(2)
    labels = np.array([0, 1] * 6)
    crops = np.stack([_spot_or_ring(k, rng) for k in labels])
    summary = run(cross_validate_iter(crops, labels, ["spot", "ring"], folds=2, epochs=1, batch_size=6))
    assert len(summary["fold_balanced_accuracy"]) == 2
    assert summary["mean_balanced_accuracy"] == pytest.approx(np.mean(summary["fold_balanced_accuracy"]))
    assert summary["std_balanced_accuracy"] == pytest.approx(np.std(summary["fold_balanced_accuracy"]))
    assert summary["confusion"].sum() == 12
    assert confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist() == [[1, 0], [1, 1]]


def test_train_and_classify_cli(tmp_path, capsys, tiny_classifier):
    rng = np.random.default_rng(3)
    for kind, name in enumerate(["spot", "ring"]):
        (tmp_path / "crops" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray((_spot_or_ring(kind, rng).clip(0, 1) * 255).astype(np.uint8)).save(
                tmp_path / "crops" / name / f"{i}.png")
    out = tmp_path / "clf.pt"
    assert main(["train-classifier", str(tmp_path / "crops"), "--out", str(out), "--epochs", "1",
                 "--folds", "2", "--batch", "4", "--val", str(tmp_path / "crops")]) == 0
    printed = capsys.readouterr().out
    assert "random weights" in printed and "cross-validation (2 folds, eval mode" in printed
    assert "confusion matrix" in printed and "train accuracy" not in printed
    assert load_classifier(out).class_names == ["ring", "spot"]
    assert main(["classify", str(tmp_path / "crops"), "--model", str(out), "--out", str(tmp_path / "res")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "res" / "crops_phenotypes.csv")))
    assert len(rows) == 8 and rows[0]["phenotype"] in ("ring", "spot")
    tracked = np.zeros((2, 50, 50), np.uint16)
    tracked[:, 5:15, 5:15] = 1
    tifffile.imwrite(tmp_path / "movie.tif", rng.random((2, 50, 50)).astype(np.float32))
    tifffile.imwrite(tmp_path / "movie_tracked.tif", tracked)
    assert main(["classify", str(tmp_path / "movie.tif"), "--labels", str(tmp_path / "movie_tracked.tif"),
                 "--model", str(out), "--out", str(tmp_path / "res")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "res" / "movie_phenotypes.csv")))
    assert {"track_id", "frame", "phenotype", "probability", "runner_up"} <= set(rows[0]) and len(rows) == 2
    assert (tmp_path / "res" / "movie_phenotype_counts.csv").is_file()


@pytest.mark.gui
def test_classify_widget_points_timeline_and_training_from_points(qtbot, make_napari_viewer, tiny_classifier,
                                                                   tmp_path):
    from napari_cellseg.widgets.classify import ClassifyWidget

    viewer = make_napari_viewer()
    tracked = np.zeros((3, 60, 60), np.int32)
    tracked[:, 10:20, 10:20] = 1
    tracked[:2, 40:50, 40:50] = 2
    image_layer = viewer.add_image(np.random.default_rng(4).random((3, 60, 60)), name="movie")
    viewer.add_labels(np.zeros((60, 60), np.int32), name="ground truth 2-D")  # first, but no time axis
    tracked_layer = viewer.add_labels(tracked, name="tracked")
    widget = ClassifyWidget(viewer)
    assert widget.tracked.value is tracked_layer and widget.image.value is image_layer
    assert not widget.run_button.enabled  # no classifier chosen yet
    widget.model_file.value = str(tiny_classifier)
    assert widget.run_button.enabled
    for control in (widget.image, widget.tracked, widget.model_file, widget.class_names, widget.channel,
                    widget.device, widget.train_points, widget.crop_size, widget.train_epochs, widget.init,
                    widget.train_out, widget.train_button, widget.track_id, widget.csv_dir, widget.save_button):
        assert control.tooltip, control.label
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    points = viewer.layers[-1]
    assert points.data.shape == (5, 3) and set(points.features["phenotype"]) <= {"spot", "ring"}
    assert {"track_id", "frame", "probability", "runner_up"} <= set(points.features.columns)
    frames, _ = widget.plot.lines["phenotype"]
    assert frames == [0, 1, 2]  # the longest track
    counts = widget.counts.to_dataframe()
    assert list(counts["frame"]) == [0, 1, 2] and counts[["spot", "ring"]].sum(axis=1).tolist() == [2, 2, 1]
    widget.csv_dir.value = str(tmp_path)
    widget.save_csvs()
    assert (tmp_path / "phenotype_counts.csv").is_file()

    points.features["phenotype"] = ["spot", "ring", "spot", "ring", "spot"]  # the user's corrections
    widget.train_points.reset_choices()
    widget.train_points.value = points
    widget.train_epochs.value = 1
    widget.train_out.value = str(tmp_path / "mine.pt")
    widget.train_from_points()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert load_classifier(tmp_path / "mine.pt").class_names == ["spot", "ring"]
    assert widget.model_file.value == tmp_path / "mine.pt"
    assert (tmp_path / "mine_last.pt").is_file()
    assert "no validation crops" in widget.status.value  # one track per class: none can be held out

    coords = [[0, 15 + 5 * (i % 4), 15 + 8 * i] for i in range(8)]  # points off the cells: each stands alone
    hand = viewer.add_points(coords, features={"phenotype": ["spot", "ring"] * 4}, name="hand")
    widget.train_points.reset_choices()
    widget.train_points.value = hand
    widget.train_out.value = str(tmp_path / "hand.pt")
    widget.train_from_points()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert (tmp_path / "hand_confusion.csv").is_file() and (tmp_path / "hand_validation.csv").is_file()
    validation = widget.validation.to_dataframe()  # eval-mode recall and confusion of the held-out points
    assert list(validation["class"]) == ["ring", "spot"] and validation[["-> spot", "-> ring"]].to_numpy().sum() == 2
    assert "validation balanced accuracy" in widget.status.value


@pytest.mark.realdata
def test_deeploc_two_channel_eleven_classes_train_save_load_predict(shared_data, tmp_path):
    folder = shared_data / "deeploc-yeast"
    crops = tifffile.imread(next(folder.glob("*.tif")))
    rows = list(csv.DictReader(open(folder / "labels.csv")))
    assert crops.shape[1:] == (2, 64, 64)
    label_column = [c for c in rows[0] if c.lower() not in ("index", "id", "crop", "file")][-1]
    names = sorted({r[label_column] for r in rows})
    labels = np.array([names.index(r[label_column]) for r in rows])
    from napari_cellseg.classifier.crops import normalise_frame

    normalised = np.stack([[normalise_frame(c) for c in crop] for crop in crops])
    result = run(train_iter(normalised, labels, names, epochs=1, batch_size=12))
    result.classifier.save(tmp_path / "deeploc.pt")
    clf = load_classifier(tmp_path / "deeploc.pt")
    assert clf.in_channels == 2 and clf.class_names == names and clf.crop_size == 64
    assert clf.predict(normalised[:5]).shape == (5, len(names))
