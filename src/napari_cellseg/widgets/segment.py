"""The "Segment cells" dock widget."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

from magicgui import widgets

from ._layers import SourceInfo, build_new_layers, features_of, precompute_hashes, roles_to_build
from ..core.options import SegmentOptions
from ._options import Collapsible, OptionControls
from ._common import ModelCache, ModelChooser, WorkerWidget, device_choice, full_resolution, notify_error


class SegmentWidget(WorkerWidget):
    """Pick an image and a model, run in a thread worker, get Labels + Points."""

    def __init__(self, viewer: napari.viewer.Viewer):

        self._cache = ModelCache()
        self.last_result = None
        self.image = widgets.create_widget(annotation=napari.layers.Image, label="image",
                                           options={"tooltip": "the image layer to segment (2-D, or a stack: "
                                                               "segmented frame by frame)"})
        self.model = ModelChooser()
        self.settings = OptionControls(SegmentOptions)
        self.ensemble = widgets.FileEdit(label="ensemble with", mode="rm", filter="*.pt *.pth *.pkl",
                                         tooltip="more checkpoints whose instances are fused with the model's "
                                                 "(each model at its own scale; 'models that must agree' under Advanced); "
                                                 "leave empty for one model")
        self.device = device_choice()
        # box detectors only: which of the stored detections are shown and counted, without running the model again
        self.detection_conf = widgets.FloatSlider(
            label="shown confidence", min=0.0, max=1.0, step=0.01, value=0.25, visible=False,
            tooltip="box detectors: show and count the detections scoring at least this, from the stored run "
                    "(no new run); values below the run's confidence show all it kept")
        self.advanced = Collapsible("Advanced", [self.ensemble, *self.settings.advanced, self.device])
        from ._training_run import TrainingRunPanel

        # the ultralytics run folder of the chosen checkpoint, when it has one (hidden otherwise)
        self.training_run = TrainingRunPanel(viewer)
        super().__init__(viewer, [self.image, self.model, self.training_run, *self.settings.main, self.detection_conf,
                                  self.advanced], "Segment")
        from ._plot import LinePlot

        self.counts_plot = LinePlot(height_px=140, viewer=viewer)  # objects per frame of a stack: the counting view
        self.native.layout().addWidget(self.counts_plot.canvas)
        viewer.layers.events.inserted.connect(self.image.reset_choices)
        viewer.layers.events.removed.connect(self.image.reset_choices)
        # the chosen model loads in the background at once: a run finds it ready
        self.model.combo.changed.connect(self._preload)
        self.device.changed.connect(self._preload)
        self.model.combo.changed.connect(self._show_backend_options)
        self.model.combo.changed.connect(self._show_training_run)
        self.ensemble.changed.connect(self._show_backend_options)
        self.detection_conf.changed.connect(self._show_detections)
        self._detection_source = None
        self.image.changed.connect(self.refresh_run_button)
        self.model.combo.changed.connect(self.refresh_run_button)
        self._preload()
        self._show_backend_options()
        self._show_training_run()
        self.refresh_run_button()

    def inputs_ready(self) -> bool:
        return self.image.value is not None and bool(self.model.value)

    def _show_backend_options(self, *_):
        """Options that only some backends use (e.g. Mask R-CNN's normalisation) show for those only."""
        from ..backends import DETECTION_BACKENDS, probe_backend

        spec = self.model_spec()
        names = spec if isinstance(spec, list) else [spec]
        backends = {probe_backend(name) for name in names if name}
        if len(names) > 1:
            backends.add("ensemble")
        self.settings.show_for_backends(None if None in backends else backends)
        self.detection_conf.visible = bool(backends) and backends <= set(DETECTION_BACKENDS)

    def _show_training_run(self, *_):
        """The chosen checkpoint's ultralytics run (curves, arguments, best epoch), or nothing without one."""
        from ..core.training_run import read_training_run

        try:
            run = read_training_run(self.model.value) if self.model.value else None
        except Exception as exc:  # noqa: BLE001 - reading the run must never stop a model being chosen
            run = None
            self.status.value = f"the model's training run could not be read ({exc})"
        self.training_run.show_run(run)

    def _preload(self, *_):
        self.preload_thread = self._cache.preload(self.model.value, self.device.value)

    def parameters(self) -> dict:
        """The keyword arguments of the segmentation run (ValueError naming a bad entry)."""
        kwargs = self.settings.options().pipeline_kwargs()
        for layer_given in ("rgb", "channel_axis", "channel"):  # a napari layer says these itself
            kwargs.pop(layer_given)
        return kwargs

    def model_spec(self):
        """The chosen model, or it and the extra checkpoints as an ensemble."""
        extra = [str(p) for p in (self.ensemble.value or ()) if str(p) not in ("", ".")]
        return [self.model.value, *extra] if extra else self.model.value

    def _job(self, layer, source: SourceInfo, roles: tuple, model_name: str, device: str, parameters: dict):
        from ..core.progress import Progress
        from ..pipeline.segment import segment_iter

        yield Progress(0, 1, 0, 1, "loading model")
        model = self._cache.get(model_name, device)  # in the worker thread, cached for re-runs
        result = yield from segment_iter(full_resolution(layer), model, rgb=layer.rgb, **parameters)
        if getattr(result, "task", None) == "detect":  # boxes: the layers are written on the GUI thread
            features_of(result)  # pandas' first import off the GUI thread
            return result, None
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
        if getattr(result, "task", None) == "detect":
            self._detection_source = layer
            run_conf = float(result.metadata["parameters"]["conf"])
            with self.detection_conf.changed.blocked():
                self.detection_conf.value = run_conf
            self.detection_conf.visible = True
            self._show_detections(run_conf)
            return
        yield from write_result_layers_in_steps(self._viewer, layer, result, new_layers=new_layers)
        yield
        counts = result.counts_per_frame()
        if result.stack_shape:  # a count per frame: only stacks get the plot (drawing it stalls the GUI)
            self.counts_plot.show(range(len(counts)), counts, xlabel="frame", ylabel="objects",
                                  title=f"{layer.name}: {result.n_objects} objects")
        else:
            self.counts_plot.hide()
        self.status.value = result.describe()

    def _show_detections(self, conf=None):
        """The stored detections scoring at least ``conf`` written to the Points/Shapes layers, with their counts
        (per frame, with the plot, for a stack): the confidence slider's live update, no model run."""
        from ._layers import write_detection_layers

        result, layer = self.last_result, self._detection_source
        if getattr(result, "task", None) != "detect" or layer is None or layer not in self._viewer.layers:
            return
        conf = float(self.detection_conf.value if conf is None else conf)
        write_detection_layers(self._viewer, layer, result, conf=conf)
        counts = result.counts_per_frame(conf)
        total = int(counts.sum())
        if result.stack_shape:
            self.counts_plot.show(range(len(counts)), counts, xlabel="frame", ylabel="detections",
                                  title=f"{layer.name}: {total} detections at confidence {conf:.2f}")
        else:
            self.counts_plot.hide()
        self.status.value = result.scoring_at_least(conf).describe() + f" (confidence >= {conf:.2f})"
