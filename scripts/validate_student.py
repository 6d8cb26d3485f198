"""Validation figures of a U-Net student against its teacher and the ground truth (DSB2018).

    python scripts/validate_student.py --student student.pt --teacher nuclei --data ../shared/data/dsb2018

On every image of the fixed validation split (train_nuclei_model.is_validation, the split of
scripts/validate_nuclei_model.py) both models run through the plugin's own ``segment`` with the
settings the plugin gives them by default (each model's own calibrated score threshold unless
``--conf`` is given; full-resolution tiling; the teacher's outlines redrawn by its contour U-Net
where it has one, unless ``--teacher-refine none``). Printed: the foreground Dice of the student against
the teacher (mean over images, pooled over pixels, and the mean per modality), F1 at IoU 0.5 and DSB score
against the ground truth for both (all modalities and fluorescence), the student's F1 as a
fraction of the teacher's, and the seconds per image of each.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from train_nuclei_model import is_validation  # noqa: E402
from train_nuclei_student import add_teacher_refine_option, teacher_refine  # noqa: E402

from napari_cellseg import load_model, segment  # noqa: E402
from napari_cellseg.core.io import read_image  # noqa: E402
from napari_cellseg.core.metrics import dice, evaluate  # noqa: E402


def _summary(rows, key):
    fluo = [r for r in rows if r["modality"] == "fluorescence"]
    return {
        "dsb_score_all": float(np.mean([r[key]["dsb_score"] for r in rows])),
        "f1_50_all": float(np.mean([r[key]["f1_50"] for r in rows])),
        "dsb_score_fluorescence": float(np.mean([r[key]["dsb_score"] for r in fluo])) if fluo else None,
        "f1_50_fluorescence": float(np.mean([r[key]["f1_50"] for r in fluo])) if fluo else None,
        "seconds_per_image": float(np.mean([r[key]["seconds"] for r in rows])),
    }


def validate(student, teacher, data: Path, conf: float | None = None, limit: int | None = None,
             teacher_refine: str | None = "auto") -> dict:
    modality = {r["id"]: r["modality_guess"] for r in csv.DictReader(open(data / "metadata.csv"))}
    ids = sorted(p.stem for p in (data / "images").glob("*.png") if is_validation(p.stem))[:limit]
    rows = []
    inter = total = 0
    for image_id in ids:
        image = read_image(data / "images" / f"{image_id}.png")
        truth = read_image(data / "labels" / f"{image_id}.png")
        row = {"id": image_id, "modality": modality.get(image_id, "?")}
        labels = {}
        for key, model, refine in (("student", student, None), ("teacher", teacher, teacher_refine)):
            started = time.perf_counter()
            labels[key] = segment(image, model, conf=conf, refine=refine).labels
            row[key] = {**evaluate(labels[key], truth, with_coco=False), "seconds": time.perf_counter() - started}
        row["dice_vs_teacher"] = dice(labels["student"], labels["teacher"])
        s, t = labels["student"] > 0, labels["teacher"] > 0  # pooled over all images below
        inter += int((s & t).sum())
        total += int(s.sum() + t.sum())
        rows.append(row)
    student_summary, teacher_summary = _summary(rows, "student"), _summary(rows, "teacher")
    return {
        "n_images": len(rows),
        "n_fluorescence": sum(r["modality"] == "fluorescence" for r in rows),
        "dice_student_vs_teacher_mean": float(np.mean([r["dice_vs_teacher"] for r in rows])),
        "dice_student_vs_teacher_pooled": 2 * inter / total if total else 1.0,
        "dice_student_vs_teacher_mean_per_modality": {
            modality: float(np.mean([r["dice_vs_teacher"] for r in rows if r["modality"] == modality]))
            for modality in sorted({r["modality"] for r in rows})},
        "student": student_summary,
        "teacher": teacher_summary,
        "student_f1_fraction_of_teacher_all": student_summary["f1_50_all"] / teacher_summary["f1_50_all"],
        "student_f1_fraction_of_teacher_fluorescence": (
            student_summary["f1_50_fluorescence"] / teacher_summary["f1_50_fluorescence"]
            if teacher_summary["f1_50_fluorescence"] else None),
        "speedup_on_these_images": teacher_summary["seconds_per_image"] / student_summary["seconds_per_image"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", default="nuclei")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--conf", type=float, default=None, help="score threshold (default: each model's own)")
    parser.add_argument("--limit", type=int, default=None)
    add_teacher_refine_option(parser)
    args = parser.parse_args(argv)
    figures = validate(load_model(args.student, device="cpu"), load_model(args.teacher, device="cpu"),
                       args.data, args.conf, args.limit, teacher_refine=teacher_refine(args))
    print(json.dumps({"settings": {"conf": args.conf, "student": args.student, "teacher": args.teacher,
                                   "teacher_refine": args.teacher_refine},
                      **figures}, indent=2))


if __name__ == "__main__":
    main()
