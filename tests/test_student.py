"""U-Net student: architecture, targets, data layouts, training, collapse recovery, resume, CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
from synthetic import disc_image

from napari_cellseg import load_model, segment
from napari_cellseg.core.metrics import matching_stats
from napari_cellseg.pipeline.segment import run
from napari_cellseg.unet_student.data import (
    DatasetLayoutError, discover_dataset, discover_seed_layout, is_validation_name, samples_from_arrays,
)
from napari_cellseg.unet_student.model import build_unet, for_inference, parameter_count
from napari_cellseg.unet_student.targets import instances_from_predictions, make_targets
from napari_cellseg.unet_student.train import last_checkpoint_path, train_iter

TINY = (8, 16, 32, 64, 128)  # a narrow U-Net for fast tests; the default is the ~4.4 M one


def test_default_unet_has_about_4_4_million_parameters_and_keeps_the_input_size():
    import torch

    model = build_unet()
    assert 4.2e6 <= parameter_count(model) <= 4.6e6
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 18
    with torch.inference_mode():
        out = model.eval()(torch.zeros(1, 3, 48, 64))
    assert out.shape == (1, 3, 48, 64)


def test_the_inference_copy_folds_batchnorm_and_gives_the_same_outputs():
    import torch

    torch.manual_seed(0)
    model = build_unet(TINY)
    for module in model.modules():  # statistics and affine parameters far from the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    fast = for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.rand(2, 3, 64, 80)
    with torch.inference_mode():
        expected, got = model.eval()(x), fast(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def _touching_discs():
    yy, xx = np.mgrid[:80, :96]
    labels = np.zeros((80, 96), np.int32)
    labels[(yy - 40) ** 2 + (xx - 34) ** 2 <= 14 ** 2] = 1
    labels[((yy - 40) ** 2 + (xx - 60) ** 2 <= 14 ** 2) & (labels == 0)] = 2
    return labels


def test_targets_and_watershed_separate_two_touching_discs():
    labels = _touching_discs()
    fg, boundary, distance = make_targets(labels)
    assert fg.sum() == (labels > 0).sum()
    assert boundary[40, 48:50].all()  # where the discs meet is boundary in both
    assert distance[40, 34] == pytest.approx(1.0) and distance[40, 62] > 0.9  # peaks in the centres
    # even without the boundary channel the distance peaks seed two instances
    for b in (boundary, np.zeros_like(boundary)):
        found = instances_from_predictions(fg, b, distance)
        assert found.max() == 2
        assert matching_stats(found, labels, thresholds=(0.9,))[0].tp == 2
    # one merged blob in the foreground (a naive connected-components split finds one object)
    from scipy import ndimage

    assert ndimage.label(fg > 0.5)[1] == 1


def _write_seed_layout(root, positions=range(1, 21), frames=2):
    for pos in positions:
        for kind in ("raw_data", "masks"):
            folder = root / f"exp1_{kind}" / f"Pos{pos:03d}"
            folder.mkdir(parents=True)
            for t in range(frames):
                image, labels = disc_image((32, 32), n=1, radius=(4, 6), seed=pos * 10 + t)
                name = f"img_{t:03d}" + ("_masks.tif" if kind == "masks" else ".tif")
                tifffile.imwrite(folder / name, labels.astype(np.uint16) if kind == "masks" else image)


def test_seed_layout_is_split_by_position_folder(tmp_path):
    _write_seed_layout(tmp_path)
    train, val = discover_seed_layout(tmp_path)
    val_positions = {image.parent.name for image, _ in val}
    assert val_positions == {"Pos009", "Pos010", "Pos019", "Pos020"}
    assert len(val) == 8 and len(train) == 32
    for image, mask in train + val:  # masks paired with their own frame
        assert image.parent.name == mask.parent.name and mask.stem == image.stem + "_masks"
    _, val = discover_dataset(tmp_path, val_suffixes=("1",))
    assert {image.parent.name for image, _ in val} == {"Pos001", "Pos011"}


def test_bad_layouts_say_what_was_expected(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetLayoutError, match="images/.*labels/.*_raw_data"):
        discover_dataset(tmp_path)
    (tmp_path / "exp_raw_data" / "Pos001").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="exp_masks is missing"):
        discover_dataset(tmp_path)


def test_image_label_folders_use_the_fixed_hash_split(tmp_path):
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    names = [f"cell{k:02d}" for k in range(30)]
    for name in names:
        image, labels = disc_image((32, 32), n=1, seed=1)
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", image)
        tifffile.imwrite(tmp_path / "labels" / f"{name}.tif", labels.astype(np.uint16))
    train, val = discover_dataset(tmp_path)
    assert {p.stem for p, _ in val} == {n for n in names if is_validation_name(n)}
    assert len(train) + len(val) == 30 and val


def _disc_samples(n, shape=(96, 96), seed=0):
    pairs = [disc_image(shape, n=6, radius=(5, 9), seed=seed + s) for s in range(n)]
    return samples_from_arrays([p[0] for p in pairs], [p[1] for p in pairs])


OPTIONS = dict(batch=4, crop=64, widths=TINY, steps_per_epoch=4, lr=3e-3)


@pytest.fixture(scope="module")
def trained_student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "student.pt"
    result = run(train_iter(_disc_samples(6), _disc_samples(2, seed=50), out, epochs=5, **{**OPTIONS, "steps_per_epoch": 8}))
    return out, result


def test_training_raises_validation_dice_and_the_checkpoint_segments_new_images(trained_student):
    out, result = trained_student
    dices = [r["val_dice"] for r in result.history]
    assert len(dices) == 5 and result.best_dice == pytest.approx(max(dices))
    assert max(dices) > 0.8  # chance (all foreground) is ~0.2 on these images
    assert not result.events
    model = load_model(out, device="cpu")
    assert model.info.backend == "unet"
    image, truth = disc_image((200, 180), n=9, radius=(5, 9), seed=123)
    found = segment(image, model).labels
    assert found.max() == truth.max() == 9
    assert matching_stats(found, truth, thresholds=(0.5,))[0].tp == 9


def test_resume_continues_from_the_saved_epoch(tmp_path):
    out = tmp_path / "student.pt"
    first = run(train_iter(_disc_samples(3), _disc_samples(1, seed=50), out, epochs=2, **OPTIONS))
    assert [r["epoch"] for r in first.history] == [1, 2]
    assert last_checkpoint_path(out).is_file()
    epochs_seen = []
    resumed = run(train_iter(_disc_samples(3), _disc_samples(1, seed=50), out, epochs=3, resume=True, **OPTIONS),
                  lambda p: p.get("record") and epochs_seen.append(p.get("record")["epoch"]))
    assert epochs_seen == [3]
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history


def test_collapse_is_detected_and_training_restarts_from_the_last_good_state(tmp_path):
    import torch

    def collapse_at_epoch_3(model, epoch):
        if epoch == 2:  # push the foreground logit far negative: Dice 0 from here on
            with torch.no_grad():
                model.head.bias[0] = -1e4
                model.head.weight[0].zero_()

    messages = []
    result = run(train_iter(_disc_samples(3), _disc_samples(1, seed=50), tmp_path / "s.pt", epochs=5,
                            collapse_patience=1, epoch_hook=collapse_at_epoch_3, **{**OPTIONS, "steps_per_epoch": 6}),
                 lambda p: p.get("record") and messages.append(p.message))
    collapsed = [r for r in result.history if "event" in r]
    assert len(collapsed) == 1 and collapsed[0]["epoch"] == 3 and collapsed[0]["val_dice"] < 0.05
    good = [r for r in result.history[:2] if r["val_dice"] >= 0.05]
    assert good, "the run must have been good before the forced collapse"
    assert f"restored the weights of epoch {good[-1]['epoch']}" in collapsed[0]["event"]
    assert result.events == [collapsed[0]["event"]] and any("collapsed" in m for m in messages)
    after = result.history[3:]
    assert after[0]["lr"] < result.history[2]["lr"] / 2.5  # learning rate divided by 3
    assert min(r["val_dice"] for r in after) >= 0.05  # training goes on from the restored weights


def test_non_finite_loss_triggers_the_same_recovery(tmp_path):
    import torch

    def poison(model, epoch):
        if epoch == 1:
            with torch.no_grad():
                model.down[0][0].weight.fill_(float("nan"))

    result = run(train_iter(_disc_samples(3), _disc_samples(1, seed=50), tmp_path / "s.pt", epochs=4,
                            epoch_hook=poison, **OPTIONS))
    # the poisoned weights score Dice 0 at epoch 2, then the loss of epoch 3 is NaN
    assert [r["epoch"] for r in result.history if "event" in r] == [3]
    good_epoch = 1 if result.history[0]["val_dice"] >= 0.05 else 0  # 0: the initial weights
    assert "not finite" in result.events[0] and f"weights of epoch {good_epoch}," in result.events[0]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["val_dice"]) for r in result.history[3:])


def test_cli_train_unet_distill_and_segment(tmp_path, capsys):
    from napari_cellseg.cli import main

    data = tmp_path / "data"
    for folder in ("images", "labels"):
        (data / folder).mkdir(parents=True)
    for k in range(8):
        image, labels = disc_image((96, 96), n=6, radius=(5, 9), seed=k)
        tifffile.imwrite(data / "images" / f"img{k}.tif", image)
        tifffile.imwrite(data / "labels" / f"img{k}.tif", labels.astype(np.uint16))
    tiny = ["--widths", ",".join(map(str, TINY)), "--crop", "64", "--batch", "4", "--steps", "4"]
    assert main(["train-unet", str(data), "--out", str(tmp_path / "gt.pt"), "--epochs", "2", *tiny]) == 0
    text = capsys.readouterr().out
    assert "epoch 2/2" in text and "U-Net student written" in text
    assert main(["distill", "--teacher", "otsu-watershed", "--images", str(data / "images"),
                 "--out", str(tmp_path / "distilled.pt"), "--epochs", "1", "--init", str(tmp_path / "gt.pt"),
                 *tiny]) == 0
    assert len(list((tmp_path / "distilled_teacher_masks").glob("*.tif"))) == 8
    assert main(["segment", str(data / "images" / "img0.tif"), "--model", str(tmp_path / "gt.pt"),
                 "--out", str(tmp_path / "seg"), "-q"]) == 0
    assert tifffile.imread(tmp_path / "seg" / "img0_labels.tif").shape == (96, 96)
    capsys.readouterr()
    assert main(["train-unet", str(tmp_path / "seg"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "expected either 'images/'" in capsys.readouterr().err


def test_student_and_yolo_probes_do_not_confuse_each_other(trained_student):
    from napari_cellseg.backends import MODELS_DIR
    from napari_cellseg.unet_student import backend as unet
    from napari_cellseg.yolo import backend as yolo

    out, _ = trained_student
    assert unet.probe(out) and not yolo.probe(out)
    shipped = MODELS_DIR / "nuclei_yolo11n_seg.pt"
    if shipped.is_file():
        assert not unet.probe(shipped)
