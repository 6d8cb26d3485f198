"""``napari-cellseg distill``: distil a teacher model into the U-Net student on unlabeled images."""
from __future__ import annotations

from ._common import add_student_arguments, finish_student, report_student, student_options, val_suffixes


def add_parser(sub):
    di = sub.add_parser("distill", help="distil a teacher model into the U-Net student on unlabeled images")
    di.add_argument("--teacher", required=True, help="teacher model: a name (e.g. nuclei) or a checkpoint")
    di.add_argument("--images", required=True, help="folder of images (flat, or '<exp>_raw_data/PosNNN')")
    di.add_argument("--conf", type=float, default=0.25, help="teacher confidence threshold")
    di.add_argument("--cache", default=None, help="folder for the teacher's masks (default: beside --out)")
    add_student_arguments(di)
    return di


def run(args) -> int:
    from ..backends import load_model
    from ..pipeline.distill import distill_iter, split_image_folder
    from ..pipeline.segment import run as run_job

    train, val = split_image_folder(args.images, val_suffixes(args.val_suffixes))
    print(f"{len(train)} training and {len(val)} validation images; teacher {args.teacher}", flush=True)
    teacher = load_model(args.teacher, device=args.device)
    gen = distill_iter(teacher, train, val, args.out, cache_dir=args.cache, teacher_name=str(args.teacher),
                       segment_options={"conf": args.conf}, **student_options(args))
    return finish_student(run_job(gen, report_student))
