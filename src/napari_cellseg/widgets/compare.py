"""The "Compare models" widget: two models on one image, side by side, with their agreement."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

from magicgui import widgets

from ._layers import SourceInfo, build_new_layers, precompute_hashes, roles_to_build
from ..core.options import SegmentOptions
from ._options import OptionControls
from ._common import ModelCache, ModelChooser, WorkerWidget, device_choice, full_resolution, notify_error


class CompareWidget(WorkerWidget):
    def __init__(self, viewer: napari.viewer.Viewer):

        self._cache = ModelCache()
        self.last_agreement = None
        self.image = widgets.create_widget(annotation=napari.layers.Image, label="image",
                                           options={"tooltip": "the image both models segment"})
        self.model_a = ModelChooser(label="model A")
        self.model_b = ModelChooser(label="model B")
        # the same confidence option as Segment cells and the CLI ("model's": each model's own)
        self.settings = OptionControls(SegmentOptions, only=("conf",))
        self.match_iou = widgets.FloatSpinBox(label="match IoU", value=0.5, min=0.05, max=0.95, step=0.05,
                                              tooltip="two objects, one from each model, agree when their masks "
                                                      "overlap at least this much (intersection over union)")
        self.device = device_choice()
        self.side_by_side = widgets.CheckBox(label="side by side (grid view)", value=True,
                                             tooltip="show the two results next to each other in napari's grid view")
        super().__init__(viewer, [self.image, self.model_a, self.model_b, *self.settings.main, self.match_iou,
                                  self.device, self.side_by_side], "Compare")
        viewer.layers.events.inserted.connect(self.image.reset_choices)
        viewer.layers.events.removed.connect(self.image.reset_choices)
        for chooser in (self.model_a, self.model_b):
            chooser.combo.changed.connect(self.refresh_run_button)
        self.image.changed.connect(self.refresh_run_button)
        self.refresh_run_button()

    def inputs_ready(self) -> bool:
        return self.image.value is not None and bool(self.model_a.value) and bool(self.model_b.value)

    @staticmethod
    def _layer_naming(tag: str, result) -> dict:
        from pathlib import Path

        return {"kind": f"compare-{tag}", "name_suffix": f" [{tag}: {Path(str(result.metadata['model']['path'])).name}]"}

    def _job(self, layer, source: SourceInfo, roles: dict, models: list[str], device: str, conf: float | None,
             match_iou: float):
        from ..core.metrics import agreement
        from ..core.progress import Progress
        from ..pipeline.segment import segment_iter

        results = []
        for i, name in enumerate(models):
            yield Progress(0, 1, 0, 1, f"loading model {'AB'[i]}")
            model = self._cache.get(name, device)
            if model.info.task == "detect":
                raise ValueError(f"{name} is a box detector: Compare models compares masks; count with Segment cells")
            result = yield from segment_iter(full_resolution(layer), model, rgb=layer.rgb, conf=conf)
            results.append(result)
            precompute_hashes(results[-1])
        # the layer objects are built here, off the GUI thread (see build_new_layers)
        new_layers = [build_new_layers(r, source, roles=roles[tag], **self._layer_naming(tag, r))
                      for tag, r in zip("AB", results)]
        return results, agreement(results[0].labels, results[1].labels, match_iou), new_layers

    def run(self):
        layer = self.image.value
        models = [self.model_a.value, self.model_b.value]
        if layer is None or not all(models):
            notify_error(ValueError("choose an image and two models"))
            return
        try:
            conf = self.settings.options().conf
        except ValueError as exc:
            notify_error(exc)
            return
        roles = {tag: roles_to_build(self._viewer, layer, f"compare-{tag}") for tag in "AB"}
        self._start(self._job, layer, SourceInfo(layer, self._viewer.dims), roles, models, self.device.value,
                    conf, self.match_iou.value, on_done=lambda out: self._on_done(layer, *out))

    def _on_done(self, layer, results, agreement, new_layers):
        """GUI steps, one layer per event-loop turn."""
        from ._layers import write_result_layers_in_steps

        for tag, result, layers in zip("AB", results, new_layers):
            if layer not in self._viewer.layers:
                return
            yield from write_result_layers_in_steps(self._viewer, layer, result, new_layers=layers,
                                                    **self._layer_naming(tag, result))
            yield
        self.last_agreement = agreement
        if self.side_by_side.value:
            self._viewer.grid.enabled = True
        self.status.value = (
            f"A: {results[0].n_objects}, B: {results[1].n_objects} objects; matched at IoU "
            f"{agreement['threshold']:.2f}: {agreement['matched']}, F1 = {agreement['f1']:.3f}"
        )

