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
        "overlap of neighbouring tiles; auto: a quarter of the tile, at most 128", label="tile overlap",
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
