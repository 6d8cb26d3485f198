"""The "Fine-tune" widget: retrain a YOLO or Mask R-CNN model on corrected labels, with live curves and cancel."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

from pathlib import Path

from magicgui import widgets

from ..core.options import FinetuneOptions
from ._options import Collapsible, OptionControls
from ._common import ModelChooser, TrainingWidget, device_choice, full_resolution, notify_error
from ._plot import LinePlot


class FinetuneWidget(TrainingWidget):
    def __init__(self, viewer: napari.viewer.Viewer):

        self.last_result = None
        self.history: list[dict] = []
        self.image = widgets.create_widget(annotation=napari.layers.Image | None, label="image",
                                           options={"nullable": True})
        self.labels_layer = widgets.create_widget(annotation=napari.layers.Labels | None, label="labels",
                                                  options={"nullable": True})
        self.dataset = widgets.FileEdit(label="or dataset", mode="d", tooltip="a folder with data.yaml")
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
                                    value=str(Path.home() / "napari-cellseg-finetuned.pt"))
        self.device = device_choice()
        super().__init__(viewer, [self.image, self.labels_layer, self.dataset, self.model, self.arch, self.backbone,
                                  *self.settings.main, self.out,
                                  Collapsible("Advanced", [*self.settings.advanced, self.device])], "Fine-tune")
        self.plot = LinePlot(viewer=viewer)
        self.native.layout().addWidget(self.plot.canvas)
        for picker in (self.image, self.labels_layer):
            viewer.layers.events.inserted.connect(picker.reset_choices)
            viewer.layers.events.removed.connect(picker.reset_choices)

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
