"""The Segment cells widget runs a detectron2 Mask R-CNN checkpoint, alone or as an ensemble."""
import numpy as np
import pytest

from napari_cellseg.widgets._layers import META_KEY
from napari_cellseg.core.options import parse_class_conf

from detectron2_style import SMALL_CONFIG, detectron2_state, save_pth
from napari_path import open_widget

pytestmark = pytest.mark.gui


def test_parse_class_conf():
    assert parse_class_conf("0=0.3, 2=0.6") == {0: 0.3, 2: 0.6}
    assert parse_class_conf("") == {}
    with pytest.raises(ValueError):
        parse_class_conf("0:0.3")


@pytest.mark.slow
def test_widget_runs_a_maskrcnn_ensemble_and_writes_labels(qtbot, make_napari_viewer, tmp_path):
    path = save_pth(detectron2_state(1, cell_bias=8.0), tmp_path / "d2" / "model_final.pth", SMALL_CONFIG % 1)
    viewer = make_napari_viewer()
    image = (np.random.default_rng(0).random((90, 110)) * 255).astype(np.uint8)
    layer = viewer.add_image(image, name="cells")
    widget = open_widget(viewer, "segment")
    widget.model.value = str(path)
    widget.ensemble.value = (str(path),)
    widget.settings["conf"].value = 0.5
    widget.settings["normalization"].value = "image"
    assert widget.model_spec() == [str(path.resolve()), str(path)]
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    labels = [lyr for lyr in viewer.layers if lyr.metadata.get(META_KEY, {}).get("role") == "labels"]
    assert len(labels) == 1 and labels[0].data.shape == layer.data.shape and labels[0].data.max() > 0
    assert widget.last_result.metadata["model"]["backend"] == "ensemble"
    assert widget.last_result.metadata["parameters"]["normalization"] == "image"


@pytest.mark.slow
def test_status_line_says_when_detectron2_defaults_stand_in_for_a_missing_config(qtbot, make_napari_viewer,
                                                                                 tmp_path):
    """No config.yaml beside a detectron2 checkpoint: detectron2's defaults are used, and the status says so."""
    path = save_pth(detectron2_state(1, cell_bias=8.0), tmp_path / "d2" / "model_final.pth")  # no config.yaml
    viewer = make_napari_viewer()
    viewer.add_image((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8), name="cells")
    widget = open_widget(viewer, "segment")
    widget.model.value = str(path)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert "model_final.pth: no config.yaml beside the checkpoint: detectron2 defaults used" in widget.status.value
    assert widget.last_result.summary.warnings == widget.last_result.warnings
