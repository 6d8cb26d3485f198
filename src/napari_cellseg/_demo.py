"""``napari-cellseg demo``: the viewer with a sample, segmented in the background, then scored."""
from __future__ import annotations


def build_demo(viewer, sample: str = "dense", model: str = "nuclei", device: str = "auto"):
    """Dock the widgets on a viewer holding the sample and start segmenting (returns the widgets)."""
    from ._sample_data import SAMPLES, load_sample
    from .widgets.evaluate import EvaluateWidget
    from .widgets.segment import SegmentWidget

    image, truth = load_sample(sample)
    image_layer = viewer.add_image(image, name=SAMPLES[sample])
    truth_layer = viewer.add_labels(truth, name=f"{SAMPLES[sample]} ground truth", opacity=0.3, visible=False)
    segment = SegmentWidget(viewer)
    evaluate = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment cells", area="right")
    viewer.window.add_dock_widget(evaluate, name="Evaluate", area="right")
    segment.image.value = image_layer
    segment.model.combo.value = model if model in segment.model.combo.choices else None
    if segment.model.combo.value != model:
        segment.model.value = model  # a file path
    segment.device.value = device

    def score(*_):
        labels = [layer for layer in viewer.layers if layer.metadata.get("napari_cellseg", {}).get("role") == "labels"]
        if labels:
            evaluate.reset_choices()
            evaluate.prediction.value = labels[-1]
            evaluate.ground_truth.value = truth_layer
            evaluate.run()

    segment.result_shown.connect(score)  # also after a re-run from the widget
    segment.run()
    return segment, evaluate


def run_demo(sample: str = "dense", model: str = "nuclei", device: str = "auto") -> None:
    import napari

    viewer = napari.Viewer(title="napari-cellseg demo")
    build_demo(viewer, sample, model, device)
    napari.run()
