import numpy as np
import pytest

from napari_cellseg.widgets._layers import META_KEY, is_edited

from synthetic import disc_image
from napari_path import open_widget, run_and_wait

pytestmark = pytest.mark.gui


def _run(qtbot, widget, timeout=60_000):
    run_and_wait(qtbot, widget, timeout)


def _own(viewer, role):
    return [layer for layer in viewer.layers if layer.metadata.get(META_KEY, {}).get("role") == role]


@pytest.fixture
def viewer_with_image(make_napari_viewer):
    viewer = make_napari_viewer()
    image, truth = disc_image((200, 240), n=12, seed=11)
    layer = viewer.add_image(image, name="nuclei", scale=(0.5, 0.5))
    return viewer, layer, truth


def test_segment_widget_adds_labels_and_points_with_provenance(qtbot, viewer_with_image):
    viewer, image_layer, truth = viewer_with_image
    widget = open_widget(viewer, "segment")
    widget.model.combo.value = "otsu-watershed"
    shown = []  # what the viewer holds when the widget says the result is shown
    widget.result_shown.connect(lambda: shown.append((len(_own(viewer, "labels")), len(_own(viewer, "points")))))
    _run(qtbot, widget)
    assert shown == [(1, 1)]
    (labels,), (points,) = _own(viewer, "labels"), _own(viewer, "points")
    assert labels.data.shape == image_layer.data.shape
    assert labels.data.max() == truth.max()
    assert len(points.data) == truth.max()
    assert tuple(labels.scale) == (0.5, 0.5) and tuple(points.scale) == (0.5, 0.5)
    assert list(points.features["label"]) == list(range(1, truth.max() + 1))
    meta = labels.metadata[META_KEY]
    assert meta["source_layer_id"] == image_layer.unique_id
    assert meta["parameters"]["conf"] == 0.25 and meta["model"] == "otsu-watershed"
    assert "objects" in widget.status.value


def test_rerun_replaces_own_output_but_never_an_edited_layer(qtbot, viewer_with_image):
    viewer, image_layer, truth = viewer_with_image
    widget = open_widget(viewer, "segment")
    widget.model.combo.value = "otsu-watershed"
    _run(qtbot, widget)
    first = _own(viewer, "labels")[0]
    first.data = first.data  # unchanged data: still replaceable
    _run(qtbot, widget)
    assert _own(viewer, "labels") == [first] and len(_own(viewer, "points")) == 1

    edited = first.data.copy()
    edited[0:10, 0:10] = 99  # the user paints a cell
    first.data = edited
    _run(qtbot, widget)
    labels_layers = _own(viewer, "labels")
    assert len(labels_layers) == 2
    assert labels_layers[0] is first and np.array_equal(first.data, edited)  # nothing the user drew is lost


