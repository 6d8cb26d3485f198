import numpy as np
import pytest
from synthetic import disc_image

from napari_cellseg.core.recent import recent_models
from napari_cellseg.widgets.student import DISTIL, TRAIN
from napari_path import open_widget

pytestmark = pytest.mark.gui

TINY = dict(widths=(8, 16, 32, 64, 128), steps_per_epoch=3)


@pytest.mark.parametrize("mode", [DISTIL, TRAIN])
def test_student_widget_trains_plots_and_registers_the_model(qtbot, make_napari_viewer, tmp_path, mode):
    viewer = make_napari_viewer()
    image, truth = disc_image((160, 160), n=10, seed=5)
    segment = open_widget(viewer, "segment")  # already open: must offer the student without reopening
    widget = open_widget(viewer, "student")
    widget.mode.value = mode
    widget.image.value = viewer.add_image(image, name="cells")
    widget.labels_layer.value = viewer.add_labels(truth, name="truth")
    widget.teacher.combo.value = "otsu-watershed"
    widget.epochs.value, widget.batch.value, widget.crop.value = 2, 2, 64
    widget.out.value = str(tmp_path / "student.pt")
    widget.device.value = "cpu"
    widget.extra_options = TINY
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget.last_result is not None and widget.last_result.epochs_done == 2, widget.status.value
    path = str((tmp_path / "student.pt").resolve())
    assert path in recent_models() and path in segment.model.combo.choices
    assert len(widget.plot.lines["val Dice"][0]) == 2
    assert np.isfinite(widget.history[-1]["loss"])
    if mode == DISTIL:  # the teacher's masks were cached beside the student
        assert list((tmp_path / "student_teacher_masks").glob("*.tif"))


def test_student_widget_fine_tunes_a_student_on_corrected_labels(qtbot, make_napari_viewer, tmp_path):
    import torch

    from napari_cellseg.unet_student.model import CHECKPOINT_KEY

    viewer = make_napari_viewer()
    image, truth = disc_image((160, 160), n=10, seed=6)
    widget = open_widget(viewer, "student")
    widget.mode.value = TRAIN
    widget.image.value = viewer.add_image(image, name="cells")
    widget.labels_layer.value = viewer.add_labels(truth, name="corrected")
    widget.epochs.value, widget.batch.value, widget.crop.value = 1, 2, 64
    widget.device.value = "cpu"
    widget.extra_options = TINY
    widget.out.value = str(tmp_path / "first.pt")
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    first = torch.load(tmp_path / "first.pt", weights_only=True)

    widget.init.value = str(tmp_path / "first.pt")  # fine-tune that student
    widget.extra_options = {"steps_per_epoch": 3}  # the architecture comes from the starting student
    widget.out.value = str(tmp_path / "tuned.pt")
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget.last_result is not None, widget.status.value
    tuned = torch.load(tmp_path / "tuned.pt", weights_only=True)
    assert tuned[CHECKPOINT_KEY]["widths"] == first[CHECKPOINT_KEY]["widths"] == list(TINY["widths"])
    changed = [k for k, v in first["state_dict"].items()
               if v.is_floating_point() and not torch.equal(v.float(), tuned["state_dict"][k].float())]
    assert changed  # trained on from the first student's weights, not a copy
