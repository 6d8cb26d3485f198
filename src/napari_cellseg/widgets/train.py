"""The "Fine-tune" widget: retrain a YOLO or Mask R-CNN model on corrected labels, with live curves and cancel."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

from pathlib import Path

from magicgui import widgets

from ..core.options import FinetuneOptions
from ._options import Collapsible, OptionControls
from ._common import (ModelChooser, OutputDefault, TrainingWidget, device_choice, full_resolution, layer_file,
                      notify_error, preimport)
from ._plot import LinePlot


class FinetuneWidget(TrainingWidget):
    def __init__(self, viewer: napari.viewer.Viewer):

        self.last_result = None
        self.history: list[dict] = []
        self.image = widgets.create_widget(
            annotation=napari.layers.Image | None, label="image",
            options={"nullable": True, "tooltip": "the image the corrected labels belong to (or choose a dataset "
                                                  "folder below instead)"})
        self.labels_layer = widgets.create_widget(
            annotation=napari.layers.Labels | None, label="labels",
            options={"nullable": True, "tooltip": "the corrected labels of that image, of the same size: the "
                                                  "training targets"})
        self.dataset = widgets.FileEdit(label="or dataset", mode="d",
                                        tooltip="instead of the layers: a YOLO dataset folder with data.yaml")
        self.model = ModelChooser(label="start from")
        self.arch = widgets.ComboBox(label="architecture", choices=["from the model", "new Mask R-CNN"],
                                     tooltip="'new Mask R-CNN' trains a ResNet-50-FPN Mask R-CNN from scratch "
                                             "(or from a local backbone file)")
        self.backbone = widgets.FileEdit(label="backbone weights", mode="r", filter="*.pth *.pt",
                                         tooltip="optional, new Mask R-CNN only: torchvision ResNet-50 ImageNet weights")
        # the training options as the CLI's finetune defines them (core.options); imgsz and zoom advanced
        self.settings = OptionControls(FinetuneOptions)
        self.epochs, self.batch, self.val_fraction = (self.settings[name] for name in
                                                      ("epochs", "batch", "val_fraction"))
        self.out = widgets.FileEdit(label="save model as", mode="w", filter="*.pt",
                                    tooltip="the fine-tuned model (best epoch); by default <image>_finetuned.pt "
                                            "beside the image's file (else in the working folder)")
        self.device = device_choice()
        super().__init__(viewer, [self.image, self.labels_layer, self.dataset, self.model, self.arch, self.backbone,
                                  *self.settings.main, self.out,
                                  Collapsible("Advanced", [*self.settings.advanced, self.device])], "Fine-tune")
        self.run_button.tooltip = "fine-tune in the background; enabled once an image and its labels of the same " \
                                  "size (or a dataset folder with data.yaml) and a model to start from are chosen"
        self.plot = LinePlot(viewer=viewer)
        self.native.layout().addWidget(self.plot.canvas)
        for picker in (self.image, self.labels_layer):
            viewer.layers.events.inserted.connect(picker.reset_choices)
            viewer.layers.events.removed.connect(picker.reset_choices)
        self.out_default = OutputDefault(self.out, self._out_source, "_finetuned.pt",
                                         triggers=(self.image, self.dataset))
        for control in (self.image, self.labels_layer, self.dataset, self.model.combo, self.arch):
            control.changed.connect(self.refresh_run_button)
        self.refresh_run_button()
        self.preimport_thread = preimport(("torch", "ultralytics"))

    def _dataset(self) -> Path | None:
        return Path(self.dataset.value) if str(self.dataset.value) not in ("", ".") else None

    def _out_source(self):
        dataset = self._dataset()
        if dataset is not None:
            return None, dataset  # <dataset>/<dataset's name>_finetuned.pt
        return self.image.value, layer_file(self.image.value, self._viewer)

    def inputs_ready(self) -> bool:
        dataset = self._dataset()
        if dataset is not None:
            data_ok = (dataset / "data.yaml").is_file()
        else:
            image, labels = self.image.value, self.labels_layer.value
            data_ok = image is not None and labels is not None and \
                tuple(labels.data.shape) == tuple(full_resolution(image).shape[:labels.data.ndim])
        return data_ok and (bool(self.model.value) or self.arch.value == "new Mask R-CNN")

    @staticmethod
    def _job(image, labels, dataset, model, out, device, arch, backbone, options):
        from ..pipeline.finetune import train_any_iter

        data = {"data_yaml": Path(dataset) / "data.yaml"} if dataset is not None else {
            "samples": [(image[0], image[1], labels)]}
        options = {**options, "arch": arch, "backbone_weights": backbone}
        return (yield from train_any_iter(model, out, device=device, **data, **options))

    def run(self):
        dataset = self.dataset.value if str(self.dataset.value) not in ("", ".") else None
        image, labels = self.image.value, self.labels_layer.value
        if dataset is None and (image is None or labels is None):
            notify_error(ValueError("choose an image and its corrected labels, or a dataset folder"))
            return
        if dataset is not None and not (Path(dataset) / "data.yaml").is_file():
            notify_error(ValueError(f"{dataset} has no data.yaml"))
            return
        self.history = []
        image_arg = None if dataset else (image.name, full_resolution(image))
        labels_arg = None if dataset else labels.data
        self._out_path = Path(self.out.value)
        device = "cpu" if self.device.value == "auto" else self.device.value
        from ..pipeline.finetune import finetune_architecture

        try:
            new_maskrcnn = self.arch.value == "new Mask R-CNN"
            arch = "maskrcnn" if new_maskrcnn else finetune_architecture(self.model.value)
        except ValueError as exc:  # a model file that no longer exists
            notify_error(exc)
            return
        backbone = self.backbone.value if str(self.backbone.value) not in ("", ".") else None
        try:
            options = self.settings.options().job_kwargs()
        except ValueError as exc:
            notify_error(exc)
            return
        self._start(self._job, image_arg, labels_arg, dataset, None if new_maskrcnn else self.model.value,
                    self._out_path, device, arch, backbone, options, on_done=self._on_done)

    def _on_progress(self, progress):
        super()._on_progress(progress)
        if progress.get("metrics") is not None:
            if self.history and self.history[-1]["epoch"] == progress.epoch:
                self.history.pop()  # the final re-validation of the best weights
            self.history.append({"epoch": progress.epoch, **progress.get("losses"), **progress.get("metrics")})
            epochs = [h["epoch"] for h in self.history]
            loss_key = "train/seg_loss" if "train/seg_loss" in self.history[-1] else "train/loss"  # YOLO / Mask R-CNN
            self.plot.show(epochs, [h.get(loss_key, float("nan")) for h in self.history],
                           label=loss_key.replace("/", " ").replace("_", " "), xlabel="epoch", ylabel="value")
            if "metrics/mAP50(M)" in self.history[-1]:
                self.plot.show(epochs, [h.get("metrics/mAP50(M)", float("nan")) for h in self.history],
                               label="val mask mAP50", xlabel="epoch", ylabel="value", clear=False)