def test_rerun_updates_own_points_in_place(qtbot, viewer_with_image):
    viewer, image_layer, truth = viewer_with_image
    widget = open_widget(viewer, "segment")
    widget.model.combo.value = "otsu-watershed"
    _run(qtbot, widget)
    (points,) = _own(viewer, "points")
    image_layer.data = image_layer.data[:, : image_layer.data.shape[1] // 2].copy()  # fewer cells this time
    _run(qtbot, widget)
    assert _own(viewer, "points") == [points]  # same layer object, so the user's display settings stay
    result = widget.last_result
    assert len(points.data) == result.n_objects < truth.max()
    np.testing.assert_allclose(points.data, result.centroid_coordinates())
    assert list(points.features["label"]) == list(result.objects["label"])
    assert len(points.face_color) == result.n_objects
    assert not is_edited(points)  # a third run may replace it again


def test_cancel_adds_no_layer(qtbot, viewer_with_image, tiny_yolo):
    viewer, image_layer, _ = viewer_with_image
    image_layer.data = np.tile(image_layer.data, (4, 4))  # many tiles
    widget = open_widget(viewer, "segment")
    widget.model.value = str(tiny_yolo)
    widget.device.value = "cpu"
    widget.settings["native"].value = True  # full resolution, tiled (a foreign checkpoint's default: one pass)
    n_layers = len(viewer.layers)
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert len(viewer.layers) == n_layers
    assert widget.progress.value < widget.progress.max
    assert "cancelled" in widget.status.value


def test_bad_input_is_notified_and_the_viewer_lives(qtbot, make_napari_viewer, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((1, 1), np.uint8), name="dot")
    widget = open_widget(viewer, "segment")
    widget.model.combo.value = "otsu-watershed"
    errors = []
    monkeypatch.setattr("napari_cellseg.widgets._common.notify_error", lambda exc: errors.append(str(exc)))
    _run(qtbot, widget)
    assert errors and "too small" in errors[0]
    assert "failed" in widget.status.value and widget.run_button.enabled
    assert len(viewer.layers) == 1 and not _own(viewer, "labels")


def test_chosen_model_is_loaded_in_the_background_and_reused_by_the_run(qtbot, viewer_with_image, tiny_yolo):
    viewer, _, _ = viewer_with_image
    widget = open_widget(viewer, "segment")
    widget.device.value = "cpu"
    widget.model.value = str(tiny_yolo)
    widget.preload_thread.join(120)
    assert not widget.preload_thread.is_alive()
    ((names, device, _),) = widget._cache._models
    assert names == (str(tiny_yolo.resolve()),) and device == "cpu"
    preloaded = next(iter(widget._cache._models.values()))
    _run(qtbot, widget)
    assert next(iter(widget._cache._models.values())) is preloaded  # the run found it ready
    assert widget.last_result.metadata["model"]["path"] == str(tiny_yolo.resolve())


def test_a_superseded_preload_does_not_evict_the_model_chosen_after_it(monkeypatch):
    """The user picks one model, then another before the first has loaded: the first loads nothing, in
    whichever order the two loads get their turn, and the run finds the second ready."""
    import napari_cellseg.backends as backends
    from napari_cellseg.widgets._common import ModelCache

    loads = []
    monkeypatch.setattr(backends, "load_model", lambda name, device="auto": loads.append(name) or f"model {name}")
    monkeypatch.setattr("napari_cellseg.pipeline.segment.warm_up", lambda model: None)
    cache = ModelCache()
    with cache._lock:  # neither load can start before both were asked for
        first, second = cache.preload("first", "cpu"), cache.preload("second", "cpu")
    first.join(10)
    second.join(10)
    assert loads == ["second"]
    assert cache.get("second", "cpu") == "model second" and loads == ["second"]


def test_a_model_that_fails_to_preload_is_reported_by_the_run(qtbot, make_napari_viewer, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.uint8), name="blank")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 truncated")
    widget = open_widget(viewer, "segment")
    widget.model.value = str(broken)
    widget.preload_thread.join(60)  # fails quietly: nothing to report until the user runs
    errors = []
    monkeypatch.setattr("napari_cellseg.widgets._common.notify_error", lambda exc: errors.append(str(exc)))
    _run(qtbot, widget)
    assert errors and "broken.pt" in errors[0] and "failed" in widget.status.value
    assert not _own(viewer, "labels")


def test_new_layers_get_their_overlays_and_visuals_back_after_the_steps(qtbot, viewer_with_image):
    from napari_cellseg import segment
    from napari_cellseg.widgets._layers import (
        DEFERRABLE_OVERLAYS, SourceInfo, build_new_layers, write_result_layers_in_steps)

    viewer, image_layer, _ = viewer_with_image
    widget = open_widget(viewer, "segment")
    widget.model.combo.value = "otsu-watershed"
    _run(qtbot, widget)
    (labels,), (_points,) = _own(viewer, "labels"), _own(viewer, "points")
    overlays = {"polygon", "brush_stroke", "bounding_box", "transform_box"}
    assert overlays <= set(labels._overlays)
    canvas = viewer.window._qt_viewer.canvas  # napari draws the visible overlays: here, the given-back ones
    shown = {overlay for overlay in labels._overlays.values() if overlay.visible}
    assert shown == {labels._overlays[key] for key in DEFERRABLE_OVERLAYS}
    assert shown <= set(canvas._layer_overlay_to_visual[labels])
    for mode in ("polygon", "paint", "transform", "pan_zoom"):  # napari's tools find their overlays
        labels.mode = mode

    # steps abandoned after the first one (e.g. the widget closed): the overlays still come back
    result = segment(image_layer.data, "otsu-watershed")
    layers = build_new_layers(result, SourceInfo(image_layer))
    labels.data = labels.data.copy() + (labels.data > 0)  # edited: the next result needs a new layer
    steps = write_result_layers_in_steps(viewer, image_layer, result, new_layers=layers)
    while layers["labels"] not in viewer.layers:  # its visual and controls come first
        next(steps)
    assert not set(DEFERRABLE_OVERLAYS) & set(layers["labels"]._overlays)
    steps.close()
    assert overlays <= set(layers["labels"]._overlays)


