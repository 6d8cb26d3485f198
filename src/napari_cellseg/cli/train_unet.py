"""``napari-cellseg train-unet``: train the U-Net student on images with masks."""
from __future__ import annotations

from pathlib import Path

from ._common import add_student_arguments, finish_student, report_student, student_options, val_suffixes


def add_parser(sub):
    tu = sub.add_parser("train-unet", help="train the U-Net student on images with masks")
    tu.add_argument("dataset", help="'images/' + 'labels/' folders, or '<exp>_raw_data/PosNNN' + '<exp>_masks/PosNNN'")
    add_student_arguments(tu)
    return tu


def run(args) -> int:
    from ..pipeline.segment import run as run_job
    from ..unet_student.data import discover_dataset, load_sample
    from ..unet_student.train import train_iter

    train_pairs, val_pairs = discover_dataset(args.dataset, val_suffixes(args.val_suffixes))
    print(f"{len(train_pairs)} training and {len(val_pairs)} validation images", flush=True)
    train = [load_sample(*pair) for pair in train_pairs]
    val = [load_sample(*pair) for pair in val_pairs]
    info = {"source": "trained on masks", "dataset": str(Path(args.dataset).resolve())}
    return finish_student(run_job(train_iter(train, val, args.out, info=info, **student_options(args)),
                                  report_student))
