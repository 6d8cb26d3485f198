"""The classifier really classifies: eval-mode validation, batch-norm statistics, the seed's recipe,
foreign weights, crops made the same way for training and prediction."""
import csv
import os

import numpy as np
import pytest
import tifffile

torch = pytest.importorskip("torch")

from napari_cellseg.classifier.crops import cell_crops, crop_file  # noqa: E402
from napari_cellseg.classifier.model import DEFAULT_CLASSES, build_resnet50, load_classifier  # noqa: E402
from napari_cellseg.classifier.synthetic import THREE_CLASSES, write_crop_folders  # noqa: E402
from napari_cellseg.classifier.train import (  # noqa: E402
    Evaluation, build_for_training, recalibrate_batch_norm, split_validation,
)
from napari_cellseg.cli import main  # noqa: E402


@pytest.fixture(scope="session")
def three_class_run(tmp_path_factory):
    """The issue's case with the CLI's defaults: 60 generated crops per class, 3 epochs, then the
    classifier on 20 unseen crops per class (another generator seed). No ImageNet weights at hand."""
    root = tmp_path_factory.mktemp("three")
    write_crop_folders(root / "train", 60, seed=1)
    write_crop_folders(root / "unseen", 20, seed=2)
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(root / "empty_torch_home")  # 'auto' finds no cached weights, never downloads
    try:
        import io
        from contextlib import redirect_stdout

        printed = io.StringIO()
        with redirect_stdout(printed):
            assert main(["train-classifier", str(root / "train"), "--out", str(root / "clf.pt"), "--epochs", "3",
                         "--device", "cpu"]) == 0
            assert main(["classify", str(root / "unseen"), "--model", str(root / "clf.pt"), "--out",
                         str(root / "res"), "--device", "cpu"]) == 0
    finally:
        os.environ.pop("TORCH_HOME") if old is None else os.environ.__setitem__("TORCH_HOME", old)
    rows = list(csv.DictReader(open(root / "res" / "crops_phenotypes.csv")))
    return root, printed.getvalue(), rows


def test_three_clear_classes_are_told_apart_on_unseen_crops(three_class_run):
    _, printed, rows = three_class_run
    truth = [r["file"].split("/")[0] for r in rows]
    predicted = [r["phenotype"] for r in rows]
    assert len(rows) == 60 and set(predicted) == set(THREE_CLASSES)
    accuracy = np.mean([t == p for t, p in zip(truth, predicted)])
    assert accuracy >= 0.95, printed


def test_training_reports_eval_mode_validation_and_writes_best_last_and_csvs(three_class_run):
    root, printed, _ = three_class_run
    assert "train accuracy" not in printed  # training-mode accuracy is not shown as accuracy
    assert "random weights" in printed and "every layer trains" in printed  # offline: says so
    assert "validation: 36 of 180 crops held out (stratified by class)" in printed
    assert printed.count("validation (eval mode) accuracy") == 3  # after every epoch
    assert "per-class recall:" in printed and "confusion matrix" in printed and "WARNING" not in printed
    best, last = load_classifier(root / "clf.pt"), load_classifier(root / "clf_last.pt")
    assert best.class_names == last.class_names == sorted(THREE_CLASSES) and best.crop_size == 40
    checkpoint = torch.load(root / "clf.pt", weights_only=True)
    history = checkpoint["history"]
    best_epoch = max(history, key=lambda r: (r["val_balanced_accuracy"], -r["val_loss"]))["epoch"]
    assert checkpoint["best_epoch"] == best_epoch and checkpoint["crop_mode"] == "resize"
    per_class = list(csv.DictReader(open(root / "clf_validation.csv")))
    assert [r["class"] for r in per_class[:3]] == sorted(THREE_CLASSES)
    assert float(per_class[-1]["recall"]) == pytest.approx(history[best_epoch - 1]["val_balanced_accuracy"], abs=1e-4)
    confusion = list(csv.DictReader(open(root / "clf_confusion.csv")))
    assert sum(int(r[n]) for r in confusion for n in THREE_CLASSES) == 36
    assert (root / "clf_history.csv").is_file()


def test_collapse_and_chance_are_warned_about():
    collapsed = Evaluation(np.array([[12, 0, 0], [12, 0, 0], [11, 0, 1]]), ["a", "b", "c"])
    warnings = " ".join(collapsed.warnings())
    assert "about chance" in warnings and "'a' takes 97%" in warnings and "--lr" in warnings
    good = Evaluation(np.array([[12, 0, 0], [1, 11, 0], [0, 0, 12]]), ["a", "b", "c"])
    assert good.warnings() == [] and good.balanced_accuracy == pytest.approx((1 + 11 / 12 + 1) / 3)


def test_validation_split_is_stratified_and_keeps_tracks_whole():
    labels = np.repeat([0, 1, 2], 30)
    tracks = np.array([f"{k}-{i // 5}" for k, i in zip(labels, range(90))], dtype=object)  # 5 frames a track
    val = split_validation(labels, tracks, 0.2, seed=3)
    assert not set(tracks[val]) & set(tracks[~val])
    for k in range(3):
        assert 0 < val[labels == k].sum() < 30
    plain = split_validation(labels, None, 0.2, seed=3)
    assert [plain[labels == k].sum() for k in range(3)] == [6, 6, 6]
    assert not split_validation(np.array([0, 1, 1]), None, 0.5)[0]  # a class's only crop trains