def test_new_layers_are_sliced_in_the_worker_and_selected_after_their_steps(qtbot, viewer_with_image):
    from napari_cellseg import segment
    from napari_cellseg.widgets._layers import (
        SourceInfo, build_new_layers, roles_to_build, write_result_layers_in_steps)

    viewer, image_layer, _ = viewer_with_image
    result = segment(image_layer.data, "otsu-watershed")
    assert roles_to_build(viewer, image_layer) == ("labels", "points")
    unsliced = build_new_layers(result, SourceInfo(image_layer))["points"]  # no dims: napari slices on adding
    layers = build_new_layers(result, SourceInfo(image_layer, viewer.dims))
    slicings = []
    for layer in (unsliced, *layers.values()):
        layer.events.set_data.connect(lambda event: slicings.append(event.source))
    steps = write_result_layers_in_steps(viewer, image_layer, result, new_layers=layers)
    while layers["labels"] not in viewer.layers:
        next(steps)
    assert viewer.layers.selection.active is image_layer  # the Labels layer is in, but not selected yet
    for _ in steps:
        pass
    assert viewer.layers.selection.active is layers["points"]  # the last new layer, as napari leaves it
    assert slicings == []  # napari used the slices made beforehand
    viewer.layers.append(unsliced)
    assert slicings == [unsliced]

    # a re-run builds no layers: it updates these in place, unless the user has edited one
    viewer.layers.remove(unsliced)
    assert roles_to_build(viewer, image_layer) == ()
    layers["labels"].data = layers["labels"].data.copy() + (layers["labels"].data > 0)
    assert roles_to_build(viewer, image_layer) == ("labels",)
    # edited during a run whose worker built nothing: the new Labels layer is built here, and selected
    for _ in write_result_layers_in_steps(viewer, image_layer, result, new_layers=None):
        pass
    (_, new_labels), (points,) = _own(viewer, "labels"), _own(viewer, "points")
    assert new_labels is not layers["labels"] and points is layers["points"]
    assert viewer.layers.selection.active is new_labels


@pytest.fixture
def gui_part_factories(monkeypatch):
    """napari's factories of a layer's visual and controls, spied on: {factory: [(layer, part, added yet)]}."""
    from napari_cellseg.widgets._layers import GUI_PART_FACTORIES

    calls = {}
    for module_name, factory_name, _ in GUI_PART_FACTORIES:
        module = __import__(module_name, fromlist=[factory_name])
        original = getattr(module, factory_name)

        def spy(layer, *args, _original=original, _calls=calls.setdefault(factory_name, []), **kwargs):
            part = _original(layer, *args, **kwargs)
            released = []
            for release in ("close", "deleteLater"):
                if hasattr(part, release):
                    def counted(_release=getattr(part, release), _name=release):
                        released.append(_name)
                        return _release()
                    setattr(part, release, counted)
            _calls.append({"layer": layer, "part": part, "added": layer in _viewers[0].layers, "released": released})
            return part
        monkeypatch.setattr(module, factory_name, spy)
    _viewers = []
    return calls, _viewers


