import pytest

from napari_cellseg.core.recent import recent_models
from napari_cellseg.widgets.train import FinetuneWidget

from synthetic import disc_image
from napari_path import open_widget

pytestmark = pytest.mark.gui


def test_finetune_from_layers_registers_the_model_and_plots_curves(qtbot, make_napari_viewer, tiny_yolo, tmp_path):
    viewer = make_napari_viewer()
    image, truth = disc_image((256, 256), n=16, seed=33)
    image_layer = viewer.add_image(image, name="cells")
    labels_layer = viewer.add_labels(truth, name="corrected")
    segment = open_widget(viewer, "segment")  # already open: must offer the new model without reopening
    widget = open_widget(viewer, "finetune")
    widget.image.value, widget.labels_layer.value = image_layer, labels_layer
    widget.model.value = str(tiny_yolo)
    widget.epochs.value = 2
    widget.out.value = str(tmp_path / "mine.pt")
    widget.device.value = "cpu"
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=240_000)
    assert widget.last_result is not None and widget.last_result.epochs_done == 2
    assert (tmp_path / "mine.pt").is_file()
    assert str((tmp_path / "mine.pt").resolve()) in recent_models()
    assert str((tmp_path / "mine.pt").resolve()) in segment.model.combo.choices
    assert len(widget.plot.lines["val mask mAP50"][0]) == 2


def test_cancel_stops_training_and_keeps_weights(qtbot, make_napari_viewer, tiny_yolo, tmp_path):
    viewer = make_napari_viewer()
    image, truth = disc_image((256, 256), n=16, seed=34)
    widget = open_widget(viewer, "finetune")
    widget.image.value = viewer.add_image(image, name="cells")
    widget.labels_layer.value = viewer.add_labels(truth, name="corrected")
    widget.model.value = str(tiny_yolo)
    widget.epochs.value = 200
    widget.batch.value = 2
    widget.out.value = str(tmp_path / "partial.pt")
    widget.run()
    qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=240_000)  # one epoch done
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.last_result is None  # it did not run to the end
    assert (tmp_path / "partial.pt").is_file() and "cancelled" in widget.status.value


@pytest.mark.slow
def test_finetune_widget_trains_a_mask_rcnn_checkpoint(qtbot, make_napari_viewer, tmp_path):
    from detectron2_style import SMALL_CONFIG, detectron2_state, save_pth

    from napari_cellseg import load_model

    base = save_pth(detectron2_state(num_classes=1, seed=5), tmp_path / "d2" / "model_final.pth", SMALL_CONFIG % 1)
    viewer = make_napari_viewer()
    image, truth = disc_image((128, 128), n=5, radius=(8, 12), seed=35)
    widget = open_widget(viewer, "finetune")
    widget.image.value = viewer.add_image(image, name="cells")
    widget.labels_layer.value = viewer.add_labels(truth, name="corrected")
    widget.model.value = str(base)  # a Mask R-CNN checkpoint: the widget trains a Mask R-CNN
    widget.epochs.value, widget.batch.value = 2, 1
    widget.out.value = str(tmp_path / "tuned.pth")
    widget.device.value = "cpu"
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert widget.last_result is not None and widget.last_result.epochs_done == 2
    assert len(widget.plot.lines["train loss"][0]) == 2  # the loss curve, one point per epoch
    tuned = load_model(tmp_path / "tuned.pth", device="cpu")
    assert tuned.info.backend == "maskrcnn" and tuned.config.min_size_test == 128
    assert str((tmp_path / "tuned.pth").resolve()) in recent_models()


def test_the_status_reports_both_calibrated_thresholds(make_napari_viewer, tiny_yolo, tmp_path):
    import shutil

    from napari_cellseg.core.result import FinetuneResult

    widget = FinetuneWidget(make_napari_viewer())
    shutil.copy(tiny_yolo, tmp_path / "tuned.pt")
    calibration = {"conf": 0.35, "tta": False, "images": ["a"], "f1_50_by_conf": {0.35: 0.9}}
    widget._on_done(FinetuneResult(tmp_path / "tuned.pt", 2, False, [], calibration, {**calibration, "conf": 0.3, "tta": True}))
    assert widget.status.value == ("saved tuned.pt; listed in Segment cells; score threshold 0.35 "
                                   "(calibrated on the validation images), 0.3 with test-time augmentation")