def test_batch_norm_statistics_are_recomputed_over_the_crops():
    model = build_resnet50(3, 1)
    crops = np.random.default_rng(0).random((24, 1, 40, 40)).astype(np.float32) * 5
    recalibrate_batch_norm(model, crops, batch_size=8)
    with torch.no_grad():
        first = model.conv1(torch.from_numpy(crops))
    torch.testing.assert_close(model.bn1.running_mean, first.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert model.bn1.momentum == 0.1 and model.training  # momentum and mode as they were


def test_seed_recipe_from_an_imagenet_file_and_offline_fallback(tmp_path, monkeypatch):
    rgb = build_resnet50(1000, in_channels=3)
    torch.save(rgb.state_dict(), tmp_path / "imagenet.pth")
    recipe = build_for_training(3, 1, init=tmp_path / "imagenet.pth", freeze="seed")
    torch.testing.assert_close(recipe.model.conv1.weight, rgb.conv1.weight.mean(dim=1, keepdim=True))
    torch.testing.assert_close(recipe.model.layer2[0].conv1.weight, rgb.layer2[0].conv1.weight)
    trainable = {n.split(".")[0] for n, p in recipe.model.named_parameters() if p.requires_grad}
    assert trainable == {"conv1", "fc"} and "the seed's recipe" in recipe.notes[0]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_cache"))
    offline = build_for_training(3, 1, init="auto", freeze="seed")
    assert offline.freeze == "none" and all(p.requires_grad for p in offline.model.parameters())
    assert "no ImageNet weights at hand" in offline.notes[0]


def test_foreign_whole_model_and_state_dict_load_with_class_names(tmp_path):
    model = build_resnet50(8, 1).eval()
    torch.save(model, tmp_path / "whole.pt")  # as the seed's code saved it
    torch.save(model.state_dict(), tmp_path / "state.pt")
    names = [f"p{i}" for i in range(8)]
    whole = load_classifier(tmp_path / "whole.pt", class_names=names)
    assert whole.class_names == names and whole.crop_size == 40 and whole.crop_mode == "resize"
    assert load_classifier(tmp_path / "state.pt").class_names == list(DEFAULT_CLASSES)
    crops = np.random.default_rng(0).random((3, 1, 40, 40)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(crops)), 1).numpy()
    np.testing.assert_allclose(whole.predict(crops), expected, atol=1e-4)
    folder = tmp_path / "loose"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", (crops[0, 0] * 1000).astype(np.uint16))
    assert main(["classify", str(folder), "--model", str(tmp_path / "whole.pt"), "--class-names", ",".join(names),
                 "--out", str(tmp_path / "res"), "--device", "cpu"]) == 0
    assert list(csv.DictReader(open(tmp_path / "res" / "crops_phenotypes.csv")))[0]["phenotype"] in names
    with pytest.raises(ValueError, match="8 outputs but 2 class names"):
        load_classifier(tmp_path / "state.pt", class_names=["a", "b"])


def test_a_cell_is_cropped_resized_and_normalised_the_same_for_training_and_prediction(tmp_path):
    rng = np.random.default_rng(5)
    frame = rng.normal(100, 5, (80, 80)).astype(np.float32)
    labels = np.zeros((80, 80), np.int32)
    labels[20:44, 30:50] = 7  # a 24 x 20 cell
    frame[labels == 7] += 400
    crops, rows = cell_crops(frame[None], labels[None], size=40)
    assert crops.shape == (1, 1, 40, 40) and 0 <= crops.min() and crops.max() <= 1
    side = int(round(24 * 1.3))  # the box's longer side plus the margin, then resized to 40
    cy, cx = rows["centroid_y"][0], rows["centroid_x"][0]
    y0, x0 = int(round(cy)) - side // 2, int(round(cx)) - side // 2
    tifffile.imwrite(tmp_path / "cell.tif", frame[y0:y0 + side, x0:x0 + side])
    np.testing.assert_allclose(crop_file(tmp_path / "cell.tif", 40), crops[0], atol=1e-5)


def test_crop_folders_with_track_names_split_by_track(tmp_path):
    from napari_cellseg.classifier.train import load_crop_folders

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for track in range(4):
            for frame in range(3):
                tifffile.imwrite(tmp_path / name / f"track{track}_t{frame}.tif",
                                 rng.integers(0, 1000, (30, 30)).astype(np.uint16))
    crops, labels, names, tracks = load_crop_folders(tmp_path, 40)
    assert crops.shape == (24, 1, 40, 40) and names == ["a", "b"] and len(set(tracks)) == 8
    val = split_validation(labels, tracks, 0.25, seed=0)
    assert not set(tracks[val]) & set(tracks[~val]) and [val[labels == k].sum() for k in (0, 1)] == [3, 3]