def test_a_new_layers_visual_and_controls_are_built_in_turns_before_it_joins(qtbot, viewer_with_image,
                                                                             gui_part_factories, monkeypatch):
    from napari_cellseg import segment
    from napari_cellseg.widgets import _layers
    from napari_cellseg.widgets._layers import SourceInfo, build_new_layers, write_result_layers_in_steps

    viewer, image_layer, _ = viewer_with_image
    calls, viewers = gui_part_factories
    viewers.append(viewer)
    spies = {name: getattr(__import__(module, fromlist=[name]), name) for module, name, _ in _layers.GUI_PART_FACTORIES}
    result = segment(image_layer.data, "otsu-watershed")
    layers = build_new_layers(result, SourceInfo(image_layer, viewer.dims))
    steps = write_result_layers_in_steps(viewer, image_layer, result, new_layers=layers)
    next(steps)
    assert [c["layer"] for c in calls["create_vispy_layer"]] == [layers["labels"]] and not calls["create_qt_layer_controls"]
    next(steps)
    assert [c["layer"] for c in calls["create_qt_layer_controls"]] == [layers["labels"]]
    assert layers["labels"] not in viewer.layers
    for _ in steps:
        pass
    qt_viewer = viewer.window._qt_viewer
    for layer in layers.values():  # each part built once, before the layer joined, and used by napari
        (visual,) = [c for c in calls["create_vispy_layer"] if c["layer"] is layer]
        (controls,) = [c for c in calls["create_qt_layer_controls"] if c["layer"] is layer]
        assert not visual["added"] and not controls["added"]
        assert qt_viewer.canvas.layer_to_visual[layer] is visual["part"]
        assert qt_viewer.controls.widgets[layer] is controls["part"]
        assert not visual["released"] and not controls["released"]
    for (module, name, _), spy in zip(_layers.GUI_PART_FACTORIES, spies.values()):  # napari's factories are back
        assert getattr(__import__(module, fromlist=[name]), name) is spy

    # steps abandoned after the visual was built: it is released, and the layer never added
    edited = layers["labels"]
    edited.data = edited.data.copy() + (edited.data > 0)
    again = build_new_layers(result, SourceInfo(image_layer, viewer.dims), roles=("labels",))
    steps = write_result_layers_in_steps(viewer, image_layer, result, new_layers=again)
    next(steps)
    steps.close()
    (visual,) = [c for c in calls["create_vispy_layer"] if c["layer"] is again["labels"]]
    assert visual["released"] == ["close"] and again["labels"] not in viewer.layers

    # napari asks with other arguments than the part was built with: it gets a part of its own
    monkeypatch.setattr(_layers, "GUI_PART_FACTORIES", tuple(
        (module, name, (lambda qt: {"font_info": None}) if name == "create_vispy_layer" else arguments)
        for module, name, arguments in _layers.GUI_PART_FACTORIES))
    for _ in write_result_layers_in_steps(viewer, image_layer, result, new_layers=again):
        pass
    prebuilt, used = [c for c in calls["create_vispy_layer"] if c["layer"] is again["labels"]][1:]
    assert not prebuilt["added"] and prebuilt["released"] == ["close"]
    assert qt_viewer.canvas.layer_to_visual[again["labels"]] is used["part"]


