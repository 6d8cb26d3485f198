"""The "Compare models" widget: two models on one image, side by side, with their agreement."""
from __future__ import annotations

from magicgui import widgets

from ._common import ModelCache, ModelChooser, device_choice, notify_error


class CompareWidget(widgets.Container):
    def __init__(self, viewer: "napari.viewer.Viewer"):  # noqa: F821
        import napari

        self._viewer = viewer
        self._cache = ModelCache()
        self.worker = None
        self.last_agreement = None
        self.image = widgets.create_widget(annotation=napari.layers.Image, label="image")
        self.model_a = ModelChooser(label="model A")
        self.model_b = ModelChooser(label="model B")
        self.conf = widgets.FloatSpinBox(label="confidence", value=0.25, min=0.0, max=1.0, step=0.05)
        self.match_iou = widgets.FloatSpinBox(label="match IoU", value=0.5, min=0.05, max=0.95, step=0.05)
        self.device = device_choice()
        self.side_by_side = widgets.CheckBox(label="side by side (grid view)", value=True)
        self.run_button = widgets.PushButton(text="Compare")
        self.cancel_button = widgets.PushButton(text="Cancel", enabled=False)
        self.progress = widgets.ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = widgets.Label(value="")
        super().__init__(widgets=[
            self.image, self.model_a, self.model_b, self.conf, self.match_iou, self.device,
            self.side_by_side, self.run_button, self.cancel_button, self.progress, self.status,
        ])
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        viewer.layers.events.inserted.connect(self.image.reset_choices)
        viewer.layers.events.removed.connect(self.image.reset_choices)

    def _job(self, layer, models: list[str], device: str, conf: float, match_iou: float):
        from ..core.metrics import agreement
        from ..core.pipeline import Progress, segment_iter

        results = []
        for i, name in enumerate(models):
            yield Progress(0, 1, 0, 1, f"loading model {'AB'[i]}")
            model = self._cache.get(name, device)
            results.append((yield from segment_iter(layer.data, model, rgb=layer.rgb, conf=conf)))
        return results, agreement(results[0].labels, results[1].labels, match_iou)

    def run(self):
        from napari.qt.threading import create_worker

        layer = self.image.value
        models = [self.model_a.value, self.model_b.value]
        if layer is None or not all(models):
            notify_error(ValueError("choose an image and two models"))
            return
        if self.worker is not None:
            return
        self.worker = create_worker(self._job, layer, models, self.device.value, self.conf.value,
                                    self.match_iou.value)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda out: self._on_done(layer, *out))
        self.worker.errored.connect(notify_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.worker.start()

    def cancel(self):
        if self.worker is not None:
            self.worker.quit()

    def _on_progress(self, progress):
        self.progress.max = max(1, progress.total)
        self.progress.value = progress.done
        self.status.value = progress.message

    def _on_done(self, layer, results, agreement):
        from pathlib import Path

        from ._layers import write_result_layers

        if layer not in self._viewer.layers:
            return
        for tag, result in zip("AB", results):
            name = Path(str(result.metadata["model"]["path"])).name
            write_result_layers(self._viewer, layer, result, kind=f"compare-{tag}", name_suffix=f" [{tag}: {name}]")
        self.last_agreement = agreement
        if self.side_by_side.value:
            self._viewer.grid.enabled = True
        self.status.value = (
            f"A: {results[0].n_objects}, B: {results[1].n_objects} objects; matched at IoU "
            f"{agreement['threshold']:.2f}: {agreement['matched']}, F1 = {agreement['f1']:.3f}"
        )

    def _on_finished(self):
        self.worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False
