"""The Segment cells widget with a box detector (issue 29): Points at box centres and Shapes rectangles carrying
the object table, found by metadata; per-frame counts with the plot; a live confidence slider."""
import numpy as np
import pytest

from napari_cellseg.widgets._layers import META_KEY

from napari_path import open_widget, run_and_wait
from tiny_detector import disc_samples

pytestmark = pytest.mark.gui


def _run(qtbot, widget, timeout=120_000):
    run_and_wait(qtbot, widget, timeout)


def _own(viewer, role):
    return [layer for layer in viewer.layers
            if layer.metadata.get(META_KEY, {}).get("role") == role and layer.metadata[META_KEY]["kind"] == "detect"]


def test_detector_gives_points_and_rectangles_and_a_live_slider(qtbot, make_napari_viewer, tiny_detector):
    from napari_cellseg import segment

    viewer = make_napari_viewer()
    frames = [s[1][..., 0] for s in disc_samples(3, seed=910)]  # a 3-frame stack of grey 8-bit images
    stack = np.stack(frames)
    image_layer = viewer.add_image(stack, name="nuclei")
    widget = open_widget(viewer, "segment")
    assert widget.detection_conf.native.isHidden()
    widget.model.value = str(tiny_detector[0])
    assert not widget.detection_conf.native.isHidden()  # shown for detection models only
    _run(qtbot, widget)
    result = widget.last_result
    assert result.task == "detect" and result.n_objects > 0
    expected = segment(stack, str(tiny_detector[0]), device="cpu", conf=result.metadata["parameters"]["conf"])
    np.testing.assert_allclose(result.scores, expected.scores, atol=1e-6)
    # the layers are found by their metadata (the user may rename them)
    (points,), (shapes,) = _own(viewer, "centres"), _own(viewer, "boxes")
    points.name, shapes.name = "my dots", "my boxes"
    assert points.metadata[META_KEY]["source_layer_id"] == image_layer.unique_id
    assert len(points.data) == len(shapes.data) == result.n_objects
    assert set(shapes.shape_type) == {"rectangle"}
    for layer in (points, shapes):
        for column in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "score", "class_id", "class_name", "area"):
            assert column in layer.features
    np.testing.assert_allclose(points.data, result.centre_coordinates())
    np.testing.assert_allclose(np.sort(points.features["score"]), np.sort(result.scores), atol=1e-6)
    # counts per frame, with the plot for a stack
    x, y = widget.counts_plot.lines["detections"]
    assert list(x) == [0, 1, 2] and list(y) == result.counts_per_frame().tolist()

    # the slider: fewer boxes, from the stored detections, without running the model again
    threshold = float(np.median(result.scores))
    calls = []
    widget._cache.get = lambda *a, **k: calls.append(a)  # any model use would show here
    widget.detection_conf.value = threshold
    kept = result.scores >= threshold
    assert _own(viewer, "centres") == [points] and _own(viewer, "boxes") == [shapes]  # updated in place
    assert len(points.data) == len(shapes.data) == int(kept.sum()) < result.n_objects
    assert (points.features["score"] >= threshold).all()
    counts = np.bincount(result.frame[kept], minlength=3)
    assert f"{int(counts.sum())} detections" in widget.status.value
    assert widget.counts_plot.lines["detections"][1] == counts.tolist()
    assert widget.last_result is result and not calls
    widget.detection_conf.value = 0.0  # back down: every stored box again
    assert len(points.data) == result.n_objects


def test_an_onnx_detector_gives_points_and_the_slider(qtbot, make_napari_viewer, tiny_detector_onnx):
    """An ultralytics ONNX export (the onnx-detect backend) in the widget: the same layers as a .pt detector."""
    from napari_cellseg import segment

    viewer = make_napari_viewer()
    _, rgb, _, _, _ = next(disc_samples(1, seed=911))
    viewer.add_image(rgb[..., 0], name="nuclei")
    widget = open_widget(viewer, "segment")
    widget.model.value = str(tiny_detector_onnx["static"])
    assert not widget.detection_conf.native.isHidden()
    _run(qtbot, widget)
    result = widget.last_result
    assert result.task == "detect" and result.metadata["model"]["backend"] == "onnx-detect"
    expected = segment(rgb[..., 0], str(tiny_detector_onnx["static"]), device="cpu",
                       conf=result.metadata["parameters"]["conf"])
    assert result.n_objects == expected.n_objects > 0
    (points,), (shapes,) = _own(viewer, "centres"), _own(viewer, "boxes")
    assert len(points.data) == len(shapes.data) == result.n_objects