def test_an_empty_text_part_is_not_drawn_until_the_layer_has_text(qtbot, viewer_with_image):
    """napari draws a Points layer's text part even without text (one empty string); its first draw is
    most of a new Points layer's first paint, so our new layers' text part waits, hidden, for text."""
    viewer, image_layer, truth = viewer_with_image
    widget = open_widget(viewer, "segment")
    widget.model.combo.value = "otsu-watershed"
    _run(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["nuclei", "nuclei labels", "nuclei centroids"]
    (points,) = _own(viewer, "points")
    text_part = viewer.window._qt_viewer.canvas.layer_to_visual[points].node.text
    assert not text_part.visible and list(text_part.text) == [""]  # napari's own: nothing to draw
    _run(qtbot, widget)  # a re-run updates the features (the text manager refreshes): still nothing to draw
    assert _own(viewer, "points") == [points] and not text_part.visible
    points.text = "{label}"  # the user shows the labels as text: napari's text part, shown
    assert text_part.visible and list(text_part.text) == [str(i) for i in points.features["label"]]
    points.text = {"string": "{label}", "visible": False}
    assert text_part.visible  # shown for good once shown (napari's own text settings decide what it draws)
    assert [layer.name for layer in viewer.layers] == ["nuclei", "nuclei labels", "nuclei centroids"]
    # a layer of napari's own is left as napari makes it
    other = viewer.add_points(points.data[:3], name="mine")
    assert viewer.window._qt_viewer.canvas.layer_to_visual[other].node.text.visible


def test_a_new_layers_first_draw_gets_a_turn_of_its_own(qtbot, viewer_with_image):
    from napari_cellseg import segment
    from napari_cellseg.widgets._layers import SourceInfo, build_new_layers, write_result_layers_in_steps

    viewer, image_layer, _ = viewer_with_image
    result = segment(image_layer.data, "otsu-watershed")
    layers = build_new_layers(result, SourceInfo(image_layer, viewer.dims))
    layers["points"].visible = False  # the user's choice is what the visual ends with
    steps = write_result_layers_in_steps(viewer, image_layer, result, new_layers=layers)
    visuals = viewer.window._qt_viewer.canvas.layer_to_visual
    for layer in layers.values():
        while layer not in viewer.layers:
            next(steps)
        assert not visuals[layer].node.visible  # the turn it joined: not drawn yet
        next(steps, None)
        assert visuals[layer].node.visible == layer.visible  # drawn in the next (if the layer is visible)
    for _ in steps:
        pass
    assert visuals[layers["labels"]].node.visible and not visuals[layers["points"]].node.visible
    layers["points"].visible = True  # napari's own visibility switch still drives the visual
    assert visuals[layers["points"]].node.visible
    assert len(viewer.layers) == 3


def test_recent_models_are_offered(qtbot, make_napari_viewer, tiny_yolo):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "segment")
    widget.model.value = str(tiny_yolo)
    assert widget.model.value == str(tiny_yolo.resolve())
    again = open_widget(viewer, "segment")
    assert str(tiny_yolo.resolve()) in again.model.combo.choices


def test_compare_models_shows_agreement(qtbot, viewer_with_image, tiny_yolo):
    viewer, image_layer, truth = viewer_with_image
    widget = open_widget(viewer, "compare")
    widget.model_a.combo.value = "otsu-watershed"
    widget.model_b.value = str(tiny_yolo)
    widget.settings["conf"].value = 0.01
    _run(qtbot, widget)
    agreement = widget.last_agreement
    kinds = {layer.metadata[META_KEY]["kind"] for layer in _own(viewer, "labels")}
    assert kinds == {"compare-A", "compare-B"}
    a = next(l for l in _own(viewer, "labels") if l.metadata[META_KEY]["kind"] == "compare-A")
    b = next(l for l in _own(viewer, "labels") if l.metadata[META_KEY]["kind"] == "compare-B")
    from napari_cellseg.core.metrics import agreement as agree

    assert agreement == agree(a.data, b.data, 0.5)
    assert agreement["matched"] + agreement["only_a"] == a.data.max()
    assert f"F1 = {agreement['f1']:.3f}" in widget.status.value
    assert viewer.grid.enabled


def test_an_image_without_cells_gives_empty_layers(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.uint16), name="blank")
    widget = open_widget(viewer, "segment")
    widget.model.combo.value = "otsu-watershed"
    _run(qtbot, widget)
    (labels,), (points,) = _own(viewer, "labels"), _own(viewer, "points")
    assert labels.data.max() == 0 and len(points.data) == 0
    assert widget.status.value.startswith("0 objects")


