"""``napari-cellseg demo``: the viewer with a sample, segmented in the background, then scored."""
from __future__ import annotations

PLUGIN = "napari-cellseg"


def demo_summary(sample_name: str, model: str, n_objects: int, seconds: float | None, row: dict) -> str:
    """The two lines both forms of the demo print (headless and in a window)."""
    timing = f" in {seconds:.2f} s" if seconds is not None else ""
    return (f"sample '{sample_name}' with model '{model}': {n_objects} objects (ground truth {row['n_gt']}){timing}\n"
            f"F1@0.5 {row['f1_50']:.3f}  DSB score {row['dsb_score']:.3f}  COCO mAP {row['coco_map']:.3f}  "
            f"Dice {row['dice']:.3f}")


def build_demo(viewer, sample: str = "dense", model: str = "nuclei", device: str = "auto", on_scored=None):
    """Open the sample and the Segment and Evaluate widgets as a user would (from the plugin), start
    segmenting, and score the result when it is shown. ``on_scored(summary_text)`` is called after
    each scoring. Returns the two widgets."""
    from ._sample_data import SAMPLES

    viewer.open_sample(PLUGIN, f"{sample}_nuclei")
    image_layer = next(layer for layer in viewer.layers if layer.name == SAMPLES[sample])
    truth_layer = next(layer for layer in viewer.layers if layer.metadata.get("napari_cellseg_ground_truth"))
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment cells")
    _, evaluate = viewer.window.add_plugin_dock_widget(PLUGIN, "Evaluate against ground truth")
    segment.image.value = image_layer
    if model in segment.model.combo.choices:
        segment.model.combo.value = model
    else:
        segment.model.value = model  # a file path
    segment.device.value = device

    def score(*_):
        labels = [layer for layer in viewer.layers if layer.metadata.get("napari_cellseg", {}).get("role") == "labels"]
        if labels:
            evaluate.reset_choices()
            evaluate.prediction.value = labels[-1]
            evaluate.ground_truth.value = truth_layer
            evaluate.run()

    def scored(*_):
        result = segment.last_result
        text = demo_summary(SAMPLES[sample], model, result.n_objects, result.metadata.get("seconds"),
                            evaluate.last_metrics)
        if on_scored is not None:
            on_scored(text)

    segment.result_shown.connect(score)  # also after a re-run from the widget
    evaluate.result_shown.connect(scored)
    segment.run()
    return segment, evaluate


def fit_to_screen(viewer, width: int = 1600, height: int = 1000) -> None:
    """The window at ``width`` x ``height``, or the screen's free area where that is smaller."""
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen()
    if screen is not None:
        free = screen.availableGeometry()
        width, height = min(width, free.width()), min(height, free.height())
    viewer.window.resize(width, height)


def save_and_close(viewer, path: str) -> None:
    from .widgets._common import quiet_private_access

    with quiet_private_access():  # napari counts the screenshot's own drawing as our plugin's access
        viewer.screenshot(path, canvas_only=False, flash=False)
    print(f"screenshot -> {path}", flush=True)
    viewer.close()


def run_demo(sample: str = "dense", model: str = "nuclei", device: str = "auto", screenshot: str | None = None) -> None:
    """The demo in a window: prints the same summary as ``--headless`` once scored; with ``screenshot``,
    saves the whole window then and exits."""
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title="napari-cellseg demo")
    fit_to_screen(viewer)

    def scored(text: str) -> None:
        print(text, flush=True)
        if screenshot:
            # a moment for the last layer and plot to be painted
            QTimer.singleShot(500, lambda: save_and_close(viewer, screenshot))

    build_demo(viewer, sample, model, device, on_scored=scored)
    from .widgets._common import quiet_private_access

    # napari's event loop runs inside this module here, so napari counts every paint (vispy reading its
    # own font atlas) as an access by this plugin and shows a toast about it
    with quiet_private_access():
        napari.run()
