"""The "Train U-Net student" widget: distil a teacher into a small fast U-Net, or train it on labels."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

from pathlib import Path

from magicgui import widgets

from ..core.options import StudentTrainOptions
from ._options import OptionControls
from ._common import (ModelChooser, OutputDefault, TrainingWidget, device_choice, full_resolution, layer_file,
                      notify_error, preimport)
from ._plot import LinePlot

DISTIL, TRAIN = "distil from a teacher", "train on labels"


class StudentWidget(TrainingWidget):
    def __init__(self, viewer: napari.viewer.Viewer):

        self.last_result = None
        self.history: list[dict] = []
        self.mode = widgets.ComboBox(label="mode", choices=[DISTIL, TRAIN], value=DISTIL,
                                     tooltip="distil: the teacher's masks on your images are the targets (no "
                                             "labels needed); train: your labels are the targets")
        self.teacher = ModelChooser(label="teacher")
        self.image = widgets.create_widget(
            annotation=napari.layers.Image | None, label="image",
            options={"nullable": True, "tooltip": "the image to train on (or choose a folder below instead)"})
        self.labels_layer = widgets.create_widget(
            annotation=napari.layers.Labels | None, label="labels",
            options={"nullable": True, "tooltip": "train mode: the labels of that image, of the same size"})
        self.folder = widgets.FileEdit(label="or folder", mode="d",
                                       tooltip="distil: a folder of images; train: images/ + labels/, or "
                                               "<exp>_raw_data/PosNNN + <exp>_masks/PosNNN")
        self.val_suffixes = widgets.LineEdit(label="validation positions", value="09,10,19,20",
                                             tooltip="PosNNN folders whose number ends so are validation")
        # the training options as the CLI's train-unet and distill define them (core.options)
        self.settings = OptionControls(StudentTrainOptions)
        self.epochs, self.batch, self.crop, self.resume = (self.settings[name] for name in
                                                           ("epochs", "batch", "crop", "resume"))
        self.init = widgets.FileEdit(label="start from", mode="r", filter="*.pt",
                                     tooltip="optional: a student whose weights start the training, e.g. "
                                             "the shipped one, to fine-tune it on your corrected labels")
        self.out = widgets.FileEdit(label="save student as", mode="w", filter="*.pt",
                                    tooltip="the trained student (best epoch); by default <image>_student.pt "
                                            "beside the image's file (else in the working folder)")
        self.device = device_choice()
        super().__init__(viewer, [self.mode, self.teacher, self.image, self.labels_layer, self.folder,
                                  self.val_suffixes, self.init, self.epochs, self.batch, self.crop, self.resume,
                                  self.out, self.device], "Train U-Net student")
        self.run_button.tooltip = "train in the background; enabled once an image (train: and its labels of the " \
                                  "same size) or a folder, and in distil mode a teacher, are chosen"
        self.plot = LinePlot(viewer=viewer)
        self.native.layout().addWidget(self.plot.canvas)
        self.mode.changed.connect(self._on_mode)
        self._on_mode(self.mode.value)
        for picker in (self.image, self.labels_layer):
            viewer.layers.events.inserted.connect(picker.reset_choices)
            viewer.layers.events.removed.connect(picker.reset_choices)
        self.out_default = OutputDefault(
            self.out, lambda: (None, self._folder()) if self._folder() else
            (self.image.value, layer_file(self.image.value, viewer)), "_student.pt", triggers=(self.image, self.folder))
        for control in (self.mode, self.teacher.combo, self.image, self.labels_layer, self.folder):
            control.changed.connect(self.refresh_run_button)
        self.refresh_run_button()
        self.preimport_thread = preimport(("torch",))

    def inputs_ready(self) -> bool:
        mode = self.mode.value
        if mode == DISTIL and not self.teacher.value:
            return False
        if self._folder() is not None:
            return self._folder().is_dir()
        image, labels = self.image.value, self.labels_layer.value
        if image is None:
            return False
        if mode == TRAIN:
            return labels is not None and \
                tuple(labels.data.shape) == tuple(full_resolution(image).shape[:labels.data.ndim])
        return True

    def _on_mode(self, mode):
        self.teacher.visible = mode == DISTIL
        self.labels_layer.visible = self.init.visible = mode == TRAIN

    def _folder(self) -> Path | None:
        return Path(self.folder.value) if str(self.folder.value) not in ("", ".") else None

    @staticmethod
    def _job(mode, teacher, device, folder, layer, suffixes, out, options):
        from ..backends import load_model
        from ..unet_student.data import Sample, discover_dataset, load_sample, model_input, split_in_memory
        from ..pipeline.distill import distill_iter, split_image_folder
        from ..core.progress import Progress
        from ..unet_student.train import train_iter

        if mode == DISTIL:
            if folder is not None:
                train, val = split_image_folder(folder, suffixes)
            else:
                train, val = split_in_memory(*layer)
            yield Progress(0, 1, 0, 0, f"loading the teacher {Path(str(teacher)).name}", {"phase": "teacher"}, unit="image")
            model = load_model(teacher, device=device)
            return (yield from distill_iter(model, train, val, out, teacher_name=str(teacher), **options))
        if folder is not None:
            train_pairs, val_pairs = discover_dataset(folder, suffixes)
            train = [load_sample(*p) for p in train_pairs]
            val = [load_sample(*p) for p in val_pairs]
        else:
            parts = split_in_memory(*layer)
            train, val = ([Sample(n, model_input(i), lab.astype("int32")) for n, i, lab in part] for part in parts)
        return (yield from train_iter(train, val, out, info={"source": "trained on labels"}, **options))

    def run(self):
        mode, folder = self.mode.value, self._folder()
        image, labels = self.image.value, self.labels_layer.value
        if folder is None and (image is None or (mode == TRAIN and labels is None)):
            need = "an image layer" if mode == DISTIL else "an image and a labels layer"
            notify_error(ValueError(f"choose {need}, or a folder"))
            return
        if mode == DISTIL and not self.teacher.value:
            notify_error(ValueError("choose a teacher model"))
            return
        layer = None
        if folder is None:
            layer = (full_resolution(image), None if mode == DISTIL else labels.data, image.name)
        self.history = []
        self._out_path = Path(self.out.value)
        device = "cpu" if self.device.value == "auto" else self.device.value
        suffixes = tuple(s.strip() for s in self.val_suffixes.value.split(",") if s.strip())
        try:
            options = {**self.settings.options().job_kwargs(), "device": device}
        except ValueError as exc:
            notify_error(exc)
            return
        if mode == TRAIN and str(self.init.value) not in ("", "."):
            options["init"] = str(self.init.value)
        options.update(getattr(self, "extra_options", {}))  # e.g. a narrow U-Net in tests
        self._start(self._job, mode, self.teacher.value, device, folder, layer, suffixes, self._out_path,
                    options, on_done=self._on_done)

    def _on_progress(self, progress):
        super()._on_progress(progress)
        record = progress.get("record")
        if record is None:
            return
        self.history.append(record)
        if "event" in record:
            from napari.utils.notifications import show_warning

            show_warning(f"napari-cellseg: {record['event']}")
        epochs = [h["epoch"] for h in self.history]
        self.plot.show(epochs, [h["loss"] for h in self.history], label="train loss", xlabel="epoch",
                       ylabel="value")
        self.plot.show(epochs, [h["val_dice"] for h in self.history], label="val Dice", xlabel="epoch",
                       ylabel="value", clear=False)

    def _on_done(self, result):
        super()._on_done(result)
        if result.events:
            self.status.value += f" ({len(result.events)} collapse restart(s), see the notifications)"
