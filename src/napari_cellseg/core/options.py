"""Options defined once: a typed object per job, from which the CLI arguments, the widget's controls
and tooltips, and the provenance record are all derived.

``MODEL`` (``None``) is the one value that means "use the model's own value" (its calibration, or its
training size): an omitted CLI flag, the widget's "model's" setting and ``None`` in Python.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

MODEL = None  # "use the model's value", the same everywhere


@dataclass(frozen=True)
class Spec:
    """How one option is shown and checked: label, help text, unit, range, where it applies."""

    help: str
    label: str = ""
    unit: str = ""
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple = ()
    model_value: bool = False  # None (MODEL) is allowed and means the model's own value
    none_text: str = ""  # what an unset (None) value means, when it is not the model's value: e.g. "auto"
    metavar: str | None = None
    repeat: bool = False  # the CLI flag may be given several times (values collected in a list)
    advanced: bool = True  # widgets show it under "Advanced"
    backends: tuple[str, ...] = ()  # backends it applies to; empty: every backend
    parse: Callable[[str], Any] | None = None  # text (CLI, widget line edit) -> value; raises ValueError
    cli: bool = True
    widget: bool = True
    flag: str | None = None  # the CLI flag, default --<name-with-dashes>
    negative_flag: str | None = None  # a boolean that is on by default is switched off by this flag
    aliases: tuple[str, ...] = ()  # older spellings of the flag, still accepted

    def tooltip(self) -> str:
        text = self.help
        if self.unit:
            text += f" [{self.unit}]"
        if self.model_value:
            text += ". Unset ('model's'): the value stored with the model"
        if self.backends:
            text += f" (only for {', '.join(self.backends)} models)"
        return text


def option(default, spec: Spec):
    return field(default=default, metadata={"spec": spec})


def spec_of(f) -> Spec:
    return f.metadata["spec"]


def option_fields(cls) -> list:
    return [f for f in fields(cls) if "spec" in f.metadata]


def parse_class_conf(text: str | list[str] | None) -> dict[int, float]:
    """'0=0.3, 2=0.6' (or a list of such items) -> {0: 0.3, 2: 0.6}; thresholds in [0, 1]."""
    items = text if isinstance(text, (list, tuple)) else [text or ""]
    result: dict[int, float] = {}
    for chunk in items:
        for item in filter(None, (part.strip() for part in str(chunk).replace(";", ",").split(","))):
            key, sep, value = item.partition("=")
            try:
                cls, threshold = int(key), float(value)
            except ValueError:
                cls, threshold = None, None
            if not sep or cls is None or not 0 <= threshold <= 1:
                raise ValueError(f"class-conf expects CLASS=THRESHOLD pairs with a threshold in [0, 1] "
                                 f"(e.g. 0=0.3), got '{item}'")
            result[cls] = threshold
    return result


def parse_diameter(value) -> float | str | None:
    """A positive number of pixels, 'auto', or 'off' / None (the model's training scale)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", ""):
            return "auto"
        if text in ("off", "none"):
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0:
        raise ValueError(f"diameter must be a positive number of pixels, 'auto' or 'off' (got {value!r})")
    return number


class Options:
    """Shared behaviour of the per-job option objects (dataclasses with ``option`` fields)."""

    def check(self) -> None:
        """Raise ValueError naming the option whose value is out of range."""
        for f in option_fields(type(self)):
            spec, value = spec_of(f), getattr(self, f.name)
            if value is None or isinstance(value, (bool, str, dict)):
                continue
            if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
                raise ValueError(f"{f.name.replace('_', '-')} must be in [{spec.min}, {spec.max}] (got {value})")

    def record(self) -> dict:
        """The values, for provenance files (None: the model's value was used)."""
        return asdict(self)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One CLI argument per option, with the same help text the widget shows as a tooltip."""
        for f in option_fields(cls):
            spec = spec_of(f)
            if not spec.cli:
                continue
            flag = spec.flag or "--" + f.name.replace("_", "-")
            help_text = spec.tooltip()
            if f.type in ("bool", bool) or isinstance(f.default, bool):
                if f.default and spec.negative_flag:
                    parser.add_argument(spec.negative_flag, *spec.aliases, dest=f.name, action="store_false",
                                        help=f"switch off: {help_text}")
                else:
                    parser.add_argument(flag, *spec.aliases, dest=f.name, action="store_true", help=help_text)
                continue
            default_text = ("the model's" if spec.model_value else spec.none_text or "unset") if f.default is None \
                else f.default
            kwargs = dict(dest=f.name, default=f.default, help=f"{help_text} (default: {default_text})")
            if spec.metavar:
                kwargs["metavar"] = spec.metavar
            if spec.repeat:
                kwargs["action"] = "append"

            if spec.choices:
                kwargs["choices"] = list(spec.choices)
            if spec.parse is None and f.type in ("int", "int | None", int):
                kwargs["type"] = int
            elif spec.parse is None and f.type in ("float", "float | None", float):
                kwargs["type"] = float
            parser.add_argument(flag, *spec.aliases, **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        """The options object of parsed CLI arguments (ValueError for a bad value)."""
        values = {}
        for f in option_fields(cls):
            if not spec_of(f).cli or not hasattr(args, f.name):
                continue
            value = getattr(args, f.name)
            parse = spec_of(f).parse
            values[f.name] = parse(value) if parse is not None and value is not None else value
        options = cls(**values)
        options.check()
        return options


@dataclass
class SegmentOptions(Options):
    """Everything a segmentation run takes besides the image and the model."""

    diameter: float | str | None = option("auto", Spec(
        "typical object diameter: the image is scaled so that such objects appear at the size the model "
        "segments best (its calibrated reference size, --model-diameter, or, for a model without one, the size "
        "it finds objects at at its default scale, measured once). 'auto' measures the objects in a first pass "
        "(models with a reference size); 'off' keeps the model's default scale", label="object diameter",
        unit="pixels", advanced=False, parse=parse_diameter))
    zoom: float | None = option(None, Spec(
        "the scale, in model pixels per image pixel (0.5: the image at half size), instead of a diameter and of "
        "the model's default scale (give one of zoom, native and a diameter)", label="scale (zoom)",
        unit="model px / image px", min=0.01, max=16.0, step=0.05,
        none_text="the model's default scale, or from the diameter"))
    native: bool = option(False, Spec(
        "full resolution: run the model tiled at scale 1 instead of its default (for a foreign ultralytics "
        "checkpoint the default is ultralytics' predict geometry: the whole image fitted to its training size); "
        "for a model trained on tiles or crops at the image's resolution", label="full resolution (tiled)"))
    model_diameter: float | None = option(MODEL, Spec(
        "the object diameter, in model pixels, the model segments best, that --diameter scales objects to",
        label="model's object diameter", unit="model pixels", min=1.0, max=1000.0, step=1.0, model_value=True))
    min_agree: int | None = option(None, Spec(
        "ensembles (several models): how many models must find an object for it to be kept",
        label="models that must agree", min=1, max=16, step=1, none_text="a majority", backends=("ensemble",)))
    conf: float | None = option(MODEL, Spec(
        "score threshold: objects scoring less are dropped; with test-time augmentation the model's TTA "
        "threshold where it has one (0.25 for checkpoints that carry none)", label="confidence",
        min=0.0, max=1.0, step=0.05, model_value=True, advanced=False))
    tta: bool = option(False, Spec(
        "test-time augmentation: fuse the predictions on 4 flips (about 4x slower)",
        label="test-time augmentation"))
    refine: bool = option(True, Spec(
        "redraw the outlines from the model's contour U-Net where it has one (the shipped 'nuclei' model: "
        "'nuclei-contours'); images where the two disagree keep the model's own",
        label="refine contours", negative_flag="--no-refine"))
    bright_field: bool = option(True, Spec(
        "images with a light background (histology, bright-field) are segmented by the model's bright-field "
        "specialist where it has one (the shipped 'nuclei' model: 'nuclei-brightfield')",
        label="bright-field model for light images", negative_flag="--no-bright-field"))
    imgsz: int | None = option(MODEL, Spec(
        "network input size", label="network input size", unit="network pixels", min=32, max=4096, step=32,
        model_value=True))
    tile: int | None = option(None, Spec(
        "tile size in image pixels: the image is cut into tiles this size; the tile never changes the scale. "
        "Default: tiles whose network input is the network input size", label="tile size", unit="image pixels",
        min=32, max=8192, step=32, model_value=True))
    overlap: int | None = option(None, Spec(
        "overlap of neighbouring tiles; auto: the model's reference object diameter at this scale (rounded up "
        "to 8, at least 16) where it carries one and that is less than a quarter of the tile, else a quarter "
        "of the tile, at most 128", label="tile overlap",
        unit="image pixels", min=0, max=1024, step=8, none_text="auto"))
    iou: float = option(0.7, Spec(
        "non-maximum suppression: of two detections overlapping more than this, the lower-scoring one is "
        "dropped", label="NMS IoU", min=0.0, max=1.0, step=0.05))
    max_det: int = option(3000, Spec("most detections kept per tile", label="max detections", min=1, max=100000,
                                     step=100))
    mask_erosion: int | None = option(MODEL, Spec(
        "pixels peeled off every object after stitching", label="mask erosion", unit="pixels", min=0, max=10,
        model_value=True))
    mask_threshold: float | None = option(MODEL, Spec(
        "mask probability a pixel needs to belong to an object (YOLO masks, fused TTA and ensemble masks; "
        "0.5 where the model carries none)", label="mask threshold", min=0.0, max=1.0, step=0.05,
        model_value=True, backends=("yolo", "maskrcnn", "ensemble")))
    class_conf: dict | None = option(None, Spec(
        "per-class score thresholds as CLASS=THRESHOLD pairs, e.g. 0=0.3, 2=0.6 (other classes: confidence)",
        label="per-class confidence", parse=parse_class_conf, metavar="CLASS=THRESHOLD", repeat=True))
    normalization: str = option("model", Spec(
        "input statistics: the checkpoint's own, ImageNet's, or the image's own", label="normalisation",
        choices=("model", "imagenet", "image"), backends=("maskrcnn",)))
    channel_axis: int | None = option(None, Spec(
        "axis holding the channels of a multi-channel image (napari shows channels as separate layers)",
        widget=False))
    channel: int | None = option(None, Spec("which channel to segment (with --channel-axis)", widget=False))
    rgb: bool | None = option(None, Spec("last axis is RGB(A) colour (default: guessed from the shape)",
                                         widget=False, cli=False))

    def __post_init__(self):
        if isinstance(self.class_conf, (str, list)):
            self.class_conf = parse_class_conf(self.class_conf)
        self.class_conf = dict(self.class_conf or {})
        self.diameter = parse_diameter(self.diameter)

    def pipeline_kwargs(self) -> dict:
        """The keyword arguments of ``segment_iter`` / ``segment``."""
        values = {f.name: getattr(self, f.name) for f in option_fields(type(self))}
        values["refine"] = "auto" if self.refine else None
        values["bright_field"] = "auto" if self.bright_field else None
        return values


@dataclass
class FinetuneOptions(Options):
    """A fine-tuning run (YOLO, or Mask R-CNN continued or new) besides its data, start model and output."""

    epochs: int = option(10, Spec("passes over the training images", min=1, max=1000, step=1, advanced=False))
    batch: int = option(8, Spec("images per training step (lower it when memory runs out)", label="batch size",
                                min=1, max=256, step=1))
    imgsz: int | None = option(MODEL, Spec(
        "network input size for training (a new Mask R-CNN: its shortest-edge size, 800)", label="network input size",
        unit="network pixels", min=32, max=4096, step=32, model_value=True))
    zoom: float | None = option(MODEL, Spec(
        "scale the new images are seen at: choose it so the new cells look as large as those the model knows "
        "(e.g. 0.5 for 60-pixel cells with a model trained at 1.5); a box detector (--task detect) then trains on "
        "tiles of imgsz / zoom image pixels (default: the first training image's size decides)", label="zoom",
        unit="network pixels per image pixel", min=0.05, max=8.0, step=0.05, model_value=True,
        backends=("yolo",)))
    val_fraction: float = option(0.2, Spec(
        "share of the images kept aside to validate every epoch (Mask R-CNN: mask mAP, the best epoch is kept) "
        "and to calibrate the score threshold (layers exported from the viewer, label folders, a COCO file "
        "without a val json; an exported dataset keeps its own split)", label="validation share",
        min=0.0, max=0.9, step=0.05))
    task: str = option("segment", Spec(
        "segment: masks; detect: a box detector (ultralytics) on a box dataset, e.g. a Roboflow 'YOLO' export as "
        "downloaded; the start model may then be a detection or segmentation checkpoint (its weights where they "
        "fit) or a model file such as yolo11n.yaml (from scratch)", choices=("segment", "detect"), widget=False))
    arch: str = option("auto", Spec(
        "auto: the family of the start model; 'maskrcnn' with a start model of another kind trains a new "
        "ResNet-50-FPN Mask R-CNN", label="architecture", choices=("auto", "yolo", "maskrcnn"), widget=False))
    backbone_weights: str | None = option(None, Spec(
        "a new Mask R-CNN only: a local torchvision ResNet-50 ImageNet state dict for its backbone",
        label="backbone weights", none_text="none", backends=("maskrcnn",), widget=False))

    def job_kwargs(self) -> dict:
        """The keyword arguments of ``pipeline.finetune.train_any_iter``."""
        return {f.name: getattr(self, f.name) for f in option_fields(type(self))}


@dataclass
class ClassifierTrainOptions(Options):
    """Training the ResNet50 phenotype classifier, besides its crops and output file."""

    epochs: int = option(10, Spec("passes over the training crops; the best epoch by validation balanced "
                                  "accuracy is kept", min=1, max=500, step=1, advanced=False))
    batch_size: int = option(32, Spec("crops per training step", label="batch size", min=1, max=1024, step=1,
                                      flag="--batch"))
    lr: float = option(1e-3, Spec("learning rate (Adam)", label="learning rate", min=1e-6, max=1.0, step=1e-4))
    val_fraction: float = option(0.2, Spec(
        "without a separate validation folder: share of each class held out for validation, whole tracks at a "
        "time (0: none)", label="validation share", min=0.0, max=0.9, step=0.05))
    folds: int = option(0, Spec("k-fold cross-validation before the final training (0: none)",
                                label="cross-validation folds", min=0, max=20, step=1, widget=False))
    freeze: str = option("seed", Spec(
        "with ImageNet weights, seed: train only the first convolution and the final layer; head: only the "
        "final layer; none: every layer (without ImageNet weights every layer trains)", label="frozen layers",
        choices=("seed", "head", "none")))
    init: str = option("auto", Spec(
        "ImageNet ResNet50 weights: a local file, 'auto' (torchvision's cache if it has them, else random; "
        "never downloads), 'imagenet' (download when online) or 'none'", label="ImageNet weights",
        metavar="FILE|auto|imagenet|none", parse=str))
    crop_size: int = option(40, Spec("crops are resized to this side", label="crop size", unit="pixels", min=8,
                                     max=512, step=8))

    def job_kwargs(self) -> dict:
        """The keyword arguments of ``classifier.train.train_iter`` (and ``cross_validate_iter``)."""
        values = {f.name: getattr(self, f.name) for f in option_fields(type(self))}
        for not_a_training_argument in ("folds", "crop_size"):
            values.pop(not_a_training_argument)
        return values


def parse_widths(text) -> tuple[int, ...] | None:
    """'24,48,96,192,384' -> (24, 48, 96, 192, 384); empty: None (the default widths)."""
    if text is None or isinstance(text, tuple):
        return text
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not parts:
        return None
    try:
        widths = tuple(int(part) for part in parts)
    except ValueError:
        raise ValueError(f"widths must be comma-separated whole numbers, e.g. 24,48,96,192,384 (got {text!r})") from None
    if any(w < 1 for w in widths):
        raise ValueError(f"widths must be positive (got {text!r})")
    return widths


@dataclass
class StudentTrainOptions(Options):
    """Training the U-Net student (on masks, or on a teacher's masks), besides its images and output file."""

    epochs: int = option(30, Spec("passes over the training images; the best epoch by validation Dice is kept",
                                  min=1, max=1000, step=1, advanced=False))
    batch: int = option(8, Spec("training crops per step", label="batch size", min=1, max=256, step=1))
    crop: int = option(256, Spec("side of the random training crops, a multiple of 16", label="crop size",
                                 unit="pixels", min=32, max=1024, step=16))
    lr: float = option(2e-3, Spec("learning rate (AdamW, cosine schedule)", label="learning rate", min=1e-6, max=1.0,
                                  step=1e-4, widget=False))
    steps_per_epoch: int | None = option(None, Spec("batches per epoch; unset: one crop per image",
                                                    label="steps per epoch", min=1, max=100000, step=1,
                                                    none_text="one crop per image", flag="--steps", widget=False))
    widths: tuple | None = option(None, Spec("U-Net widths of the five levels, e.g. 24,48,96,192,384 (the default)",
                                             parse=parse_widths, metavar="W1,W2,...", widget=False))
    resume: bool = option(False, Spec("continue from '<out stem>.last.pt' where an earlier run stopped",
                                      label="resume"))

    def job_kwargs(self) -> dict:
        """The keyword arguments of ``unet_student.train.train_iter`` (and ``distill_iter``)."""
        values = {f.name: getattr(self, f.name) for f in option_fields(type(self))}
        if values["widths"] is None:
            values.pop("widths")  # the architecture's own default
        return values
