"""Distil the shipped nuclei model into the U-Net student on DSB2018, on the CPU.

    python scripts/train_nuclei_student.py --data ../shared/data/dsb2018 --out /tmp/student/student.pt

The teacher (``load_model("nuclei")``) segments every DSB2018 image as it runs by default (its
outlines redrawn by its contour U-Net; ``--teacher-refine none`` for its own outlines), with its own calibrated
settings (the score threshold and mask erosion stored in its checkpoint, full-resolution tiling;
``--conf`` overrides the threshold); its masks are cached and become the student's targets. The split is the fixed one of the nuclei model
(train_nuclei_model.is_validation: sha1 of the image id); the ground truth is not used.
``--init student.pt`` starts from an earlier student's weights (e.g. the shipped one, when the
teacher has been retrained). ``--max-minutes`` stops training (keeping the best checkpoint) when the time is up.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from train_nuclei_model import is_validation  # noqa: E402

from napari_cellseg import load_model  # noqa: E402
from napari_cellseg.pipeline.distill import distill_iter  # noqa: E402


def add_teacher_refine_option(parser: argparse.ArgumentParser) -> None:
    """``--teacher-refine``: which outlines of the teacher a student learns and is measured against."""
    parser.add_argument("--teacher-refine", choices=("auto", "none"), default="auto",
                        help="'auto' (default): the teacher as it runs by default (the named nuclei model's "
                             "outlines redrawn by its contour U-Net); 'none': its own outlines")


def teacher_refine(args) -> str | None:
    """The ``refine`` argument of the teacher's ``segment`` runs."""
    return None if args.teacher_refine == "none" else "auto"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/nuclei-student/student.pt"))
    parser.add_argument("--teacher", default="nuclei")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--conf", type=float, default=None, help="teacher's score threshold (default: its own)")
    add_teacher_refine_option(parser)
    parser.add_argument("--init", default=None, help="start from this student's weights")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--max-minutes", type=float, default=None)
    args = parser.parse_args(argv)
    images = sorted((args.data / "images").glob("*.png"))
    train = [p for p in images if not is_validation(p.stem)]
    val = [p for p in images if is_validation(p.stem)]
    print(f"{len(train)} training and {len(val)} validation images; teacher {args.teacher}", flush=True)
    teacher = load_model(args.teacher, device="cpu")
    options = {"refine": teacher_refine(args)}
    if args.conf is not None:
        options["conf"] = args.conf
    gen = distill_iter(teacher, train, val, args.out, segment_options=options, teacher_name=args.teacher,
                       epochs=args.epochs, batch=args.batch, crop=args.crop, lr=args.lr, resume=args.resume,
                       init=args.init,
                       info={"data": "DSB2018 stage1_train (corrected), train split of train_nuclei_model.is_validation"})
    started = time.time()
    train_started = None
    for progress in gen:
        if progress.get("phase", "train") == "teacher" and (progress.done % 50 == 0 or progress.done == progress.total):
            print(f"[{time.time() - started:7.0f} s] {progress.message}", flush=True)
        if progress.get("phase", "train") == "train":
            train_started = train_started or time.time()
            if progress.get("record") or progress.done % 10 == 0:
                print(f"[{time.time() - started:7.0f} s] {progress.message}", flush=True)
            if args.max_minutes and time.time() - train_started > 60 * args.max_minutes:
                print("time is up: stopping, the best checkpoint is kept", flush=True)
                gen.close()
                break
    print(f"done in {time.time() - started:.0f} s: {args.out}", flush=True)


if __name__ == "__main__":
    main()