@pytest.mark.slow
def test_soak_segment_and_cancel_cycles_do_not_grow_memory():
    """100 cycles in a separate process, so pytest's own bookkeeping is not measured."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"
    done = subprocess.run([sys.executable, str(script), "--cycles", "100"], capture_output=True, text=True,
                          timeout=600)
    report = f"rc {done.returncode}\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-3000:]}"
    assert done.returncode == 0, report
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["cancelled"] >= 40, report  # cancels took effect midway
    assert figures["output_layers"] == 2, report  # runs replaced their own Labels and Points
    assert figures["memory_growth_mb"] < 50, report


def test_multiscale_image_is_segmented_at_full_resolution(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    image, truth = disc_image((256, 256), n=10, seed=12)
    viewer.add_image([image, image[::2, ::2]], name="pyramid", multiscale=True)
    widget = open_widget(viewer, "segment")
    widget.model.combo.value = "otsu-watershed"
    _run(qtbot, widget)
    (labels,) = _own(viewer, "labels")
    assert labels.data.shape == image.shape and labels.data.max() == truth.max()


def test_diameter_field_reaches_the_run_and_a_bad_one_is_notified(qtbot, viewer_with_image, monkeypatch):
    viewer, _, _ = viewer_with_image
    widget = open_widget(viewer, "segment")
    widget.model.combo.value = "otsu-watershed"
    assert widget.parameters()["diameter"] == "auto"  # the default
    widget.settings["diameter"].value = "off"
    assert widget.parameters()["diameter"] is None
    widget.settings["diameter"].value = " 14 "
    assert widget.parameters()["diameter"] == 14.0
    errors = []
    monkeypatch.setattr("napari_cellseg.widgets.segment.notify_error", lambda exc: errors.append(str(exc)))
    widget.settings["diameter"].value = "large"
    widget.run()
    assert widget.worker is None and errors and "diameter" in errors[0]  # nothing started
    # a number and a zoom both set the scale: the run says so and adds nothing
    widget.settings["diameter"].value = "14"
    widget.settings["zoom"].value = 2.0
    monkeypatch.setattr("napari_cellseg.widgets._common.notify_error", lambda exc: errors.append(str(exc)))
    _run(qtbot, widget)
    assert "give one of zoom" in errors[-1] and not _own(viewer, "labels")
    # a model without a reference size measures one at its default scale; the status line says the scale
    widget.settings["zoom"].value = widget.settings["zoom"].min  # back to unset
    assert widget.parameters()["zoom"] is None and widget.parameters()["native"] is False
    _run(qtbot, widget)
    assert _own(viewer, "labels") and "(from the diameter)" in widget.status.value
    assert widget.last_result.summary.scale_source == "diameter"
    widget.settings["diameter"].value = "auto"
    widget.settings["native"].value = True  # the widget's choice of full resolution
    _run(qtbot, widget)
    assert "scale 1 (full resolution)" in widget.status.value


def test_status_reports_the_measured_object_size_and_the_scale_used(qtbot, viewer_with_image):
    viewer, _, truth = viewer_with_image
    widget = open_widget(viewer, "segment")
    widget.device.value = "cpu"
    widget.model.combo.value = "nuclei"  # the shipped model carries a reference object size
    _run(qtbot, widget)
    parameters = widget.last_result.metadata["parameters"]
    true_diameter = np.sqrt(4 * np.median(np.bincount(truth.ravel())[1:]) / np.pi)
    assert abs(parameters["measured_diameter"] - true_diameter) < 0.2 * true_diameter
    assert (f"object size {parameters['measured_diameter']:.0f} px, segmented at "
            f"{parameters['zoom_factor']:.2g}x the model's scale") in widget.status.value
    # the shipped model's outlines are redrawn by its contour U-Net unless the box is cleared
    assert parameters["refine"]["model"].endswith("nuclei_unet_contours.pt")
    assert ("contours refined by nuclei_unet_contours" if parameters["refine"]["refined_frames"] == [True]
            else "contours kept") in widget.status.value
    widget.settings["refine"].value = False
    _run(qtbot, widget)
    assert widget.last_result.metadata["parameters"]["refine"] is None and "contours" not in widget.status.value


def test_a_light_image_is_segmented_by_the_bright_field_model_unless_the_box_is_cleared(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    image, _ = disc_image((160, 160), n=8, seed=5)
    viewer.add_image(image.max() - image, name="bright-field")  # dark nuclei on a light background
    widget = open_widget(viewer, "segment")
    widget.device.value = "cpu"
    widget.model.combo.value = "nuclei"
    widget.settings["refine"].value = False  # faster; the switch does not depend on it
    _run(qtbot, widget)
    assert widget.last_result.metadata["model"]["path"].endswith("nuclei_yolo11n_seg_brightfield.pt")
    assert "light background: segmented by nuclei_yolo11n_seg_brightfield" in widget.status.value
    widget.settings["bright_field"].value = False
    _run(qtbot, widget)
    assert widget.last_result.metadata["model"]["path"].endswith("nuclei_yolo11n_seg.pt")
    assert widget.last_result.metadata["parameters"]["bright_field_switch"] is None
    assert "light background" not in widget.status.value
