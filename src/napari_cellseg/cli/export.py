"""``napari-cellseg export``: images and corrected labels as a YOLO or COCO training set."""
from __future__ import annotations

from ._common import CliError, expand_inputs


def add_parser(sub):
    ex = sub.add_parser("export", help="images + corrected labels -> a YOLO or COCO training set")
    ex.add_argument("images", nargs="+", help="image files (2-D or stacks: each frame becomes a sample)")
    ex.add_argument("--labels", nargs="+", required=True, help="label images, in the same order as the images")
    ex.add_argument("--format", choices=["yolo", "coco"], default="yolo")
    ex.add_argument("--out", required=True, help="dataset folder")
    ex.add_argument("--val-fraction", type=float, default=0.2, help="share of samples for validation (default 0.2)")
    ex.add_argument("--class-names", nargs="+", default=["cell"])
    return ex


def run(args) -> int:
    from ..core.datasets import export_dataset
    from ..core.io import read_image

    images = expand_inputs(args.images)
    labels = expand_inputs(args.labels)
    if len(images) != len(labels):
        raise CliError(f"{len(images)} images but {len(labels)} label images; give one label image per image")
    samples = ((img.stem, read_image(img, lazy=False), read_image(lab, lazy=False)) for img, lab in zip(images, labels))
    target = export_dataset(samples, args.out, args.format, args.val_fraction, class_names=args.class_names)
    print(f"{args.format} dataset written: {target}")
    return 0
