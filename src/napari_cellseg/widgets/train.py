"""The "Fine-tune" widget: retrain a YOLO or Mask R-CNN model on corrected labels, with live curves and cancel."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

import shutil
import tempfile
from pathlib import Path

from magicgui import widgets

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
        self.epochs = widgets.SpinBox(label="epochs", value=10, min=1, max=1000,
                                      tooltip="passes over the training images; the best epoch on the validation "
                                              "images is kept")
        self.batch = widgets.SpinBox(label="batch", value=8, min=1, max=256,
                                     tooltip="images per training step; lower it if memory runs out")
        self.val_fraction = widgets.FloatSpinBox(
            label="validation share", value=0.2, min=0.0, max=0.9, step=0.05,
            tooltip="share (0-0.9) of the exported tiles held out to score each epoch and calibrate the score "
                    "threshold; 0: validate on the training tiles")
        self.out = widgets.FileEdit(label="save model as", mode="w", filter="*.pt",
                                    tooltip="the fine-tuned model (best epoch); by default <image>_finetuned.pt "
                                            "beside the image's file (else in the working folder)")
        self.device = device_choice()
        super().__init__(viewer, [self.image, self.labels_layer, self.dataset, self.model, self.arch, self.backbone,
                                  self.epochs, self.batch, self.val_fraction, self.out, self.device], "Fine-tune")
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

    def _job(self, image, labels, dataset, model, out, epochs, batch, val_fraction, device, arch="yolo",
             backbone=None):
        from ..core.datasets import export_dataset, read_yolo_dataset
        from ..core.finetune import TrainProgress, finetune_iter

        if arch in ("maskrcnn", "new maskrcnn"):
            from ..core.finetune_maskrcnn import maskrcnn_finetune_iter

            samples = [(image[0], image[1], labels)] if dataset is None else list(read_yolo_dataset(
                Path(dataset) / "data.yaml"))
            base = model if arch == "maskrcnn" else None
            result = yield from maskrcnn_finetune_iter(samples, out, base=base, epochs=epochs, batch=batch,
                                                       device=device, backbone_weights=backbone)
            return result
        workdir = Path(tempfile.mkdtemp(prefix="napari-cellseg-train-"))
        try:
            if dataset is None:
                yield TrainProgress(0, 1, 0, epochs, "exporting the corrected labels")
                dataset = export_dataset([(image[0], image[1], labels)], workdir / "dataset", "yolo", val_fraction)
            else:
                dataset = Path(dataset) / "data.yaml"
            result = yield from finetune_iter(model, dataset, out, epochs=epochs, batch=batch, device=device,
                                              workdir=workdir)
            return result
        finally:  # the exported dataset and the run folder; the model is in ``out``
            shutil.rmtree(workdir, ignore_errors=True)

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
        from ..core.finetune import finetune_architecture

        try:
            arch = "new maskrcnn" if self.arch.value == "new Mask R-CNN" else finetune_architecture(self.model.value)
        except ValueError as exc:  # a model file that no longer exists
            notify_error(exc)
            return
        backbone = self.backbone.value if str(self.backbone.value) not in ("", ".") else None
        self._start(self._job, image_arg, labels_arg, dataset, self.model.value, self._out_path,
                    self.epochs.value, self.batch.value, self.val_fraction.value, device, arch, backbone,
                    on_done=self._on_done)

    def _on_progress(self, progress):
        super()._on_progress(progress)
        if progress.metrics is not None:
            if self.history and self.history[-1]["epoch"] == progress.epoch:
                self.history.pop()  # the final re-validation of the best weights
            self.history.append({"epoch": progress.epoch, **progress.losses, **progress.metrics})
            epochs = [h["epoch"] for h in self.history]
            loss_key = "train/seg_loss" if "train/seg_loss" in self.history[-1] else "train/loss"  # YOLO / Mask R-CNN
            self.plot.show(epochs, [h.get(loss_key, float("nan")) for h in self.history],
                           label=loss_key.replace("/", " ").replace("_", " "), xlabel="epoch", ylabel="value")
            if "metrics/mAP50(M)" in self.history[-1]:
                self.plot.show(epochs, [h.get("metrics/mAP50(M)", float("nan")) for h in self.history],
                               label="val mask mAP50", xlabel="epoch", ylabel="value", clear=False)
