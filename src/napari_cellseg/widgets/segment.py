"""The "Segment cells" dock widget."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

from pathlib import Path

from magicgui import widgets

from ._layers import SourceInfo, build_new_layers, precompute_hashes, roles_to_build
from ._common import ModelCache, ModelChooser, WorkerWidget, device_choice, full_resolution, notify_error


def parse_class_conf(text: str) -> dict[int, float]:
    """'0=0.3, 2=0.6' -> {0: 0.3, 2: 0.6}."""
    result = {}
    for item in filter(None, (part.strip() for part in text.replace(";", ",").split(","))):
        key, sep, value = item.partition("=")
        try:
            result[int(key)] = float(value)
        except ValueError:
            raise ValueError(f"per-class conf: expected class=threshold pairs like 0=0.3, got '{item}'") from None
        if not sep:
            raise ValueError(f"per-class conf: expected class=threshold pairs like 0=0.3, got '{item}'")
    return result


class SegmentWidget(WorkerWidget):
    """Pick an image and a model, run in a thread worker, get Labels + Points."""

    def __init__(self, viewer: napari.viewer.Viewer):

        self._cache = ModelCache()
        self.last_result = None
        self.image = widgets.create_widget(annotation=napari.layers.Image, label="image")
        self.model = ModelChooser()
        self.ensemble = widgets.FileEdit(label="ensemble with", mode="rm", filter="*.pt *.pth *.pkl",
                                         tooltip="more checkpoints whose instances are fused with the model's")
        self.imgsz = widgets.SpinBox(label="imgsz (0 = model's)", value=0, min=0, max=4096, step=32)
        self.tile = widgets.SpinBox(label="tile px (0 = auto)", value=0, min=0, max=8192, step=32)
        self.diameter = widgets.LineEdit(
            label="object diameter px", value="auto",
            tooltip="typical object diameter: the image is scaled to the size the model segments best. "
                    "'auto' measures it in a first pass; 'off' keeps the model's training scale "
                    "(as do a tile size and models without a reference size)")
        self.conf = widgets.FloatSpinBox(label="confidence (0 = model's)", value=0.0, min=0.0, max=1.0, step=0.05,
                                         tooltip="score threshold; 0 uses the model's calibrated one (with TTA, its "
                                                 "TTA one where it has one; else 0.25)")
        self.iou = widgets.FloatSpinBox(label="NMS IoU", value=0.7, min=0.0, max=1.0, step=0.05)
        self.erosion = widgets.SpinBox(label="mask erosion px (-1 = model's)", value=-1, min=-1, max=10)
        self.tta = widgets.CheckBox(label="test-time augmentation (4x slower)", value=False)
        self.refine = widgets.CheckBox(
            label="refine contours", value=True,
            tooltip="redraw the outlines from the model's contour U-Net where the model has one (the shipped "
                    "'nuclei' model: 'nuclei-contours'); images where the two disagree keep the model's own")
        self.bright_field = widgets.CheckBox(
            label="bright-field model for light images", value=True,
            tooltip="images with a light background (histology, bright-field) are segmented by the model's "
                    "bright-field specialist where it has one (the shipped 'nuclei' model: 'nuclei-brightfield')")
        self.class_conf = widgets.LineEdit(label="per-class conf", value="",
                                           tooltip="class=threshold pairs, e.g. 0=0.3, 2=0.6 (others: confidence)")
        self.normalization = widgets.ComboBox(label="normalisation (Mask R-CNN)", value="model",
                                              choices=["model", "imagenet", "image"])
        self.device = device_choice()
        super().__init__(
            viewer, [self.image, self.model, self.ensemble, self.imgsz, self.tile, self.diameter, self.conf, self.iou,
                     self.erosion, self.tta, self.refine, self.bright_field, self.class_conf, self.normalization, self.device],
            "Segment",
        )
        from ._plot import LinePlot

        self.counts_plot = LinePlot(height_px=140)  # objects per frame of a stack: the counting view
        self.native.layout().addWidget(self.counts_plot.canvas)
        self.counts_plot.canvas.setVisible(False)
        viewer.layers.events.inserted.connect(self.image.reset_choices)
        viewer.layers.events.removed.connect(self.image.reset_choices)
        # the chosen model loads in the background at once: a run finds it ready
        self.model.combo.changed.connect(self._preload)
        self.device.changed.connect(self._preload)
        self._preload()

    def _preload(self, *_):
        self.preload_thread = self._cache.preload(self.model.value, self.device.value)

    def parameters(self) -> dict:
        from ..core.pipeline import parse_diameter

        return {
            "imgsz": self.imgsz.value or None,
            "tile": self.tile.value or None,
            "diameter": parse_diameter(self.diameter.value),
            "conf": self.conf.value or None,
            "iou": self.iou.value,
            "tta": self.tta.value,
            "refine": "auto" if self.refine.value else None,
            "bright_field": "auto" if self.bright_field.value else None,
            "mask_erosion": None if self.erosion.value < 0 else self.erosion.value,
            "class_conf": parse_class_conf(self.class_conf.value),
            "normalization": self.normalization.value,
        }

    def model_spec(self):
        """The chosen model, or it and the extra checkpoints as an ensemble."""
        extra = [str(p) for p in (self.ensemble.value or ()) if str(p) not in ("", ".")]
        return [self.model.value, *extra] if extra else self.model.value

    def _job(self, layer, source: SourceInfo, roles: tuple, model_name: str, device: str, parameters: dict):
        from ..core.pipeline import Progress, segment_iter

        yield Progress(0, 1, 0, 1, "loading model")
        model = self._cache.get(model_name, device)  # in the worker thread, cached for re-runs
        result = yield from segment_iter(full_resolution(layer), model, rgb=layer.rgb, **parameters)
        precompute_hashes(result)  # hashing a large result here keeps it off the GUI thread
        return result, build_new_layers(result, source, roles=roles)

    def run(self):
        layer = self.image.value
        if layer is None:
            notify_error(ValueError("open an image first"))
        elif not self.model.value:
            notify_error(ValueError("choose a model file"))
        else:
            try:
                parameters = self.parameters()
            except ValueError as exc:
                notify_error(exc)
                return
            self._start(self._job, layer, SourceInfo(layer, self._viewer.dims), roles_to_build(self._viewer, layer),
                        self.model_spec(), self.device.value, parameters, on_done=lambda out: self._on_done(layer, *out))

    def _on_done(self, layer, result, new_layers):
        """GUI steps, one per event-loop turn: napari's adding of a layer is the slow part."""
        from ._layers import write_result_layers_in_steps

        if layer not in self._viewer.layers:
            notify_error(ValueError(f"the image '{layer.name}' was closed during the run; result discarded"))
            return
        self.last_result = result
        yield from write_result_layers_in_steps(self._viewer, layer, result, new_layers=new_layers)
        yield
        counts = result.counts_per_frame()
        if result.stack_shape:  # a count per frame: only stacks get the plot (drawing it stalls the GUI)
            self.counts_plot.show(range(len(counts)), counts, xlabel="frame", ylabel="objects",
                                  title=f"{layer.name}: {result.n_objects} objects")
        self.counts_plot.canvas.setVisible(bool(result.stack_shape))
        text = f"{result.n_objects} objects" + (f" in {len(counts)} frames" if result.stack_shape else "")
        parameters = result.metadata.get("parameters", {})
        if parameters.get("measured_diameter"):  # what diameter="auto" found and did with it
            text += (f"; object size {parameters['measured_diameter']:.0f} px, segmented at "
                     f"{parameters['zoom_factor']:.2g}x the model's scale")
        switched = parameters.get("bright_field_switch")
        if switched:  # the image looked like histology or bright-field: the specialist segmented it
            text += f"; light background: segmented by {Path(result.metadata['model']['path']).stem}"
        refine = parameters.get("refine")
        if refine:  # whether the refiner redrew the outlines, and how many frames kept the model's own
            refined = sum(refine["refined_frames"])
            kept = len(refine["refined_frames"]) - refined
            text += (f"; contours refined by {Path(refine['model']).stem}" if refined else
                     "; contours kept as the model drew them (its contour U-Net disagreed)")
            if refined and kept:
                text += f" ({kept} frames kept the model's own)"
        self.status.value = text + ("; " + "; ".join(result.warnings) if result.warnings else "")
